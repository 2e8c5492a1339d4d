"""Matplotlib figures. Each function draws on ``ax`` (a new figure if ``None``) and returns the axes."""

from __future__ import annotations

import numpy as np

from bnn import _checks
from bnn.fit import Fit
from bnn.predictive import Predictions


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
                    color: str = "C0", alpha: float = 0.4, title: str | None = "Prior predictive functions"):
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
               truth=None, label: str = "predictive", color: str = "C0", show_epistemic: bool = True,
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
    ax.plot(np.arange(1, loss.size + 1), loss, lw=1, label=f"{fit.method.upper()} objective")
    if "val_loss" in fit.info:
        val = np.asarray(fit.info["val_loss"])
        ax.plot(np.linspace(loss.size / val.size, loss.size, val.size), val, "o-", ms=3, label="validation NLL")
    return _finish(ax, "step", "negative log density per point", title)


def calibration(pred: Predictions, y, ax=None, levels=None, label: str = "model", color: str = "C0",
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


def reliability(probs, labels, ax=None, bins: int = 10, label: str = "model", color: str = "C0",
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
