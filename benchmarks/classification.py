"""Small-table classification: bnn's default paths against logistic regression.

Three binary tables of 100 to 569 rows: scikit-learn's bundled breast-cancer table (569 × 30), its
iris table reduced to versicolor vs virginica (100 × 4), and bnn's two-input hill toy (300 rows).
Five random 80/20 splits each (seed = split). The network is the CLI's default, one hidden layer of
50 ReLU units with `normalize=True`; the baseline is scikit-learn's `LogisticRegressionCV` (L2, its
penalty chosen by 5-fold cross-validation on the training rows) on standardised inputs. Metric:
test negative log-likelihood (mean per row, lower is better), mean ± standard error over splits.

    pip install scikit-learn     # the baseline and two of the tables
    python benchmarks/classification.py [--splits 5] [--out benchmarks/CLASSIFICATION.md]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (timer, report writing)

import bnn  # noqa: E402

HERE = Path(__file__).resolve().parent
#: label -> (fit method, options, prior)
METHODS = {
    "ensemble": ("ensemble", {}, bnn.Normal(1.0)),
    "ensemble, tune_prior": ("ensemble", {"tune_prior": True}, bnn.Normal(1.0)),
    "mclmc, tune_prior": ("mclmc", {"tune_prior": True}, bnn.Normal(1.0)),
    "mclmc, HalfNormal(1) scales": ("mclmc", {}, bnn.Normal(scale=bnn.HalfNormal(1.0))),
    "laplace, tune_prior": ("laplace", {"tune_prior": True}, bnn.Normal(1.0)),
}


def tables() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn import datasets

    x, y = datasets.load_breast_cancer(return_X_y=True)
    iris_x, iris_y = datasets.load_iris(return_X_y=True)
    keep = iris_y > 0
    hill_x, hill_y = bnn.datasets.hill(n=300, seed=0)
    return {
        "breast cancer (569 × 30)": (x, y),
        "iris, versicolor vs virginica (100 × 4)": (iris_x[keep], (iris_y[keep] == 2).astype(int)),
        "hill toy (300 × 2)": (np.asarray(hill_x), np.asarray(hill_y).ravel()),
    }


def logistic_nll(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegressionCV(Cs=10, max_iter=5000).fit(scaler.transform(x_train), y_train)
    p = np.clip(model.predict_proba(scaler.transform(x_test))[:, 1], 1e-12, 1 - 1e-12)
    return float(-np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)))


def run(splits: int) -> dict:
    results: dict = {}
    for name, (x, y) in tables().items():
        x, y = np.asarray(x, np.float32), np.asarray(y).astype(int)
        rows = {label: [] for label in [*METHODS, "logistic regression"]}
        for split in range(splits):
            order = np.random.default_rng(split).permutation(len(y))
            train, test = order[: int(0.8 * len(y))], order[int(0.8 * len(y)):]
            rows["logistic regression"].append(logistic_nll(x[train], y[train], x[test], y[test]))
            for label, (method, options, prior) in METHODS.items():
                model = bnn.BNN(bnn.MLP((50, 1), activation="relu"), prior=prior, likelihood=bnn.Bernoulli())

                def test_nll():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        fit = model.fit(x[train], y[train], method=method, seed=split, normalize=True, **options)
                    return float(np.mean(bnn.metrics.nll(fit.predict(x[test]), y[test])))

                nll, seconds = harness.timed(test_nll)  # the fit and its evaluation
                rows[label].append(nll)
                print(f"{name[:14]:14s} split {split} {label:28s} {rows[label][-1]:.4f}  "
                      f"(logistic {rows['logistic regression'][-1]:.4f}) {seconds:.1f} s", flush=True)
        results[name] = rows
    return results


def report(results: dict, splits: int) -> str:
    labels = [*METHODS, "logistic regression"]
    lines = ["# Small-table classification", "", f"Written by `python benchmarks/classification.py` ({splits} splits). "
             + __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| table | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, rows in results.items():
        cells = [f"{np.mean(rows[k]):.3f} ± {np.std(rows[k], ddof=1) / np.sqrt(len(rows[k])):.3f}" for k in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "CLASSIFICATION.md")
    args = parser.parse_args(argv)
    text = report(run(args.splits), args.splits)
    harness.write_report(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
