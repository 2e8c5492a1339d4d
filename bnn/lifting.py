"""Lifting a Flax module into a NumPyro model: the layer every method builds on.

:class:`LiftedModel` pairs any ``flax.linen.Module`` (or ``flax.nnx.Module`` instance, wrapped
by :class:`bnn.nnx_bridge.NNXModule` into the same ``init`` / ``apply`` interface) with a
prior on its parameters and a likelihood. Its :meth:`LiftedModel.model` is an ordinary
NumPyro model in the usual ``model(x, y=None)`` shape: one sample site per parameter
array, named by its dotted Flax path (``"Dense_0.kernel"``; for NNX the attribute path,
``"linear1.kernel"``, ``"layers.0.bias"``; no slashes, so ArviZ/xarray accept the
names), the likelihood's own sites (``"noise_scale"`` when learned), and the
observed site ``"y"`` inside a ``"data"`` plate. Every way of fitting the network
(MLE, MAP, NUTS, SVI, Laplace) and the prior predictive use that one function.

The user-facing :class:`bnn.BNN` (in :mod:`bnn.model`) adds ``fit`` and
``prior_predictive`` on top; the inference methods need only what is here.

Matrix products inside the network run at ``matmul_precision`` (default ``"highest"``):
on NVIDIA GPUs JAX's default multiplies float32 matrices in TF32 (about 3 significant
digits), which breaks identities such as MAP = L2-penalised training at the 1e-3 level.
CPUs always multiply in full float32, so there the setting changes nothing.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from flax import nnx, traverse_util
from numpyro import handlers

from bnn import _checks, _programs
from bnn import priors as _priors
from bnn.likelihoods import NOISE_SITE, Y_ERR, Categorical, Gaussian, Likelihood
from bnn.nnx_bridge import NNXModule

OBS_SITE = "y"
PLATE = "data"
_RESERVED = (OBS_SITE, PLATE)
#: XLA options of programs that run once per fit (set-ups, not loops): LLVM optimisation level
#: 1 of XLA's default 3 halves their compile time (the module's initialisers: 0.61 -> 0.31 s in
#: a first fit of the sine toy, same values to the bit), and their run time does not matter.
RUN_ONCE = {"xla_backend_optimization_level": 1}


def _hashable(content):
    """``content`` if it can be hashed (a cache key), else ``None``."""
    try:
        hash(content)
    except TypeError:
        return None
    return content


def run_once(fn, **jit_options):
    """``jax.jit(fn, **jit_options)`` compiled with :data:`RUN_ONCE` when called at the top level.

    JAX accepts compiler options on top-level programs only and refuses them with a
    ``ValueError`` inside a user's trace (``jax.jit``, ``jax.eval_shape``); there the call is
    traced into the enclosing program instead (an error of ``fn`` itself recurs there).
    """
    fast, plain = jax.jit(fn, compiler_options=RUN_ONCE, **jit_options), jax.jit(fn, **jit_options)

    def call(*args):
        try:
            return fast(*args)
        except ValueError:
            return plain(*args)

    return call


#: ``jax.default_matmul_precision`` values accepted by ``matmul_precision``.
MATMUL_PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


class ParamSpec(NamedTuple):
    """What the lifting knows about a network for a given input width.

    Attributes:
      num_features: input columns the network is initialised with.
      paths: dotted parameter paths, e.g. ``("Dense_0.bias", "Dense_0.kernel", ...)``.
      shapes: the shape of each parameter array, in the order of ``paths``.
      priors: path -> :class:`bnn.priors.Prior`.
      width: number of network outputs.
      out: number of target columns (classes for Categorical).
      scales: the sampled prior scales of a hierarchical prior, ``{site: (hyperprior, paths)}``
        (see :func:`bnn.priors.scale_groups`); empty for fixed-scale priors.
    """

    num_features: int
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    priors: dict
    width: int
    out: int
    scales: dict = {}

    def scale_site(self) -> dict[str, str]:
        """Parameter path -> the name of its scale site, for the paths under a hierarchical prior."""
        return {path: site for site, (_, members) in self.scales.items() for path in members}


def flatten_params(variables: Mapping) -> dict[str, jax.Array]:
    """Flax variables ``{"params": {...}}`` -> ``{"Dense_0.kernel": array, ...}``."""
    return traverse_util.flatten_dict(dict(variables["params"]), sep=".")


def unflatten_params(flat: Mapping[str, Any], paths) -> dict:
    """Inverse of :func:`flatten_params`, keeping only the network's ``paths``."""
    return {"params": traverse_util.unflatten_dict({p: flat[p] for p in paths}, sep=".")}


