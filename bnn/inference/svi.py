"""Stochastic variational inference with NumPyro's autoguides, driven by a jitted scan.

Guides (``guide=``):

* ``"normal"``   — mean-field Gaussian (``AutoNormal``);
* ``"lowrank"``  — Gaussian with a low-rank-plus-diagonal covariance (``AutoLowRankMultivariateNormal``);
* ``"fullrank"`` — Gaussian with a full covariance (``AutoMultivariateNormal``);
* ``"delta"``    — a point mass (``AutoDelta``): MAP by SVI.

Minibatches: with ``batch_size`` every step draws ``batch_size`` row indices uniformly
with replacement (O(batch_size) work, independent of N) and substitutes them into the
model's ``"data"`` plate, whose ``subsample_size`` makes NumPyro scale the batch
log-likelihood by ``N / batch_size``: the ELBO estimate is unbiased.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import SVI, autoguide
from numpyro.infer.elbo import ELBO
from numpyro.infer.initialization import init_to_value
from numpyro.infer.reparam import LocScaleReparam
from numpyro.infer.util import log_density
from numpyro.optim import optax_to_numpyro

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference._loop import (
    draw_batch,
    for_run,
    make_optimizer,
    resolve_mesh,
    run_steps,
)
from bnn.inference.evidence import start_noise_scale
from bnn.inference.optimize import map_start, train, training_rows
from bnn.lifting import PLATE, LiftedModel, run_once

GUIDES = ("normal", "lowrank", "fullrank", "delta")
INITS = ("map", "module")
DEFAULT_LEARNING_RATE = 1e-2


class TraceOrderELBO(ELBO):
    """The estimator of NumPyro's ``Trace_ELBO`` (``log p(y, z) − log q(z)`` at ``z ~ q``, the same
    keys for guide and model), summed in the order of the traces.

    ``Trace_ELBO`` (numpyro 0.22) sums its per-site terms over a Python ``set`` of site names,
    whose order follows the process's string hashing: the compiled step then differs from one
    process to the next, so JAX's persistent compilation cache never finds it (the CLI's cache
    compiled SVI's step again in every process, 2 s on the sine toy) and the loss trace's
    rounding changes between runs of one script. This sums the model's and the guide's log
    densities each in trace order, which Python fixes. For the reparametrised guides of
    :func:`make_guide` the value equals ``Trace_ELBO``'s (tests/test_svi.py).
    """

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        def elbo(key):
            model_key, guide_key = jax.random.split(key)  # as Trace_ELBO splits
            log_q, guide_trace = log_density(handlers.seed(guide, guide_key), args, kwargs, param_map)
            replayed = handlers.replay(handlers.seed(model, model_key), guide_trace)
            log_p, _ = log_density(replayed, args, kwargs, param_map)
            return log_p - log_q

        if self.num_particles == 1:
            return {"loss": -elbo(rng_key), "mutable_state": None}
        return {"loss": -jnp.mean(jax.vmap(elbo)(jax.random.split(rng_key, self.num_particles))),
                "mutable_state": None}


class _Drawn(dist.Normal):
    """``Normal(loc, scale)`` whose draw is ``loc + scale · eps`` for a given standard normal ``eps``
    (the key is ignored): its log density, support and reparametrisation are the Normal's."""

    arg_constraints = {**dist.Normal.arg_constraints, "eps": constraints.real}

    def __init__(self, loc, scale, eps, *, validate_args=None):
        self.eps = eps
        super().__init__(loc, scale, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        if sample_shape:
            raise ValueError("a pre-drawn Normal gives one draw; sample_shape must be ().")
        return self.loc + self.scale * self.eps


class OneDrawNormal(autoguide.AutoNormal):
    """NumPyro's ``AutoNormal`` drawing every site's standard normals in one call per step.

    ``AutoNormal`` samples each site on its own, and XLA compiles each random-number call (a
    threefry hash and an inverse error function) into every fusion that reads it: on the sine
    toy's six sites they were half of the compiled SVI step (6 800 of 12 800 optimised HLO lines;
    its first fit took 4.6 s, now 3.3 s: `benchmarks/COMPILE.md`). Here one draw of the total size is made, kept out of the
    consumers' fusions by an optimisation barrier, and split among the sites. Each site is the same
    ``Normal(loc, scale)`` (mapped to its support by the same transform) as in ``AutoNormal``, with
    the same parameters: only where its draw comes from differs, so its log density, the ELBO and
    its gradients are ``AutoNormal``'s at the same draw, under any handler (tests/test_svi.py).
    Sites inside a plate (local latent variables) are left to ``AutoNormal``.
    """

    def __call__(self, *args, **kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        sites = {name: site for name, site in self.prototype_trace.items()
                 if site["type"] == "sample" and not site["is_observed"]}
        if any(site["cond_indep_stack"] for site in sites.values()):
            return super().__call__(*args, **kwargs)
        key = numpyro.prng_key()
        if key is None:  # not seeded (values substituted from outside): AutoNormal's own path
            return super().__call__(*args, **kwargs)
        locs, scales = {}, {}
        for name in sites:
            init_loc, event_dim = self._init_locs[name], self._event_dims[name]
            locs[name] = numpyro.param(f"{name}_{self.prefix}_loc", init_loc, event_dim=event_dim)
            scales[name] = numpyro.param(f"{name}_{self.prefix}_scale", jnp.full(jnp.shape(init_loc), self._init_scale),
                                         constraint=self.scale_constraint, event_dim=event_dim)
        flat, unravel = ravel_pytree(locs)
        eps = unravel(jax.lax.optimization_barrier(jax.random.normal(key, flat.shape, flat.dtype)))
        result = {}
        for name, site in sites.items():
            site_fn = _Drawn(locs[name], scales[name], eps[name]).to_event(self._event_dims[name])
            support = site["fn"].support
            if support is constraints.real or (isinstance(support, constraints.independent)
                                               and support.base_constraint is constraints.real):
                result[name] = numpyro.sample(name, site_fn)
            else:
                result[name] = numpyro.sample(name, dist.TransformedDistribution(site_fn, biject_to(support)))
        return result


def make_guide(kind: str, model_fn, init_values: dict, init_scale: float, rank: int | None):
    """The NumPyro autoguide for ``kind``, started at ``init_values`` (constrained)."""
    init_loc_fn = init_to_value(values=init_values)
    if kind == "normal":
        return OneDrawNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=init_scale)
    if kind == "lowrank":
        return autoguide.AutoLowRankMultivariateNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=init_scale, rank=rank)
    if kind == "fullrank":
        return autoguide.AutoMultivariateNormal(model_fn, init_loc_fn=init_loc_fn, init_scale=init_scale)
    return autoguide.AutoDelta(model_fn, init_loc_fn=init_loc_fn)


