"""The user-facing model: :class:`BNN` = a lifted Flax module + every way of fitting it.

:class:`BNN` is a :class:`bnn.lifting.LiftedModel` (the NumPyro model of a Flax module
with priors and a likelihood) with the two entry points users call: :meth:`BNN.fit`
(MLE, MAP, ensemble, Laplace, SVI, NUTS, dispatched to :mod:`bnn.inference`) and
:meth:`BNN.prior_predictive`. :func:`load` rebuilds a saved fit with its model.

Imports point down: checks → priors, likelihoods, nets → lifting → predictive →
diagnostics, io → fit → inference → model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from bnn import _checks, io
from bnn.fit import Fit
from bnn.inference import FITTERS
from bnn.lifting import LiftedModel
from bnn.predictive import Normalizer, Predictions, predictions_from_draws

METHODS = tuple(FITTERS)
#: methods that optimise the weights (a hierarchical prior's scale has no mode to optimise for)
POINT_METHODS = ("mle", "map", "ensemble", "laplace")


class BNN(LiftedModel):
    """A Bayesian neural network: a Flax module, a prior on its weights and a likelihood.

    Args:
      module: any ``flax.linen.Module`` mapping inputs ``(n, features)`` to outputs
        ``(n, width)``; it must keep all its variables in the ``"params"`` collection. Or a
        ``flax.nnx.Module`` instance holding only ``nnx.Param`` state: sites are then named
        by its attribute paths (``"linear1.kernel"``, ``"layers.0.bias"``), and, since the
        instance holds one constructed set of weights, the seed of MLE/MAP/ensemble starts
        keeps constant arrays (zero biases) and redraws the others at their constructed
        root-mean-square scale, or uses an initialiser stored in a ``nnx.Param``'s metadata
        under ``"initializer"`` (rule in :mod:`bnn.nnx_bridge`). ``model.module.variables``
        are the constructed weights, a valid ``init_params``, and ``model.module.merge(fit.params)``
        the fitted network as an NNX module. Load its fits with ``bnn.load(path, module=...)``.
      prior: a :class:`bnn.Normal` / :class:`bnn.FanInNormal` for every parameter, or a
        dict of parameter path / glob pattern -> prior with ``"*"`` as the default
        (see :mod:`bnn.priors`; wrong keys raise, listing the valid paths).
      likelihood: the observation model; default ``bnn.Gaussian()`` (noise learned).
      matmul_precision: precision of the network's matrix products; default ``"highest"``
        (see :mod:`bnn.lifting`: full float32 on GPUs, where JAX's default is TF32).

    :attr:`model` is an ordinary NumPyro model ``model(x, y=None)``, so any NumPyro
    algorithm runs on it.

    Example:
      >>> net = bnn.MLP(features=(10, 10, 1), activation="tanh")
      >>> model = bnn.BNN(net, prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
      >>> fit = model.fit(x, y, method="nuts", num_chains=4)
      >>> mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model.model), num_warmup=100, num_samples=100)
      >>> mcmc.run(jax.random.PRNGKey(0), x, y)      # any NumPyro algorithm works on model.model
    """

    def prior_predictive(self, x, num_samples: int = 100, seed=0, batch_size: int | None = None, y_err=None) -> Predictions:
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
        x = _checks.inputs(x)
        y_err = self.check_errors(y_err, (x.shape[0], self.spec(x.shape[1]).out), allow_zero=True)
        key_params, key_y = jax.random.split(_checks.as_seed_key(seed))
        draws = self.sample_prior(x.shape[1], num_samples, key_params)
        return predictions_from_draws(self, draws, x, batch_size=batch_size, y_key=key_y, y_err=y_err)

    def fit(self, x, y, method: str = "map", seed=0, normalize: bool = False, y_err=None, **options) -> Fit:
        """Fit the model to data and return a :class:`bnn.Fit`.

        Args:
          x: inputs ``(n, features)`` or ``(n,)``.
          y: targets ``(n, out)`` or ``(n,)``; class labels for Bernoulli / Categorical.
          method: one of

            * ``"mle"``, ``"map"`` — optax on the (penalised) likelihood,
              :func:`bnn.inference.optimize.fit_point`;
            * ``"nuts"`` — NumPyro NUTS, :func:`bnn.inference.mcmc.fit_nuts`;
            * ``"svi"`` — variational inference, :func:`bnn.inference.svi.fit_svi`;
            * ``"laplace"`` — Gaussian around the MAP, :func:`bnn.inference.laplace.fit_laplace`;
            * ``"ensemble"`` — ``num_members`` MAP (or MLE) fits from different starts, trained
              in one vectorised program, :func:`bnn.inference.ensemble.fit_ensemble`;
            * ``"mclmc"`` — BlackJAX microcanonical Langevin chains from MAP fits,
              :func:`bnn.inference.mclmc.fit_mclmc`;
            * ``"sgmcmc"`` — cyclical stochastic-gradient HMC (or Langevin) chains on minibatches
              from MAP fits, :func:`bnn.inference.sgmcmc.fit_sgmcmc`.
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
        if self.hierarchical and method in POINT_METHODS:
            raise ValueError(
                f"method={method!r} optimises the weights, and a sampled prior scale (bnn.HalfNormal hyperprior) "
                "has no useful mode: jointly with the weights it collapses to 0. Sample it (method='nuts', 'mclmc', "
                "'sgmcmc' or 'svi'), or use a fixed-scale prior chosen by the evidence (tune_prior=True)."
            )
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be True or False; got {normalize!r}.")
        x, y = self.check_data(x, y)
        y_err = self.check_errors(y_err, y.shape)
        if not normalize:
            _checks.warn_if_large(x, "x")
            if self.likelihood.continuous:
                _checks.warn_if_large(y, "y")
            fit = FITTERS[method](self, x, y, seed=seed, y_err=y_err, **options)
            return dataclasses.replace(fit, data=(x, y))
        normalizer = Normalizer.from_data(x, y, self.likelihood.continuous)
        validation = options.get("validation")
        if isinstance(validation, tuple) and len(validation) in (2, 3):
            xv, yv = self.check_data(*validation[:2])
            errors = () if len(validation) == 2 else (
                normalizer.errors(self.check_errors(validation[2], yv.shape, "validation[2]")),)
            options["validation"] = (normalizer.inputs(xv), normalizer.targets(yv), *errors)
        fit = FITTERS[method](self, normalizer.inputs(x), normalizer.targets(y), seed=seed,
                              y_err=normalizer.errors(y_err), **options)
        return dataclasses.replace(fit, normalizer=normalizer, data=(x, y), y_err=y_err)


