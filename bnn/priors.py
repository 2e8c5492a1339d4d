"""Priors on network parameters: specifications, path matching and validation.

A prior specification is either one :class:`Prior` for every parameter or a dict
mapping parameter paths (``"Dense_0.kernel"``) or glob patterns (``"*.bias"``) to
priors, with ``"*"`` as the default. Matching is strict:

* an exact path beats a pattern, and a pattern beats ``"*"``;
* two patterns (other than ``"*"``) that both match one path are an error;
* a key that matches no parameter is an error, and so is a parameter left without
  a prior. Both messages list the valid paths.

The module also holds the exact conversion between a Normal prior scale and the
L2 penalty (weight decay) of conventional training.
"""

from __future__ import annotations

import abc
import dataclasses
import fnmatch
import math
from collections.abc import Mapping, Sequence

import numpyro.distributions as dist

from bnn import _checks


@dataclasses.dataclass(frozen=True)
class Prior(abc.ABC):
    """Base class: a prior that builds a NumPyro distribution for one parameter array."""

    @abc.abstractmethod
    def distribution(self, shape: tuple[int, ...]) -> dist.Distribution:
        """The distribution of a whole parameter array of ``shape`` (all dims are event dims)."""

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class HalfNormal:
    """A hyperprior on a prior's scale: the scale is ``|s|`` with ``s ~ Normal(0, scale²)``.

    Used as ``bnn.Normal(scale=bnn.HalfNormal(1.0))``: the prior scale of the weights is then
    itself a sampled site (Neal's hierarchical priors; see :class:`Normal`).
    """

    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "scale", _checks.positive_float(self.scale, "HalfNormal(scale)"))

    def distribution(self) -> dist.Distribution:
        return dist.HalfNormal(_checks.floats(self.scale))

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "scale": self.scale}


@dataclasses.dataclass(frozen=True)
class Normal(Prior):
    """Independent ``Normal(loc, scale**2)`` on every entry.

    ``scale`` is a standard deviation. With ``loc=0`` the negative log density is
    ``||θ||² / (2 scale²)`` plus a constant: an L2 penalty (see
    :func:`prior_scale_to_weight_decay`).

    ``scale`` may be a :class:`HalfNormal` hyperprior instead of a number: the scale is then a
    latent site of the model, one per parameter array when the prior is given for the whole
    network, or one per key (shared by every array the key matches) inside a prior dict; the
    site is named ``"<path or key>.scale"`` (e.g. ``"Dense_0.kernel.scale"``, ``"*.bias.scale"``).
    The samplers (NUTS, MCLMC) and SVI's guides run such a model in non-centred coordinates
    (weights = loc + scale · u with u standard normal), so the funnel between a scale and its
    weights costs no divergences (a mean-field guide then cannot represent the coupling of a
    scale and its u, and under-disperses the scale). Point methods (MLE, MAP, ensemble, Laplace) refuse it: a
    mode over a scale and its weights jointly sits at scale → 0; choose the scale by the
    evidence instead (``fit(..., tune_prior=True)`` with a fixed-scale prior).
    """

    scale: float | HalfNormal = 1.0
    loc: float = 0.0

    def __post_init__(self):
        if not isinstance(self.scale, HalfNormal):
            object.__setattr__(self, "scale", _checks.positive_float(self.scale, "Normal(scale)"))
        loc = float(self.loc)
        if not math.isfinite(loc):
            raise ValueError(f"`Normal(loc)` must be finite; got {self.loc!r}.")
        object.__setattr__(self, "loc", loc)

    @property
    def hierarchical(self) -> bool:
        """Whether the scale is a sampled site (a :class:`HalfNormal` hyperprior)."""
        return isinstance(self.scale, HalfNormal)

    def std(self, shape: tuple[int, ...]) -> float:
        """The prior standard deviation of each entry of an array of ``shape`` (a fixed scale only)."""
        if self.hierarchical:
            raise ValueError(f"{self!r} samples its scale; it has no fixed standard deviation.")
        return self.scale

    def distribution(self, shape, scale=None):
        """``scale``: the sampled scale (a scalar array) of a hierarchical prior; ignored otherwise."""
        if self.hierarchical and scale is None:
            raise ValueError("a hierarchical Normal prior needs the value of its scale site.")
        scale = scale if self.hierarchical else _checks.floats(self.scale)
        base = dist.Normal(_checks.floats(self.loc), scale)
        return base.expand(tuple(shape)).to_event(len(shape))

    def to_dict(self) -> dict:
        scale = self.scale.to_dict() if isinstance(self.scale, HalfNormal) else self.scale
        return {"type": type(self).__name__, "scale": scale, "loc": self.loc}


