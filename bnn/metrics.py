"""Evaluation metrics. Arrays in, arrays out, per point unless stated (call ``.mean()``).

Regression metrics take targets ``y`` of shape ``(n, out)`` (or ``(n,)`` for one output);
classification metrics take integer labels ``(n,)``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr

from bnn import _checks
from bnn.predictive import Predictions

__all__ = [
    "rmse",
    "mae",
    "nll",
    "coverage",
    "interval_width",
    "accuracy",
    "brier",
    "crps",
    "crps_gaussian",
    "crps_predictive",
    "calibration_curve",
    "reliability_curve",
    "ece",
    "DEFAULT_LEVELS",
]


def _targets(y, like: jnp.ndarray, name: str = "y") -> jnp.ndarray:
    arr = _checks.finite_array(y, name, ndims=(1, 2))
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape != tuple(like.shape):
        raise ValueError(f"`{name}` must have shape {tuple(like.shape)} to match the predictions; got {arr.shape}.")
    return jnp.asarray(arr)


def _labels(y, num_classes: int, n: int, name: str = "y") -> jnp.ndarray:
    arr = _checks.finite_array(y, name, ndims=(1,), dtype=None)
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must hold {n} labels to match the predictions; got {arr.shape[0]}.")
    if not np.all(arr == np.round(arr)) or arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"`{name}` must hold integer labels in 0..{num_classes - 1}; got values in [{arr.min()}, {arr.max()}].")
    return jnp.asarray(arr.astype(np.int32))


def _class_probs(pred: Predictions) -> jnp.ndarray:
    """Per-class probabilities ``(n, K)``; a Bernoulli's single column becomes ``[1 − p, p]``."""
    p = pred.probs
    return jnp.concatenate([1.0 - p, p], axis=1) if p.shape[1] == 1 else p


def rmse(mean, y) -> jnp.ndarray:
    """Root mean squared error per output column, ``(out,)``."""
    mean = jnp.asarray(mean)
    return jnp.sqrt(jnp.mean(jnp.square(mean - _targets(y, mean)), axis=0))


def mae(mean, y) -> jnp.ndarray:
    """Mean absolute error per output column, ``(out,)``."""
    mean = jnp.asarray(mean)
    return jnp.mean(jnp.abs(mean - _targets(y, mean)), axis=0)


def nll(pred: Predictions, y) -> jnp.ndarray:
    """Negative log predictive density at each observation, ``(n,)``.

    Continuous likelihoods: ``−log (1/S) Σₛ Πⱼ Normal(yⱼ; mₛⱼ, vₛⱼ)``, the mixture over
    parameter draws (output columns are independent given a draw). Classifiers:
    ``−log p̄(y)`` with the predictive class probabilities.
    """
    if not pred.continuous:
        probs = _class_probs(pred)
        return _class_nll(probs, _labels(y, probs.shape[1], probs.shape[0]))
    return _mixture_nll(pred.samples, pred.variance_samples, _targets(y, pred.mean))


@jax.jit
def _class_nll(probs, labels):
    return -jnp.log(jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0])


@jax.jit
def _mixture_nll(m, v, y):
    logp = -0.5 * (jnp.log(2 * jnp.pi * v) + jnp.square(y[None] - m) / v)  # (S, n, out)
    return -(logsumexp(jnp.sum(logp, axis=-1), axis=0) - jnp.log(m.shape[0]))


def coverage(pred: Predictions, y, level: float = 0.9) -> jnp.ndarray:
    """Whether each observation lies in the central ``level`` predictive interval, ``(n, out)`` of 0/1."""
    lo, hi = pred.interval(level)
    return _inside(_targets(y, pred.mean), lo, hi)


@jax.jit
def _inside(y, lo, hi):
    return ((y >= lo) & (y <= hi)).astype(jnp.float32)


def interval_width(pred: Predictions, level: float = 0.9) -> jnp.ndarray:
    """Width of the central ``level`` predictive interval, ``(n, out)``."""
    lo, hi = pred.interval(level)
    return hi - lo


def accuracy(pred: Predictions, y) -> jnp.ndarray:
    """1 where the most probable class is the label, else 0; ``(n,)``."""
    probs = _class_probs(pred)
    labels = _labels(y, probs.shape[1], probs.shape[0])
    return (jnp.argmax(probs, axis=1) == labels).astype(jnp.float32)


def brier(pred: Predictions, y) -> jnp.ndarray:
    """Brier score ``Σₖ (p̄ₖ − 1[y = k])²`` per observation, ``(n,)``."""
    probs = _class_probs(pred)
    labels = _labels(y, probs.shape[1], probs.shape[0])
    onehot = jnp.eye(probs.shape[1])[labels]
    return jnp.sum(jnp.square(probs - onehot), axis=1)


