"""Matplotlib figures.

Each function draws on ``ax`` (a new figure if ``None``) and returns the axes, except the
multi-panel figures (:func:`trace`, :func:`rank`, :func:`compare`), which return the figure.
No function calls ``plt.show()``. Colours come from :data:`PALETTE` (Okabe & Ito's
colour-blind-safe set); colour maps are ``RdBu_r`` (a class probability, diverging at 0.5)
and ``viridis`` (entropies), both readable with the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
import re

import numpy as np

from bnn import _checks
from bnn.fit import Fit
from bnn.predictive import Predictions

__all__ = [
    "prior_functions",
    "predictive",
    "loss_curve",
    "calibration",
    "reliability",
    "uncertainty",
    "decision_map",
    "trace",
    "rank",
    "compare",
    "PALETTE",
    "CLASS_COLORS",
    "CLASS_MARKERS",
    "QUANTITIES",
    "REGRESSION_METRICS",
    "CLASSIFICATION_METRICS",
]

#: Okabe & Ito (2008) colours, distinguishable with the common colour-vision deficiencies:
#: blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow, black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Colours and markers of the classes in :func:`decision_map` (orange and sky blue stand out on
#: both ends of ``RdBu_r``); the marker shape repeats the class for grey-scale prints.
CLASS_COLORS = (PALETTE[1], PALETTE[5], PALETTE[2], PALETTE[3], PALETTE[4], PALETTE[0], PALETTE[6], PALETTE[7])
CLASS_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6, 4))
    return ax


def _finish(ax, xlabel: str, ylabel: str, title: str | None, legend_size=None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=legend_size)
    if title:
        ax.set_title(title)
    return ax


def _unit_square(ax, xlabel: str, ylabel: str, title: str | None):
    """Axes on [0, 1]² with the ideal diagonal, for calibration-type plots."""
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    return _finish(ax, xlabel, ylabel, title)


def _grid(x, pred: Predictions) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.shape[0] != pred.mean.shape[0]:
        raise ValueError(
            f"`x` must be 1-D inputs (or (n, 1)) matching the {pred.mean.shape[0]} predicted points; got shape {np.shape(x)}."
        )
    return x


def prior_functions(pred: Predictions, x, ax=None, num_functions: int = 20, output: int = 0, truth=None,
                    color: str = PALETTE[0], alpha: float = 0.4, title: str | None = "Prior predictive functions"):
    """Draw ``num_functions`` sampled functions ``f(x)`` (one output column) over 1-D inputs ``x``."""
    ax = _axes(ax)
    xs = _grid(x, pred)
    num_functions = min(_checks.positive_int(num_functions, "num_functions"), pred.num_draws)
    order = np.argsort(xs)
    f = np.asarray(pred.samples[:num_functions, :, output])
    for i in range(num_functions):
        ax.plot(xs[order], f[i, order], color=color, alpha=alpha, lw=1)
    if truth is not None:
        ax.plot(xs[order], np.asarray(truth).reshape(-1)[order], "k--", lw=1.5, label="true function")
        ax.legend(loc="best")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    if title:
        ax.set_title(title)
    return ax


def predictive(pred: Predictions, x, x_train=None, y_train=None, ax=None, level: float = 0.9, output: int = 0,
               truth=None, label: str = "predictive", color: str = PALETTE[0], show_epistemic: bool = True,
               title: str | None = None):
    """Predictive mean with its central ``level`` interval (and the epistemic part) over 1-D inputs ``x``."""
    ax = _axes(ax)
    xs = _grid(x, pred)
    order = np.argsort(xs)
    mean = np.asarray(pred.mean[:, output])[order]
    lo, hi = (np.asarray(a[:, output])[order] for a in pred.interval(level))
    ax.fill_between(xs[order], lo, hi, color=color, alpha=0.2, label=f"{label}: {level:.0%} interval")
    if show_epistemic and pred.num_draws > 1:
        eps = np.asarray(pred.epistemic_std[:, output])[order]
        ax.fill_between(xs[order], mean - 2 * eps, mean + 2 * eps, color=color, alpha=0.3, label=f"{label}: ±2 epistemic std")
    ax.plot(xs[order], mean, color=color, lw=2, label=f"{label}: mean")
    if truth is not None:
        ax.plot(xs[order], np.asarray(truth).reshape(-1)[order], "k--", lw=1.2, label="true function")
    if x_train is not None and y_train is not None:
        ax.scatter(np.asarray(x_train).reshape(-1), np.asarray(y_train).reshape(-1), s=14, color="k", zorder=3, label="data")
    return _finish(ax, "x", "y", title, legend_size="small")


def loss_curve(fit: Fit, ax=None, title: str | None = "Training objective"):
    """The per-step objective of an optimisation fit (and validation checks, if any)."""
    ax = _axes(ax)
    if "loss" not in fit.info:
        raise ValueError(f"a {fit.method!r} fit has no loss trace to plot.")
    loss = np.asarray(fit.info["loss"])
    ax.plot(np.arange(1, loss.size + 1), loss, lw=1, color=PALETTE[0], label=f"{fit.method.upper()} objective")
    if "val_loss" in fit.info:
        val = np.asarray(fit.info["val_loss"])
        ax.plot(np.linspace(loss.size / val.size, loss.size, val.size), val, "o-", ms=3, color=PALETTE[1], label="validation NLL")
    return _finish(ax, "step", "negative log density per point", title)


def calibration(pred: Predictions, y, ax=None, levels=None, label: str = "model", color: str = PALETTE[0],
                title: str | None = "Interval calibration"):
    """Observed vs nominal coverage of central predictive intervals, with the ideal diagonal.

    Points below the diagonal mean intervals that are too narrow (over-confident).
    ``levels`` defaults to those of :func:`bnn.metrics.calibration_curve`.
    """
    from bnn import metrics

    ax = _axes(ax)
    nominal, observed = metrics.calibration_curve(pred, y) if levels is None else metrics.calibration_curve(pred, y, levels)
    ax.plot(nominal, observed, "o-", color=color, ms=4, label=label)
    return _unit_square(ax, "nominal coverage of central interval", "observed coverage", title)


def reliability(probs, labels, ax=None, bins: int = 10, label: str = "model", color: str = PALETTE[0],
                title: str | None = "Reliability diagram"):
    """Accuracy vs top-label confidence per equal-width bin (bars), with the ideal diagonal and the ECE."""
    from bnn import metrics

    ax = _axes(ax)
    confidence, accuracy, counts = metrics.reliability_curve(probs, labels, bins)
    error = metrics.ece(probs, labels, bins)
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    full = counts > 0
    ax.bar(edges[:-1][full], accuracy[full], width=np.diff(edges)[full], align="edge", color=color, alpha=0.6,
           edgecolor="k", lw=0.5, label=f"{label} (ECE = {error:.3f})")
    ax.plot(confidence[full], accuracy[full], "o", color="k", ms=3)
    return _unit_square(ax, "confidence (top-label probability)", "accuracy", title)


# --- uncertainty decomposition over 1-D inputs ----------------------------------------


def _output_index(output, pred: Predictions) -> int:
    width = int(pred.mean.shape[1])
    output = _checks.positive_int(output, "output", minimum=0)
    if output >= width:
        raise ValueError(f"`output` must be an output column in [0, {width - 1}]; got {output}.")
    return output


def _legend(ax, **kwargs):
    """One legend on ``ax``, if anything on it carries a label."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, **kwargs)