@dataclasses.dataclass(frozen=True)
class FanInNormal(Prior):
    """``Normal(0, scale² / fan_in)`` for kernels, ``Normal(0, scale²)`` for 1-D biases.

    ``fan_in`` is the product of all but the last dimension of a kernel (the number
    of inputs of each unit). With this scaling the output variance of a
    one-hidden-layer network stays bounded as the width grows (Neal 1996), whereas
    a width-independent :class:`Normal` makes it grow linearly with the width.
    """

    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "scale", _checks.positive_float(self.scale, "FanInNormal(scale)"))

    def std(self, shape: tuple[int, ...]) -> float:
        """The prior standard deviation of each entry of an array of ``shape``."""
        if len(shape) < 2:
            return self.scale
        return self.scale / math.sqrt(math.prod(shape[:-1]))

    def distribution(self, shape):
        base = dist.Normal(_checks.floats(0.0), _checks.floats(self.std(tuple(shape))))
        return base.expand(tuple(shape)).to_event(len(shape))


PriorSpec = Prior | Mapping[str, Prior]

_PRIOR_TYPES = {cls.__name__: cls for cls in (Normal, FanInNormal)}


def prior_from_dict(data: Mapping) -> Prior:
    """Inverse of :meth:`Prior.to_dict` (used when loading a saved fit)."""
    data = dict(data)
    if isinstance(data.get("scale"), Mapping):
        data["scale"] = _checks.from_type_dict(data["scale"], {"HalfNormal": HalfNormal}, "hyperprior")
    return _checks.from_type_dict(data, _PRIOR_TYPES, "prior")


def is_hierarchical(spec: PriorSpec) -> bool:
    """Whether any prior of ``spec`` has a sampled scale."""
    priors = [spec] if isinstance(spec, Prior) else list(spec.values())
    return any(isinstance(p, Normal) and p.hierarchical for p in priors)


def fixed_scale(spec: PriorSpec) -> PriorSpec:
    """``spec`` with every hyperprior replaced by its own scale as a fixed prior scale.

    The point model behind the starts of a hierarchical model's chains (MAP fits need fixed scales).
    """
    def one(p: Prior) -> Prior:
        return Normal(p.scale.scale, p.loc) if isinstance(p, Normal) and p.hierarchical else p

    return one(spec) if isinstance(spec, Prior) else {k: one(v) for k, v in spec.items()}


def scale_groups(spec: PriorSpec, paths: Sequence[str]) -> dict[str, tuple[HalfNormal, tuple[str, ...]]]:
    """The scale sites of a hierarchical prior: ``{site: (hyperprior, paths sharing that scale)}``.

    One site per parameter array (``"<path>.scale"``) when ``spec`` is one prior, one per key
    (``"<key>.scale"``) when it is a dict. Empty for fixed-scale priors.
    """
    groups: dict[str, tuple[HalfNormal, list[str]]] = {}
    for path, (key, prior) in _assign(spec, paths).items():
        if isinstance(prior, Normal) and isinstance(prior.scale, HalfNormal):
            site = f"{path if key is None else key}.scale"
            groups.setdefault(site, (prior.scale, []))[1].append(path)
    return {site: (hyper, tuple(members)) for site, (hyper, members) in groups.items()}


def _listing(paths: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in paths)


def resolve(spec: PriorSpec, paths: Sequence[str]) -> dict[str, Prior]:
    """Assign a :class:`Prior` to every parameter path, strictly.

    Args:
      spec: one prior for all parameters, or a dict of path / glob pattern -> prior.
      paths: the dotted parameter paths of the network, e.g. ``"Dense_0.kernel"``.

    Returns:
      dict path -> prior, in the order of ``paths``.

    Raises:
      ValueError: a key matching no path, a path matched by two patterns, or a path
        without a prior. The message lists the valid paths.
      TypeError: a value that is not a :class:`Prior`.
    """
    return {path: prior for path, (_, prior) in _assign(spec, paths).items()}