# --------------------------------------------------------------------------------------
# CRPS
# --------------------------------------------------------------------------------------

#: Elements of one (block × block × n × out) tile of draw pairs in ``crps_predictive``.
CRPS_CHUNK_ELEMENTS = 1 << 22
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _continuous(pred: Predictions, what: str) -> None:
    if not isinstance(pred, Predictions):
        raise TypeError(f"`pred` must be a bnn.Predictions; got {type(pred).__name__}.")
    if not pred.continuous:
        raise ValueError(f"{what} is defined for continuous likelihoods only; got predictions of kind {pred.kind!r}.")


@functools.partial(jax.jit, static_argnames="fair")
def _crps_sorted(samples: jnp.ndarray, y: jnp.ndarray, fair: bool = False) -> jnp.ndarray:
    """``E|X − y| − ½ E|X − X'|`` of the empirical distribution of ``samples`` (axis 0).

    ``E|X − X'| = (2 / S²) Σᵢ (2i − S − 1) x₍ᵢ₎`` over the sorted samples (i = 1..S), so the
    pairwise term costs one sort, O(S log S), instead of O(S²).
    """
    s = samples.shape[0]
    x = jnp.sort(samples - jnp.mean(samples, axis=0)[None], axis=0)  # shift-invariant; centred for precision
    rank = jnp.arange(1, s + 1, dtype=x.dtype)
    weight = (2.0 * rank - s - 1.0).reshape((s,) + (1,) * (x.ndim - 1))
    pair_sum = 2.0 * jnp.sum(weight * x, axis=0)  # Σᵢⱼ |xᵢ − xⱼ|
    denom = s * (s - 1) if fair else s * s
    return jnp.mean(jnp.abs(samples - y[None]), axis=0) - 0.5 * pair_sum / denom


def crps(samples, y, fair: bool = False) -> jnp.ndarray:
    """Continuous ranked probability score of a sample-based forecast, per point.

    ``CRPS(F, y) = ∫ (F(t) − 1[t ≥ y])² dt = E|X − y| − ½ E|X − X'|`` with ``X, X'`` drawn
    independently from the forecast. Here ``F`` is the empirical distribution of the
    samples, and the expectation over pairs is computed exactly from the sorted samples
    (O(S log S) time and O(S) memory per point). Lower is better; it has the units of ``y``.

    Args:
      samples: forecast draws, ``(draws, n)`` or ``(draws, n, out)`` (e.g. ``pred.y_samples``).
      y: observations, ``(n,)`` for 2-D samples; ``(n, out)`` (or ``(n,)`` when ``out = 1``)
        for 3-D samples.
      fair: divide the pairwise sum by ``S(S − 1)`` instead of ``S²`` (the "fair" CRPS, an
        unbiased estimate of the CRPS of the distribution the samples were drawn from;
        needs ``draws ≥ 2``).

    Returns:
      ``(n,)`` for 2-D samples, ``(n, out)`` for 3-D samples.
    """
    arr = _checks.finite_array(samples, "samples", ndims=(2, 3))
    if fair and arr.shape[0] < 2:
        raise ValueError(f"the fair CRPS needs at least 2 draws in `samples`; got {arr.shape[0]}.")
    if arr.ndim == 2:
        obs = _checks.finite_array(y, "y", ndims=(1, 2))
        if obs.ndim == 2 and obs.shape[1] == 1:
            obs = obs[:, 0]
        if obs.shape != arr.shape[1:]:
            raise ValueError(
                f"`y` must have shape ({arr.shape[1]},) to match `samples` of shape {arr.shape} (draws, n); got {np.shape(y)}."
            )
        return _crps_sorted(jnp.asarray(arr), jnp.asarray(obs), fair)
    return _crps_sorted(jnp.asarray(arr), _targets(y, arr[0]), fair)


def _broadcast(named: dict[str, np.ndarray]) -> list[jnp.ndarray]:
    try:
        shape = np.broadcast_shapes(*(a.shape for a in named.values()))
    except ValueError:
        shapes = ", ".join(f"`{k}` {v.shape}" for k, v in named.items())
        raise ValueError(f"{shapes} must have the same shape (or broadcast to one).") from None
    return [jnp.broadcast_to(jnp.asarray(a), shape) for a in named.values()]


