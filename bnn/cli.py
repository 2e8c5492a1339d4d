"""The ``bnn`` command.

``bnn demo`` runs the whole story on the embedded sine toy: prior predictive
functions; MLE, MAP, Laplace, ensemble, SVI and NUTS fits of one network; their predictive
bands; a comparison table on held-out data, NUTS's function-space diagnostics and which
method to use when, written as figures, a CSV table and a ``report.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _enable_compilation_cache() -> None:
    """Persist XLA compilations under the user's cache folder (CLI only; cuts start-up)."""
    import jax

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bnn" / "jax"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(root))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _markdown_table(frame) -> str:
    import numpy as np

    cols = ["fit", *frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, row in frame.iterrows():
        cells = [str(name)] + [f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings(fast: bool) -> dict:
    """Per-method options: ``fast`` runs in seconds (smoke tests), the default in minutes."""
    if fast:
        return {
            "MLE": ("mle", {"num_steps": 300}),
            "MAP": ("map", {"num_steps": 300}),
            "Laplace": ("laplace", {"num_steps": 300, "num_samples": 100}),
            "Ensemble": ("ensemble", {"num_members": 3, "num_steps": 300}),
            "SVI": ("svi", {"guide": "normal", "num_steps": 300, "num_samples": 100}),
            "NUTS": ("nuts", {"num_chains": 2, "num_warmup": 50, "num_samples": 50, "max_tree_depth": 6}),
        }
    return {
        "MLE": ("mle", {"num_steps": 5000}),
        "MAP": ("map", {"num_steps": 5000}),
        "Laplace": ("laplace", {"num_steps": 5000, "num_samples": 1000}),
        "Ensemble": ("ensemble", {"num_members": 10, "num_steps": 5000}),
        "SVI": ("svi", {"guide": "normal", "num_steps": 20000, "num_samples": 1000}),
        "NUTS": ("nuts", {"num_chains": 4, "num_warmup": 500, "num_samples": 500}),
    }


#: the recommendation of the real-data study (benchmarks/RESULTS.md), quoted in the demo report
RECOMMENDATION = """\
From the UCI regression benchmark (`benchmarks/RESULTS.md`: six data sets, one hidden layer of
50 ReLU units, `normalize=True`, learned noise, the published train/test splits):

- **NUTS** (`method="nuts"`, chains start from MAP fits) has the best test log-likelihood where
  it is affordable: data sets of a few thousand rows or fewer and networks of a few hundred
  weights. It costs one to two orders of magnitude more than a MAP fit. Its chains sit in
  different modes, so function-space R-hat across chains stays above 1.01 on real data: the
  mixture over chains is still the best predictive measured, but it is not a converged
  sample of the whole posterior.
- **Ensemble** (`method="ensemble"`, 10 MAP members in one vectorised program) is the default
  recommendation for everything else: within reach of NUTS, ahead of every published baseline
  on most data sets, and 1.5 to 13 times the cost of one MAP fit.
- **Laplace** (`method="laplace", tune_prior=True`) gives calibrated intervals from one MAP fit
  and the evidence for choosing priors, at the cost of the GGN (parameters²) and its tuning rounds;
  on data with very little noise its float32 factorisation can fail: use `jax.enable_x64`.
- **SVI** (`method="svi"`, guide started at the MAP fit) is the scalable posterior for
  minibatches, but trails the ensemble and NUTS in test log-likelihood.
- **MAP / MLE** with a learned noise scale over-fit small data sets badly (the noise scale
  shrinks to the training residual): use them for point predictions, or with `validation=0.1`
  early stopping, not for uncertainty.
"""


def run_demo(out: Path, fast: bool = False, seed: int = 0) -> dict:
    """Run the demo and write its report into ``out``. Returns the paths written."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import bnn

    out.mkdir(parents=True, exist_ok=True)
    noise = 0.1
    x, y = bnn.datasets.sine(n=40, noise=noise, seed=seed)
    x_test, y_test = bnn.datasets.sine(n=200, noise=noise, seed=seed + 1)
    grid = bnn.datasets.sine_grid(200)
    truth = bnn.datasets.sine_function(grid)
    model = bnn.BNN(bnn.MLP((10, 10, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=noise))

    written = {}
    prior = model.prior_predictive(grid, num_samples=100, seed=seed)
    ax = bnn.plot.prior_functions(prior, grid, num_functions=20, truth=truth)
    written["prior_functions"] = out / "prior_functions.png"
    ax.figure.savefig(written["prior_functions"], dpi=120, bbox_inches="tight")
    plt.close(ax.figure)

    fits, caught = {}, []
    for name, (method, options) in _settings(fast).items():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", UserWarning)
            fits[name] = model.fit(x, y, method=method, seed=seed, **options)
        caught += [f"{name}: {w.message}" for w in seen]

    fig, axes = plt.subplots(1, len(fits), figsize=(3.8 * len(fits), 3.6), sharey=True)
    for ax, (name, fit) in zip(np.atleast_1d(axes), fits.items()):
        bnn.plot.predictive(fit.predict(grid), grid, x, y, ax=ax, truth=truth, label="predictive", title=name)
        ax.set_ylim(-2.5, 2.0)
        ax.get_legend().remove()  # one legend for all panels, below them, off the data
    handles, labels = np.atleast_1d(axes)[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), frameon=False)
    written["predictive"] = out / "predictive.png"
    fig.savefig(written["predictive"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("MLE", "MAP"):
        bnn.plot.loss_curve(fits[name], ax=ax, title="Training objective (negative log density per point)")
    ax.set_yscale("symlog")
    written["loss"] = out / "loss.png"
    fig.savefig(written["loss"], dpi=120, bbox_inches="tight")
    plt.close(fig)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", UserWarning)
        table = bnn.compare(fits, x_test, y_test)
    caught += [str(w.message) for w in seen]
    written["metrics_csv"] = out / "metrics.csv"
    table.to_csv(written["metrics_csv"])
    diagnosis = bnn.diagnose(fits["NUTS"], grid)
    shown = ["rmse", "nll", "crps", "coverage_90", "width_90", "elpd_loo", "num_draws", "wall_time"]
    written["report"] = out / "report.md"
    written["report"].write_text(
        "# bnn demo: the sine toy\n\n"
        f"Data: {len(x)} points of f(x) = x sin(5x) + N(0, {noise}²), x ~ U(-1, 1); "
        f"test: {len(x_test)} fresh points from the same process.\n"
        f"Model: MLP (10, 10, 1) tanh, prior Normal(0, 1) on every weight, Gaussian noise σ = {noise}.\n"
        f"Settings: {'fast (smoke test)' if fast else 'full'}, seed {seed}.\n\n"
        "## Prior predictive functions\n\n![prior functions](prior_functions.png)\n\n"
        "## Fits: MLE, MAP (= MLE + L2 with λ = σ²/(N σ_p²) = "
        f"{bnn.prior_scale_to_weight_decay(1.0, noise, len(x)):.3g} on the MSE), Laplace, ensemble, SVI, NUTS\n\n"
        "![predictive](predictive.png)\n\n![loss](loss.png)\n\n"
        "## Test metrics\n\n" + _markdown_table(table[shown]) + "\n\n"
        "nll: mean negative log predictive density; crps: continuous ranked probability score; "
        "coverage/width: central 90 % predictive interval; elpd_loo: PSIS-LOO on the training data "
        "(undefined for point fits).\n\n"
        f"## NUTS diagnostics (function space, {len(grid)} inputs on [-1.5, 1.5])\n\n{diagnosis.verdict}\n\n"
        "## Which method to use when\n\n" + RECOMMENDATION
        + ("\n## Warnings\n\n" + "\n".join(f"- {c}" for c in caught) + "\n" if caught else "")
    )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bnn", description="Bayesian neural networks on JAX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the sine-toy story and write a report with figures")
    demo.add_argument("--out", type=Path, default=Path("bnn-demo"), help="output folder (default: ./bnn-demo)")
    demo.add_argument("--fast", action="store_true", help="small settings (seconds, for smoke tests)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.version:
        from bnn._version import __version__

        print(__version__)
        return 0
    if args.command != "demo":
        parser.print_help()
        return 2
    _enable_compilation_cache()
    start = time.perf_counter()
    written = run_demo(args.out, fast=args.fast, seed=args.seed)
    print(written["report"].read_text().split("## Test metrics", 1)[1].strip())
    print(f"\nwrote {', '.join(str(p) for p in written.values())} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
