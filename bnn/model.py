"""Lifting a Flax module into a NumPyro model.

:class:`BNN` pairs any ``flax.linen.Module`` with a prior on its parameters and a
likelihood. Its :meth:`BNN.model` is an ordinary NumPyro model in the usual
``model(x, y=None)`` shape: one sample site per parameter array, named by its
dotted Flax path (``"Dense_0.kernel"``; no slashes, so ArviZ/xarray accept the
names), the likelihood's own sites (``"noise_scale"`` when learned), and the
observed site ``"y"`` inside a ``"data"`` plate. Every way of fitting the network
(MLE, MAP, NUTS, SVI) and the prior predictive use that one function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import traverse_util
from numpyro import handlers

from bnn import _checks
from bnn import priors as _priors
from bnn.likelihoods import Y_ERR, Categorical, Gaussian, Likelihood

OBS_SITE = "y"
PLATE = "data"
METHODS = ("mle", "map", "nuts", "svi", "laplace")
_RESERVED = (OBS_SITE, PLATE)


class ParamSpec(NamedTuple):
    """What the lifting knows about a network for a given input width.

    Attributes:
      num_features: input columns the network is initialised with.
      paths: dotted parameter paths, e.g. ``("Dense_0.bias", "Dense_0.kernel", ...)``.
      shapes: the shape of each parameter array, in the order of ``paths``.
      priors: path -> :class:`bnn.priors.Prior`.
      width: number of network outputs.
      out: number of target columns (classes for Categorical).
    """

    num_features: int
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    priors: dict
    width: int
    out: int


def flatten_params(variables: Mapping) -> dict[str, jax.Array]:
    """Flax variables ``{"params": {...}}`` -> ``{"Dense_0.kernel": array, ...}``."""
    return traverse_util.flatten_dict(dict(variables["params"]), sep=".")


def unflatten_params(flat: Mapping[str, Any], paths) -> dict:
    """Inverse of :func:`flatten_params`, keeping only the network's ``paths``."""
    return {"params": traverse_util.unflatten_dict({p: flat[p] for p in paths}, sep=".")}