def crps_gaussian(mean, std, y) -> jnp.ndarray:
    """Closed-form CRPS of ``Normal(mean, std²)`` at ``y``, elementwise.

    ``σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π]`` with ``z = (y − μ)/σ`` (Gneiting & Raftery, 2007).
    ``mean``, ``std`` and ``y`` must have the same shape or broadcast to one (a scalar ``std``
    is fine); ``std`` must be > 0.
    """
    m_np = _checks.finite_array(mean, "mean", ndims=(0, 1, 2, 3))
    s_np = _checks.finite_array(std, "std", ndims=(0, 1, 2, 3))
    obs_np = _checks.finite_array(y, "y", ndims=(0, 1, 2, 3))
    if np.any(s_np <= 0):
        raise ValueError(f"`std` must be > 0 everywhere; got a minimum of {s_np.min()}.")
    m, s, obs = _broadcast({"mean": m_np, "std": s_np, "y": obs_np})
    z = (obs - m) / s
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * jnp.square(z))
    return s * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * pdf - _INV_SQRT_PI)


def _abs_moment(mu: jnp.ndarray, var: jnp.ndarray) -> jnp.ndarray:
    """``A(μ, σ²) = E|Z|`` for ``Z ~ Normal(μ, σ²)`` = ``2σφ(μ/σ) + μ(2Φ(μ/σ) − 1)``; ``|μ|`` at σ = 0."""
    sd = jnp.sqrt(var)
    positive = sd > 0
    safe = jnp.where(positive, sd, 1.0)
    z = mu / safe
    # 2Φ(z) − 1 = erf(z/√2), several times cheaper than ndtr on CPU
    value = 2.0 * safe * _INV_SQRT_2PI * jnp.exp(-0.5 * jnp.square(z)) + mu * jax.lax.erf(z * _INV_SQRT_2)
    return jnp.where(positive, value, jnp.abs(mu))


