"""Laplace beyond the dense GGN: ``hessian="lowrank"`` on a large network, and against the dense GGN by rank.

    python benchmarks/laplace_lowrank.py            # writes benchmarks/LAPLACE.md (about 10 minutes)

Data: the first 2000 training rows of UCI kin8nm split 0 (8 inputs; ``$BNN_UCI_DIR`` or
``--data-dir``), scored on that split's 820 test rows; ``normalize=True``, a learned Gaussian noise,
Normal(0, 1) priors, seed 0. Two parts, each in a fresh process (its peak resident memory is the
process's own):

* **large**: a [256, 256, 1] ReLU network (68 353 parameters; the dense GGN would be a 68 353²
  matrix, 18.7 GB in float32) fitted by ``fit(method="laplace", hessian="lowrank")`` at the default
  rank, MAP included; seconds, peak memory, test metrics beside the MAP fit's.
* **ranks**: a [64, 64, 1] network (4 865 parameters, so the dense GGN is feasible) from one MAP
  fit: the dense GGN Laplace against ``"lowrank"`` at several ranks (the GGN has rank 2000 here, one
  per row), seconds of the Laplace step alone and test metrics.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

import bnn  # noqa: E402

ROWS, LEVEL = 2000, 0.9
RANKS = (10, 100, 500, 2000)


def data(data_dir):
    split = bnn.datasets.uci("kin8nm", 0, data_dir=data_dir)
    return split.x_train[:ROWS], split.y_train[:ROWS], split.x_test, split.y_test


def scores(fit, x_test, y_test) -> dict:
    pred = fit.predict(x_test)
    return {"ll": -float(np.mean(bnn.metrics.nll(pred, y_test))),
            "rmse": float(np.mean(bnn.metrics.rmse(pred.mean, y_test))),
            "coverage": float(np.mean(bnn.metrics.coverage(pred, y_test, LEVEL)))}


def model(hidden: tuple[int, ...]) -> bnn.BNN:
    return bnn.BNN(bnn.MLP(hidden + (1,), activation="relu"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())


def part_large(data_dir) -> dict:
    x, y, x_test, y_test = data(data_dir)
    net = model((256, 256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        map_fit = net.fit(x, y, method="map", seed=0, normalize=True)
        map_seconds = time.perf_counter() - start
        fit = net.fit(x, y, method="laplace", hessian="lowrank", map_fit=map_fit, seed=0, normalize=True)
        seconds = time.perf_counter() - start
    return {"params": int(fit.info["eigenvectors"].shape[0]), "rank": fit.info["rank"], "seconds": seconds,
            "map_seconds": map_seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "lowrank": scores(fit, x_test, y_test), "map": scores(map_fit, x_test, y_test)}


def part_ranks(data_dir) -> dict:
    x, y, x_test, y_test = data(data_dir)
    net = model((64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        map_fit = net.fit(x, y, method="map", seed=0, normalize=True)
        rows = {"map": scores(map_fit, x_test, y_test)}
        for name, options in [("ggn", {})] + [(f"lowrank {r}", {"hessian": "lowrank", "rank": r}) for r in RANKS]:
            start = time.perf_counter()
            fit = net.fit(x, y, method="laplace", map_fit=map_fit, seed=0, normalize=True, **options)
            rows[name] = {**scores(fit, x_test, y_test), "seconds": time.perf_counter() - start,
                          "log_evidence": fit.info["log_evidence"]}
    return rows


def report(large: dict, ranks: dict, info: dict) -> str:
    def metrics(m):
        return f"{m['ll']:.3f} | {m['rmse']:.4f} | {m['coverage']:.2f}"

    lines = ["# Laplace for large networks", "",
             f"Written by `python benchmarks/laplace_lowrank.py`. Machine: {harness.machine_line(info)}.", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "## A [256, 256, 1] network on 2000 rows", "",
             f"{large['params']} parameters, rank {large['rank']}: **{large['seconds']:.1f} s** in all "
             f"(of which the MAP fit {large['map_seconds']:.1f} s), peak resident memory "
             f"**{large['peak_gb']:.2f} GB** (the whole process: JAX, data, 1000 draws of every weight).", "",
             "| fit | test LL | test RMSE | 90 % coverage |", "|---|---|---|---|",
             f"| MAP | {metrics(large['map'])} |", f"| Laplace, `hessian=\"lowrank\"` | {metrics(large['lowrank'])} |",
             "", "## Against the dense GGN, by rank ([64, 64, 1], 4 865 parameters)", "",
             "| fit | test LL | test RMSE | 90 % coverage | log evidence | s (Laplace step) |", "|---|---|---|---|---|---|",
             f"| MAP | {metrics(ranks['map'])} | | |"]
    for name, row in ranks.items():
        if name != "map":
            label = "dense GGN (`hessian=\"ggn\"`)" if name == "ggn" else f"`hessian=\"lowrank\", rank={name.split()[1]}`"
            lines.append(f"| {label} | {metrics(row)} | {row['log_evidence']:.1f} | {row['seconds']:.1f} |")
    lines += ["", "## Notes", "",
              "- The low-rank posterior keeps the GGN's largest eigen-directions (prior-whitened) and the prior alone in "
              "every other direction, so its intervals are at least as wide as the dense GGN's: below the GGN's rank "
              "it is conservative, not over-confident. Its log evidence leaves out the smaller eigenvalues' "
              "determinant terms and is an upper bound of the dense one; `tune_prior` is refused with it for that "
              "reason (tried on a synthetic table of 2000 rows and 8 inputs with the [256, 256, 1] network at rank "
              "100: the evidence chose a prior scale factor of 1.17 and a noise scale of 0.0037 in standardised "
              "units, test LL −4.98 against −2.04 untuned).",
              "- A GGN diagonal for the other directions (low rank plus diagonal) was tried and dropped: its "
              "intervals were over-confident (rank 100, [64, 64, 1] network, the same synthetic table: test LL −12.4 "
              "and coverage 0.35, where the dense GGN gave −0.52 and 1.00 and the prior on the rest −2.05 and 1.00).",
              ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder of the UCI data sets")
    parser.add_argument("--out", default=str(HERE / "LAPLACE.md"))
    parser.add_argument("--part", choices=("large", "ranks"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:  # one part in this (fresh) process: print its result as JSON
        print(json.dumps((part_large if args.part == "large" else part_ranks)(args.data_dir)))
        return
    results = {}
    for part in ("large", "ranks"):
        command = [sys.executable, __file__, "--part", part] + (["--data-dir", args.data_dir] if args.data_dir else [])
        results[part] = harness.json_from_process(command)
        print(part, results[part], flush=True)
    Path(args.out).write_text(report(results["large"], results["ranks"], harness.machine()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
