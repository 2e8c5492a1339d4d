"""One table over any set of fits: the package's answer to "MAP vs posterior"."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from bnn import _checks, metrics
from bnn.fit import Fit

LEVELS = (0.5, 0.9, 0.95)
#: Pareto k above which PSIS-LOO is unreliable (Vehtari et al., 2024: 0.7 for large S).
PARETO_K_LIMIT = 0.7
#: Fewest posterior draws for which PSIS-LOO is attempted.
MIN_LOO_DRAWS = 100


def _elpd_loo(name: str, fit: Fit) -> dict:
    """PSIS-LOO on the training data; NaN for point fits, where it is not defined."""
    if fit.is_point or fit.data is None:
        return {"elpd_loo": np.nan, "elpd_loo_se": np.nan, "pareto_k_max": np.nan}
    import arviz

    if fit.num_draws < MIN_LOO_DRAWS:
        warnings.warn(
            f"{name}: PSIS-LOO is not available with {fit.num_draws} draws (it needs at least {MIN_LOO_DRAWS} to fit "
            "the tail of the importance weights); elpd_loo is NaN.",
            UserWarning,
            stacklevel=3,
        )
        return {"elpd_loo": np.nan, "elpd_loo_se": np.nan, "pareto_k_max": np.nan}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # we report Pareto k ourselves
            loo = arviz.loo(fit.to_arviz())
    except ValueError as err:  # e.g. too few draws to fit the Pareto tail
        warnings.warn(f"{name}: PSIS-LOO is not available ({err}); elpd_loo is NaN.", UserWarning, stacklevel=3)
        return {"elpd_loo": np.nan, "elpd_loo_se": np.nan, "pareto_k_max": np.nan}
    k = np.asarray(loo.pareto_k)
    bad = int(np.sum(~(k <= PARETO_K_LIMIT)))  # NaN counts as unreliable
    if bad:
        warnings.warn(
            f"{name}: {bad} of {k.size} training points have Pareto k > {PARETO_K_LIMIT}; its elpd_loo is unreliable "
            "(influential points, or too few / too approximate posterior draws).",
            UserWarning,
            stacklevel=3,
        )
    return {"elpd_loo": float(loo.elpd), "elpd_loo_se": float(loo.se), "pareto_k_max": float(np.max(k))}


def _row(fit: Fit, x, y, levels, y_err) -> dict:
    pred = fit.predict(x, y_err=None if fit.y_err is None else y_err)
    if pred.continuous:
        row = {
            "rmse": float(np.mean(metrics.rmse(pred.mean, y))),
            "mae": float(np.mean(metrics.mae(pred.mean, y))),
            "nll": float(np.mean(metrics.nll(pred, y))),
            "crps": float(np.mean(metrics.crps_predictive(pred, y))),
        }
        for level in levels:
            pct = round(100 * level)
            row[f"coverage_{pct}"] = float(np.mean(metrics.coverage(pred, y, level)))
            row[f"width_{pct}"] = float(np.mean(metrics.interval_width(pred, level)))
    else:
        row = {
            "accuracy": float(np.mean(metrics.accuracy(pred, y))),
            "nll": float(np.mean(metrics.nll(pred, y))),
            "brier": float(np.mean(metrics.brier(pred, y))),
            "ece": float(metrics.ece(pred.probs, y)),
        }
    return row


def compare(fits: Mapping[str, Fit], x_test, y_test, levels=LEVELS, loo: bool = True, y_err=None):
    """Evaluate fits on held-out data, side by side.

    Args:
      fits: name -> :class:`bnn.Fit` (e.g. ``{"MAP": map_fit, "NUTS": nuts_fit}``).
      x_test, y_test: held-out data, in original units.
      levels: central interval levels for coverage and width (continuous targets).
      loo: add PSIS-LOO ``elpd_loo`` (with its standard error and the largest Pareto k)
        on each fit's training data; NaN for point fits. A warning names any fit
        with Pareto k > 0.7.
      y_err: known noise scales of the test observations, for fits made with ``y_err``
        (required by them; fits without known errors predict with their own noise).

    Returns:
      a pandas DataFrame, one row per fit: test ``rmse``, ``mae``, ``nll`` (mean negative
      log predictive density), ``crps``, ``coverage_<level>``, ``width_<level>`` — or for
      classifiers ``accuracy``, ``nll``, ``brier``, ``ece`` — then ``elpd_loo``,
      ``elpd_loo_se``, ``pareto_k_max``, ``num_draws``, ``wall_time``.
    """
    import pandas as pd

    if not isinstance(fits, Mapping) or not fits:
        raise TypeError("`fits` must be a non-empty dict of name -> bnn.Fit.")
    for name, fit in fits.items():
        if not isinstance(fit, Fit):
            raise TypeError(f"`fits[{name!r}]` must be a bnn.Fit; got {type(fit).__name__}.")
    if y_err is not None and all(fit.y_err is None for fit in fits.values()):
        raise ValueError("`y_err` is given but none of the fits was made with known measurement errors (y_err).")
    rows = {}
    for name, fit in fits.items():
        row = _row(fit, x_test, y_test, levels, y_err)
        if loo:
            row.update(_elpd_loo(name, fit))
        row.update(num_draws=fit.num_draws, wall_time=float(fit.info.get("wall_time", np.nan)))
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "fit"
    return table


#: Held-out coverage of the central 90 % interval below which a fit's intervals are called over-confident.
MIN_HELDOUT_COVERAGE = 0.8


def heldout_metrics(pred, y, level: float = 0.9) -> dict[str, float]:
    """Mean per-row metrics of a :class:`bnn.Predictions` at observations ``y``: ``log_likelihood``
    (mean log predictive density), and ``rmse`` and ``coverage`` of the central ``level`` interval
    (continuous targets) or ``accuracy`` (classes)."""
    out = {"log_likelihood": -float(np.mean(metrics.nll(pred, y)))}
    if pred.continuous:
        out["rmse"] = float(np.sqrt(np.mean(np.square(metrics.rmse(pred.mean, y)))))  # over every column
        out["coverage"] = float(np.mean(metrics.coverage(pred, y, level)))
    else:
        out["accuracy"] = float(np.mean(metrics.accuracy(pred, y)))
    return out


def cross_validate(model, x, y, method: str = "map", folds: int = 5, seed: int = 0, level: float = 0.9,
                   **fit_options) -> dict:
    """K-fold cross-validation of ``model.fit(x, y, method=..., **fit_options)``.

    The rows are shuffled with ``seed`` and cut into ``folds`` parts; each part is predicted by a fit
    to the others. Metrics (:func:`heldout_metrics`) are computed over all held-out rows together.

    Args:
      model: a :class:`bnn.BNN`.
      x, y: the data, as for :meth:`bnn.BNN.fit`.
      method, fit_options: the fit to judge (e.g. ``normalize=True``, ``tune_prior=True``).
      folds: number of parts, 2 to the number of rows.
      seed: shuffles the rows; fold ``k`` is fitted with seed ``seed + k``.
      level: the interval whose coverage is reported.

    Returns:
      ``{"folds": K, "log_likelihood", "rmse", "coverage" (continuous) or "accuracy", "per_fold":
      [metrics of each fold]}``.

    Example:
      >>> cv = bnn.compare.cross_validate(model, x, y, method="map", folds=5, normalize=True)
      >>> cv["coverage"]   # should be near 0.9 for honest intervals
    """
    x, y = model.check_data(x, y)
    n = x.shape[0]
    folds = _checks.positive_int(folds, "folds")
    if not 2 <= folds <= n:
        raise ValueError(f"`folds` must lie between 2 and the number of rows ({n}); got {folds}.")
    level = _checks.level(level, "level")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    per_fold = []
    for k, held in enumerate(parts):
        train = np.setdiff1d(order, held)
        fit = model.fit(x[train], y[train], method=method, seed=seed + k, **fit_options)
        per_fold.append(heldout_metrics(fit.predict(x[held]), y[held], level))
    # per-row metrics over every held-out row: each fold's means weighted by its size
    sizes = np.array([len(p) for p in parts], float)
    pooled = {name: float(np.sum([f[name] * s for f, s in zip(per_fold, sizes)]) / sizes.sum())
              for name in per_fold[0] if name != "rmse"}
    if "rmse" in per_fold[0]:
        pooled["rmse"] = float(np.sqrt(np.sum([f["rmse"] ** 2 * s for f, s in zip(per_fold, sizes)]) / sizes.sum()))
    return {"folds": folds, **pooled, "per_fold": per_fold}
