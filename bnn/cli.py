"""The ``bnn`` command: ``bnn demo``, ``bnn fit`` (a user's CSV table) and ``bnn predict``.

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
from importlib import resources
from pathlib import Path


def _process_settings() -> None:
    """The CLI's own process settings (the library leaves them to its user): XLA compilations
    persisted under the user's cache folder (cuts start-up), and glibc's heap kept from growing
    in long compiled loops (:func:`bnn.limit_heap_growth`)."""
    import jax

    from bnn._heap import limit_heap_growth

    limit_heap_growth()

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
            "NUTS": ("nuts", {"num_chains": 2, "num_warmup": 150, "num_samples": 200, "max_tree_depth": 6}),
        }
    return {
        "MLE": ("mle", {"num_steps": 5000}),
        "MAP": ("map", {"num_steps": 5000}),
        "Laplace": ("laplace", {"num_steps": 5000, "num_samples": 1000}),
        "Ensemble": ("ensemble", {"num_members": 10}),  # default steps: see docs/guide.md on convergence
        "SVI": ("svi", {"guide": "normal", "num_steps": 20000, "num_samples": 1000}),
        "NUTS": ("nuts", {"num_chains": 4}),
    }


#: which method to use when, from the real-data study (benchmarks/UCI.md): ``bnn/recommendation.md``, the
#: one text that the demo report quotes and the documentation site includes (docs/methods.md)
RECOMMENDATION = resources.files("bnn").joinpath("recommendation.md").read_text(encoding="utf-8") + """
On this toy the network is small and the data few, so every method runs in seconds to a
minute; compare their bands outside the data above.
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


LIKELIHOODS = ("auto", "gaussian", "heteroscedastic", "bernoulli", "categorical")
FIT_METHODS = ("auto", "map", "ensemble", "laplace", "svi", "nuts", "mclmc", "sgmcmc")
#: `bnn fit --method auto`: MCLMC chains up to this many rows, a deep ensemble above (see RECOMMENDATION)
AUTO_SAMPLER_ROWS = 2000


def auto_method(rows: int) -> str:
    """The method `bnn fit` uses by default for a table of ``rows`` rows."""
    return "mclmc" if rows <= AUTO_SAMPLER_ROWS else "ensemble"


def auto_likelihood(rows: int) -> str:
    """The likelihood `bnn fit --likelihood auto` (a continuous target) uses for a table of ``rows`` rows.

    Up to :data:`AUTO_SAMPLER_ROWS` rows one learned noise scale (``gaussian``); above, a noise scale
    that the network predicts for every row (``heteroscedastic``, a second output), as deep ensembles
    do: on the four UCI tables of 7 000 to 41 000 rows the ensemble scored higher with it on kin8nm,
    power and protein, lower on naval (still above every published result), on the same five splits
    (`benchmarks/UCI.md`, the *Ensemble, heteroscedastic noise* column). Classification targets name
    their likelihood.
    """
    return "heteroscedastic" if rows > AUTO_SAMPLER_ROWS else "gaussian"


#: `bnn fit --prior`: how the weights' prior scale is set
PRIORS = ("auto", "hierarchical", "tuned", "fixed")


#: `bnn fit --prior auto` samples the prior scales with these methods (on small tables)
HIERARCHICAL_METHODS = ("mclmc", "nuts", "sgmcmc")


