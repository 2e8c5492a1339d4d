"""MCLMC's budget curve on UCI: test log-likelihood against the wall time of a fresh fit, beside NUTS.

    python benchmarks/mclmc_budget.py                                  # energy, wine, yacht; split 0; seeds 0 1
    python benchmarks/mclmc_budget.py --datasets energy --seeds 0 1 2
    python benchmarks/mclmc_budget.py --fast                           # tiny step counts (a smoke test)

The UCI protocol of ``uci.py`` (one hidden layer of 50 ReLU units, Normal(0, 1) priors, learned
noise, ``normalize=True``). Every fit runs in a fresh process (bnn keeps compiled programs for equal
models, so a second fit in one process would compile nothing), compilation included, as a user's
first fit in a notebook is: NUTS at ``uci.py``'s settings (2 chains × 300 + 300, MAP starts) or,
with ``--nuts package``, at the package's defaults (4 chains × 250 + 500), and MCLMC at each budget
of :data:`BUDGETS` (its defaults are 4 chains, ``bnn.inference.mclmc.DEFAULT_WARMUP`` tuning steps,
1000 draws ``DEFAULT_THINNING`` steps apart). Printed per data set and seed: seconds, NUTS's time
over MCLMC's, and MCLMC's test LL minus NUTS's (mean log predictive density per test row, original
units); the summary gives each budget's mean and spread over the seeds, and the difference of the
two samplers' mean test LL over the seeds with its standard error (seed to seed, both samplers'
spreads). SAMPLING.md by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (fresh processes)
import uci  # noqa: E402  (the protocol: model, options, metrics)

import bnn  # noqa: E402

#: name -> MCLMC options on top of the defaults
BUDGETS: dict[str, dict] = {
    "half draws": {"num_samples": 500},
    "default": {},
    "2 chains": {"num_chains": 2},
    "8 chains": {"num_chains": 8},
    "double draws": {"num_samples": 2000},
    "draws 10 steps apart": {"thinning": 10},
    "draws 20 steps apart": {"thinning": 20},
    "2000 warm-up steps": {"num_warmup": 2000},
    "BlackJAX's L": {"L_factor": 0.4},
    "L x 2.5": {"L_factor": 10.0},
}
FAST = {"num_warmup": 300, "num_samples": 20, "thinning": 1}


def one_fit(dataset: str, split: int, seed: int, method: str, options: dict, data_dir) -> tuple[float, float]:
    """(seconds, test LL) of one fit, compilation included when it is the process's first."""
    data = bnn.datasets.uci(dataset, split, data_dir=data_dir)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = uci.make_model().fit(data.x_train, data.y_train, method=method, seed=seed, normalize=True, **options)
        seconds = time.perf_counter() - start
        return seconds, uci.evaluate(fit, data.x_test, data.y_test)["ll"]


def fresh_fit(dataset: str, split: int, seed: int, method: str, options: dict, data_dir) -> tuple[float, float]:
    """:func:`one_fit` in a new Python process: (seconds, test LL) of a first fit."""
    args = [sys.executable, __file__, "--one", json.dumps([dataset, split, seed, method, options, data_dir])]
    return tuple(harness.json_from_process(args))


def earlier_nuts(log: Path, dataset: str, seed: int) -> tuple[float, float]:
    """(seconds, test LL) of NUTS for ``dataset`` and ``seed`` from the printed lines of an earlier run."""
    for line in log.read_text().splitlines():
        match = re.match(rf"{re.escape(dataset)}\s+seed {seed} NUTS\s+([0-9.]+) s\s+test LL ([-+0-9.]+)$", line)
        if match:
            return float(match.group(1)), float(match.group(2))
    raise SystemExit(f"no NUTS line for {dataset} seed {seed} in {log}")


def difference_of_means(a: np.ndarray, b: np.ndarray) -> str:
    """``mean(a) - mean(b)`` ± its standard error from the two samples' spreads (seeds are independent runs)."""
    if len(a) < 2 or len(b) < 2:
        return f"{a.mean() - b.mean():+.3f}"
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return f"{a.mean() - b.mean():+.3f} ± {se:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["energy", "wine-quality-red", "yacht"])
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--nuts", choices=["uci", "package"], default="uci",
                        help="NUTS at uci.py's settings (2 x 300 + 300) or at the package's defaults (4 x 250 + 500)")
    parser.add_argument("--nuts-log", type=Path, default=None,
                        help="take NUTS's seconds and test LL from the printed lines of an earlier run instead of refitting")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one fit in this process (JSON arguments)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_fit(*json.loads(args.one))))
        return 0
    nuts_options = uci.method_options("nuts", args.fast)[1] if args.nuts == "uci" else (
        dict(uci.FAST["nuts"]) if args.fast else {})
    rows, nuts_lls = [], {}
    for dataset in args.datasets:
        for seed in args.seeds:
            nuts_s, nuts_ll = (earlier_nuts(args.nuts_log, dataset, seed) if args.nuts_log else
                               fresh_fit(dataset, args.split, seed, "nuts", nuts_options, args.data_dir))
            nuts_lls.setdefault(dataset, []).append(nuts_ll)
            print(f"{dataset:18s} seed {seed} NUTS {nuts_s:7.1f} s  test LL {nuts_ll:+.3f}", flush=True)
            for budget in args.budgets:
                options = {**BUDGETS[budget], **(FAST if args.fast else {})}
                s, ll = fresh_fit(dataset, args.split, seed, "mclmc", options, args.data_dir)
                rows.append((dataset, budget, seed, s, nuts_s / s, ll - nuts_ll, ll))
                print(f"{dataset:18s} seed {seed} MCLMC {budget:13s} {s:7.1f} s  NUTS/MCLMC time {nuts_s / s:5.1f}  "
                      f"test LL {ll:+.3f} ({ll - nuts_ll:+.3f} vs NUTS)", flush=True)
    print("\n| data set | MCLMC budget | s (mean) | NUTS time / MCLMC time: mean (min–max) | test LL − NUTS's: mean (min–max) "
          "| mean test LL − NUTS's mean ± s.e. |")
    print("|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for budget in args.budgets:
            sel = [r for r in rows if r[0] == dataset and r[1] == budget]
            s, ratio, gap, ll = (np.array([r[k] for r in sel]) for k in (3, 4, 5, 6))
            print(f"| {dataset} | {budget} | {s.mean():.1f} | {ratio.mean():.1f} ({ratio.min():.1f}–{ratio.max():.1f}) | "
                  f"{gap.mean():+.3f} ({gap.min():+.3f} to {gap.max():+.3f}) | "
                  f"{difference_of_means(ll, np.array(nuts_lls[dataset]))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