def uncertainty(pred: Predictions, x, x_train=None, ax=None, output: int = 0, title: str | None = "Predictive uncertainty"):
    """Total, epistemic and aleatoric predictive standard deviations against 1-D inputs.

    Three lines over ``x`` (sorted): the total std and its two parts (total² = epistemic² +
    aleatoric²). With ``x_train``, the training inputs are marked by ticks along the bottom
    edge, so one sees the epistemic part grow away from the data.

    Args:
      pred: :class:`bnn.Predictions` of a continuous likelihood at ``x`` (arrays ``(n, out)``).
      x: the inputs of ``pred``, ``(n,)`` or ``(n, 1)``.
      x_train: training inputs ``(m,)`` or ``(m, 1)`` to mark, or ``None``.
      ax: axes to draw on (a new figure if ``None``).
      output: which output column to draw.
      title: axes title (``None`` for none).

    Returns:
      the matplotlib Axes. Its lines, in order: ``"total std"``, ``"epistemic std"``,
      ``"aleatoric std"`` (y-data ``pred.std``, ``pred.epistemic_std``, ``pred.aleatoric_std``
      of column ``output`` in the order of sorted ``x``), then ``"training inputs"``.
    """
    if not isinstance(pred, Predictions):
        raise TypeError(f"`pred` must be bnn.Predictions (from fit.predict(x)); got {type(pred).__name__}.")
    if not pred.continuous:
        raise ValueError(
            f"`pred` must come from a continuous likelihood (a standard deviation of y); got {pred.kind!r} "
            "class predictions. For classifiers use decision_map(fit, quantity='entropy' or 'mutual_information')."
        )
    output = _output_index(output, pred)
    xs = _grid(x, pred)
    ax = _axes(ax)
    order = np.argsort(xs, kind="stable")
    parts = (
        ("total std", pred.std, PALETTE[7], "-", 2.2),
        ("epistemic std", pred.epistemic_std, PALETTE[0], "--", 2.0),
        ("aleatoric std", pred.aleatoric_std, PALETTE[1], ":", 2.2),
    )
    for label, values, color, style, width in parts:
        ax.plot(xs[order], np.asarray(values[:, output])[order], linestyle=style, color=color, lw=width, label=label)
    if x_train is not None:
        xt = _checks.finite_array(x_train, "x_train", ndims=(1, 2), dtype=None)
        if xt.ndim == 2 and xt.shape[1] != 1:
            raise ValueError(f"`x_train` must be 1-D inputs (or (m, 1)); got shape {xt.shape}.")
        xt = xt.reshape(-1)
        # ticks along the bottom edge: x in data units, y in axes units
        ax.plot(xt, np.full(xt.shape, 0.025), linestyle="none", marker="|", ms=12, mew=1.2, color=PALETTE[3],
                transform=ax.get_xaxis_transform(), label="training inputs")
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("x")
    ax.set_ylabel("predictive standard deviation of y")
    _legend(ax, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


# --- decision maps of 2-D classifiers -------------------------------------------------

#: What :func:`decision_map` can draw.
QUANTITIES = ("probability", "entropy", "mutual_information")


def _classifier_data(fit: Fit, x_train, y_train) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The points to scatter: ``(x (m, 2) or None, labels (m,) or None)``."""
    if x_train is None and y_train is None:
        if fit.data is None:
            return None, None
        x_train, y_train = fit.data
    if x_train is None:
        raise ValueError("`y_train` needs `x_train` (the inputs of those labels); got only `y_train`.")
    xt = _checks.finite_array(x_train, "x_train", ndims=(2,), dtype=None)
    if xt.shape[1] != 2:
        raise ValueError(f"`x_train` must be (m, 2) inputs of the 2-feature fit; got shape {xt.shape}.")
    if y_train is None:
        return xt, None
    yt = _checks.finite_array(y_train, "y_train", ndims=(1, 2), dtype=None)
    if yt.ndim == 2 and yt.shape[1] != 1:
        raise ValueError(f"`y_train` must be class labels (m,) or (m, 1); got shape {yt.shape}.")
    yt = yt.reshape(-1)
    if yt.shape[0] != xt.shape[0]:
        raise ValueError(f"`y_train` must have one label per row of `x_train` ({xt.shape[0]}); got {yt.shape[0]}.")
    return xt, yt


def _bounds(bounds, x: np.ndarray | None, padding) -> np.ndarray:
    """``[[x0min, x0max], [x1min, x1max]]`` as a float ``(2, 2)`` array."""
    if bounds is None:
        if x is None:
            raise ValueError(
                "`bounds` is needed when there is no data to take the range from: pass "
                "bounds=((x0min, x0max), (x1min, x1max)), or `x_train`."
            )
        try:
            pad = float(padding)
        except (TypeError, ValueError):
            raise TypeError(f"`padding` must be a number >= 0; got {type(padding).__name__} {padding!r}.") from None
        if not math.isfinite(pad) or pad < 0:
            raise ValueError(f"`padding` must be a finite number >= 0; got {padding!r}.")
        box = np.stack([x.min(axis=0) - pad, x.max(axis=0) + pad], axis=1).astype(np.float64)
    else:
        try:
            box = np.asarray(bounds, dtype=np.float64)
        except (TypeError, ValueError):
            box = np.full((0,), np.nan)
        if box.shape != (2, 2) or not np.all(np.isfinite(box)):
            raise ValueError(f"`bounds` must be ((x0min, x0max), (x1min, x1max)) of finite numbers; got {bounds!r}.")
    if not np.all(box[:, 0] < box[:, 1]):
        raise ValueError(f"`bounds` must have min < max on both axes; got {box.tolist()}.")
    return box


def decision_map(fit: Fit, x_train=None, y_train=None, quantity: str = "probability", ax=None, grid_size: int = 100,
                 bounds=None, padding: float = 0.5, title: str | None = None):
    """A 2-D classifier's predictive ``quantity`` over the input plane, with the data by class.

    ``fit.predict`` is evaluated on a ``grid_size × grid_size`` grid over ``bounds`` and drawn
    with ``contourf`` and a labelled colour bar; the points are scattered on top, one colour
    and marker per class.

    Args:
      fit: a :class:`bnn.Fit` with a Bernoulli (one output) or Categorical likelihood and
        ``fit.num_features == 2``.
      x_train, y_train: points ``(m, 2)`` and labels ``(m,)`` to scatter; default the fit's
        training data (``x_train`` alone is drawn without classes).
      quantity: ``"probability"`` — P(y = 1 | x) for Bernoulli, the top-class probability
        for Categorical (with the P = 0.5 boundary for Bernoulli); ``"entropy"`` — predictive
        entropy in nats (total uncertainty, scale 0 to its maximum log K); ``"mutual_information"``
        — its epistemic part in nats (0 everywhere for a point fit; scale 0 to the largest value).
      ax: axes to draw on (a new figure if ``None``); the colour bar is taken from its space.
      grid_size: grid points per axis (>= 2).
      bounds: ``((x0min, x0max), (x1min, x1max))``; default the data range padded by ``padding``.
      padding: margin added on each side of the data range (input units), where the fit
        must extrapolate.
      title: axes title; default names the quantity and the method.

    Returns:
      the matplotlib Axes. Its first collection is the filled contour set (with ``.colorbar``).
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"`fit` must be a bnn.Fit; got {type(fit).__name__}.")
    likelihood = fit.model.likelihood
    if likelihood.kind not in ("binary", "categorical"):
        raise ValueError(
            f"`fit` must be a classifier (Bernoulli or Categorical likelihood); got a {type(likelihood).__name__} "
            f"likelihood ({likelihood.kind!r} targets)."
        )
    if fit.num_features != 2:
        raise ValueError(f"`fit` must have 2 input features for a map over the plane; got {fit.num_features}.")
    out = fit.model.spec(fit.num_features).out
    if likelihood.kind == "binary" and out != 1:
        raise ValueError(f"`fit` must have one Bernoulli output to draw; got {out} output columns.")
    quantity = _checks.one_of(quantity, "quantity", QUANTITIES)
    grid_size = _checks.positive_int(grid_size, "grid_size", minimum=2)
    xt, yt = _classifier_data(fit, x_train, y_train)
    box = _bounds(bounds, xt, padding)

    g0, g1 = np.meshgrid(np.linspace(box[0, 0], box[0, 1], grid_size), np.linspace(box[1, 0], box[1, 1], grid_size))
    pred = fit.predict(np.stack([g0.ravel(), g1.ravel()], axis=1))
    classes = 2 if likelihood.kind == "binary" else out
    max_entropy = math.log(classes)
    if quantity == "probability":
        probs = np.asarray(pred.probs)
        if likelihood.kind == "binary":
            z, label, cmap, top, bottom = probs[:, 0], "P(y = 1 | x)", "RdBu_r", 1.0, 0.0
        else:
            z, label, cmap, top, bottom = probs.max(axis=1), "top-class probability", "viridis", 1.0, 1.0 / classes
        name = "Predictive probability"
    elif quantity == "entropy":
        z, label, cmap, top, bottom = np.asarray(pred.entropy), "predictive entropy (nats)", "viridis", max_entropy, 0.0
        name = "Predictive entropy (total uncertainty)"
    else:
        z = np.asarray(pred.mutual_information)
        largest = float(np.max(z))
        top = largest if largest > 0 else max_entropy
        label, cmap, bottom = "mutual information (nats)", "viridis", 0.0
        name = "Mutual information (epistemic uncertainty)"
    levels = np.linspace(bottom, top, 11)
    # rounding can put a value a hair outside [bottom, top]; keep it in the outer band
    z = np.clip(z, bottom, top).reshape(grid_size, grid_size)

    ax = _axes(ax)
    filled = ax.contourf(g0, g1, z, levels=levels, cmap=cmap, alpha=0.85)
    ax.figure.colorbar(filled, ax=ax, label=label, format="%.3g")  # no offset text, even for tiny mutual information
    if quantity == "probability" and likelihood.kind == "binary" and z.min() < 0.5 < z.max():
        ax.contour(g0, g1, z, levels=[0.5], colors="k", linewidths=1.5, linestyles="--")
        ax.plot([], [], "k--", lw=1.5, label="P(y = 1) = 0.5")
    if xt is not None:
        if yt is None:
            ax.scatter(xt[:, 0], xt[:, 1], s=18, color=PALETTE[7], marker="o", label="data", zorder=3)
        else:
            for i, c in enumerate(np.unique(yt)):
                k = i % len(CLASS_COLORS)
                mask = yt == c
                shown = int(c) if float(c).is_integer() else c
                ax.scatter(xt[mask, 0], xt[mask, 1], s=20, color=CLASS_COLORS[k], marker=CLASS_MARKERS[k],
                           edgecolors="k", linewidths=0.5, label=f"y = {shown}", zorder=3)
    ax.set_xlim(*box[0])
    ax.set_ylim(*box[1])
    ax.set_xlabel("x[:, 0]")
    ax.set_ylabel("x[:, 1]")
    _legend(ax, loc="upper right", fontsize="small", framealpha=0.9)
    ax.set_title(f"{name} ({fit.method.upper()})" if title is None else title)
    return ax


