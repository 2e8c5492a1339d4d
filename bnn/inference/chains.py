"""The chain driver of every sampler: starts, the flat potential, the chain method, chunked runs.

A sampler is a *kernel* plugged into this driver, as NumPyro separates ``MCMCKernel`` from
``MCMC`` and BlackJAX separates ``init``/``step`` from the loop. A kernel is a module-level
function ``build(model, unravel, **settings) -> Kernel`` whose two functions act on one chain:

* ``init(z0, key, data) -> state``: the chain's state at the flat start ``z0``;
* ``advance(state, data, first, count) -> (state, out)``: ``count`` (at most :data:`CHUNK`)
  iterations, the first of them iteration ``first`` of the run; ``out`` holds, per iteration,
  the flat position ``"z"`` ``(CHUNK, dim)`` and the kernel's statistics ``(CHUNK,)`` (rows
  past ``count`` are zeros; :func:`bnn.inference._loop.recorded_loop` writes them), one of them
  ``"diverging"``.

Warm-up is iterations too (the caller keeps the later ones), so one compiled ``advance`` serves
both, as NumPyro's NUTS adapts inside its sample kernel. ``first`` is the same for every chain:
a kernel whose iterations differ by phase (MCLMC's tuner) branches on it with ``lax.cond``,
which stays a branch, not a ``select`` of both sides, when chains are vectorised.

The driver (:func:`run_chains`) starts the chains (``init=``: a MAP fit per chain, the
module's initialisers, a prior draw, or given values), compiles the kernel once per model
and settings (:meth:`bnn.lifting.LiftedModel.program`), maps it over chains by
``chain_method`` (``"parallel"``: ``jax.pmap``, one chain per device; ``"vectorized"``:
``jax.vmap``; ``"sequential"``: one chain after another), runs it in chunks with a progress
bar, and raises one sampler-health warning with the kernel's own advice.

Samplers run on one flat vector of the model's unconstrained sites (:class:`FlatLayout`):
every operation of a transition then acts on one array instead of one per weight matrix. A
hierarchical prior's weights are non-centred (see :func:`flat_potential`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from bnn import _checks, _keys
from bnn.inference._loop import progress, shard_rows
from bnn.inference.optimize import map_start
from bnn.lifting import LiftedModel, run_once

CHAIN_METHODS = ("parallel", "vectorized", "sequential")
#: iterations per call of a compiled kernel (the progress bar moves once per chunk)
CHUNK = 200


class Kernel(NamedTuple):
    """One chain's ``init(z0, key, data) -> state`` and ``advance(state, data, first, count) -> (state, out)``."""

    init: Callable[..., Any]
    advance: Callable[..., Any]


class Health(NamedTuple):
    """How a kernel's flagged iterations (its ``"diverging"`` statistic) read in the warning."""

    what: str    #: e.g. "NUTS transitions diverged"
    advice: str  #: what to try, in one sentence


class ChainRun(NamedTuple):
    """What :func:`run_chains` returns: checked data, the draws and the per-iteration statistics."""

    x: np.ndarray
    y: np.ndarray
    y_err: np.ndarray | None
    draws: dict  #: ``{site: (chains * kept, *shape)}``, chain-major, constrained
    stats: dict  #: ``{name: (chains, kept)}``
    num_divergences: int

    def info(self, num_warmup: int, chain_method: str, start: float, **more) -> dict:
        """The ``Fit.info`` entries every sampler has, then ``more``; ``start`` is the fit's ``perf_counter()``."""
        chains, kept = self.stats["diverging"].shape
        return {"num_chains": int(chains), "num_samples": int(kept), "num_warmup": num_warmup,
                "chain_method": chain_method, **more, "sample_stats": self.stats,
                "num_divergences": self.num_divergences, "wall_time": time.perf_counter() - start,
                "num_train": int(self.x.shape[0])}