def auto_prior(rows: int, method: str) -> str:
    """The prior `bnn fit --prior auto` uses for a table of ``rows`` rows fitted by ``method``.

    On small tables the prior decides how far a 50-unit network may follow the data. With a sampler
    (MCLMC, NUTS) a scale per weight array is sampled with the weights (``hierarchical``, HalfNormal of
    --prior-scale), the chains starting from MAP fits whose noise scale is held at the evidence's
    choice. In cross-validation on 14 tables of 20 to 442 rows (`benchmarks/TINY.md`) it never fell
    more than 0.5 nats per row below least squares, and on the UCI splits of 277 to 1439 rows
    (`benchmarks/UCI.md`) it scores higher than evidence-tuned scales with intervals closer to their
    level (yacht, energy). A Normal(0, 1) prior with a learned noise fell far below least squares on
    most of the tables. Other methods cannot sample a scale: theirs is chosen by the evidence, with the
    noise scale (``tuned``). On large tables the data decide, and a tuned scale scored lower (the
    *Ensemble, tuned prior* column of `benchmarks/UCI.md` on kin8nm and power): ``fixed``, the
    --prior-scale as given.
    """
    if rows > AUTO_SAMPLER_ROWS:
        return "fixed"
    return "hierarchical" if method in HIERARCHICAL_METHODS else "tuned"


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated layer widths such as 50,50; got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive; got {text!r}")
    return widths