def load(path, module=None) -> Fit:
    """Read a fit written by ``fit.save(path)``; it predicts identically to the saved one.

    Args:
      path: the folder written by ``fit.save``.
      module: the network, built again by the caller. ``bnn.MLP`` and ``bnn.Polynomial``
        networks are rebuilt from the saved spec, so it is optional for them; any other
        network (a custom ``flax.linen.Module`` or a ``flax.nnx.Module``) is saved by its
        class name only (no code is pickled) and must be passed here. Its parameter paths
        and shapes are checked against the saved draws.

    Example:
      >>> fit = bnn.BNN(MyNNXNet(rngs=nnx.Rngs(0))).fit(x, y)
      >>> fit.save("fit_dir")
      >>> loaded = bnn.load("fit_dir", module=MyNNXNet(rngs=nnx.Rngs(0)))   # any seed: weights come from the file

    Raises:
      FileNotFoundError: the folder, spec.json or arrays.npz is missing.
      ValueError: a corrupt file (invalid JSON, checksum mismatch), an unknown format
        version, a custom network saved without passing ``module``, or draws whose shapes
        do not match the rebuilt or given network ("mismatched").
    """
    saved = io.read(Path(path), module=module)
    model = BNN(saved.module, prior=saved.prior, likelihood=saved.likelihood, matmul_precision=saved.matmul_precision)
    return Fit(
        model=model,
        method=saved.method,
        draws=saved.draws,
        num_features=saved.num_features,
        info=saved.info,
        linearize_at=saved.linearize_at,
        normalizer=saved.normalizer,
        data=saved.data,
        y_err=saved.y_err,
    )