def resolve_chain_method(chain_method: str | None, num_chains: int) -> str:
    """``chain_method`` checked; ``None`` picks ``"parallel"`` with a device per chain, else ``"vectorized"``."""
    devices = jax.local_device_count()
    if chain_method is None:
        if num_chains == 1:
            return "sequential"
        return "parallel" if devices >= num_chains else "vectorized"
    chain_method = _checks.one_of(chain_method, "chain_method", CHAIN_METHODS)
    if chain_method == "parallel" and devices < num_chains:
        raise ValueError(
            f"`chain_method='parallel'` needs one device per chain: {num_chains} chains but JAX sees "
            f"{devices} device(s). On CPU set XLA_FLAGS=--xla_force_host_platform_device_count={num_chains} "
            "(or call numpyro.set_host_device_count) before JAX starts, or use chain_method='vectorized'."
        )
    return chain_method


def run_chains(model: LiftedModel, kernel: Callable[..., Kernel], settings: dict, prepared: Prepared,
               chain_method: str, num_iterations: int, keep: slice, health: Health, progress_bar: bool,
               name: str, mesh=None) -> ChainRun:
    """Run the chains of ``kernel`` from ``prepared`` (:func:`prepare_chains`) for ``num_iterations``
    iterations and keep ``keep`` of them.

    ``settings`` are the kernel's keyword settings (its compiled program is cached under them);
    ``chain_method`` as checked by :func:`resolve_chain_method`; ``mesh`` (resolved, or None): the
    training rows split over its devices (:func:`bnn.inference._loop.shard_rows`).
    """
    x, y, y_err, key_run, _, starts, unravel = prepared
    keys = jax.random.split(key_run, int(starts.shape[0]))
    data = shard_rows(jax.tree.map(jnp.asarray, (x, y, y_err)), mesh, x.shape[0])
    flat, stats = sample(model, kernel, settings, unravel, starts, keys, data, chain_method, num_iterations,
                         progress_bar, name)
    flat, stats = flat[:, keep], {k: v[:, keep] for k, v in stats.items()}  # (chains, kept, ...)
    draws = model.program(_draws_program, unravel=unravel, num_features=x.shape[1])(
        flat.reshape((-1,) + flat.shape[2:]))
    divergences = int(stats["diverging"].sum())
    if divergences:
        warnings.warn(f"{divergences} of {stats['diverging'].size} {health.what}: {health.advice}", UserWarning,
                      stacklevel=4)
    return ChainRun(x, y, y_err, draws, stats, divergences)