# --- MCMC diagnostics through ArviZ ---------------------------------------------------


def _natural_key(path: str):
    """``"Dense_10.bias"`` after ``"Dense_2.bias"``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def default_var_names(fit: Fit) -> list[str]:
    """The sites :func:`trace` and :func:`rank` draw by default, a readable handful.

    The likelihood's own latent sites (``noise_scale`` when the noise is learned), then the
    output layer's bias: the last parameter path (natural order, so ``Dense_10`` follows
    ``Dense_2``) ending in ``"bias"``, or the last path if none does. Hidden-layer weights are
    left out: there are hundreds, and their traces mix slowly between copies of the same
    function (unit permutations and sign flips) even when the predictions have converged;
    :func:`bnn.diagnose` judges convergence in function space instead.
    """
    paths = sorted(fit.model.spec(fit.num_features).paths, key=_natural_key)
    biases = [p for p in paths if p.endswith("bias")]
    return list(fit.likelihood_params) + [biases[-1] if biases else paths[-1]]


def _var_names(var_names, available: list[str], filter_vars) -> list[str]:
    names = [var_names] if isinstance(var_names, str) else var_names
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"`var_names` must be a site name or a non-empty list of them; got {var_names!r}.")
    if filter_vars is None:  # with "like" / "regex" ArviZ matches the names itself
        unknown = [n for n in names if n.removeprefix("~") not in available]
        if unknown:
            raise ValueError(f"`var_names` has unknown site(s) {unknown}; the posterior has {available}.")
    return list(names)


def _arviz_figure(plot_name: str, fit: Fit, var_names, kwargs: dict, needs_chains: bool):
    if not isinstance(fit, Fit):
        raise TypeError(f"`fit` must be a bnn.Fit; got {type(fit).__name__}.")
    per_chain = fit.num_draws // fit.num_chains
    if per_chain < 2:
        what = " (a point estimate)" if fit.is_point else ""
        raise ValueError(
            f"`fit` must have several draws per chain for a {plot_name} plot; this {fit.method!r} fit has "
            f"{per_chain} draw per chain{what}. Use a sampled fit (method='nuts' or 'mclmc')."
        )
    if needs_chains and fit.num_chains < 2:
        raise ValueError(
            f"`fit` must have at least 2 chains for a {plot_name} plot, which compares the chains; this "
            f"{fit.method!r} fit has {fit.num_chains} (SVI, Laplace and ensemble draws count as one chain). "
            "Use method='nuts' or 'mclmc' with num_chains >= 2."
        )
    backend = kwargs.pop("backend", "matplotlib")
    if backend != "matplotlib":
        raise ValueError(f"`backend` must be 'matplotlib' (these functions return a matplotlib Figure); got {backend!r}.")
    # the posterior's variables are the fit's sites (checked before the export, which predicts)
    names = default_var_names(fit) if var_names is None else _var_names(var_names, list(fit.draws), kwargs.get("filter_vars"))
    import arviz_plots

    tree = fit.to_arviz()
    # defaults of this package's figures; each can be overridden through kwargs
    kwargs.setdefault("color", list(PALETTE))  # one colour per chain
    kwargs["figure_kwargs"] = {"layout": "constrained", **kwargs.get("figure_kwargs", {})}
    collection = getattr(arviz_plots, f"plot_{plot_name}")(tree, var_names=names, backend="matplotlib", **kwargs)
    return collection.get_viz("figure")


def trace(fit: Fit, var_names=None, **kwargs):
    """Trace plot (draw index against value, one line per chain) of posterior sites.

    A thin wrapper over :func:`arviz_plots.plot_trace` on ``fit.to_arviz()``'s posterior
    group, with the matplotlib backend; NUTS divergences are marked along the bottom.

    Args:
      fit: a :class:`bnn.Fit` with at least 2 draws per chain. NUTS and MCLMC fits have
        chains; SVI, Laplace and ensemble draws are independent and drawn as one chain
        (a flat band without trends is what such a trace should look like). Point fits
        (MLE, MAP, a delta guide) have one draw and raise ``ValueError``.
      var_names: a site name or list of them (``Dense_1.bias``, ``noise_scale``; ``~name``
        excludes). Default :func:`default_var_names`: the likelihood's latent sites and the
        output layer's bias. Each element of an array-valued site gets its own panel.
      **kwargs: passed to ``arviz_plots.plot_trace`` (``coords``, ``filter_vars``,
        ``visuals``, ``figure_kwargs``, ...).

    Returns:
      the matplotlib Figure (one panel per scalar element of the chosen sites).
    """
    return _arviz_figure("trace", fit, var_names, kwargs, needs_chains=False)


def rank(fit: Fit, var_names=None, **kwargs):
    """Rank plot (fractional-rank Δ-ECDF per chain) of posterior sites.

    A thin wrapper over :func:`arviz_plots.plot_rank` on ``fit.to_arviz()``'s posterior
    group, with the matplotlib backend. Chains that sample the same distribution have
    uniform ranks: their curves stay inside the band around 0.

    Args:
      fit: a :class:`bnn.Fit` with at least 2 chains of at least 2 draws: NUTS or MCLMC
        with ``num_chains >= 2``. SVI, Laplace and ensemble draws count as one chain, with
        nothing to compare it to, and raise ``ValueError``, as do point fits.
      var_names: as in :func:`trace`; default :func:`default_var_names`.
      **kwargs: passed to ``arviz_plots.plot_rank`` (``coords``, ``method``, ``visuals``, ...).

    Returns:
      the matplotlib Figure (one panel per scalar element of the chosen sites).
    """
    return _arviz_figure("rank", fit, var_names, kwargs, needs_chains=True)


# --- metrics across fits --------------------------------------------------------------

#: Default panels of :func:`compare`, in order, for continuous and class targets.
REGRESSION_METRICS = ("nll", "crps", "coverage_90", "elpd_loo")
CLASSIFICATION_METRICS = ("nll", "accuracy", "brier", "ece")
_LOWER_IS_BETTER = {"rmse", "mae", "nll", "crps", "brier", "ece"}
_HIGHER_IS_BETTER = {"accuracy", "elpd_loo"}


def _nominal(metric: str) -> float | None:
    """The nominal level of a ``coverage_<percent>`` column (``coverage_90`` -> 0.9)."""
    match = re.fullmatch(r"coverage_(\d+)", metric)
    return int(match.group(1)) / 100 if match else None


def _default_metrics(table) -> list[str]:
    if "accuracy" in table.columns:
        chosen = [m for m in CLASSIFICATION_METRICS if m in table.columns]
    else:
        chosen = [m for m in REGRESSION_METRICS if m in table.columns]
    if "elpd_loo" in chosen and table["elpd_loo"].isna().all():  # point fits only, or loo=False
        chosen.remove("elpd_loo")
    if not chosen:
        raise ValueError(
            "`table` must have some of the columns "
            f"{sorted(set(REGRESSION_METRICS) | set(CLASSIFICATION_METRICS))} (a bnn.compare(...) table); "
            f"got columns {list(table.columns)}."
        )
    return chosen


def compare(table, metrics=None, ax=None, title: str | None = None):
    """Bar charts of metrics across fits, one small panel per metric.

    Args:
      table: the pandas DataFrame of :func:`bnn.compare` (one row per fit, indexed by name).
      metrics: a column name or list of them. Default: ``nll``, ``crps``, ``coverage_90`` and
        ``elpd_loo`` (unless all NaN) for continuous targets; ``nll``, ``accuracy``,
        ``brier``, ``ece`` for classifiers (a table with an ``accuracy`` column); each only
        where the table has it.
      ax: a sequence of Axes, one per metric, to draw on; default a new figure with one row.
      title: figure title (``suptitle``), or ``None``.

    Each panel is titled with its metric and ``(lower is better)``, ``(higher is better)`` or
    ``(nominal 0.90)``; coverage panels have a dashed line at the nominal level and the
    ``elpd_loo`` panel error bars of ``elpd_loo_se``. Fits share one colour across panels and
    are named on the x axis (so there is no legend). A NaN (e.g. ``elpd_loo`` of a point fit)
    leaves its bar empty and is marked "n/a".

    Returns:
      the matplotlib Figure; the panels are its axes, in the order of ``metrics`` (on a new figure).
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`table` must be the pandas DataFrame returned by bnn.compare(...); got {type(table).__name__}.")
    if table.empty:
        raise ValueError(f"`table` must have at least one row (fit) and column; got shape {table.shape}.")
    if metrics is None:
        metrics = _default_metrics(table)
    names = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(m, str) for m in names):
        raise TypeError(f"`metrics` must be a column name or a non-empty list of them; got {metrics!r}.")
    missing = [m for m in names if m not in table.columns]
    if missing:
        raise ValueError(f"`metrics` {missing} not in `table`; its columns are {list(table.columns)}.")
    not_numeric = [m for m in names if not pd.api.types.is_numeric_dtype(table[m])]
    if not_numeric:
        raise TypeError(f"`metrics` must name numeric columns of `table`; {not_numeric} are not.")

    if ax is None:
        import matplotlib.pyplot as plt

        width = max(3.0 * len(names), 4.0) + 0.25 * len(table) * len(names) / 2
        fig, grid = plt.subplots(1, len(names), figsize=(width, 3.4), squeeze=False, layout="constrained")
        axes = list(grid[0])
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(names):
            raise ValueError(f"`ax` must hold one Axes per metric ({len(names)}); got {len(axes)}.")
        fig = axes[0].figure

    fits = [str(i) for i in table.index]
    positions = np.arange(len(fits))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(fits))]
    for panel, metric in zip(axes, names):
        values = table[metric].to_numpy(dtype=np.float64)
        yerr = None
        if metric == "elpd_loo" and "elpd_loo_se" in table.columns:
            yerr = table["elpd_loo_se"].to_numpy(dtype=np.float64)
        panel.bar(positions, values, color=colors, edgecolor="k", linewidth=0.5, yerr=yerr, capsize=4)
        for position, value in zip(positions, values):
            if np.isnan(value):
                panel.annotate("n/a", (position, 0.0), ha="center", va="bottom", fontsize="small")
        nominal = _nominal(metric)
        if nominal is not None:
            panel.axhline(nominal, color="k", linestyle="--", lw=1)
            note = f"(nominal {nominal:.2f})"
        elif metric in _LOWER_IS_BETTER:
            note = "(lower is better)"
        elif metric in _HIGHER_IS_BETTER:
            note = "(higher is better)"
        else:
            note = ""
        panel.set_title(f"{metric} {note}".strip(), fontsize="medium")
        panel.set_xticks(positions, fits, rotation=30 if len(fits) > 3 else 0)
        panel.set_xlim(-0.6, len(fits) - 0.4)  # a NaN bar keeps its slot
        panel.set_xlabel("fit")
        panel.set_ylabel(metric)
    if title:
        fig.suptitle(title)
    return fig
