"""Predictive distributions from parameter draws: :class:`Predictions` and :class:`Normalizer`.

Every method's result is a set of parameter draws (a point fit is one draw), so
prediction works the same for every method: for each draw θₛ the likelihood gives the mean
``mₛ(x) = E[y | x, θₛ]`` and the variance ``vₛ(x) = Var[y | x, θₛ]``, and

* predictive mean      = meanₛ mₛ
* epistemic variance   = varₛ mₛ      (spread of the functions over draws)
* aleatoric variance   = meanₛ vₛ     (noise, averaged over draws)
* total variance       = epistemic + aleatoric   (law of total variance, exact)

Prediction is jitted once per model and input width, and chunked over inputs so
that memory stays bounded whatever the number of inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from bnn import _checks
from bnn.lifting import LiftedModel
from bnn.likelihoods import Y_ERR

#: Elements of one (draws × inputs × outputs) block evaluated at once when chunking.
CHUNK_ELEMENTS = 1 << 22


class Normalizer(NamedTuple):
    """Training statistics used by ``fit(..., normalize=True)``.

    The model sees ``x̃ = (x − x_mean) / x_scale`` and, for continuous likelihoods,
    ``ỹ = (y − y_mean) / y_scale``; predictions are mapped back to original units.
    Constant input columns get ``x_scale = 1``. ``y_mean``/``y_scale`` are ``None`` for
    class labels, which are never transformed.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray | None = None
    y_scale: np.ndarray | None = None

    @classmethod
    def from_data(cls, x: np.ndarray, y: np.ndarray, continuous: bool) -> Normalizer:
        def stats(a):
            scale = a.std(axis=0)
            return a.mean(axis=0).astype(_checks.float_dtype()), np.where(scale > 0, scale, 1.0).astype(_checks.float_dtype())

        x_mean, x_scale = stats(x)
        return cls(x_mean, x_scale, *stats(y)) if continuous else cls(x_mean, x_scale)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.x_mean[None]) / self.x_scale[None]).astype(_checks.float_dtype())

    def targets(self, y: np.ndarray) -> np.ndarray:
        if self.y_mean is None or self.y_scale is None:
            return y
        return ((y - self.y_mean[None]) / self.y_scale[None]).astype(_checks.float_dtype())

    def errors(self, y_err: np.ndarray | None) -> np.ndarray | None:
        """Per-observation noise scales in the units of ``ỹ``: ``y_err / y_scale``."""
        if y_err is None or self.y_scale is None:
            return y_err
        return (y_err / self.y_scale[None]).astype(_checks.float_dtype())

    def log_jacobian(self) -> float:
        """``−Σ log y_scale``: add it to a log density of ``ỹ`` to get one of ``y`` (per observation)."""
        return 0.0 if self.y_scale is None else -float(np.sum(np.log(self.y_scale)))

    def predictions(self, pred: Predictions) -> Predictions:
        """Map predictions of ``ỹ`` back to original units."""
        if self.y_mean is None:
            return pred
        loc, scale = jnp.asarray(self.y_mean)[None, None], jnp.asarray(self.y_scale)[None, None]
        return Predictions(
            mean=loc[0] + scale[0] * pred.mean,
            epistemic_var=jnp.square(scale[0]) * pred.epistemic_var,
            aleatoric_var=jnp.square(scale[0]) * pred.aleatoric_var,
            samples=loc + scale * pred.samples,
            variance_samples=jnp.square(scale) * pred.variance_samples,
            y_samples=None if pred.y_samples is None else loc + scale * pred.y_samples,
            kind=pred.kind,
        )


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Predictive distribution at a set of inputs. All arrays are ``(n, out)`` unless stated.

    Attributes:
      mean: predictive mean of ``y`` (class probabilities for Bernoulli / Categorical).
      epistemic_var: variance over parameter draws of the per-draw mean.
      aleatoric_var: per-draw noise variance, averaged over draws.
      samples: ``(draws, n, out)`` per-draw mean ``E[y | x, θₛ]``: the function values
        ``f(x)`` for Gaussian likelihoods, class probabilities for classifiers.
      variance_samples: per-draw noise variance ``Var[y | x, θₛ]``, ``(draws, n, out)``, or
        ``(draws, 1, out)`` where it does not depend on ``x`` (a homoscedastic Gaussian).
      y_samples: ``(draws, n, out)`` draws of observations, where they were sampled.
      kind: ``"continuous"`` (intervals and quantiles are defined), ``"binary"`` (Bernoulli:
        ``out`` columns of P(y = 1)) or ``"categorical"`` (``out`` = classes).
    """

    mean: jax.Array
    epistemic_var: jax.Array
    aleatoric_var: jax.Array
    samples: jax.Array
    variance_samples: jax.Array
    y_samples: jax.Array | None = None
    kind: str = "continuous"

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    @property
    def num_draws(self) -> int:
        return int(self.samples.shape[0])

    @property
    def variance(self) -> jax.Array:
        """Total predictive variance = epistemic + aleatoric."""
        return self.epistemic_var + self.aleatoric_var

    @property
    def std(self) -> jax.Array:
        """Total predictive standard deviation."""
        return jnp.sqrt(self.variance)

    @property
    def epistemic_std(self) -> jax.Array:
        return jnp.sqrt(self.epistemic_var)

    @property
    def aleatoric_std(self) -> jax.Array:
        return jnp.sqrt(self.aleatoric_var)

    @property
    def probs(self) -> jax.Array:
        """Predictive class probabilities ``(n, classes)`` (classifiers only)."""
        if self.continuous:
            raise AttributeError("`probs` is defined for Bernoulli and Categorical likelihoods; use `mean` here.")
        return self.mean

    def _entropies(self, probs: jax.Array, mean_over_draws: bool = False) -> jax.Array:
        """:func:`_entropy` of class probabilities ``(..., n, out)`` (classifiers only)."""
        if self.continuous:
            raise AttributeError("entropies are defined for Bernoulli and Categorical likelihoods only.")
        return _entropy(probs, self.kind == "binary", mean_over_draws)

    @property
    def entropy(self) -> jax.Array:
        """Predictive entropy ``H[p̄(y | x)]`` in nats, ``(n,)``: total uncertainty (classifiers)."""
        return self._entropies(self.mean)

    @property
    def expected_entropy(self) -> jax.Array:
        """``meanₛ H[p(y | x, θₛ)]``, ``(n,)``: the aleatoric part of the entropy (classifiers)."""
        return self._entropies(self.samples, mean_over_draws=True)

    @property
    def mutual_information(self) -> jax.Array:
        """``H[p̄] − meanₛ H[pₛ]`` ≥ 0, ``(n,)``: the epistemic part (information about θ in y)."""
        return self.entropy - self.expected_entropy

    def quantiles(self, q) -> jax.Array:
        """Quantiles of the predictive distribution of ``y``: shape ``(len(q), n, out)``.

        The predictive is the mixture over draws of ``Normal(mₛ, vₛ)``; its quantiles
        are found exactly (to float precision) by bisection on the mixture CDF.
        """
        if not self.continuous:
            raise ValueError("quantiles and intervals are defined for continuous likelihoods only.")
        q = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if q.ndim != 1 or not np.all((q > 0) & (q < 1)):
            raise ValueError(f"`q` must be probabilities strictly between 0 and 1; got {q.tolist()}.")
        return _mixture_quantiles(self.samples, self.variance_samples, _checks.floats(q))

    def interval(self, level: float = 0.9) -> tuple[jax.Array, jax.Array]:
        """Central predictive interval of probability ``level``: ``(lower, upper)``, each ``(n, out)``."""
        level = _checks.level(level)
        lo, hi = self.quantiles([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        return lo, hi


@functools.partial(jax.jit, static_argnums=(1, 2))  # one program per shape, not one per operation
def _entropy(probs: jax.Array, binary: bool, mean_over_draws: bool) -> jax.Array:
    """Entropy (nats) over the classes, summed over independent output columns: ``(..., n, out) -> (..., n)``;
    with ``mean_over_draws``, ``(draws, n, out) -> (n,)``, its mean over the leading axis.

    ``binary``: each column is P(y = 1) of its own Bernoulli; otherwise the columns are one
    categorical's class probabilities.
    """
    p = jnp.stack([1.0 - probs, probs], axis=-1) if binary else probs[..., None, :]
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p), axis=(-1, -2))
    return jnp.mean(entropy, axis=0) if mean_over_draws else entropy


@jax.jit
def _mixture_quantiles(m: jax.Array, v: jax.Array, q: jax.Array) -> jax.Array:
    s = jnp.sqrt(v)
    lo0 = jnp.min(m - 10.0 * s, axis=0)
    hi0 = jnp.max(m + 10.0 * s, axis=0)

    def one(qi):
        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            below = jnp.mean(ndtr((mid[None] - m) / s), axis=0) < qi
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 64, body, (lo0, hi0))
        return 0.5 * (lo + hi)

    return jax.lax.map(one, q)


def _chunk_size(num_draws: int, n: int, width: int, batch_size: int | None) -> int:
    if batch_size is not None:
        return _checks.positive_int(batch_size, "batch_size")
    return max(1, min(n, CHUNK_ELEMENTS // max(1, num_draws * width)))


def network_outputs(model: LiftedModel, draw: dict, x: jax.Array, center: dict | None) -> jax.Array:
    """Network outputs ``(n, width)`` for one draw; linearised around ``center`` when given."""
    if center is None:
        return model.apply(draw, x)
    tangent = {k: draw[k] - center[k] for k in center}  # f(θ*) + J(θ*)(θ − θ*)
    f_star, df = jax.jvp(lambda p: model.apply({**draw, **p}, x), (center,), (tangent,))
    return f_star + df


def _with_errors(draw: dict, y_err: jax.Array | None) -> dict:
    """A draw's parameters as the likelihood reads them, with known noise scales when given."""
    return draw if y_err is None else {**draw, Y_ERR: y_err}


