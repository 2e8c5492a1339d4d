"""Evaluation metrics. Arrays in, arrays out, per point unless stated (call ``.mean()``).

Regression metrics take targets ``y`` of shape ``(n, out)`` (or ``(n,)`` for one output);
classification metrics take integer labels ``(n,)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bnn import _checks
from bnn.fit import Predictions


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
        labels = _labels(y, probs.shape[1], probs.shape[0])
        return -jnp.log(jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0])
    y = _targets(y, pred.mean)
    m, v = pred.samples, pred.variance_samples
    logp = -0.5 * (jnp.log(2 * jnp.pi * v) + jnp.square(y[None] - m) / v)  # (S, n, out)
    return -(logsumexp(jnp.sum(logp, axis=-1), axis=0) - jnp.log(m.shape[0]))


def coverage(pred: Predictions, y, level: float = 0.9) -> jnp.ndarray:
    """Whether each observation lies in the central ``level`` predictive interval, ``(n, out)`` of 0/1."""
    lo, hi = pred.interval(level)
    y = _targets(y, pred.mean)
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
