"""MCLMC against NUTS on a UCI problem when one model is fitted again and again (cross-validation).

    python benchmarks/repeat_fits.py                       # energy, splits 0-4
    python benchmarks/repeat_fits.py --dataset yacht --splits 0 1 2
    python benchmarks/repeat_fits.py --fast --splits 0 1      # tiny step counts (a smoke test)

The UCI protocol of ``uci.py`` (one hidden layer of 50 ReLU units, Normal(0, 1) priors, learned
noise, ``normalize=True``, seed = split index; NUTS 2 chains x 300 + 300, MCLMC at its
defaults), but each method fits every split on **one** model built once, as a script looping
over folds does: the first split compiles the programs, later splits reuse them. ``uci.py``
builds a new model per split instead, so its seconds include compilation every time. For each
method and split: the fit's wall time and the test log-likelihood (mean log predictive
density, original units); the summary compares MCLMC's time with NUTS's on the splits after the
first, and their test log-likelihoods on all splits.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the timer)
import uci  # noqa: E402  (the protocol: model, options, metrics)

import bnn  # noqa: E402

METHODS = ("nuts", "mclmc")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="energy")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--fast", action="store_true", help="uci.py's smoke-mode step counts")
    args = parser.parse_args(argv)
    rows = {m: [] for m in METHODS}
    for method in METHODS:
        kind, options = uci.method_options(method, args.fast)
        model = uci.make_model()
        for split in args.splits:
            data = bnn.datasets.uci(args.dataset, split, data_dir=args.data_dir)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sampler-quality warnings are in uci.py's report
                fit, seconds = harness.timed(lambda: model.fit(data.x_train, data.y_train, method=kind, seed=split,
                                                               normalize=True, **options))
                ll = uci.evaluate(fit, data.x_test, data.y_test)["ll"]
            rows[method].append((split, seconds, ll))
            print(f"{args.dataset}  {method:6s} split {split:2d}  {seconds:7.1f} s  test LL {ll:8.3f}", flush=True)
    later = {m: np.array([s for _, s, _ in rows[m][1:]]) for m in METHODS}
    ll = {m: np.array([v for _, _, v in rows[m]]) for m in METHODS}
    print(f"\n| method | first split, s | later splits, s (mean) | test LL (mean ± se over {len(args.splits)} splits) |")
    print("|---|---|---|---|")
    for m in METHODS:
        se = ll[m].std(ddof=1) / np.sqrt(len(ll[m])) if len(ll[m]) > 1 else float("nan")
        print(f"| {m} | {rows[m][0][1]:.1f} | {later[m].mean() if later[m].size else float('nan'):.1f} | "
              f"{ll[m].mean():.3f} ± {se:.3f} |")
    if later["nuts"].size:
        diff = ll["mclmc"] - ll["nuts"]
        print(f"\nNUTS / MCLMC time on the later splits: {later['nuts'].mean() / later['mclmc'].mean():.1f}×; "
              f"test LL MCLMC − NUTS per split: {', '.join(f'{d:+.3f}' for d in diff)} "
              f"(mean {diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.3f}, median {np.median(diff):+.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