@jax.jit
def _crps_mixture(m: jnp.ndarray, v: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """CRPS of the equal-weight mixture ``(1/S) Σₛ Normal(mₛ, vₛ)`` at ``y``.

    ``m`` ``(S, n, out)``, ``v`` ``(S, n or 1, out)``, ``y`` ``(n, out)``. The pairwise term
    ``Σᵢⱼ A(mᵢ − mⱼ, vᵢ + vⱼ)`` is symmetric in ``(i, j)``, so it is summed over the upper
    triangle of (block × block) tiles of draws, off-diagonal tiles counted twice: half the
    work of the full square, and memory bounded by ``CRPS_CHUNK_ELEMENTS`` per tile.
    """
    s, n, out = m.shape
    v = jnp.broadcast_to(v, m.shape)
    first = jnp.mean(_abs_moment(y[None] - m, v), axis=0)
    block = max(1, min(s, math.isqrt(max(1, CRPS_CHUNK_ELEMENTS // max(1, n * out)))))
    num_blocks = -(-s // block)
    pad = num_blocks * block - s
    weight = jnp.concatenate([jnp.ones((s,), m.dtype), jnp.zeros((pad,), m.dtype)])  # padding draws weigh 0
    mb = jnp.concatenate([m, jnp.repeat(m[-1:], pad, axis=0)]).reshape((num_blocks, block, n, out))
    vb = jnp.concatenate([v, jnp.repeat(v[-1:], pad, axis=0)]).reshape((num_blocks, block, n, out))
    wb = weight.reshape((num_blocks, block))
    rows, cols = np.triu_indices(num_blocks)

    def tile(args):
        i, j, twice = args
        pair = _abs_moment(mb[i][:, None] - mb[j][None], vb[i][:, None] + vb[j][None])  # (block, block, n, out)
        return twice * jnp.einsum("ab,abno->no", wb[i][:, None] * wb[j][None], pair)

    tiles = (jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(np.where(rows == cols, 1.0, 2.0), m.dtype))
    second = jnp.sum(jax.lax.map(tile, tiles), axis=0) / (s * s)
    return first - 0.5 * second


def crps_predictive(pred: Predictions, y) -> jnp.ndarray:
    """Exact CRPS of a continuous predictive distribution at observations, ``(n, out)``.

    The predictive of each output column is the mixture over draws ``(1/S) Σₛ Normal(mₛ, vₛ)``,
    whose CRPS has the closed form (Grimit et al., 2006)

    ``(1/S) Σᵢ A(y − mᵢ, vᵢ) − 1/(2S²) Σᵢⱼ A(mᵢ − mⱼ, vᵢ + vⱼ)``,
    ``A(μ, σ²) = 2σφ(μ/σ) + μ(2Φ(μ/σ) − 1)``.

    The pairwise term costs O(S²) per point (about S²/2 evaluations); it is evaluated in tiles
    of draws, so memory stays bounded. With one draw (MLE / MAP) this is :func:`crps_gaussian`.
    """
    _continuous(pred, "the CRPS of a predictive distribution")
    return _crps_mixture(pred.samples, pred.variance_samples, _targets(y, pred.mean))


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------

DEFAULT_LEVELS = np.linspace(0.05, 0.95, 19)


@jax.jit
def _mixture_cdf(m: jnp.ndarray, v: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(ndtr((y[None] - m) / jnp.sqrt(v)), axis=0)


def _levels(levels) -> np.ndarray:
    try:
        arr = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`levels` must be numbers in (0, 1); got {type(levels).__name__} {levels!r}.") from None
    arr = np.atleast_1d(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`levels` must be a non-empty 1-D sequence of probabilities; got shape {arr.shape}.")
    if not np.all((arr > 0) & (arr < 1)):
        raise ValueError(f"`levels` must lie strictly between 0 and 1; got {arr.tolist()}.")
    return arr


def calibration_curve(pred: Predictions, y, levels=DEFAULT_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Observed coverage of the central predictive intervals at each nominal level.

    ``y`` lies in the central ``level`` interval exactly when its PIT value ``u = F(y)`` (the
    mixture CDF at the observation) satisfies ``|2u − 1| ≤ level``; the coverage is pooled
    over points and output columns. A calibrated model gives ``observed ≈ levels``; below
    the diagonal is over-confident, above it under-confident.

    Returns:
      ``(levels, observed)``, both ``(len(levels),)`` NumPy arrays.
    """
    _continuous(pred, "a calibration curve")
    levels = _levels(levels)
    u = np.asarray(_mixture_cdf(pred.samples, pred.variance_samples, _targets(y, pred.mean)), np.float64)
    dist = np.abs(2.0 * u - 1.0).reshape(-1)
    observed = np.mean(dist[None, :] <= levels[:, None], axis=1)
    return levels, observed


def _probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(n, K)`` (a Bernoulli column becomes ``[1 − p, p]``) and labels ``(n,)``."""
    if isinstance(probs, Predictions):
        if probs.continuous:
            raise ValueError("`probs` must be class probabilities; got continuous predictions.")
        if probs.kind == "binary" and probs.mean.shape[1] != 1:
            raise ValueError(
                f"`probs` holds {probs.mean.shape[1]} binary target columns; pass one column at a time, e.g. pred.probs[:, [j]]."
            )
        probs = probs.mean
    p = _checks.finite_array(probs, "probs", ndims=(1, 2), dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"`probs` must be probabilities in [0, 1]; got values in [{p.min()}, {p.max()}].")
    if p.shape[1] == 1:
        p = np.concatenate([1.0 - p, p], axis=1)
    else:
        total = p.sum(axis=1)
        if not np.allclose(total, 1.0, atol=1e-3):
            worst = int(np.argmax(np.abs(total - 1.0)))
            raise ValueError(
                f"each row of `probs` (n, K) must sum to 1; row {worst} sums to {total[worst]:.6g}. "
                "For Bernoulli probabilities P(y = 1) pass one column, (n,) or (n, 1)."
            )
    return p, np.asarray(_labels(labels, p.shape[1], p.shape[0], "labels"))


def reliability_curve(probs, labels, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean top-label confidence and accuracy in equal-width confidence bins.

    Args:
      probs: class probabilities ``(n, K)``, or Bernoulli ``P(y = 1)`` as ``(n,)`` / ``(n, 1)``
        (taken as the two classes ``[1 − p, p]``); a classifier's :class:`Predictions` also works.
      labels: integer labels ``(n,)``.
      bins: number of bins on ``[0, 1]``, right-closed ``(a, b]`` (the first also takes 0).

    Returns:
      ``(confidence, accuracy, counts)``, each ``(bins,)``: the mean predicted probability of
      the predicted class, the fraction of correct predictions, and the number of points per
      bin. Empty bins have NaN confidence and accuracy.
    """
    bins = _checks.positive_int(bins, "bins")
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return confidence, accuracy, counts


def ece(probs, labels, bins: int = 10) -> float:
    """Expected calibration error: ``Σ_b (n_b / n) |accuracy_b − confidence_b|``.

    Top-label confidence in ``bins`` equal-width bins, weighted by the number of points
    per bin (Guo et al., 2017). Arguments as :func:`reliability_curve`. Returns a float in
    ``[0, 1]``; 0 is perfectly calibrated.
    """
    confidence, accuracy, counts = reliability_curve(probs, labels, bins)
    full = counts > 0
    return float(np.sum(counts[full] * np.abs(accuracy[full] - confidence[full])) / np.sum(counts))