def mean_field_draws(params: dict, transforms: dict, key, num: int) -> dict:
    """``num`` draws ``{site: (num, *shape)}`` of a fitted mean-field guide (``AutoNormal``).

    ``params``: the guide's parameters (``"{site}_auto_loc"``, ``"{site}_auto_scale"``, in
    unconstrained space); ``transforms``: each site's map to its support. Every site's
    standard normals come from one draw, so one random-number program is compiled instead of
    one per site as in ``AutoNormal.sample_posterior`` (2.3 s of a first fit on the sine toy).
    """
    loc, unravel = ravel_pytree({site: params[f"{site}_auto_loc"] for site in transforms})
    scale, _ = ravel_pytree({site: params[f"{site}_auto_scale"] for site in transforms})
    eps = jax.lax.optimization_barrier(jax.random.normal(key, (num,) + loc.shape, loc.dtype))  # drawn once, not per site
    z = jax.vmap(unravel)(loc[None] + scale[None] * eps)
    return {site: transforms[site](value) for site, value in z.items()}


def minibatch_model(model: LiftedModel):
    """The NumPyro model that SVI fits: ``fn(x, y, idx=None, y_err=None)``.

    With row indices ``idx`` the model sees those rows of the data (substituted into its
    ``"data"`` plate), whose log-likelihood NumPyro scales by ``len(x) / len(idx)``; without,
    the full batch.
    """

    def batched_model(x, y, idx=None, y_err=None):
        if idx is None:
            return model.model(x, y, y_err=y_err)
        with handlers.substitute(data={PLATE: idx}):
            return model.model(x, y, batch_size=idx.shape[0], y_err=y_err)

    return batched_model


#: NumPyro's ``LocScaleReparam`` names a non-centred site ``"<site>_decentered"``.
DECENTERED = "_decentered"


def to_guide_sites(model: LiftedModel, values: dict, num_features: int) -> dict:
    """Site values -> the guide's sites: a hierarchical prior's weights ``w`` as ``(w − loc) / scale``."""
    z = model.noncentred(values, num_features)
    return {**{k: v for k, v in values.items() if k not in z}, **{p + DECENTERED: v for p, v in z.items()}}


def from_guide_sites(model: LiftedModel, draws: dict, num_features: int) -> dict:
    """Inverse of :func:`to_guide_sites` for draws with a leading draw axis ``{site: (num, ...)}``."""
    def one(d):
        z = {k[: -len(DECENTERED)]: v for k, v in d.items() if k.endswith(DECENTERED)}
        return {**{k: v for k, v in d.items() if not k.endswith(DECENTERED)}, **model.centred(z, d, num_features)}

    return jax.vmap(one)(draws)


