"""Tiny tables: cross-validated test log-likelihood and coverage of the small-table candidates.

The UCI splits start at 277 training rows; users also bring tables of 20 to 100 rows. Each table
here is cut from a public one: 32 and 100 rows drawn at random (seeds 0 and 1) from the UCI yacht,
energy and red-wine tables (`../shared/data/uci`) and from scikit-learn's diabetes table (442 × 10,
also used whole), and scikit-learn's linnerud table (20 rows: weight from three exercise counts).
K-fold cross-validation (8 folds up to 64 rows, else 5; rows shuffled with seed 0; fold k fitted
with seed k), every held-out row predicted by a fit to the others (`bnn.cross_validate`).
The network is `bnn fit`'s: one hidden layer of 50 ReLU units, `normalize=True`, a learned
Gaussian noise, Normal(0, 1) priors unless the method says otherwise. The baseline is ordinary
least squares with its Gaussian predictive (the unbiased residual variance times 1 + leverage).
Metrics: mean log predictive density per held-out row (original units) and the coverage of the
central 90 % interval, pooled over the folds.

    pip install scikit-learn     # two of the tables
    python benchmarks/tiny.py [--tables ...] [--methods ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (machine description, report writing)

import bnn  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "tiny_results.jsonl"
REPORT = HERE / "TINY.md"
UCI = HERE.parent.parent / "shared" / "data" / "uci"
LEVEL = 0.9
#: name -> (fit method, options, prior); "ols" is the least-squares baseline
METHODS: dict[str, tuple[str, dict, object]] = {
    "mclmc-tuned": ("mclmc", {"tune_prior": True}, bnn.Normal(1.0)),
    "mclmc-layerwise": ("mclmc", {"tune_prior": "layerwise"}, bnn.Normal(1.0)),
    "mclmc": ("mclmc", {}, bnn.Normal(1.0)),
    "mclmc-hier": ("mclmc", {}, bnn.Normal(scale=bnn.HalfNormal(1.0))),
    "mclmc-hier-noise": ("mclmc", {"tune_prior": True}, bnn.Normal(scale=bnn.HalfNormal(1.0))),
    "laplace-tuned": ("laplace", {"tune_prior": True}, bnn.Normal(1.0)),
    "laplace-layerwise": ("laplace", {"tune_prior": "layerwise"}, bnn.Normal(1.0)),
    "ensemble": ("ensemble", {}, bnn.Normal(1.0)),
    "ensemble-full": ("ensemble", {"validation": None}, bnn.Normal(1.0)),
}
LABELS = {
    "ols": "least squares",
    "mclmc-tuned": "MCLMC, `tune_prior=True`",
    "mclmc-layerwise": "MCLMC, layerwise tuned",
    "mclmc": "MCLMC, Normal(0, 1)",
    "mclmc-hier": "MCLMC, HalfNormal(1) scales (`bnn fit`)",
    "mclmc-hier-noise": "MCLMC, HalfNormal(1) scales, noise by the evidence",
    "laplace-tuned": "Laplace, `tune_prior=True`",
    "laplace-layerwise": "Laplace, layerwise tuned",
    "ensemble": "Ensemble (10 MAP; early stopping on 10 % of the rows, the default)",
    "ensemble-full": "Ensemble, members trained to the optimum (`validation=None`)",
}
TABLES = ("linnerud", "yacht:32:0", "yacht:32:1", "energy:32:0", "energy:32:1", "wine-quality-red:32:0",
          "wine-quality-red:32:1", "diabetes:32:0", "diabetes:32:1", "yacht:100:0", "energy:100:0",
          "wine-quality-red:100:0", "diabetes:100:0", "diabetes")


def table(name: str, data_dir: Path = UCI) -> tuple[np.ndarray, np.ndarray]:
    """``"linnerud"``, ``"diabetes"`` or ``"<source>:<rows>:<seed>"``: rows drawn without replacement."""
    source, rows, seed = (name.split(":") + ["0", "0"])[:3]
    if source == "linnerud":
        from sklearn.datasets import load_linnerud

        d = load_linnerud()
        x, y = d.data, d.target[:, 0]
    elif source == "diabetes":
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
    else:
        data = np.loadtxt(data_dir / source / "data.txt")
        features = np.loadtxt(data_dir / source / "index_features.txt").astype(int)
        target = int(np.loadtxt(data_dir / source / "index_target.txt"))
        x, y = data[:, features], data[:, target]
    if int(rows):
        keep = np.random.default_rng(int(seed)).permutation(len(x))[: int(rows)]
        x, y = x[keep], y[keep]
    return np.asarray(x, np.float32), np.asarray(y, np.float32)


def folds_for(rows: int) -> int:
    return 8 if rows <= 64 else 5


def least_squares_cv(x, y, folds: int, seed: int = 0) -> dict:
    """Ordinary least squares (with an intercept), its Gaussian predictive N(x̂β, s²(1 + leverage)),
    cross-validated as :func:`bnn.compare.cross_validate` cuts the rows."""
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    order = np.random.default_rng(seed).permutation(len(x))
    ll, covered, sq = [], [], []
    for held in np.array_split(order, folds):
        train = np.setdiff1d(order, held)
        design, held_design = np.c_[np.ones(len(train)), x[train]], np.c_[np.ones(len(held)), x[held]]
        beta, *_ = np.linalg.lstsq(design, y[train], rcond=None)
        s2 = np.sum((y[train] - design @ beta) ** 2) / max(len(train) - design.shape[1], 1)
        leverage = np.einsum("ij,jk,ik->i", held_design, np.linalg.pinv(design.T @ design), held_design)
        mean, sd = held_design @ beta, np.sqrt(s2 * (1 + leverage))
        ll += list(stats.norm.logpdf(y[held], mean, sd))
        covered += list(np.abs(y[held] - mean) <= stats.norm.ppf(0.5 + LEVEL / 2) * sd)
        sq += list((y[held] - mean) ** 2)
    return {"log_likelihood": float(np.mean(ll)), "coverage": float(np.mean(covered)), "rmse": float(np.sqrt(np.mean(sq)))}


def run_one(name: str, method: str, data_dir: Path = UCI) -> dict:
    x, y = table(name, data_dir)
    folds = folds_for(len(x))
    start = time.perf_counter()
    if method == "ols":
        result = least_squares_cv(x, y, folds)
    else:
        kind, options, prior = METHODS[method]
        model = bnn.BNN(bnn.MLP((50, 1), activation="relu"), prior=prior, likelihood=bnn.Gaussian())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = bnn.cross_validate(model, x, y, method=kind, folds=folds, seed=0, level=LEVEL,
                                                normalize=True, **options)
        result.pop("per_fold")
    return {"table": name, "method": method, "n": len(x), "folds": folds, "seconds": round(time.perf_counter() - start, 1),
            **{k: round(float(v), 4) for k, v in result.items() if k != "folds"}}


def load(path: Path = RESULTS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def report(records: list[dict]) -> str:
    latest = {(r["table"], r["method"]): r for r in records}
    methods = [m for m in ("ols", *METHODS) if any(k[1] == m for k in latest)]
    tables = [t for t in TABLES if any(k[0] == t for k in latest)]
    lines = ["# Tiny tables", "", "Written by `python benchmarks/tiny.py` from `benchmarks/tiny_results.jsonl`. "
             + __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Machine: {harness.machine_line(harness.machine())}.", "",
             "Held-out log predictive density per row (higher is better), and in brackets the coverage of the "
             "90 % interval; the last rows count, per method, the tables where it falls more than 0.5 nats "
             "below least squares (a failure a user would see) and its mean gap to least squares.", "",
             "| table | rows | " + " | ".join(LABELS[m] for m in methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for t in tables:
        cells = []
        for m in methods:
            r = latest.get((t, m))
            cells.append(f"{r['log_likelihood']:.2f} ({r['coverage']:.2f})" if r else "")
        n = next(r["n"] for k, r in latest.items() if k[0] == t)
        lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    fails, gaps = [], []
    for m in methods:
        diffs = [latest[(t, m)]["log_likelihood"] - latest[(t, "ols")]["log_likelihood"] for t in tables
                 if (t, m) in latest and (t, "ols") in latest]
        fails.append(f"{sum(d < -0.5 for d in diffs)} of {len(diffs)}")
        gaps.append(f"{np.mean(diffs):+.2f}" if diffs else "")
    lines += ["| more than 0.5 below least squares | | " + " | ".join(fails) + " |",
              "| mean gap to least squares | | " + " | ".join(gaps) + " |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES))
    parser.add_argument("--methods", nargs="*", default=["ols", *METHODS])
    parser.add_argument("--data-dir", type=Path, default=UCI)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        for name in args.tables:
            for method in args.methods:
                record = run_one(name, method, args.data_dir)
                print(json.dumps(record), flush=True)
                with RESULTS.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    text = report(load())
    harness.write_report(REPORT, text, keep_from="## Notes")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
