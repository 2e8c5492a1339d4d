"""Observation models: how the network output ``f(x)`` generates a target ``y``.

Every likelihood knows

* ``width(out)`` / ``targets(width)``: how many network outputs it needs per target
  column, and the reverse;
* ``check_y(y, width)``: validation and the canonical shape of ``y``;
* ``latent_sites()``: its own unknowns (e.g. a learned noise scale) with their priors;
* ``distribution(f, params)``: the NumPyro distribution of ``y`` given ``f``, with
  batch shape ``(n,)`` (target columns are event dims, so one observation is one row);
* ``moments(f, params)``: per parameter draw, the mean and the variance of ``y``
  (used for the predictive decomposition total = epistemic + aleatoric).

All log densities use NumPyro's stable parametrisations (logits for classes).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from bnn import _checks

NOISE_SITE = "noise_scale"
#: Key under which per-observation noise scales (``fit(..., y_err=σ)``) reach a likelihood's ``params``.
Y_ERR = "y_err"


@dataclasses.dataclass(frozen=True)
class Likelihood(abc.ABC):
    """Base class of the observation models."""

    #: "continuous" (intervals and quantiles are defined), "binary" or "categorical".
    kind = "continuous"

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    def width(self, out: int) -> int:
        """Network output units needed for ``out`` target columns."""
        return out

    def targets(self, width: int) -> int:
        """Target columns (or classes) served by a network with ``width`` outputs."""
        return width

    def latent_sites(self) -> dict[str, dist.Distribution]:
        """The likelihood's own unknowns, by site name, with their priors."""
        return {}

    def check_y(self, y, width: int, name: str = "y") -> np.ndarray:
        """Validate ``y`` against a network with ``width`` outputs; return it as ``(n, out)`` floats."""
        arr = _checks.finite_array(y, name, ndims=(1, 2))
        if arr.ndim == 1:
            arr = arr[:, None]
        out = self.targets(width)
        if arr.shape[1] != out:
            raise ValueError(
                f"`{name}` must have {out} column(s) to match the network's {width} output unit(s) "
                f"under {type(self).__name__}; got shape {arr.shape}."
            )
        return arr

    def check_y_err(self, y_err, shape: tuple[int, int], name: str = "y_err", allow_zero: bool = False) -> np.ndarray:
        """Validate per-observation noise scales for targets of ``shape`` ``(n, out)``; only a Gaussian has them."""
        raise ValueError(
            f"`{name}` (known per-observation noise scales) needs a bnn.Gaussian likelihood; "
            f"this model's likelihood is {type(self).__name__}."
        )

    @abc.abstractmethod
    def distribution(self, f: jax.Array, params: Mapping[str, jax.Array]) -> dist.Distribution:
        """Distribution of ``y`` given network outputs ``f`` of shape ``(n, width)``; batch shape ``(n,)``."""

    @abc.abstractmethod
    def moments(self, f: jax.Array, params: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Mean ``(n, out)`` and variance of ``y`` given ``f`` (out = classes for Categorical).

        The variance is ``(n, out)``, or ``(1, out)`` where it does not depend on the input.
        """

    def log_prob(self, f, y, params) -> jax.Array:
        """Log density of each observation (row), shape ``(n,)``."""
        return self.distribution(f, params).log_prob(y)

    def ggn_loss(self, f, f_star, y, params) -> jax.Array:
        """A scalar whose Hessian in ``f`` at ``f_star`` is the Fisher information in output space.

        Used by the generalised Gauss–Newton Laplace. For the Gaussian with fixed or learned
        noise, Bernoulli and Categorical the Hessian of ``−log p(y | f)`` does not depend on
        ``y`` and is that Fisher, so the default is the negative log-likelihood itself.
        """
        return -jnp.sum(self.log_prob(f, y, params))

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Gaussian(Likelihood):
    """Gaussian noise ``y ~ Normal(f(x), scale²)``.

    Args:
      scale: the noise standard deviation. ``None`` learns it, with the prior
        ``HalfNormal(noise_prior_scale)`` on the site ``"noise_scale"``.
      noise_prior_scale: scale of that HalfNormal prior (only used when learned).

    Known measurement errors: with ``fit(x, y, y_err=σ)`` observation ``i`` has noise
    scale ``scale · σᵢ``. So ``Gaussian(scale=1.0)`` uses the errors as given (the
    negative log-likelihood is ½χ² = ½ Σ ((yᵢ − f(xᵢ)) / σᵢ)² plus a constant), and a
    learned scale (``Gaussian()``) estimates one common factor by which the reported
    errors are too small (> 1) or too large (< 1).
    """

    scale: float | None = None
    noise_prior_scale: float = 1.0

    def __post_init__(self):
        if self.scale is not None:
            object.__setattr__(self, "scale", _checks.positive_float(self.scale, "Gaussian(scale)"))
        object.__setattr__(
            self, "noise_prior_scale", _checks.positive_float(self.noise_prior_scale, "Gaussian(noise_prior_scale)")
        )

    @property
    def learned(self) -> bool:
        return self.scale is None

    def latent_sites(self):
        if self.scale is None:
            return {NOISE_SITE: dist.HalfNormal(_checks.floats(self.noise_prior_scale))}
        return {}

    def check_y_err(self, y_err, shape, name="y_err", allow_zero=False):
        arr = _checks.finite_array(y_err, name, ndims=(1, 2))
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape != tuple(shape):
            raise ValueError(f"`{name}` must have the shape of `y`, {tuple(shape)} (one error per target); got {arr.shape}.")
        bad = arr < 0 if allow_zero else arr <= 0
        if np.any(bad):
            raise ValueError(
                f"`{name}` must hold {'non-negative' if allow_zero else 'positive'} noise scales; "
                f"got value(s) such as {arr[bad][:3].tolist()}."
            )
        return arr

    def noise(self, params) -> jax.Array:
        """The noise scale: a scalar, or ``(n, out)`` per observation when ``params`` carries ``y_err``."""
        scale = params[NOISE_SITE] if self.scale is None else _checks.floats(self.scale)
        return scale * params[Y_ERR] if Y_ERR in params else scale

    def distribution(self, f, params):
        return dist.Normal(f, self.noise(params)).to_event(1)

    def moments(self, f, params):
        var = jnp.square(self.noise(params))
        # without y_err the variance does not depend on x: shape (1, out), broadcast by the caller
        return f, (var if var.ndim == 2 else jnp.broadcast_to(var, (1, f.shape[1])))


@dataclasses.dataclass(frozen=True)
class Heteroscedastic(Likelihood):
    """Gaussian whose scale is a second network output: ``y ~ Normal(f₁, s(f₂)²)``.

    The network's last layer has ``2·out`` units: the first ``out`` are the mean,
    the last ``out`` pass through ``softplus`` and ``min_scale`` is added, so the
    noise scale is ``softplus(f₂) + min_scale`` (never below ``min_scale``).
    """

    min_scale: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "min_scale", _checks.positive_float(self.min_scale, "Heteroscedastic(min_scale)"))

    def width(self, out):
        return 2 * out

    def targets(self, width):
        if width % 2:
            raise ValueError(
                f"Heteroscedastic needs a network with an even number of outputs (mean and scale "
                f"for each target); the network has {width}. Use 2·out units in the last layer."
            )
        return width // 2

    def split(self, f) -> tuple[jax.Array, jax.Array]:
        out = f.shape[-1] // 2
        return f[..., :out], jax.nn.softplus(f[..., out:]) + self.min_scale

    def distribution(self, f, params):
        loc, scale = self.split(f)
        return dist.Normal(loc, scale).to_event(1)

    def moments(self, f, params):
        loc, scale = self.split(f)
        return loc, jnp.square(scale)

    def ggn_loss(self, f, f_star, y, params):
        # Fisher of Normal(μ, s) in (μ, s) is diag(1/s², 2/s²); this quadratic has exactly that
        # Hessian at f_star, chained through the softplus (the observed Hessian in s can be negative).
        loc, scale = self.split(f)
        loc0, scale0 = jax.lax.stop_gradient(self.split(f_star))
        return 0.5 * jnp.sum((jnp.square(loc - loc0) + 2.0 * jnp.square(scale - scale0)) / jnp.square(scale0))


@dataclasses.dataclass(frozen=True)
class HeteroscedasticMean(Gaussian):
    """The first phase of a :class:`Heteroscedastic` MAP or ensemble fit (:func:`bnn.inference.optimize.mean_first`).

    The mean outputs are fitted under one learned noise scale, as a :class:`Gaussian` network
    would be, and the scale outputs to the residuals of that mean, which they do not move:
    ``log p = log N(y; f₁, σ²) + log N(y; sg(f₁), s(f₂)²)`` with ``sg`` a stop-gradient and ``s``
    as in :class:`Heteroscedastic`. Fitted jointly from the start instead, the scale outputs grow
    wherever the mean does not fit yet, which shrinks the mean's gradient there, and a fit can settle
    with a poor mean under large scales (Nix & Weigend 1994; Seitzer et al. 2022).
    """

    min_scale: float = 1e-3

    def width(self, out):
        return 2 * out

    def targets(self, width):
        return Heteroscedastic(self.min_scale).targets(width)

    def distribution(self, f, params):
        loc, scale = Heteroscedastic(self.min_scale).split(f)
        return _MeanThenScale(loc, self.noise(params), scale)

    def moments(self, f, params):
        return super().moments(f[..., : f.shape[-1] // 2], params)


class _MeanThenScale(dist.Distribution):
    """Log density ``Σ_c log N(y_c; μ_c, σ²) + log N(y_c; sg(μ_c), s_c²)`` of :class:`HeteroscedasticMean`
    (a training objective: it is not normalised over ``y``, and like NumPyro's base class it has no ``sample``)."""

    support = dist.constraints.real_vector

    def __init__(self, loc, noise, scale):
        self.loc, self.noise, self.scale = loc, noise, scale
        super().__init__(batch_shape=jnp.shape(loc)[:-1], event_shape=jnp.shape(loc)[-1:])

    def log_prob(self, value):
        first = dist.Normal(self.loc, self.noise).log_prob(value)
        second = dist.Normal(jax.lax.stop_gradient(self.loc), self.scale).log_prob(value)
        return jnp.sum(first + second, axis=-1)


def _check_labels(arr: np.ndarray, name: str, num_classes: int) -> None:
    if not np.all(arr == np.round(arr)) or arr.min() < 0 or arr.max() > num_classes - 1:
        bad = arr[(arr != np.round(arr)) | (arr < 0) | (arr > num_classes - 1)]
        raise ValueError(
            f"`{name}` must hold integer class labels in 0..{num_classes - 1}; "
            f"got value(s) such as {bad[:3].tolist()}."
        )


@dataclasses.dataclass(frozen=True)
class Bernoulli(Likelihood):
    """Binary labels ``y ∈ {0, 1}`` with ``P(y = 1) = sigmoid(f(x))`` (f are logits).

    One network output per binary target column. Predictions report the
    probability of class 1 as the mean and ``p(1 − p)`` as the aleatoric variance.
    """

    kind = "binary"

    def check_y(self, y, width, name="y"):
        arr = super().check_y(y, width, name)
        _check_labels(arr, name, 2)
        return arr

    def distribution(self, f, params):
        return dist.BernoulliLogits(logits=f).to_event(1)

    def moments(self, f, params):
        p = jax.nn.sigmoid(f)
        return p, p * (1.0 - p)


@dataclasses.dataclass(frozen=True)
class Categorical(Likelihood):
    """Class labels ``y ∈ {0, …, K−1}`` with probabilities ``softmax(f(x))`` (f are logits).

    The network's last layer has K units. ``y`` is a 1-D array of integer labels.
    Predictions report per-class probabilities (``(n, K)``) as the mean, and
    ``p(1 − p)`` per class (the variance of the one-hot indicator) as the aleatoric part.
    """

    kind = "categorical"

    def targets(self, width):
        if width < 2:
            raise ValueError(
                f"Categorical needs a network with at least 2 outputs (one logit per class); "
                f"the network has {width}. For two classes with one output use bnn.Bernoulli()."
            )
        return width

    def check_y(self, y, width, name="y"):
        arr = _checks.finite_array(y, name, ndims=(1, 2), dtype=None)
        if arr.ndim == 2:
            if arr.shape[1] != 1:
                raise ValueError(
                    f"`{name}` must be a 1-D array of integer class labels for Categorical; got shape {arr.shape}."
                )
            arr = arr[:, 0]
        _check_labels(arr, name, self.targets(width))
        return arr.astype(np.int32)

    def distribution(self, f, params):
        return dist.CategoricalLogits(logits=f)

    def moments(self, f, params):
        p = jax.nn.softmax(f, axis=-1)
        return p, p * (1.0 - p)


_LIKELIHOOD_TYPES = {cls.__name__: cls for cls in (Gaussian, Heteroscedastic, Bernoulli, Categorical)}


def likelihood_from_dict(data: Mapping) -> Likelihood:
    """Inverse of :meth:`Likelihood.to_dict` (used when loading a saved fit)."""
    return _checks.from_type_dict(data, _LIKELIHOOD_TYPES, "likelihood")