def fit_svi(
    model: LiftedModel,
    x,
    y,
    seed=0,
    guide: str = "normal",
    num_steps: int = 5000,
    optimizer=None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    num_particles: int = 1,
    num_samples: int | None = None,
    rank: int | None = None,
    init=None,
    init_scale: float = 0.01,
    map_options: dict | None = None,
    eval_every: int | None = None,
    progress_bar: bool = False,
    y_err=None,
    mesh=None,
) -> Fit:
    """Fit a variational posterior by maximising the ELBO.

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      guide: ``"normal"``, ``"lowrank"``, ``"fullrank"`` or ``"delta"``.
      num_steps: optimiser steps.
      optimizer: an optax transformation. Default: Adam whose rate decays from
        ``learning_rate`` (1e-2) to 0 over ``num_steps`` by a half cosine (a constant rate
        leaves the variational parameters jittering around the optimum).
      learning_rate: peak learning rate of the default Adam.
      batch_size: rows per step (with replacement), ``None`` = full batch.
      num_particles: Monte Carlo samples per ELBO estimate.
      num_samples: posterior draws taken from the fitted guide (default 1000; 1 for ``"delta"``).
      rank: rank of the ``"lowrank"`` guide (default NumPyro's, about √dim).
      init: where the guide's means start: ``"map"`` (the MAP fit of ``seed``, the default of
        the Gaussian guides), ``"module"`` (the module's initialisers with ``seed``, the
        default of ``"delta"``) or Flax variables / ``{path: array}``. From a random start
        a mean-field guide on a wide network tends to settle in an ELBO optimum that prunes
        units and under-fits (on the UCI benchmark's energy split 0, test log-likelihood
        -2.19 vs -0.86 from the MAP start, at the same 5000 steps).
      init_scale: initial standard deviation of the Gaussian guides (unconstrained space);
        small, so the guide starts as a narrow cloud around its start.
      map_options: options of the MAP fit of ``init="map"`` (see :func:`bnn.inference.optimize.fit_point`);
        it uses SVI's ``batch_size`` unless ``map_options`` sets its own.
      eval_every: steps per chunk (progress updates); default all steps in one chunk.
      progress_bar: show a progress bar.
      y_err: known noise scales of the observations (see :meth:`bnn.BNN.fit`).
      mesh: data parallelism: ``"all"`` (every local device) or a one-axis
        ``jax.sharding.Mesh``; the training rows are split over its devices (they must divide
        evenly) and the parameters replicated. ``None`` (default): one device.

    Returns:
      a :class:`bnn.Fit` whose ``draws`` come from the guide; ``info`` holds ``loss``
      (negative ELBO per step), ``guide``, ``guide_params``, ``wall_time`` and ``settled`` /
      ``loss_change`` (as for MAP; a warning says when the ELBO was still improving).
    """
    guide = _checks.one_of(guide, "guide", GUIDES)
    num_steps = _checks.positive_int(num_steps, "num_steps")
    num_particles = _checks.positive_int(num_particles, "num_particles")
    init_scale = _checks.positive_float(init_scale, "init_scale")
    if num_samples is None:
        num_samples = 1 if guide == "delta" else 1000
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if rank is not None:
        if guide != "lowrank":
            raise ValueError(f"`rank` applies to guide='lowrank' only; got guide={guide!r}.")
        rank = _checks.positive_int(rank, "rank")
    optimizer = make_optimizer(optimizer, learning_rate, DEFAULT_LEARNING_RATE)

    mesh = resolve_mesh(mesh)
    start = time.perf_counter()
    rows = training_rows(model, x, y, y_err, seed, None, batch_size)
    x, y, y_err, key, batch_size = rows.x, rows.y, rows.y_err, rows.key, rows.batch_size
    if init is None:
        init = "module" if guide == "delta" else "map"
    if isinstance(init, str):
        init = _checks.one_of(init, "init", INITS)
        start_from = init
        if init == "map":
            # A minibatch fit's MAP start uses the same minibatches: its steps then cost what SVI's do.
            start_options = {"mesh": mesh, "batch_size": batch_size, **(map_options or {})}
            noise_scale = start_noise_scale(model, x, y, jax.random.fold_in(key, _keys.NOISE_START), map_options, y_err)
            init, map_fit = map_start(model, x, y, key, start_options, y_err, noise_scale=noise_scale)
        else:
            init = model.initial_values(x, y, key)
    else:
        start_from = "given"
        init = model.initial_values(x, y, key, init)
    if map_options is not None and start_from != "map":
        raise ValueError(f"`map_options` apply to init='map' only; got init={start_from!r}.")

    scale_of = model.spec(rows.num_features).scale_site()
    if scale_of:
        init = to_guide_sites(model, init, rows.num_features)
    data = rows.on(mesh)
    key_init, key_steps, key_post = _keys.stream(key, _keys.SVI, 3)
    init_state, chunk, finish = model.program(
        _svi_programs, guide=guide, optimizer=optimizer, n=rows.n, num_features=rows.num_features,
        batch_size=batch_size, num_particles=num_particles, init_scale=init_scale, rank=rank)
    state0 = for_run(init_state(init, key_init, *data), num_steps)  # the default optimiser's run length
    state, info = train(model, rows, lambda state, key, first, count, data: chunk(state, key, first, count, init, *data),
                        state0, data, num_steps, eval_every, f"SVI ({guide})", progress_bar, key=key_steps)
    params, posterior = finish(key_post, state, num_samples, init, *data)
    posterior = from_guide_sites(model, dict(posterior), rows.num_features) if scale_of else posterior
    draws = {k: jnp.asarray(posterior[k]) for k in model.latent_sites(rows.num_features)}
    info.update(guide=guide, guide_params={k: np.asarray(v) for k, v in params.items()},
                wall_time=time.perf_counter() - start, batch_size=batch_size, init=start_from)
    if start_from == "map":
        info["map_settled"] = map_fit.info["settled"]
    return Fit(model=model, method="svi", draws=draws, num_features=rows.num_features, info=info, y_err=y_err)