def build_log_likelihood(model: LiftedModel):
    def per_draw(draw, x, y, center, y_err):
        f = network_outputs(model, draw, x, center)
        return model.likelihood.log_prob(f, y, _with_errors(draw, y_err))

    return jax.jit(jax.vmap(per_draw, in_axes=(0, None, None, None, None)))


def _build_moments(model: LiftedModel, with_y: bool, summarise: bool = False):
    """``(draws, x, key, chunk_index, center, y_err) -> (means, variances, y draws)`` per draw at the rows
    of one chunk (``y`` draws with ``jax.random.fold_in(key, chunk_index)``; ``None`` without ``with_y``).
    With ``summarise`` (all rows in one chunk, none padded) the program returns their summary instead,
    what :func:`_summarise` returns."""
    likelihood = model.likelihood

    def per_draw(draw, xb, key, center, y_err):
        f = network_outputs(model, draw, xb, center)
        params = _with_errors(draw, y_err)
        mean, var = likelihood.moments(f, params)
        if not with_y:
            return mean, var, None
        y = likelihood.distribution(f, params).sample(key)
        if y.ndim == 1:  # Categorical labels: (n,) -> (n, 1)
            y = y[:, None]
        return mean, var, y

    def moments(draws, xb, key, chunk_index, center, y_err):
        keys = jax.random.split(jax.random.fold_in(key, chunk_index), jax.tree.leaves(draws)[0].shape[0])
        m, v, y = jax.vmap(per_draw, in_axes=(0, None, 0, None, None))(draws, xb, keys, center, y_err)
        return _summary([m], [v], [] if y is None else [y]) if summarise else (m, v, y)

    return jax.jit(moments)