def _assign(spec: PriorSpec, paths: Sequence[str]) -> dict[str, tuple[str | None, Prior]]:
    """:func:`resolve` with the key that gave each path its prior (``None`` for a single prior)."""
    paths = list(paths)
    if isinstance(spec, Prior):
        return {p: (None, spec) for p in paths}
    if not isinstance(spec, Mapping):
        raise TypeError(
            "`prior` must be a bnn prior (e.g. bnn.Normal(1.0)) or a dict mapping parameter "
            f"paths or glob patterns to priors; got {type(spec).__name__}."
        )
    for key, value in spec.items():
        if not isinstance(key, str):
            raise TypeError(f"`prior` keys must be strings (paths or patterns); got {key!r}.")
        if not isinstance(value, Prior):
            raise TypeError(
                f"`prior[{key!r}]` must be a bnn prior such as bnn.Normal(1.0); "
                f"got {type(value).__name__} {value!r}."
            )
    unmatched = [k for k in spec if k != "*" and not fnmatch.filter(paths, k)]
    if unmatched:
        raise ValueError(
            f"`prior` key(s) {_listing(unmatched)} match no parameter of the network. "
            f"Valid paths: {_listing(paths)} (glob patterns such as '*.bias' and the default '*' "
            "are allowed)."
        )
    patterns = [k for k in spec if k != "*" and k not in paths]
    resolved: dict[str, tuple[str | None, Prior]] = {}
    missing = []
    for path in paths:
        if path in spec:
            resolved[path] = (path, spec[path])
            continue
        hits = [k for k in patterns if fnmatch.fnmatchcase(path, k)]
        if len(hits) > 1:
            raise ValueError(
                f"parameter {path!r} is matched by several `prior` patterns: {_listing(hits)}. "
                "Give it an exact key, or make the patterns disjoint."
            )
        if hits:
            resolved[path] = (hits[0], spec[hits[0]])
        elif "*" in spec:
            resolved[path] = ("*", spec["*"])
        else:
            missing.append(path)
    if missing:
        raise ValueError(
            f"parameter(s) {_listing(missing)} have no prior. Add them, a pattern that matches "
            f"them, or a default '*' key to `prior`. Valid paths: {_listing(paths)}."
        )
    return resolved


LOSS_FORMS = ("mse", "sse", "half_mse")


def _form_factor(loss: str, n: int) -> float:
    """λ = factor · σ² / σ_p² for each loss form (see :func:`prior_scale_to_weight_decay`)."""
    _checks.one_of(loss, "loss", LOSS_FORMS)
    return 1.0 if loss == "sse" else 1.0 / n


def prior_scale_to_weight_decay(prior_scale: float, noise_scale: float, n: int, loss: str = "mse") -> float:
    """The L2 coefficient λ under which penalised least squares is exactly MAP.

    With Gaussian noise of standard deviation σ = ``noise_scale`` and a prior
    θ ~ Normal(0, σ_p²) with σ_p = ``prior_scale`` on every weight, the negative log
    posterior is ``Σᵢ (yᵢ − f(xᵢ))² / (2σ²) + ‖θ‖² / (2σ_p²) + const``. Rescaling it
    gives the loss forms below, each minimised by the same θ:

    ============  ==========================================  ===================
    ``loss``      loss minimised                              λ
    ============  ==========================================  ===================
    ``"mse"``     ``(1/N) Σ (y − f)² + λ ‖θ‖²``               ``σ² / (N σ_p²)``
    ``"half_mse"````(1/2N) Σ (y − f)² + (λ/2) ‖θ‖²``            ``σ² / (N σ_p²)``
    ``"sse"``     ``Σ (y − f)² + λ ‖θ‖²``                     ``σ² / σ_p²``
    ============  ==========================================  ===================

    ``"half_mse"`` is the mean of ``optax.l2_loss`` plus ``λ/2 ‖θ‖²``. Note that
    decoupled weight decay (``optax.adamw``) is a different update rule and is not
    equivalent to any prior under Adam.

    Args:
      prior_scale: σ_p, the prior standard deviation of each weight (> 0).
      noise_scale: σ, the observation noise standard deviation (> 0).
      n: N, the number of training points.
      loss: one of ``"mse"``, ``"half_mse"``, ``"sse"``.

    Example:
      >>> prior_scale_to_weight_decay(1.0, 0.1, 40)  # 0.01 / 40
      0.00025
    """
    sp = _checks.positive_float(prior_scale, "prior_scale")
    s = _checks.positive_float(noise_scale, "noise_scale")
    n = _checks.positive_int(n, "n")
    return _form_factor(loss, n) * s**2 / sp**2


def weight_decay_to_prior_scale(weight_decay: float, noise_scale: float, n: int, loss: str = "mse") -> float:
    """The prior standard deviation σ_p that an L2 coefficient λ corresponds to.

    Inverse of :func:`prior_scale_to_weight_decay` (same loss forms):
    ``σ_p = σ / sqrt(N λ)`` for ``"mse"`` and ``"half_mse"``, ``σ / sqrt(λ)`` for ``"sse"``.

    Example:
      >>> weight_decay_to_prior_scale(0.00025, 0.1, 40)
      1.0
    """
    lam = _checks.positive_float(weight_decay, "weight_decay")
    s = _checks.positive_float(noise_scale, "noise_scale")
    n = _checks.positive_int(n, "n")
    return s * math.sqrt(_form_factor(loss, n) / lam)