class LiftedModel:
    """A Flax module, a prior on its weights and a likelihood, as one NumPyro model.

    The arguments (``module``, ``prior``, ``likelihood``, ``matmul_precision``) are those of
    :class:`bnn.BNN`, the user-facing subclass; inference methods need only what is here.
    """

    def __init__(self, module: nn.Module | nnx.Module | NNXModule, prior: _priors.PriorSpec | None = None,
                 likelihood: Likelihood | None = None, matmul_precision: str = "highest"):
        if isinstance(module, nnx.Module):
            module = NNXModule(module)
        if not isinstance(module, (nn.Module, NNXModule)):
            raise TypeError(
                "`module` must be a flax.linen.Module (e.g. bnn.MLP(...)) or a flax.nnx.Module instance; "
                f"got {type(module).__name__}."
            )
        prior = _priors.Normal(1.0) if prior is None else prior
        if not isinstance(prior, (_priors.Prior, Mapping)):
            raise TypeError(
                "`prior` must be a bnn prior (e.g. bnn.Normal(1.0)) or a dict of path -> prior; "
                f"got {type(prior).__name__}."
            )
        likelihood = Gaussian() if likelihood is None else likelihood
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                "`likelihood` must be a bnn likelihood (bnn.Gaussian(), bnn.Heteroscedastic(), "
                f"bnn.Bernoulli(), bnn.Categorical()); got {type(likelihood).__name__}."
            )
        # The parts are read-only (a dict prior is kept as a read-only copy): compiled programs are
        # cached by them and shared between models with equal parts, so a part changed afterwards
        # would leave programs of the old model in use. Build another model instead.
        self._module: nn.Module | NNXModule = module
        self._prior = types.MappingProxyType(dict(prior)) if isinstance(prior, Mapping) else prior
        self._likelihood = likelihood
        self._matmul_precision = _checks.one_of(matmul_precision, "matmul_precision", MATMUL_PRECISIONS)
        self._specs: dict[int, ParamSpec] = {}
        self._programs = _programs.for_model(self._content())
        # the initialisers depend on the module alone: models that differ only in prior,
        # likelihood or precision (a comparison of priors) share them
        self._init_programs = _programs.for_model(_hashable(("module", module)))

    @property
    def module(self) -> nn.Module | NNXModule:
        """The linen module, or the NNX module wrapped as :class:`bnn.nnx_bridge.NNXModule`."""
        return self._module

    @property
    def prior(self) -> _priors.PriorSpec:
        """The prior: one :class:`bnn.Prior`, or a read-only mapping of path pattern -> prior."""
        return self._prior

    @property
    def likelihood(self) -> Likelihood:
        return self._likelihood

    @property
    def matmul_precision(self) -> str:
        return self._matmul_precision

    def _content(self):
        """The model's parts as one hashable value (models with equal parts share their compiled
        programs, :func:`bnn._programs.for_model`), or ``None`` when a part cannot be compared by value."""
        prior = tuple(self.prior.items()) if isinstance(self.prior, Mapping) else self.prior
        return _hashable((type(self), self.module, prior, self.likelihood, self.matmul_precision))

    def __repr__(self) -> str:
        precision = "" if self.matmul_precision == "highest" else f", matmul_precision={self.matmul_precision!r}"
        prior = dict(self.prior) if isinstance(self.prior, Mapping) else self.prior
        return f"{type(self).__name__}(module={self.module!r}, prior={prior!r}, likelihood={self.likelihood!r}{precision})"

    # --- structure -----------------------------------------------------------------

    def spec(self, num_features: int) -> ParamSpec:
        """Parameter paths, shapes and priors of the network for inputs of ``num_features`` columns.

        Computed once per input width (by ``jax.eval_shape``, no FLOPs) and cached.
        """
        num_features = _checks.positive_int(num_features, "num_features")
        if num_features not in self._specs:
            self._specs[num_features] = self._build_spec(num_features)
        return self._specs[num_features]

    def _build_spec(self, num_features: int) -> ParamSpec:
        dummy = jax.ShapeDtypeStruct((1, num_features), _checks.float_dtype())
        variables = jax.eval_shape(self.module.init, jax.random.PRNGKey(0), dummy)
        extra = sorted(set(variables) - {"params"})
        if extra or "params" not in variables:
            raise ValueError(
                f"the module must keep all its variables in the 'params' collection; it also has "
                f"{extra or 'no params'}. Modules with batch statistics or other state cannot be lifted."
            )
        flat = flatten_params(variables)
        paths = tuple(flat)
        scales = _priors.scale_groups(self.prior, paths)
        clash = [p for p in (*paths, *scales) if p in _RESERVED or p in self.likelihood.latent_sites()]
        if clash:
            raise ValueError(f"parameter path(s) {clash} clash with reserved site names {_RESERVED}.")
        out_shape = jax.eval_shape(self.module.apply, variables, dummy)
        if not hasattr(out_shape, "shape") or len(out_shape.shape) != 2:
            raise ValueError(
                "the module must return one array of shape (n, outputs) for inputs (n, features); "
                f"got {out_shape!r}."
            )
        width = int(out_shape.shape[1])
        return ParamSpec(
            num_features=num_features,
            paths=paths,
            shapes=tuple(tuple(flat[p].shape) for p in paths),
            priors=_priors.resolve(self.prior, paths),
            width=width,
            out=self.likelihood.targets(width),
            scales=scales,
        )

    def latent_sites(self, num_features: int) -> tuple[str, ...]:
        """All latent site names of the model: network parameters, sampled prior scales, then the likelihood's."""
        spec = self.spec(num_features)
        return spec.paths + tuple(spec.scales) + tuple(self.likelihood.latent_sites())

    @property
    def hierarchical(self) -> bool:
        """Whether the prior has sampled scales (``bnn.Normal(scale=bnn.HalfNormal(...))``)."""
        return _priors.is_hierarchical(self.prior)

    def init_params(self, x, seed=0) -> Any:
        """Initial Flax variables ``{"params": ...}`` from the module's own initialisers.

        This is the starting point of ``fit(method="mle" | "map")`` with the same ``seed``.
        A linen module re-runs its initialisers with the seed's key; an NNX module, which
        holds one constructed set of weights, follows the rule of :mod:`bnn.nnx_bridge`
        (its ``nnx.Param`` initialiser if recorded in metadata, else constant arrays kept
        and other arrays redrawn at their constructed root-mean-square scale).
        """
        x = _checks.inputs(x)
        key = _checks.as_seed_key(seed)
        self.spec(x.shape[1])
        return self._module_init(x.shape[1])(key, jnp.asarray(x[:1]))

    def _module_init(self, width: int):
        """``module.init(key, x)`` as one compiled program per input width.

        Run eagerly, every operation of the initialisers compiles on its own (18-20 small
        programs, about 1 s of a first fit). (Vectorised over keys it compiles for longer than
        it saves over a loop of calls.)
        """
        return self._init_programs.get(_module_init_program, self, width=width)

    # --- the NumPyro model ---------------------------------------------------------

    def model(self, x, y=None, batch_size: int | None = None, y_err=None):
        """The NumPyro model: priors on every parameter, the likelihood on ``y``.

        Args:
          x: inputs, ``(n, features)`` (or ``(n,)`` for one feature).
          y: targets ``(n, out)`` / ``(n,)`` or ``None`` to sample them (prior or
            posterior predictive).
          batch_size: if given, the ``"data"`` plate subsamples ``batch_size`` rows and
            NumPyro scales their log-likelihood by ``n / batch_size`` (unbiased).
          y_err: known noise scales ``(n, out)`` / ``(n,)`` of the observations (Gaussian
            likelihood only; see :class:`bnn.Gaussian`), or ``None``.

        Sites: each parameter path, the likelihood's latent sites, and ``"y"``.
        """
        x = jnp.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        spec = self.spec(int(x.shape[1]))
        if y is not None:
            y = jnp.asarray(y)
            if y.ndim == 1 and not isinstance(self.likelihood, Categorical):
                y = y[:, None]
        if y_err is not None:
            y_err = jnp.asarray(y_err)
            y_err = y_err[:, None] if y_err.ndim == 1 else y_err
        scales = {site: numpyro.sample(site, hyper.distribution()) for site, (hyper, _) in spec.scales.items()}
        scale_of = spec.scale_site()
        flat = {
            path: numpyro.sample(path, spec.priors[path].distribution(shape, scales[scale_of[path]])
                                 if path in scale_of else spec.priors[path].distribution(shape))
            for path, shape in zip(spec.paths, spec.shapes)
        }
        lik_params = {name: numpyro.sample(name, d) for name, d in self.likelihood.latent_sites().items()}
        variables = unflatten_params(flat, spec.paths)
        with numpyro.plate(PLATE, x.shape[0], subsample_size=batch_size) as idx:
            xb = x if batch_size is None else x[idx]
            yb = y if (y is None or batch_size is None) else y[idx]
            if y_err is not None:
                lik_params = {**lik_params, Y_ERR: y_err if batch_size is None else y_err[idx]}
            f = self.network(variables, xb)
            numpyro.sample(OBS_SITE, self.likelihood.distribution(f, lik_params), obs=yb)

    def log_joint_terms(self, params: Mapping[str, jax.Array], x, y, y_err=None) -> tuple[jax.Array, jax.Array]:
        """Log prior (scalar) and pointwise log-likelihood ``(n,)`` of ``params`` under :meth:`model`.

        ``params`` maps every latent site name to its (constrained) value; ``y_err`` as in
        :meth:`model`. The terms are
        read off a trace of the model itself, so they are exactly NumPyro's densities.
        """
        trace = handlers.trace(handlers.substitute(self.model, data=params)).get_trace(x, y, y_err=y_err)
        log_prior = jnp.zeros(())
        for site in trace.values():
            if site["type"] == "sample" and not site["is_observed"]:
                log_prior = log_prior + jnp.sum(site["fn"].log_prob(site["value"]))
        obs = trace[OBS_SITE]
        return log_prior, obs["fn"].log_prob(obs["value"])

    def network(self, variables: Mapping, x: jax.Array) -> jax.Array:
        """The module applied to Flax ``variables`` at ``x``, with matrix products at ``matmul_precision``."""
        with jax.default_matmul_precision(self.matmul_precision):
            out: jax.Array = self.module.apply(variables, x)  # type: ignore[assignment]
        return out

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Network outputs ``(n, width)`` for flat parameters ``{path: array}`` (one draw)."""
        spec = self.spec(int(x.shape[1]))
        return self.network(unflatten_params(params, spec.paths), x)

    def transforms(self, num_features: int) -> dict[str, dist.transforms.Transform]:
        """Bijections from unconstrained space to each latent site's support."""
        spec = self.spec(num_features)
        out = {p: dist.transforms.IdentityTransform() for p in spec.paths}
        for name, (hyper, _) in spec.scales.items():
            out[name] = dist.transforms.biject_to(hyper.distribution().support)
        for name, d in self.likelihood.latent_sites().items():
            out[name] = dist.transforms.biject_to(d.support)
        return out

    # --- prior predictive and fitting ---------------------------------------------

    def sample_prior(self, num_features: int, num_samples: int, seed=0) -> dict[str, jax.Array]:
        """Draws of every latent site from the prior, ``{site: (num_samples, *shape)}``."""
        num_samples = _checks.positive_int(num_samples, "num_samples")
        key = _checks.as_seed_key(seed)
        return self.program(_prior_program, num_features=num_features, num_samples=num_samples)(key)

    # --- data --------------------------------------------------------------------------

    def check_data(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Validate training data: ``x`` as ``(n, features)``, ``y`` in the likelihood's canonical shape."""
        x = _checks.inputs(x, "x")
        spec = self.spec(x.shape[1])
        y = self.likelihood.check_y(y, spec.width, "y")
        _checks.same_length(x, y)
        return x, y

    def check_errors(self, y_err, shape: tuple[int, int], name: str = "y_err",
                     allow_zero: bool = False) -> np.ndarray | None:
        """Validate known per-observation noise scales for targets of ``shape`` ``(n, out)`` (``None`` passes through)."""
        return None if y_err is None else self.likelihood.check_y_err(y_err, shape, name, allow_zero)

    def initial_values(self, x: np.ndarray, y: np.ndarray, key, init_params=None) -> dict[str, jax.Array]:
        """Starting values of every latent site (constrained), ``{site: array}``.

        Network parameters come from ``init_params`` (Flax variables or ``{path: array}``)
        or from the module's initialisers with ``key``; a learned Gaussian noise scale
        starts at the standard deviation of ``y``.
        """
        spec = self.spec(x.shape[1])
        if init_params is None:
            flat = flatten_params(self.init_params(x, key))
        else:
            flat = dict(flatten_params(init_params)) if "params" in init_params else dict(init_params)
            wrong = {p: np.shape(flat[p]) for p, s in zip(spec.paths, spec.shapes) if p in flat and np.shape(flat[p]) != s}
            if (set(flat) - set(spec.paths) - set(spec.scales) - set(self.likelihood.latent_sites())
                    or set(spec.paths) - set(flat) or wrong):
                raise ValueError(
                    "`init_params` must hold exactly the network's parameters "
                    f"{dict(zip(spec.paths, spec.shapes))}; got {({k: np.shape(v) for k, v in flat.items()})}."
                )
        values = {p: _checks.floats(flat[p]) for p in spec.paths}
        values.update(self.scale_values(values, x.shape[1], given=flat))
        for name in self.likelihood.latent_sites():
            if name in flat:
                values[name] = _checks.floats(flat[name])
            elif name == NOISE_SITE:
                values[name] = _checks.floats(max(float(np.std(y)), 1e-3))
            else:  # pragma: no cover - no other likelihood sites exist yet
                raise ValueError(f"no initial value rule for likelihood site {name!r}")
        return values

    def scale_values(self, weights: Mapping[str, jax.Array], num_features: int, given: Mapping | None = None) -> dict:
        """Starting values of the sampled prior scales: each group's root-mean-square deviation of its
        weights from the prior's ``loc`` (at least 1e-3), unless ``given`` holds the site."""
        spec = self.spec(num_features)
        out = {}
        for site, (_, members) in spec.scales.items():
            if given is not None and site in given:
                out[site] = _checks.floats(given[site])
                continue
            squares = [jnp.square(weights[p] - spec.priors[p].loc).ravel() for p in members]
            out[site] = jnp.maximum(jnp.sqrt(jnp.mean(jnp.concatenate(squares))), 1e-3).astype(_checks.float_dtype())
        return out

    def point_model(self) -> LiftedModel:
        """The model with every hyperprior replaced by a fixed prior scale (its own scale), for the
        MAP fits that start a hierarchical model's chains; ``self`` when the prior has no sampled scales."""
        if not self.hierarchical:
            return self
        # kept on the model, so the chains' MAP fits share its compiled programs
        return self.program(_point_model)

    def with_likelihood(self, likelihood: Likelihood) -> LiftedModel:
        """A model of the same class with this network, prior and matmul precision, and ``likelihood``
        (e.g. a learned Gaussian noise fixed at a chosen scale)."""
        return type(self)(self.module, prior=self.prior, likelihood=likelihood, matmul_precision=self.matmul_precision)

    # --- non-centred coordinates of the samplers ------------------------------------

    def constrain(self, u: Mapping[str, jax.Array], num_features: int) -> tuple[dict[str, jax.Array], jax.Array]:
        """Unconstrained sampler coordinates ``u`` -> site values, and the log-Jacobian of that map.

        Every site goes through its support's bijection (:meth:`transforms`), except the weights
        under a sampled scale, which are non-centred: ``w = loc + scale · u``, so ``u`` is a
        standard normal under the prior whatever the scale (no funnel for the sampler).
        """
        spec = self.spec(num_features)
        transforms = self.transforms(num_features)
        scale_of = spec.scale_site()
        values, log_det = {}, jnp.zeros(())
        for site, value in u.items():
            if site not in scale_of:
                values[site] = transforms[site](value)
                log_det = log_det + jnp.sum(transforms[site].log_abs_det_jacobian(value, values[site]))
        values.update(self.centred(u, values, num_features))
        for path, site in scale_of.items():
            log_det = log_det + u[path].size * jnp.log(values[site])
        return values, log_det

    def unconstrain(self, values: Mapping[str, jax.Array], num_features: int) -> dict[str, jax.Array]:
        """Inverse of :meth:`constrain` (site values -> sampler coordinates)."""
        transforms = self.transforms(num_features)
        scale_of = self.spec(num_features).scale_site()
        u = {k: transforms[k].inv(v) for k, v in values.items() if k not in scale_of}
        u.update(self.noncentred(values, num_features))
        return u

    def noncentred(self, values: Mapping[str, jax.Array], num_features: int) -> dict[str, jax.Array]:
        """``{path: (w − loc) / scale}`` for the weights under a sampled scale (``values`` holds both)."""
        spec = self.spec(num_features)
        return {p: (values[p] - spec.priors[p].loc) / values[site] for p, site in spec.scale_site().items()}

    def centred(self, z: Mapping[str, jax.Array], scales: Mapping[str, jax.Array], num_features: int) -> dict:
        """Inverse of :meth:`noncentred`: ``{path: loc + scale · z}``, the scales read from ``scales``."""
        spec = self.spec(num_features)
        return {p: spec.priors[p].loc + scales[site] * z[p] for p, site in spec.scale_site().items()}

    # --- compiled programs ---------------------------------------------------------

    def program(self, build, /, **settings):
        """``build(self, **settings)``: a compiled program, built once per builder, settings and float type.

        ``build`` is a module-level function; the cache key is derived from it and the settings
        (see :mod:`bnn._programs`), so a model used under ``jax.enable_x64`` gets float64 programs
        and every setting a builder sees is part of its key.
        """
        return self._programs.get(build, self, **settings)


# --- program builders (see LiftedModel.program) ----------------------------------------


def _module_init_program(model: LiftedModel, width: int):
    del width  # one program per input width
    return run_once(model.module.init)


def _prior_program(model: LiftedModel, num_features: int, num_samples: int):
    predictive = numpyro.infer.Predictive(model.model, num_samples=num_samples,
                                          return_sites=list(model.latent_sites(num_features)))
    # prior draws are a set-up (run once per call): 1.6 -> 0.7 s to compile for the sine toy, same draws
    return run_once(lambda k: predictive(k, jnp.zeros((1, num_features), _checks.float_dtype())))


def _point_model(model: LiftedModel) -> LiftedModel:
    return LiftedModel(model.module, prior=_priors.fixed_scale(model.prior), likelihood=model.likelihood,
                       matmul_precision=model.matmul_precision)