class BNN:
    """A Bayesian neural network: a Flax module, a prior on its weights and a likelihood.

    Args:
      module: any ``flax.linen.Module`` mapping inputs ``(n, features)`` to outputs
        ``(n, width)``; it must keep all its variables in the ``"params"`` collection.
      prior: a :class:`bnn.Normal` / :class:`bnn.FanInNormal` for every parameter, or a
        dict of parameter path / glob pattern -> prior with ``"*"`` as the default
        (see :mod:`bnn.priors`; wrong keys raise, listing the valid paths).
      likelihood: the observation model; default ``bnn.Gaussian()`` (noise learned).

    Example:
      >>> net = bnn.MLP(features=(10, 10, 1), activation="tanh")
      >>> model = bnn.BNN(net, prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
      >>> mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model.model), num_warmup=100, num_samples=100)
      >>> mcmc.run(jax.random.PRNGKey(0), x, y)      # any NumPyro algorithm works on model.model
    """

    def __init__(self, module: nn.Module, prior: _priors.PriorSpec | None = None, likelihood: Likelihood | None = None):
        if not isinstance(module, nn.Module):
            raise TypeError(f"`module` must be a flax.linen.Module (e.g. bnn.MLP(...)); got {type(module).__name__}.")
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
        self.module = module
        self.prior = prior
        self.likelihood = likelihood
        self._specs: dict[int, ParamSpec] = {}
        self._compiled: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"BNN(module={self.module!r}, prior={self.prior!r}, likelihood={self.likelihood!r})"

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
        dummy = jax.ShapeDtypeStruct((1, num_features), jnp.float32)
        variables = jax.eval_shape(self.module.init, jax.random.PRNGKey(0), dummy)
        extra = sorted(set(variables) - {"params"})
        if extra or "params" not in variables:
            raise ValueError(
                f"the module must keep all its variables in the 'params' collection; it also has "
                f"{extra or 'no params'}. Modules with batch statistics or other state cannot be lifted."
            )
        flat = flatten_params(variables)
        paths = tuple(flat)
        clash = [p for p in paths if p in _RESERVED or p in self.likelihood.latent_sites()]
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
        )

    def latent_sites(self, num_features: int) -> tuple[str, ...]:
        """All latent site names of the model: network parameters, then the likelihood's."""
        return self.spec(num_features).paths + tuple(self.likelihood.latent_sites())

    def init_params(self, x, seed=0) -> dict:
        """Initial Flax variables ``{"params": ...}`` from the module's own initialisers.

        This is the starting point of ``fit(method="mle" | "map")`` with the same ``seed``.
        """
        x = _checks.inputs(x)
        key = _checks.as_seed_key(seed)
        self.spec(x.shape[1])
        return self.module.init(key, jnp.asarray(x[:1]))

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
        flat = {
            path: numpyro.sample(path, spec.priors[path].distribution(shape))
            for path, shape in zip(spec.paths, spec.shapes)
        }
        lik_params = {name: numpyro.sample(name, d) for name, d in self.likelihood.latent_sites().items()}
        variables = unflatten_params(flat, spec.paths)
        with numpyro.plate(PLATE, x.shape[0], subsample_size=batch_size) as idx:
            xb = x if batch_size is None else x[idx]
            yb = y if (y is None or batch_size is None) else y[idx]
            if y_err is not None:
                lik_params = {**lik_params, Y_ERR: y_err if batch_size is None else y_err[idx]}
            f = self.module.apply(variables, xb)
            numpyro.sample(OBS_SITE, self.likelihood.distribution(f, lik_params), obs=yb)

    def log_joint_terms(self, params: Mapping[str, jax.Array], x, y, y_err=None) -> tuple[jax.Array, jax.Array]:
        """Log prior (scalar) and pointwise log-likelihood ``(n,)`` of ``params`` under :meth:`model`.

        ``params`` maps every latent site name to its (constrained) value; ``y_err`` as in
        :meth:`model`. The terms are
        read off a trace of the model itself, so they are exactly NumPyro's densities.
        """
        trace = handlers.trace(handlers.substitute(self.model, data=params)).get_trace(x, y, y_err=y_err)
        log_prior = jnp.float32(0.0)
        for name, site in trace.items():
            if site["type"] == "sample" and not site["is_observed"]:
                log_prior = log_prior + jnp.sum(site["fn"].log_prob(site["value"]))
        obs = trace[OBS_SITE]
        return log_prior, obs["fn"].log_prob(obs["value"])

    def apply(self, params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        """Network outputs ``(n, width)`` for flat parameters ``{path: array}`` (one draw)."""
        spec = self.spec(int(x.shape[1]))
        return self.module.apply(unflatten_params(params, spec.paths), x)

    def transforms(self, num_features: int) -> dict[str, dist.transforms.Transform]:
        """Bijections from unconstrained space to each latent site's support."""
        spec = self.spec(num_features)
        out = {p: dist.transforms.IdentityTransform() for p in spec.paths}
        for name, d in self.likelihood.latent_sites().items():
            out[name] = dist.transforms.biject_to(d.support)
        return out

    # --- prior predictive and fitting ---------------------------------------------

    def sample_prior(self, num_features: int, num_samples: int, seed=0) -> dict[str, jax.Array]:
        """Draws of every latent site from the prior, ``{site: (num_samples, *shape)}``."""
        num_samples = _checks.positive_int(num_samples, "num_samples")
        key = _checks.as_seed_key(seed)

        def build():
            predictive = numpyro.infer.Predictive(
                self.model, num_samples=num_samples, return_sites=list(self.latent_sites(num_features))
            )
            return jax.jit(lambda k: predictive(k, jnp.zeros((1, num_features), jnp.float32)))

        return self.compiled(("prior", num_features, num_samples), build)(key)

    def prior_predictive(self, x, num_samples: int = 100, seed=0, batch_size: int | None = None, y_err=None):
        """Whole functions drawn from the prior, evaluated at ``x``.

        Args:
          x: inputs ``(n, features)``.
          num_samples: number of prior draws of all parameters.
          seed: int or JAX key; the same seed gives the same functions.
          batch_size: inputs per chunk when evaluating (bounded memory).
          y_err: known noise scales ``(n, out)`` of the observations at ``x`` (Gaussian
            likelihood; see :meth:`fit`), used for ``y_samples`` and the aleatoric part.

        Returns:
          :class:`bnn.Predictions` whose ``samples`` ``(num_samples, n, out)`` are the
          functions' values (the per-draw mean of ``y``), and whose ``y_samples`` are
          draws of observations ``y`` (noise included).
        """
        from bnn.fit import predictions_from_draws

        from bnn.inference.optimize import prepare_errors

        x = _checks.inputs(x)
        y_err = prepare_errors(self, y_err, (x.shape[0], self.spec(x.shape[1]).out), allow_zero=True)
        key_params, key_y = jax.random.split(_checks.as_seed_key(seed))
        draws = self.sample_prior(x.shape[1], num_samples, key_params)
        return predictions_from_draws(self, draws, x, batch_size=batch_size, y_key=key_y, y_err=y_err)

    def fit(self, x, y, method: str = "map", seed=0, normalize: bool = False, y_err=None, **options):
        """Fit the model to data and return a :class:`bnn.Fit`.

        Args:
          x: inputs ``(n, features)`` or ``(n,)``.
          y: targets ``(n, out)`` or ``(n,)``; class labels for Bernoulli / Categorical.
          method: one of

            * ``"mle"``, ``"map"`` — optax on the (penalised) likelihood,
              :func:`bnn.inference.optimize.fit_point`;
            * ``"nuts"`` — NumPyro NUTS, :func:`bnn.inference.mcmc.fit_nuts`;
            * ``"svi"`` — variational inference, :func:`bnn.inference.svi.fit_svi`;
            * ``"laplace"`` — Gaussian around the MAP, :func:`bnn.inference.laplace.fit_laplace`.
          seed: int or JAX key.
          normalize: standardise inputs (and, for continuous likelihoods, targets) with the
            training mean and std before fitting; predictions come back in original units.
            ``False`` (default) fits the data as given, so priors act on the weights as written.
          y_err: known measurement errors, one positive noise scale per target, shape of ``y``
            (Gaussian likelihood only): observation ``i`` gets noise ``scale · y_errᵢ`` (see
            :class:`bnn.Gaussian`). Predictions then need ``y_err`` for the new points too.
          **options: the method's options (see those functions); unknown names raise ``TypeError``.

        Example:
          >>> nuts = model.fit(x, y, method="nuts", num_chains=4, num_warmup=500, num_samples=500)
          >>> svi = model.fit(x, y, method="svi", guide="fullrank", num_steps=5000)
          >>> chi2 = bnn.BNN(net, likelihood=bnn.Gaussian(scale=1.0)).fit(x, y, method="mle", y_err=sigma)
        """
        method = _checks.one_of(method, "method", METHODS)
        from bnn.inference import FITTERS

        from bnn.fit import Normalizer
        from bnn.inference.optimize import prepare_data, prepare_errors

        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be True or False; got {normalize!r}.")
        x, y = prepare_data(self, x, y)
        y_err = prepare_errors(self, y_err, y.shape)
        if not normalize:
            fit = FITTERS[method](self, x, y, seed=seed, y_err=y_err, **options)
            return dataclasses.replace(fit, data=(x, y))
        normalizer = Normalizer.from_data(x, y, self.likelihood.continuous)
        validation = options.get("validation")
        if isinstance(validation, tuple) and len(validation) in (2, 3):
            xv, yv = prepare_data(self, *validation[:2])
            errors = () if len(validation) == 2 else (normalizer.errors(prepare_errors(self, validation[2], yv.shape, "validation[2]")),)
            options["validation"] = (normalizer.inputs(xv), normalizer.targets(yv), *errors)
        fit = FITTERS[method](self, normalizer.inputs(x), normalizer.targets(y), seed=seed,
                              y_err=normalizer.errors(y_err), **options)
        return dataclasses.replace(fit, normalizer=normalizer, data=(x, y), y_err=y_err)

    def compiled(self, key, build):
        """A compiled function cached on the model under ``key`` (built once by ``build()``)."""
        if key not in self._compiled:
            self._compiled[key] = build()
        return self._compiled[key]