def sample(model: LiftedModel, kernel: Callable[..., Kernel], settings: dict, unravel: FlatLayout, starts, keys,
           data, chain_method: str, num_iterations: int, progress_bar: bool = False, name: str = "",
           batched_data: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``num_iterations`` iterations of every chain: flat positions ``(chains, iterations, dim)`` and
    statistics ``{name: (chains, iterations)}``.

    ``starts`` ``(chains, dim)``, ``keys`` ``(chains,)``; ``data`` ``(x, y, y_err)``. With
    ``batched_data`` (vectorised chains only) every chain has its own ``y`` (``(chains, n, out)``,
    the same ``x``): many data sets sampled by one program, as simulation-based calibration does.
    """
    if batched_data and chain_method != "vectorized":
        raise ValueError(f"chains with their own data run vectorised; got chain_method={chain_method!r}.")
    init_fn, advance_fn = model.program(_chain_program, kernel=kernel, unravel=unravel, chain_method=chain_method,
                                        batched_data=batched_data, **settings)
    num_chains = int(starts.shape[0])
    bar = progress(num_chains * num_iterations if chain_method == "sequential" else num_iterations, name, progress_bar)
    try:
        if chain_method == "sequential":
            runs = [_run(init_fn, advance_fn, starts[c], keys[c], data, num_iterations, bar) for c in range(num_chains)]
            return np.stack([r[0] for r in runs]), {k: np.stack([r[1][k] for r in runs]) for k in runs[0][1]}
        return _run(init_fn, advance_fn, starts, keys, data, num_iterations, bar)
    finally:
        if bar is not None:
            bar.close()


def _chain_program(model: LiftedModel, kernel: Callable[..., Kernel], unravel: FlatLayout, chain_method: str,
                   batched_data: bool = False, **settings) -> Kernel:
    """The kernel's ``init`` and ``advance`` compiled over chains by ``chain_method``."""
    one = kernel(model, unravel, **settings)
    data_axes = (None, 0, None) if batched_data else None
    if chain_method == "vectorized":
        return Kernel(jax.jit(jax.vmap(one.init, in_axes=(0, 0, data_axes))),
                      jax.jit(jax.vmap(one.advance, in_axes=(0, data_axes, None, None))))
    if chain_method == "parallel":
        return Kernel(jax.pmap(one.init, in_axes=(0, 0, None)), jax.pmap(one.advance, in_axes=(0, None, None, None)))
    return Kernel(jax.jit(one.init), jax.jit(one.advance))


def _run(init_fn, advance_fn, z0, key, data, total: int, bar) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``total`` iterations from ``z0``, a chunk per call: the flat positions ``(..., total, dim)`` and the
    statistics ``(..., total)``, where ``...`` is the chain axis of a vectorised or parallel run (none for one chain).
    """
    state = init_fn(z0, key, data)
    zs, stats, done = [], [], 0
    while done < total:
        count = min(CHUNK, total - done)
        state, out = advance_fn(state, data, done, count)
        zs.append(np.asarray(out["z"])[..., :count, :])
        stats.append({k: np.asarray(v)[..., :count] for k, v in out.items() if k != "z"})
        done += count
        if bar is not None:
            bar.update(count)
    return np.concatenate(zs, axis=-2), {k: np.concatenate([s[k] for s in stats], axis=-1) for k in stats[0]}


#: how chains (NUTS, MCLMC) can start
CHAIN_INITS = ("module", "prior", "map")


def chain_starts(model: LiftedModel, x, y, key, init, num_chains: int, map_options: dict, noise_start=None) -> dict:
    """Starting values of ``num_chains`` chains, ``{site: (num_chains, *shape)}`` (constrained).

    ``init``: ``"map"`` (a MAP fit per chain, each from the module's initialisers with its own
    key; for a hierarchical prior, under each hyperprior's own scale as a fixed scale, the sampled
    scales starting at the RMS of their weights), ``"module"`` (those initialisers), ``"prior"`` (a
    prior draw per chain) or Flax variables (every chain starts there). ``noise_start(model, x, y,
    key, map_options, y_err)`` gives the noise scale at which every ``"map"`` start holds a learned
    noise fixed, or ``None`` (the samplers pass :func:`bnn.inference.evidence.start_noise_scale`).
    """
    keys = jax.random.split(key, num_chains)
    if isinstance(init, dict):
        one = model.initial_values(x, y, keys[0], init)
        return {k: jnp.broadcast_to(v, (num_chains,) + v.shape) for k, v in one.items()}
    init = _checks.one_of(init, "init", CHAIN_INITS)
    if init == "prior":
        return model.sample_prior(x.shape[1], num_chains, keys[0])
    per_chain = []
    noise_scale = None
    if init == "map" and noise_start is not None:
        noise_scale = noise_start(model, x, y, jax.random.fold_in(key, _keys.NOISE_START), map_options,
                                  map_options.get("y_err"))
    for k in keys:
        if init == "map":
            per_chain.append(map_start(model, x, y, k, map_options, noise_scale=noise_scale)[0])
        else:
            per_chain.append(model.initial_values(x, y, k))
    # stacked on the host: as device ops, each site's shape would compile a program of its own
    return {k: np.stack([np.asarray(start[k]) for start in per_chain]) for k in per_chain[0]}


class Prepared(NamedTuple):
    """What :func:`prepare_chains` returns (the fields in this order)."""

    x: np.ndarray
    y: np.ndarray
    y_err: np.ndarray | None
    key_run: jax.Array
    transforms: dict
    starts: jax.Array  #: ``(num_chains, dim)``
    unravel: FlatLayout


def prepare_chains(model: LiftedModel, x, y, y_err, seed, salt: int, init, num_chains: int,
                   map_options: dict | None, noise_start=None) -> Prepared:
    """The common start of the samplers: checked data, the run's key and flat chain starts.

    Returns :class:`Prepared` ``(x, y, y_err, key_run, transforms, starts, unravel)``: ``starts`` ``(num_chains,
    dim)`` holds each chain's unconstrained sites (see :func:`chain_starts`) as one flat vector,
    and ``unravel`` maps such a vector back to ``{site: unconstrained value}``. The samplers run
    on the flat vector: every operation of a transition then acts on one array instead of one
    per weight matrix. ``salt`` separates the samplers' key streams.
    """
    x, y = model.check_data(x, y)
    y_err = model.check_errors(y_err, y.shape)
    key_init, key_run = _keys.stream(_checks.as_seed_key(seed), salt, 2)
    map_options = dict(map_options or {})
    if y_err is not None:
        map_options["y_err"] = y_err
    values = chain_starts(model, x, y, key_init, init, num_chains, map_options, noise_start)
    starts, unravel = flat_starts(model, values, x.shape[1])
    return Prepared(x, y, y_err, key_run, model.transforms(x.shape[1]), starts, unravel)


def flat_starts(model: LiftedModel, values: dict, num_features: int) -> tuple[jax.Array, FlatLayout]:
    """Site values ``{site: (chains, *shape)}`` -> the samplers' flat starts ``(chains, dim)`` and their layout."""
    unravel = FlatLayout.of(values, leading=1)
    return model.program(_flat_starts_program, num_features=num_features)(values), unravel


def _flat_starts_program(model: LiftedModel, num_features: int):
    """``{site: (chains, *shape)}`` (constrained) -> ``(chains, dim)`` sampler coordinates, as one program."""
    def flat(values):
        if model.hierarchical:
            unconstrained = jax.vmap(lambda v: model.unconstrain(v, num_features))(values)
        else:
            transforms = model.transforms(num_features)
            unconstrained = {k: transforms[k].inv(v) for k, v in values.items()}
        return jax.vmap(lambda u: ravel_pytree(u)[0])(unconstrained)

    return run_once(flat)


class FlatLayout(NamedTuple):
    """The samplers' flat vector: ``((site, shape), ...)`` in the order of ``ravel_pytree`` (sorted sites).

    Calling it maps one flat vector ``(dim,)`` back to ``{site: value}``. A plain value (not a
    closure), so a compiled sampler can be cached under it (:meth:`bnn.lifting.LiftedModel.program`).
    """

    sites: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, values: dict, leading: int = 0) -> FlatLayout:
        """The layout of ``ravel_pytree(values)``; with ``leading`` axes (e.g. chains) that of one entry along them."""
        return cls(tuple((k, tuple(np.shape(v)[leading:])) for k, v in sorted(values.items())))

    @classmethod
    def ravel(cls, values: dict) -> tuple[jax.Array, FlatLayout]:
        """``values`` as one flat vector, and its layout (what ``ravel_pytree`` returns, the layout a plain value)."""
        return ravel_pytree(values)[0], cls.of(values)

    def __call__(self, flat: jax.Array) -> dict[str, jax.Array]:
        ends = np.cumsum([math.prod(shape) for _, shape in self.sites])
        chunks = jnp.split(flat, ends[:-1])
        return {name: chunk.reshape(shape) for (name, shape), chunk in zip(self.sites, chunks)}