@functools.cache
def _no_key() -> jax.Array:
    """The key of predictions without sampled ``y`` (their programs draw nothing with it)."""
    return jax.random.PRNGKey(0)


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with its last row repeated to ``rows`` rows (one compiled shape for every chunk)."""
    pad = rows - a.shape[0]
    return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if pad else a


def predictions_from_draws(model: LiftedModel, draws: dict, x: np.ndarray, batch_size: int | None = None,
                           y_key: jax.Array | None = None, linearize_at: dict | None = None,
                           y_err: np.ndarray | None = None) -> Predictions:
    """Evaluate parameter draws ``{site: (S, ...)}`` at inputs ``x`` ``(n, features)``, chunked over inputs.

    With ``linearize_at`` (network parameters ``{path: array}``) the network is replaced by
    its first-order Taylor expansion around that point (the GLM predictive). ``y_err``
    ``(n, out)``: known noise scales of the observations at ``x`` (a Gaussian fitted with them).
    """
    spec = model.spec(x.shape[1])
    num_draws = int(jax.tree.leaves(draws)[0].shape[0])
    n = x.shape[0]
    chunk = _chunk_size(num_draws, n, spec.width, batch_size)
    key = _no_key() if y_key is None else y_key
    if chunk >= n:  # one chunk of all rows, unpadded: the draws' moments and their summary in one program
        fn = model.program(_build_moments, with_y=y_key is not None, summarise=True)
        summary = fn(draws, jnp.asarray(x), key, 0, linearize_at, None if y_err is None else jnp.asarray(y_err))
    else:
        summary = _chunked(model.program(_build_moments, with_y=y_key is not None), draws, x, chunk, key,
                           linearize_at, y_err)
    samples, variance_samples, y_samples, mean, epistemic_var, aleatoric_var = summary
    return Predictions(
        mean=mean,
        epistemic_var=epistemic_var,
        aleatoric_var=aleatoric_var,
        samples=samples,
        variance_samples=variance_samples,
        y_samples=y_samples,
        kind=model.likelihood.kind,
    )


def _chunked(fn, draws: dict, x: np.ndarray, chunk: int, key: jax.Array, center: dict | None,
             y_err: np.ndarray | None) -> tuple:
    """:func:`_summarise` of the moments program ``fn`` run on ``x`` in chunks of ``chunk`` rows (the last padded)."""
    n = x.shape[0]
    means, variances, ys = [], [], []
    for i, start in enumerate(range(0, n, chunk)):
        stop = min(chunk, n - start)
        xb = _pad_rows(x[start:start + stop], chunk)
        eb = None if y_err is None else jnp.asarray(_pad_rows(y_err[start:start + stop], chunk))
        m, v, yb = fn(draws, jnp.asarray(xb), key, i, center, eb)
        constant = v.shape[1] != m.shape[1]  # (S, 1, out): the same for every input
        means.append(_first_inputs(m, stop))
        variances.append(v if constant else _first_inputs(v, stop))
        if yb is not None:
            ys.append(_first_inputs(yb, stop))
    # a variance that does not depend on x comes back as (S, 1, out): keep one copy
    return _summarise(means, variances[:1] if constant else variances, ys)


def _first_inputs(a: jax.Array, stop: int) -> jax.Array:
    """``a[:, :stop]`` (draws × inputs × ...); a full chunk as it is, without a slicing op."""
    return a if a.shape[1] == stop else a[:, :stop]


def _summary(means: list, variances: list, ys: list):
    """The chunks joined along inputs (``ys`` empty: no sampled y, ``None``), and the moments over draws."""
    samples = jnp.concatenate(means, axis=1)
    variance_samples = jnp.concatenate(variances, axis=1)
    y_samples = jnp.concatenate(ys, axis=1) if ys else None
    mean = jnp.mean(samples, axis=0)
    aleatoric_var = jnp.broadcast_to(jnp.mean(variance_samples, axis=0), mean.shape)
    return samples, variance_samples, y_samples, mean, jnp.var(samples, axis=0), aleatoric_var


#: :func:`_summary` as one program, not six eager ops (for predictions made in several chunks)
_summarise = jax.jit(_summary)
