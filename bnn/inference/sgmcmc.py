"""Stochastic-gradient MCMC on minibatches: cyclical SGHMC or SGLD chains from MAP starts.

Each step moves by the gradient of the log joint estimated on ``batch_size`` rows drawn with
replacement (the likelihood scaled by ``n / batch_size``: unbiased) and adds the diffusion's
noise, with no accept/reject step, so a step costs one minibatch gradient whatever the table's
size. SGLD (Welling & Teh 2011) is BlackJAX's Euler-Maruyama step
(``blackjax.sgmcmc.diffusions.overdamped_langevin``). SGHMC (Chen et al. 2014, in the
parametrisation of Ma et al. 2015) is written here: BlackJAX's ``diffusions.sghmc`` moves the
position with the old momentum and the momentum with the gradient at the old position (explicit
Euler), whose energy grows by ``1 + eps² lambda`` a step on a curvature ``lambda``; on the UCI power
table that outran the friction within 100 steps. Here the momentum moves first and the position
with the new momentum (symplectic Euler, stable for ``eps sqrt(lambda) < 2``), with a gradient-noise
correction per coordinate (below).

* **Cyclical step size** (Zhang et al., ICLR 2020): the run is ``num_cycles`` cycles of
  ``cycle_length`` steps; within a cycle the step size falls from ``step_size`` to 0 along half a
  cosine. The first ``exploration`` share of a cycle runs without noise (momentum SGD: the chain
  moves fast and may leave its mode), the rest samples; the draws are the last steps of each cycle,
  ``draws_per_cycle`` of them spread over its sampling stage.
* **A diagonal preconditioner** per chain, fixed at its start: the empirical Fisher information of
  the log-likelihood's rows (per-row gradients on a few minibatches, scaled to the table; each
  coordinate's at least its parameter array's median, :func:`floored_by_site`) plus one (a unit
  prior precision), so a coordinate's step is about its posterior width whatever the
  data's noise scale. A fixed preconditioner leaves the diffusion's stationary distribution the
  posterior (no correction term is needed, unlike an adaptive one).
* **A stable step size**: each cycle's peak step is ``step_size`` or, if smaller,
  ``0.5 / sqrt(lambda)`` (SGHMC; and where a minibatch gradient's noise stays below the friction,
  see :func:`_sgmcmc_kernel`) or ``0.5 / lambda`` (SGLD), with ``lambda`` the largest curvature of
  the preconditioned potential where the cycle starts (power iteration on Hessian-vector products
  over up to :data:`CURVATURE_ROWS` rows).
* **Chains** start from MAP fits (``init="map"``, as NUTS and MCLMC: each its own optimised
  network, a learned noise held at the evidence's scale) and run through the chain driver of
  :mod:`bnn.inference.chains`, vectorised by default, in one compiled program per model and
  settings, so draws, ``to_arviz``, ``diagnose``, save/load work as for the other samplers.

Known limits: the sampler is unadjusted, and a minibatch gradient's noise adds to the injected
noise (SGHMC subtracts an estimate of it, from the Fisher information at the chain's start; SGLD
does not), so draws are biased by an amount that grows with the step size and with
``n / batch_size``; ``tests/test_sgmcmc.py`` measures it on a
conjugate model against the closed-form posterior. After a step that produces a non-finite state
or a momentum far above its expected size, the chain restarts from its start with its step sizes
halved from then on; such steps are counted as diverging (a warning says how many).
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.sgmcmc import diffusions

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference._loop import check_batch_size, draw_batch, recorded_loop, resolve_mesh
from bnn.inference.chains import CHUNK, Health, Kernel, prepare_chains, resolve_chain_method, run_chains
from bnn.inference.evidence import start_noise_scale
from bnn.lifting import LiftedModel

SAMPLERS = ("sghmc", "sgld")
#: the peak step size of a cycle, per sampler (in the preconditioned coordinates, where the
#: posterior's width is about 1 along each axis)
DEFAULT_STEP_SIZE = {"sghmc": 0.2, "sgld": 0.05}
#: minibatches of the per-row gradients behind the preconditioner
PRECONDITIONER_BATCHES = 8
#: rows (drawn once per chain and cycle) and power iterations behind the largest curvature at a cycle's start
CURVATURE_ROWS = 4096
POWER_ITERATIONS = 20
#: a step whose momentum's mean square exceeds this (1 at temperature 1) diverges: the chain restarts from
#: its start with the momentum zeroed and its step sizes halved for the rest of its run
KINETIC_LIMIT = 50.0
#: the peak step size is at most this times the largest stable one for that curvature (``2 / sqrt(lambda)``
#: for SGHMC's symplectic Euler, ``2 / lambda`` for SGLD) over 2: room for the curvature to grow 16-fold
#: (SGHMC) or 4-fold (SGLD) within a cycle
STABILITY = 0.5

HEALTH = Health("diverged (a non-finite state or a momentum far above its expected size); each restarted its "
                "chain from its start with its step sizes halved",
                "try a smaller step_size (e.g. half), normalize=True or a tighter prior.")


def fit_sgmcmc(
    model: LiftedModel,
    x,
    y,
    seed=0,
    num_chains: int = 4,
    num_cycles: int = 5,
    cycle_length: int = 2000,
    draws_per_cycle: int = 4,
    batch_size: int | str | None = "auto",
    sampler: str = "sghmc",
    step_size: float | None = None,
    exploration: float = 0.5,
    friction: float = 1.0,
    init="map",
    map_options: dict | None = None,
    chain_method: str | None = None,
    progress_bar: bool = False,
    y_err=None,
    mesh=None,
) -> Fit:
    """Sample the posterior with cyclical stochastic-gradient MCMC chains on minibatches.

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      num_chains: chains, each from its own start (``init``).
      num_cycles, cycle_length: the run is ``num_cycles * cycle_length`` steps per chain.
      draws_per_cycle: draws kept per cycle, spread evenly over its sampling stage and ending at its
        last step (at most ``cycle_length * (1 - exploration)``).
      batch_size: rows per step's gradient; ``"auto"`` (default): all rows up to 2000, 250 above
        (as for MAP); ``None``: all rows (full-gradient underdamped Langevin, still unadjusted).
      sampler: ``"sghmc"`` (default; momentum with friction) or ``"sgld"`` (Langevin, no momentum).
      step_size: the largest peak step size of a cycle, in the preconditioned coordinates (default
        0.2 for SGHMC, 0.05 for SGLD); each chain lowers it to what the curvature where a cycle
        starts keeps stable (see above).
      exploration: the share of each cycle run without noise before sampling (0 <= exploration < 1).
      friction: SGHMC's friction ``alpha`` (per unit of time; 1 is about critical damping for a
        coordinate of unit posterior width).
      init, map_options, chain_method, progress_bar, y_err: as for :func:`bnn.inference.mclmc.fit_mclmc`.
      mesh: data parallelism: ``"all"`` (every device) or a one-axis ``jax.sharding.Mesh``: the
        training rows are split over its devices (the row count must divide evenly) for the MAP
        starts and the chains, which run vectorised and whose minibatches gather their rows from
        every device; the draws are those of one device up to the order of the sums.

    Returns:
      a :class:`bnn.Fit` with ``num_chains * num_cycles * draws_per_cycle`` draws (chain-major);
      ``info`` holds ``num_chains``, ``num_samples`` (per chain), ``batch_size``, ``step_size`` and
      ``curvature`` (each chain's peak step size and ``lambda`` in the first cycle, ``(num_chains,)``),
      ``sampler``, ``cycle_length``, ``num_cycles``, ``kept`` (the kept steps' numbers),
      ``sample_stats`` (``{"step_size", "diverging": (chains, draws)}``), ``restarts`` (per chain: its
      diverging steps, each restarting it with halved step sizes), ``num_divergences`` (their total)
      and ``wall_time``.
    """
    num_chains = _checks.positive_int(num_chains, "num_chains")
    num_cycles = _checks.positive_int(num_cycles, "num_cycles")
    cycle_length = _checks.positive_int(cycle_length, "cycle_length", minimum=2)
    draws_per_cycle = _checks.positive_int(draws_per_cycle, "draws_per_cycle")
    sampler = _checks.one_of(sampler, "sampler", SAMPLERS)
    step_size = DEFAULT_STEP_SIZE[sampler] if step_size is None else _checks.positive_float(step_size, "step_size")
    friction = _checks.positive_float(friction, "friction")
    exploration = _checks.level(exploration, "exploration", allow_zero=True)
    sampling_steps = int(cycle_length * (1 - exploration))
    if draws_per_cycle > sampling_steps:
        raise ValueError(f"`draws_per_cycle` must be at most the {sampling_steps} sampling steps of a cycle "
                         f"(cycle_length={cycle_length}, exploration={exploration}); got {draws_per_cycle}.")
    mesh = resolve_mesh(mesh)
    # with mesh= the devices hold rows and the chains run vectorised over them (without it, a device per
    # chain would run one chain on each)
    chain_method = resolve_chain_method("vectorized" if mesh is not None and chain_method is None else chain_method,
                                        num_chains)
    if mesh is not None and chain_method != "vectorized":
        raise ValueError(f"`mesh` splits the rows of vectorised chains; got chain_method={chain_method!r}.")

    start = time.perf_counter()
    n = int(model.check_data(x, y)[0].shape[0])
    batch = check_batch_size(batch_size, n)  # before the chains' MAP starts are fitted
    if mesh is not None:
        map_options = {"mesh": mesh, **(map_options or {})}
    prepared = prepare_chains(model, x, y, y_err, seed, _keys.SGMCMC, init, num_chains, map_options, start_noise_scale)
    settings = dict(n=n, batch_size=batch, cycle_length=cycle_length, exploration=exploration, step_size=step_size,
                    friction=friction, sampler=sampler)
    kept = kept_steps(num_cycles, cycle_length, draws_per_cycle, sampling_steps)
    run = run_chains(model, _sgmcmc_kernel, settings, prepared, chain_method, num_cycles * cycle_length, kept, HEALTH,
                     progress_bar, "sgmcmc", mesh)
    stats = dict(run.stats)
    tuned = {"step_size": stats.pop("peak")[:, 0], "curvature": stats.pop("curvature")[:, 0]}
    restarts = stats.pop("restarts")[:, -1]  # the last step is kept: every restart of the run
    if restarts.sum():
        warnings.warn(f"SG-MCMC: {int(restarts.sum())} step(s) {HEALTH.what} (restarts per chain: {restarts.tolist()}): "
                      f"{HEALTH.advice}", UserWarning, stacklevel=3)
    info = run._replace(stats=stats, num_divergences=int(restarts.sum())).info(
        0, chain_method, start, batch_size=batch, sampler=sampler, cycle_length=cycle_length, num_cycles=num_cycles,
        kept=kept, restarts=restarts, **tuned)
    return Fit(model=model, method="sgmcmc", draws=run.draws, num_features=run.x.shape[1], info=info, y_err=run.y_err)


def kept_steps(num_cycles: int, cycle_length: int, draws_per_cycle: int, sampling_steps: int) -> np.ndarray:
    """The numbers of the kept steps: per cycle the last, and ``draws_per_cycle - 1`` more before it,
    spread evenly over the cycle's last ``sampling_steps`` steps (its sampling stage)."""
    spacing = max(sampling_steps // draws_per_cycle, 1)
    within = cycle_length - 1 - spacing * np.arange(draws_per_cycle)[::-1]
    return (cycle_length * np.arange(num_cycles)[:, None] + within[None]).reshape(-1)


def cyclical_step_size(step: jax.Array, peak: float, cycle_length: int) -> jax.Array:
    """Zhang et al.'s cosine schedule: ``peak / 2 * (cos(pi * t / L) + 1)`` at step ``t`` of its cycle."""
    t = jnp.mod(step, cycle_length)
    return 0.5 * peak * (jnp.cos(jnp.pi * t / cycle_length) + 1.0)


def minibatch_potential(model: LiftedModel, unravel, n: int):
    """``(flat, xb, yb, eb) -> −[log prior + (n / len(xb)) Σ log p(yb | θ) + log |Jacobian|]``: the
    potential energy of the model's unconstrained sites, the likelihood estimated on a minibatch."""

    def potential(flat, xb, yb, eb):
        values, log_det = model.constrain(unravel(flat), xb.shape[1])
        log_prior, log_lik = model.log_joint_terms(values, xb, yb, eb)
        return -(log_prior + (n / xb.shape[0]) * jnp.sum(log_lik) + log_det)

    return potential


def empirical_fisher(model: LiftedModel, unravel, z: jax.Array, data, key, n: int, batch_size: int | None):
    """The empirical Fisher information's diagonal at the flat vector ``z``: ``n`` times the mean
    squared per-row gradient of the log-likelihood, on :data:`PRECONDITIONER_BATCHES` minibatches
    (all rows once without ``batch_size``)."""
    x, y, y_err = data

    def row_log_lik(flat, xi, yi, ei):
        values, _ = model.constrain(unravel(flat), xi.shape[-1])
        return model.log_joint_terms(values, xi[None], yi[None], None if ei is None else ei[None])[1].sum()

    grad_rows = jax.vmap(jax.grad(row_log_lik), in_axes=(None, 0, 0, None if y_err is None else 0))
    if batch_size is None:
        squares = jnp.mean(jnp.square(grad_rows(z, x, y, y_err)), axis=0)
    else:
        def one(key):
            idx = draw_batch(key, n, batch_size)
            return jnp.mean(jnp.square(grad_rows(z, x[idx], y[idx], None if y_err is None else y_err[idx])), axis=0)

        squares = jnp.mean(jax.lax.map(one, jax.random.split(key, PRECONDITIONER_BATCHES)), axis=0)
    return n * squares


def floored_by_site(fisher: jax.Array, unravel) -> jax.Array:
    """Each coordinate's Fisher information at least the median of its parameter array's.

    A hidden unit that is inactive on every row at the chain's start has no likelihood gradient, so
    its weights' own information is about 0 and their steps would be as wide as the prior; once a
    step wakes the unit, the curvature along its output weight is that of the active units, and a
    step that wide diverges (seen on the UCI power table within 20 steps). With the floor its
    weights move as the array's typical weight does."""
    parts = unravel(fisher)
    return jnp.concatenate([jnp.maximum(parts[site], jnp.median(parts[site])).ravel() for site, _ in unravel.sites])


def largest_curvature(potential, w: jax.Array, key, iterations: int = POWER_ITERATIONS) -> jax.Array:
    """The largest eigenvalue (in absolute value) of the Hessian of ``potential`` at ``w``, by power
    iteration on Hessian-vector products from a random start."""
    hvp = lambda v: jax.jvp(jax.grad(potential), (w,), (v,))[1]  # noqa: E731

    def body(_, v):
        hv = hvp(v)
        return hv / jnp.maximum(jnp.linalg.norm(hv), jnp.finfo(w.dtype).tiny)

    v = jax.lax.fori_loop(0, iterations, body, jax.random.normal(key, w.shape, w.dtype) / jnp.sqrt(w.size))
    return jnp.abs(jnp.vdot(v, hvp(v)))


def _sgmcmc_kernel(model: LiftedModel, unravel, n: int, batch_size: int | None, cycle_length: int, exploration: float,
                   step_size: float, friction: float, sampler: str) -> Kernel:
    """One chain of cyclical SGHMC / SGLD for the chain driver (:mod:`bnn.inference.chains`).

    The chain moves in preconditioned coordinates ``w = z / scale``, ``scale = 1 / sqrt(F + 1)`` with
    ``F`` the empirical Fisher diagonal at its start (:func:`empirical_fisher`); an iteration is one
    step, the ``"z"`` it records the flat position. A minibatch gradient's own variance per
    coordinate is estimated as ``V = (n / batch_size) F scale²``; as in Chen et al. (2014), the
    injected noise is reduced by it, ``N(0, 2 eps (C − B))`` with ``B = eps V / 2``, and the friction
    is ``C = max(friction, B)`` per coordinate, so that the total noise matches the friction at any
    step size (where the minibatch noise alone exceeds ``friction``, that coordinate is damped
    more). The peak step size is also kept where ``eps² V / 2 <= 0.9`` (the friction's step
    ``C eps`` below 1). After a diverging step (non-finite, or a momentum's mean square above
    :data:`KINETIC_LIMIT`) the chain restarts from its start with the momentum zeroed, and its step
    sizes are halved from then on (``shrink``): on the UCI naval table some chains met, within tens of
    steps, regions far stiffer than their start's largest curvature said, and a chain left where it
    diverged stayed in a poor region. The state is ``(w, momentum, w_start, scale, beta, peak,
    curvature, shrink, key)``; step ``i`` draws its minibatch and noise with ``fold_in(key, i)``.
    """
    potential = minibatch_potential(model, unravel, n)
    grad_z = jax.grad(lambda z, xb, yb, eb: -potential(z, xb, yb, eb))
    sampling_from = int(round(exploration * cycle_length))
    sgld = diffusions.overdamped_langevin()

    def stable_peak(w, scale, beta, data, key):
        """The cycle's peak step size at ``w``, and the largest curvature there."""
        key_rows, key_power = jax.random.split(key)
        rows = data if n <= CURVATURE_ROWS else jax.tree.map(lambda a: a[draw_batch(key_rows, n, CURVATURE_ROWS)], data)
        curvature = largest_curvature(lambda v: potential(v * scale, *rows), w, key_power)
        if sampler == "sghmc":
            stable = jnp.minimum(STABILITY * jax.lax.rsqrt(curvature), jnp.sqrt(1.8 / jnp.maximum(jnp.max(beta), 1e-12)))
        else:
            stable = STABILITY / curvature
        return jnp.minimum(step_size, stable).astype(w.dtype), curvature.astype(w.dtype)

    def init(z0, key, data):
        key_scale, key_peak, key_run = jax.random.split(key, 3)
        fisher = floored_by_site(empirical_fisher(model, unravel, z0, data, key_scale, n, batch_size), unravel)
        scale = jax.lax.rsqrt(fisher + 1.0)
        beta = jnp.zeros_like(z0) if batch_size is None else (n / batch_size) * fisher * scale**2
        peak, curvature = stable_peak(z0 / scale, scale, beta, data, key_peak)
        return (z0 / scale, jnp.zeros_like(z0), z0 / scale, scale, beta, peak, curvature, jnp.ones((), z0.dtype),
                jnp.zeros((), jnp.int32), key_run)

    def step(i, state, data):
        w, p, w0, scale, beta, peak, curvature, shrink, restarts, key = state
        key_step = jax.random.fold_in(key, i)
        # every cycle after the first starts with the peak step size measured where the chain is
        peak, curvature = jax.lax.cond((jnp.mod(i, cycle_length) == 0) & (i > 0),
                                       lambda: stable_peak(w, scale, beta, data, jax.random.fold_in(key_step, 1)),
                                       lambda: (peak, curvature))
        key_batch, key_noise = jax.random.split(key_step)
        idx = draw_batch(key_batch, n, batch_size)
        x, y, y_err = data if idx is None else jax.tree.map(lambda a: a[idx], data)
        g = grad_z(w * scale, x, y, y_err) * scale  # the gradient of the log density in w = z / scale
        eps = cyclical_step_size(i, peak * shrink, cycle_length)
        temperature = (jnp.mod(i, cycle_length) >= sampling_from).astype(w.dtype)
        noise = jax.random.normal(key_noise, w.shape, w.dtype)
        if sampler == "sghmc":
            gradient_noise = 0.5 * eps * beta
            damping = jnp.maximum(friction, gradient_noise / 0.999)  # keeps the injected variance positive
            injected = jnp.sqrt(2.0 * eps * temperature * (damping - gradient_noise))
            p_new = (1.0 - damping * eps) * p + eps * g + injected * noise
            w_new = w + eps * p_new
        else:
            w_new, p_new = sgld(key_noise, w, g, eps, temperature), p
        # a diverging step: non-finite, or a kinetic energy far above its expectation (1/2 per coordinate)
        ok = jnp.all(jnp.isfinite(w_new)) & jnp.all(jnp.isfinite(p_new)) & (jnp.mean(jnp.square(p_new)) < KINETIC_LIMIT)
        w, p = jnp.where(ok, w_new, w0), jnp.where(ok, p_new, jnp.zeros_like(p))
        shrink, restarts = jnp.where(ok, shrink, 0.5 * shrink), restarts + (~ok).astype(jnp.int32)
        # kept draws are never mid-divergence (the chain restarted): the restarts are counted instead
        record = {"z": w * scale, "step_size": eps, "peak": peak * shrink, "curvature": curvature, "restarts": restarts,
                  "diverging": jnp.zeros((), bool)}
        return (w, p, w0, scale, beta, peak, curvature, shrink, restarts, key), record

    def advance(state, data, first, count):
        zero = jnp.zeros((), state[0].dtype)
        like = {"z": state[0], "step_size": zero, "peak": zero, "curvature": zero, "restarts": jnp.zeros((), jnp.int32),
                "diverging": jnp.zeros((), bool)}
        return recorded_loop(lambda j, s: step(first + j, s, data), state, count, like, CHUNK)

    return Kernel(init, advance)