def flat_potential(model: LiftedModel, unravel):
    """``(flat, x, y, y_err) -> potential energy``: the negative log joint density of the
    model's unconstrained sites given as one flat vector (``unravel`` as from :func:`prepare_chains`).

    A hierarchical prior's weights are non-centred (:meth:`bnn.lifting.LiftedModel.constrain`);
    other models use NumPyro's own potential.
    """
    if not model.hierarchical:
        return lambda flat, x, y, y_err: potential_energy(model.model, (x, y), {"y_err": y_err}, unravel(flat))

    def potential(flat, x, y, y_err):
        values, log_det = model.constrain(unravel(flat), x.shape[1])
        log_prior, log_lik = model.log_joint_terms(values, x, y, y_err)
        return -(log_prior + jnp.sum(log_lik) + log_det)

    return potential


def _draws_program(model: LiftedModel, unravel: FlatLayout, num_features: int):
    """Flat sampler coordinates ``(draws, dim)`` -> ``{site: (draws, ...)}`` site values, as one program."""
    return run_once(lambda flat: constrained_draws(model, jax.vmap(unravel)(flat), num_features))


def constrained_draws(model: LiftedModel, samples: dict, num_features: int) -> dict:
    """Sampler coordinates ``{site: (draws, ...)}`` -> site values, every latent site of the model."""
    if model.hierarchical:
        return jax.vmap(lambda u: model.constrain(u, num_features)[0])(samples)
    transforms = model.transforms(num_features)
    return {k: transforms[k](samples[k]) for k in model.latent_sites(num_features)}