def _output_folder(out: Path, columns_file: str) -> None:
    """Create ``out`` (or accept an earlier ``bnn fit`` folder), or raise a one-line error."""
    from bnn.tables import TableError

    if out.exists() and not out.is_dir():
        raise TableError(f"--out {str(out)!r} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / columns_file).is_file():
        raise TableError(f"--out {str(out)!r} exists and holds other files; give a new or empty folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bnn-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TableError(f"--out {str(out)!r} cannot be written: {err.strerror or err}.") from None


def model_for(likelihood: str, hidden: tuple[int, ...], activation: str, prior_scale: float, prior: str, y):
    """The network `bnn fit` builds: an MLP of ``hidden`` widths and the outputs ``likelihood`` needs
    (categorical: one per class of the integer labels ``y``), Normal priors of ``prior_scale`` (a
    HalfNormal hyperprior of that scale for ``prior="hierarchical"``)."""
    import numpy as np

    import bnn

    outputs = {"gaussian": 1, "heteroscedastic": 2, "bernoulli": 1}.get(likelihood) or int(np.max(y)) + 1
    like = {"gaussian": bnn.Gaussian, "heteroscedastic": bnn.Heteroscedastic, "bernoulli": bnn.Bernoulli,
            "categorical": bnn.Categorical}[likelihood]()
    scale = bnn.HalfNormal(prior_scale) if prior == "hierarchical" else prior_scale
    return bnn.BNN(bnn.MLP(hidden + (outputs,), activation=activation), prior=bnn.Normal(scale), likelihood=like)


def _prior_line(fit, prior: str, auto: bool) -> str:
    import numpy as np

    how = " (--prior auto)" if auto else ""
    if prior == "fixed":
        return f"Prior scale as given{how}."
    if prior == "hierarchical":
        scales = {k: float(np.mean(np.asarray(v))) for k, v in fit.draws.items() if k.endswith(".scale")}
        listed = ", ".join(f"{k} {v:.3g}" for k, v in scales.items())
        return f"Prior scales sampled with the weights{how}, posterior means (standardised units): {listed}."
    noise = f", noise scale {fit.info['noise_scale']:.3g}" if "noise_scale" in fit.info else ""
    return (f"Prior scale {fit.info['prior_scale']:.3g}{noise} (standardised units) chosen by the evidence{how}, "
            f"{fit.info['tune_iterations']} round(s).")


def _column_list(text: str | None) -> list[str]:
    """``--features`` / ``--drop``: comma-separated column names, blanks left out."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def run_fit(args) -> Path:
    """``bnn fit``: fit the table, save the fit, write a short report. Returns the report's path."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")

    from bnn import io, tables
    from bnn.compare import cross_validate

    features = _column_list(args.features) if args.features else None
    drop = _column_list(args.drop)
    if drop and features:
        raise tables.TableError("give either `--features` (the inputs) or `--drop` (columns left out), not both.")
    if args.target in drop:
        raise tables.TableError(f"the target {args.target!r} is also listed in `--drop`.")
    classes_ok = args.likelihood in ("bernoulli", "categorical")
    frame = tables.read_table(args.data, None if features is None else features + [args.target],
                              labels=args.target if classes_ok else None, drop_missing=args.drop_missing, exclude=drop)
    if args.target not in frame.columns:
        raise tables.TableError(f"{str(args.data)!r} has no column {args.target!r}; its columns are "
                                f"{', '.join(repr(c) for c in frame.columns)}.")
    x, y, features, classes = tables.training_arrays(frame, args.target, features, args.likelihood, args.data)
    out = Path(args.out)
    _output_folder(out, tables.COLUMNS_FILE)
    method = auto_method(len(x)) if args.method == "auto" else args.method
    prior = auto_prior(len(x), method) if args.prior == "auto" else args.prior
    likelihood = auto_likelihood(len(x)) if args.likelihood == "auto" else args.likelihood
    model = model_for(likelihood, args.hidden, args.activation, args.prior_scale, prior, y)
    options = {"normalize": True, "tune_prior": prior == "tuned"}
    if args.cv and not 2 <= args.cv <= len(x):
        raise ValueError(f"--cv must be 0 (off) or between 2 and the number of rows ({len(x)}); got {args.cv}.")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", UserWarning)
        fit = model.fit(x, y, method=method, seed=args.seed, progress_bar=True, **options)
        heldout = (cross_validate(model, x, y, method=method, folds=args.cv, seed=args.seed, **options)
                   if args.cv else None)
    with io.replacing(out) as folder:  # an interrupted run leaves an earlier fit in `out` as it was
        _write_fit_folder(folder, fit, model, args, features, x, y, heldout, method, prior, likelihood, seen,
                          classes, frame.attrs["dropped_rows"])
    return out / "report.md"


def _write_fit_folder(folder: Path, fit, model, args, features, x, y, heldout, method, prior, likelihood,
                      seen, classes=None, dropped: int = 0) -> None:
    """The files of ``bnn fit``'s output: the saved fit, its columns, the report and its figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    from bnn import io, tables
    from bnn.compare import MIN_HELDOUT_COVERAGE, heldout_metrics
    from bnn.diagnostics import CHAIN_METHODS, diagnose

    out = Path(args.out)
    io.write(fit, folder)
    tables.Columns(tuple(features), args.target, likelihood, classes).save(folder)

    pred = fit.predict(x)
    lines = [f"# bnn fit: {Path(args.data).name}", "",
             f"Target {args.target!r} from {len(features)} feature(s): {', '.join(features)}; {len(x)} rows"
             + (f" ({dropped} row(s) with empty cells dropped, --drop-missing)" if dropped else "") + "."
             + (f" Classes: {', '.join(classes)} (coded 0 to {len(classes) - 1})." if classes else ""),
             f"Model: MLP {args.hidden + (model.spec(x.shape[1]).out,)} {args.activation}, prior {model.prior!r}, "
             f"{likelihood} likelihood{' (auto)' if args.likelihood == 'auto' else ''}, inputs and targets "
             "standardised (normalize=True).",
             f"Method: {method}{' (auto: ' + str(len(x)) + ' rows)' if args.method == 'auto' else ''}, seed {args.seed}, "
             f"{fit.num_draws} draw(s), {fit.info['wall_time']:.1f} s.",
             _prior_line(fit, prior, args.prior == "auto"), "",
             "## Metrics", "",
             "Training rows show how well the fit follows the data it saw; held-out rows (each predicted by a fit "
             "to the others) show what to expect on new rows." if heldout else
             "Training rows only (`--cv 0`): they show how well the fit follows the data it saw, not what to expect "
             "on new rows.", "",
             "| metric | training rows | held-out rows" + (f" ({heldout['folds']}-fold cross-validation) |" if heldout else " |"),
             "|---|---|---|"]
    train = heldout_metrics(pred, y, 0.9)
    names = {"log_likelihood": "log-likelihood (mean per row)", "rmse": "rmse",
             "coverage": "coverage of the 90 % interval", "accuracy": "accuracy"}
    lines += [f"| {names[k]} | {v:.4g} | " + (f"{heldout[k]:.4g} |" if heldout else "not computed |") for k, v in train.items()]
    if heldout and pred.continuous and heldout["coverage"] < MIN_HELDOUT_COVERAGE:
        warning = (f"held-out coverage of the 90 % interval is {heldout['coverage']:.2f} (below "
                   f"{MIN_HELDOUT_COVERAGE}): the intervals are over-confident on new rows. Try "
                   "--method mclmc with --prior hierarchical, --prior tuned, or a smaller network (--hidden).")
        lines += ["", f"**Warning: {warning}**"]
        print(f"bnn fit: warning: {warning}", file=sys.stderr)
    if pred.continuous:
        lo, hi = pred.interval(0.9)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.errorbar(y[:, 0], np.asarray(pred.mean)[:, 0],
                    yerr=np.abs(np.stack([np.asarray(pred.mean - lo)[:, 0], np.asarray(hi - pred.mean)[:, 0]])),
                    fmt="o", ms=3, alpha=0.6, color="#0072B2", label="predictive mean, 90 % interval")
        edges = [float(np.min(y)), float(np.max(y))]
        ax.plot(edges, edges, color="#555555", lw=1, label="observed = predicted")
        ax.set_xlabel(f"observed {args.target}")
        ax.set_ylabel(f"predicted {args.target}")
        ax.legend(frameon=False)
        fig.savefig(folder / "fit.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        lines += ["", "![observed vs predicted on the training rows](fit.png)"]
    if fit.method in CHAIN_METHODS:  # the chains' own check: agreement in function space, divergences, energy error
        lines += ["", "## Convergence (function space, at the training rows)", "", diagnose(fit, x).verdict]
    if seen:
        lines += ["", "## Warnings", ""] + [f"- {w.message}" for w in seen]
    lines += ["", f"Predict new rows with `bnn predict {out} NEW.csv --out predictions.csv`."]
    (folder / "report.md").write_text("\n".join(lines) + "\n")


def run_predict(args) -> str:
    """``bnn predict``: predictions of a saved fit for a table's rows, as CSV text (written to ``--out`` if given)."""
    import numpy as np
    import pandas as pd

    import bnn
    from bnn import _checks, tables

    folder = Path(args.fit_dir)
    if not folder.is_dir():
        raise tables.TableError(f"{str(folder)!r} is not a folder written by `bnn fit`.")
    columns = tables.Columns.load(folder)
    try:
        fit = bnn.load(folder)
    except (OSError, ValueError, KeyError) as err:
        raise tables.TableError(f"{str(folder)!r} does not hold a readable saved fit: {err}".splitlines()[0]) from None
    level = _checks.level(args.level, "--level")
    frame = tables.read_table(args.data, list(columns.features))
    pred = fit.predict(frame.to_numpy(np.float32))
    names = columns.classes
    out = {}
    if pred.continuous:
        lo, hi = pred.interval(level)
        for name, value in (("mean", pred.mean), ("std", pred.std), ("epistemic_std", pred.epistemic_std),
                            ("aleatoric_std", pred.aleatoric_std), (f"lower_{level:g}", lo), (f"upper_{level:g}", hi)):
            out[name] = np.asarray(value)[:, 0]
    else:
        probs = np.asarray(pred.probs)
        if pred.kind == "binary":  # one column: P(y = 1), the second class
            out[f"prob_{names[1] if names else 1}"] = probs[:, 0]
            predicted = (probs[:, 0] > 0.5).astype(int)
        else:
            for k in range(probs.shape[1]):
                out[f"prob_{names[k] if names else k}"] = probs[:, k]
            predicted = probs.argmax(axis=1)
        out["predicted"] = np.asarray(names)[predicted] if names else predicted
        out["entropy"] = np.asarray(pred.entropy).reshape(len(frame))
        out["mutual_information"] = np.asarray(pred.mutual_information).reshape(len(frame))
    text = pd.DataFrame(out).to_csv(index=False)
    if args.out:
        target = Path(args.out)
        try:
            target.write_text(text)
        except OSError as err:
            raise tables.TableError(f"--out {str(target)!r} cannot be written: {err.strerror or err}.") from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bnn", description="Bayesian neural networks on JAX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the sine-toy story and write a report with figures")
    demo.add_argument("--out", type=Path, default=Path("bnn-demo"), help="output folder (default: ./bnn-demo)")
    demo.add_argument("--fast", action="store_true", help="small settings (seconds, for smoke tests)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit = sub.add_parser("fit", help="fit a network to a CSV table (a header row, numeric columns)")
    fit.add_argument("data", type=Path, help="the CSV file")
    fit.add_argument("--target", required=True, help="the column to predict")
    fit.add_argument("--features", default=None, help="comma-separated input columns (default: every other column)")
    fit.add_argument("--drop", default=None, help="comma-separated columns to leave out of the inputs (e.g. an identifier)")
    fit.add_argument("--drop-missing", action="store_true",
                     help="drop rows with an empty cell in the columns used (default: refuse them); the report counts them")
    fit.add_argument("--method", choices=FIT_METHODS, default="auto",
                     help=f"inference method (default auto: mclmc up to {AUTO_SAMPLER_ROWS} rows, ensemble above)")
    fit.add_argument("--prior", choices=PRIORS, default="auto",
                     help="the weights' prior scale: hierarchical (sampled, HalfNormal(--prior-scale); samplers only), "
                          "tuned (by the evidence, with the noise scale), fixed (--prior-scale); default auto: "
                          f"up to {AUTO_SAMPLER_ROWS} rows hierarchical with mclmc or nuts, tuned with the "
                          "other methods; fixed above")
    fit.add_argument("--cv", type=int, default=5,
                     help="folds of the cross-validation behind the held-out metrics (default 5; 0: off)")
    fit.add_argument("--likelihood", choices=LIKELIHOODS, default="auto",
                     help="gaussian (one learned noise scale), heteroscedastic (a noise scale per row, a second "
                          "output), bernoulli (0/1) or categorical (0..K-1); default auto: gaussian up to "
                          f"{AUTO_SAMPLER_ROWS} rows, heteroscedastic above")
    fit.add_argument("--hidden", type=_widths, default=(50,), help="hidden layer widths (default: 50)")
    fit.add_argument("--activation", default="relu", help="activation of the hidden layers (default: relu)")
    fit.add_argument("--prior-scale", type=float, default=1.0,
                     help="std of the Normal prior on every weight (default 1; the hyperprior's scale with --prior "
                          "hierarchical, the starting point of --prior tuned)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--out", required=True, type=Path, help="folder for the saved fit and its report")
    predict = sub.add_parser("predict", help="predict a CSV table's rows with a fit saved by `bnn fit`")
    predict.add_argument("fit_dir", type=Path, help="the folder written by `bnn fit`")
    predict.add_argument("data", type=Path, help="the CSV file (it must hold the fit's feature columns)")
    predict.add_argument("--out", default=None, help="output CSV (default: print to the terminal)")
    predict.add_argument("--level", type=float, default=0.9, help="central interval level (default 0.9)")
    args = parser.parse_args(argv)
    if args.version:
        from bnn._version import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    _process_settings()
    if args.command in ("fit", "predict"):
        from bnn.tables import TableError

        try:
            if args.command == "fit":
                report = run_fit(args)
                print(f"wrote the fit, {report} and its figures to {args.out}")
            else:
                text = run_predict(args)
                print(f"wrote {args.out}" if args.out else text, end="\n" if args.out else "")
        except (TableError, ValueError) as err:
            print(f"bnn {args.command}: error: {err}", file=sys.stderr)
            return 1
        return 0
    start = time.perf_counter()
    written = run_demo(args.out, fast=args.fast, seed=args.seed)
    print(written["report"].read_text().split("## Test metrics", 1)[1].strip())
    print(f"\nwrote {', '.join(str(p) for p in written.values())} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