def _svi_programs(model: LiftedModel, guide: str, optimizer, n: int, num_features: int, batch_size: int | None,
                  num_particles: int, init_scale: float, rank: int | None):
    """The jitted programs of an SVI fit, compiled once per model and settings.

    ``init_state(values, key, xs, ys, es)``: the SVI state of a guide started at ``values``;
    ``chunk(state, key, first, count, values, xs, ys, es)``: ``count`` SVI steps (see
    :func:`bnn.inference._loop.run_steps`);
    ``finish(key, state, num, values, xs, ys, es)``: the guide's parameters and ``num``
    posterior draws. ``values`` (the start) only sets up each program's guide: the steps and
    draws read the guide's parameters from ``state``.
    """
    batched_model = minibatch_model(model)
    scale_of = model.spec(num_features).scale_site()
    guide_transforms = model.transforms(num_features)
    if scale_of:
        # a hierarchical prior's weights are non-centred: the guide fits z = (w − loc) / scale ~ Normal(0, 1)
        batched_model = handlers.reparam(batched_model, config={p: LocScaleReparam(centered=0) for p in scale_of})
        guide_transforms = {(k + DECENTERED if k in scale_of else k): t for k, t in guide_transforms.items()}

    def make_svi(values, key, xs, ys, es):
        """A guide started at ``values``, its SVI and that SVI's initial state.

        Called inside each compiled program: setting up an autoguide (tracing the model,
        checking the start's log density and gradient) op by op outside a program compiles
        every operation on its own, which costs more than a short fit (4.8 s of a first fit
        on the sine toy). Inside, the set-up is traced with the program and what a program
        does not use of it is compiled away.
        """
        guide_obj = make_guide(guide, batched_model, values, init_scale, rank)
        svi = SVI(batched_model, guide_obj, optax_to_numpyro(optimizer), TraceOrderELBO(num_particles=num_particles))
        return guide_obj, svi, svi.init(key, xs, ys, draw_batch(key, n, batch_size), es)

    def init_state(values, key, xs, ys, es):
        return make_svi(values, key, xs, ys, es)[2]

    @jax.jit
    def chunk(state, key, first, count, values, xs, ys, es):
        _, svi, _ = make_svi(values, key, xs, ys, es)

        def step(state, step_key):
            return svi.update(state, xs, ys, draw_batch(step_key, n, batch_size), es)

        return run_steps(step, state, key, first, count)

    def finish(key, state, num, values, xs, ys, es):
        guide_obj, svi, _ = make_svi(values, key, xs, ys, es)
        params = svi.get_params(state)
        if guide == "normal":
            return params, mean_field_draws(params, guide_transforms, key, num)
        with jax.numpy_rank_promotion("allow"):  # NumPyro's samplers rely on implicit rank promotion
            return params, guide_obj.sample_posterior(key, params, sample_shape=(num,))

    # the draws run once per fit: compiled at the run-once level (its values unchanged; the start is
    # not, as its log transforms round differently there)
    return jax.jit(init_state), chunk, run_once(finish, static_argnums=2)
