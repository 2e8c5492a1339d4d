"""Microcanonical Langevin Monte Carlo (MCLMC) through BlackJAX, started from MAP fits.

MCLMC (Robnik, De Luca, Silverstein & Seljak 2023) moves at fixed speed along the
isokinetic dynamics and partially refreshes the momentum after each step, with one gradient
per step and no accept/reject step. BlackJAX provides the kernel; its tuner's algorithm
(``mclmc_find_L_and_step_size``: the step size from the energy error, a diagonal
preconditioner from the position's variances, the momentum decoherence length L from the
autocorrelation of a short run, by default ten times BlackJAX's: :data:`DEFAULT_L_FACTOR`) runs here
inside the sampling step, so warm-up and sampling
share one compiled kernel (:class:`Schedule`). Following MILE (Sommer et al., ICLR 2025), every chain
starts from its own optimised network (a MAP fit from its own initialisation), is tuned on
its own and then samples; the chains run through the chain driver of
:mod:`bnn.inference.chains` (vectorised by default, or by ``chain_method`` as for NUTS). Chains
started in different modes stay there: the fit is the mixture of the chains, and cross-chain R-hat
measures how different the modes' predictions are rather than how well one mode was sampled.

The sampler is unadjusted: its stationary distribution differs from the posterior by a bias
that shrinks with the step size, which the tuner chooses so that the energy error per
dimension has variance ``desired_energy_var`` (BlackJAX's 5e-4).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.diagnostics import effective_sample_size

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference._loop import recorded_loop
from bnn.inference.chains import CHUNK, Health, Kernel, flat_potential, prepare_chains, resolve_chain_method, run_chains
from bnn.inference.evidence import start_noise_scale
from bnn.lifting import LiftedModel

HEALTH = Health("MCLMC steps produced a non-finite state and were reverted",
                "the tuned step size is too long in places the chains reached (bnn.diagnose gives the energy error "
                "while sampling). Try a smaller desired_energy_var (e.g. 1e-4), normalize=True or a tighter prior; "
                "a num_warmup below 1000 can leave the tuner without a usable step size.")

#: the share of BlackJAX's tuning budget in each of its three phases (step size, then the
#: step size with a diagonal preconditioner, then L from the effective sample size)
_TUNE_FRACTION = 0.1


#: the first step size of the tuner, times sqrt(dim)
_INITIAL_STEP = 1e-4


#: BlackJAX's tuner settings: the step-size estimate's memory (its decay is (n - 1) / (n + 1)) and
#: the width of its weights in log energy error
_EFFECTIVE_SAMPLES = 150
_TRUST_IN_ESTIMATE = 1.5

#: L, the momentum's decoherence length, as a multiple of step size x the integrated autocorrelation
#: time of the tuning run. BlackJAX's tuner (and Robnik et al.) use 0.4; on the BNN posteriors of the
#: UCI tables, chains started at MAP fits explore too little with it (they refresh the momentum every
#: ~60 steps and stay near their start) and score lower than NUTS: a 10 times longer L scored higher
#: on energy and yacht and about the same on wine (benchmarks/SAMPLING.md, "MCLMC's decoherence length").
DEFAULT_L_FACTOR = 4.0

#: warm-up steps per chain. With a hierarchical prior the chains start from MAP fits at the evidence's
#: noise scale, above the posterior's, and on the UCI networks their noise scale is still falling when
#: a 2000-step warm-up ends: sampling then begins before they get there. With HalfNormal(1) scales on
#: yacht (5 splits) the chains' noise scale came to 0.0065 (standardised units; NUTS's posterior:
#: 0.0043) with 10 000 steps instead of 0.011, the 90 % intervals covered 0.94 instead of 0.98 and the
#: test LL rose by 0.16 ± 0.09 nats; energy +0.14 ± 0.05, wine unchanged; 1.2-1.45 times the time per
#: fit there, about 1.7 times the steps (benchmarks/SAMPLING.md, "MCLMC's warm-up length").
DEFAULT_WARMUP = 10_000

#: MCLMC steps per kept draw. The chains mix slowly on the UCI networks' posteriors: on energy split 0
#: (four seeds) 1000 draws 20 steps apart came within 0.03 nats of NUTS's test LL, 10 steps apart
#: 0.07 (benchmarks/SAMPLING.md, "MCLMC's sampling length"); the number of draws, and so the cost of
#: predicting, stays the same.
DEFAULT_THINNING = 20


def _tuner_budget(num_warmup: int) -> int:
    """BlackJAX's ``num_steps`` argument for which its three tuning phases take ``num_warmup`` steps."""
    return max(int(round(num_warmup / (3 * _TUNE_FRACTION))), 10)


def fit_mclmc(
    model: LiftedModel,
    x,
    y,
    seed=0,
    num_chains: int = 4,
    num_warmup: int = DEFAULT_WARMUP,
    num_samples: int = 1000,
    thinning: int = DEFAULT_THINNING,
    init="map",
    desired_energy_var: float = 5e-4,
    L_factor: float = DEFAULT_L_FACTOR,
    diagonal_preconditioning: bool = True,
    map_options: dict | None = None,
    chain_method: str | None = None,
    progress_bar: bool = False,
    y_err=None,
) -> Fit:
    """Sample the posterior with MCLMC chains, each started from a MAP fit (MILE).

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      num_chains: chains, each from a different MAP start.
      num_warmup: tuning steps per chain (BlackJAX's three tuning phases together; with
        ``diagonal_preconditioning`` a ninth more re-tune the step size under the
        preconditioner, as in BlackJAX: see :class:`Schedule`).
      num_samples: draws kept per chain.
      thinning: MCLMC steps per kept draw (the chain runs ``num_samples * thinning`` steps).
        The defaults (:data:`DEFAULT_WARMUP` tuning steps, 1000 draws :data:`DEFAULT_THINNING`
        steps apart): fewer draws or shorter runs scored lower on the UCI protocol's energy split 0,
        and a shorter warm-up ends before the chains' noise scale has settled
        (benchmarks/SAMPLING.md, "MCLMC's budget curve", "MCLMC's warm-up length" and "MCLMC's
        sampling length").
      init: ``"map"`` (default), ``"module"``, ``"prior"`` or Flax variables, as for NUTS.
      desired_energy_var: target variance of the energy error per dimension; the tuner
        picks the step size from it (smaller: smaller steps and less bias).
      L_factor: the momentum decoherence length L as a multiple of step size x the autocorrelation
        time of the tuning run (:data:`DEFAULT_L_FACTOR`; BlackJAX's tuner uses 0.4). Longer: the
        momentum is refreshed less often and the chain travels further between refreshes.
      diagonal_preconditioning: tune a diagonal preconditioner (mass matrix).
      map_options: options of the MAP fits of ``init="map"``.
      chain_method: ``"parallel"``, ``"vectorized"``, ``"sequential"`` or ``None`` (auto), as for NUTS.
      progress_bar: a progress bar over the kept draws (each chain tunes itself first).
      y_err: known noise scales of the observations (see :meth:`bnn.BNN.fit`).

    Returns:
      a :class:`bnn.Fit` with ``num_chains * num_samples`` draws (chain-major); ``info`` holds
      ``num_chains``, ``num_samples``, ``num_warmup``, ``step_size`` and ``L`` per chain
      (``(num_chains,)``), ``energy_var`` (variance of the energy error per dimension while
      sampling, per chain: compare with ``desired_energy_var``), ``sample_stats``
      (``{"energy_change", "diverging": (chains, draws)}``; a step is counted as diverging
      when it produced a non-finite state and was reverted), ``num_divergences`` and
      ``wall_time``.
    """
    num_chains = _checks.positive_int(num_chains, "num_chains")
    num_warmup = _checks.positive_int(num_warmup, "num_warmup")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    thinning = _checks.positive_int(thinning, "thinning")
    desired_energy_var = _checks.positive_float(desired_energy_var, "desired_energy_var")
    L_factor = _checks.positive_float(L_factor, "L_factor")
    chain_method = resolve_chain_method(chain_method, num_chains)

    start = time.perf_counter()
    settings = dict(num_warmup=num_warmup, thinning=thinning,  # the number of draws is the driver's
                    desired_energy_var=desired_energy_var, L_factor=L_factor,
                    diagonal_preconditioning=bool(diagonal_preconditioning))
    prepared = prepare_chains(model, x, y, y_err, seed, _keys.MCLMC, init, num_chains, map_options, start_noise_scale)
    if prepared.starts.shape[1] < 2:
        raise ValueError("MCLMC needs at least 2 latent dimensions; use method='nuts' for a one-parameter model.")
    warmup = Schedule.of(num_warmup, bool(diagonal_preconditioning)).total
    run = run_chains(model, _mclmc_kernel, settings, prepared, chain_method, warmup + num_samples, slice(warmup, None), HEALTH,
                     progress_bar, "mclmc")
    stats = dict(run.stats)
    tuned = {k: stats.pop(k)[:, 0] for k in ("step_size", "L")}
    energy_var = np.mean(stats["energy_change"] ** 2, axis=1) / int(prepared.starts.shape[1])
    info = run._replace(stats=stats).info(num_warmup, chain_method, start, thinning=thinning, **tuned,
                                          energy_var=energy_var)
    return Fit(model=model, method="mclmc", draws=run.draws, num_features=run.x.shape[1], info=info, y_err=run.y_err)


class Schedule(NamedTuple):
    """The warm-up of one MCLMC chain, in steps: the phases of BlackJAX's tuner in order.

    1. ``step_size``: the step size from the energy error (Robnik et al. 2023, Var E ~ eps^6);
    2. ``moments``: the same, while the position's mean and variance are averaged (weighted by
       the step size) for the diagonal preconditioner and L;
    3. ``retune``: with the preconditioner set, the step size once more;
    4. ``trace``: plain steps whose positions give the effective sample size, and L from it.
    """

    step_size: int
    moments: int
    retune: int
    trace: int

    @classmethod
    def of(cls, num_warmup: int, diagonal_preconditioning: bool) -> Schedule:
        """The phases of BlackJAX's ``mclmc_find_L_and_step_size`` for a ``num_warmup``-step budget."""
        budget = _tuner_budget(num_warmup)
        first, second, third = (round(budget * _TUNE_FRACTION) for _ in range(3))
        return cls(first, second, round(second / 3) if diagonal_preconditioning else 0, third)

    @property
    def total(self) -> int:
        return self.step_size + self.moments + self.retune + self.trace


def _mclmc_kernel(model: LiftedModel, unravel, num_warmup: int, thinning: int,
                  desired_energy_var: float, L_factor: float, diagonal_preconditioning: bool) -> Kernel:
    """One MCLMC chain for the chain driver (:mod:`bnn.inference.chains`), warm-up and sampling
    in one compiled step.

    The first :attr:`Schedule.total` iterations are the warm-up, one MCLMC step each, tuning as
    BlackJAX's ``mclmc_find_L_and_step_size`` does (see :class:`Schedule`); every later
    iteration is one kept draw, ``thinning`` steps apart. The phases differ only in the values
    that the step reads (step size, L, preconditioner) and in which statistics it updates,
    chosen by the iteration's number, so the kernel (two gradients of the potential per step)
    is compiled once, where BlackJAX's tuner compiles a copy per phase. ``out`` records the last
    step's energy change and whether any step of the iteration produced a non-finite state
    and was reverted (``"diverging"``).
    """
    potential = flat_potential(model, unravel)
    schedule = Schedule.of(num_warmup, diagonal_preconditioning)
    tuning = schedule.step_size + schedule.moments + schedule.retune  # steps that adapt the step size
    averaging = (schedule.step_size, schedule.step_size + schedule.moments)  # steps that average the moments
    decay = (_EFFECTIVE_SAMPLES - 1.0) / (_EFFECTIVE_SAMPLES + 1.0)
    mclmc_step = blackjax.mcmc.mclmc.build_kernel(desired_energy_var=desired_energy_var)

    def init(u0, key, data):
        dim = u0.shape[0]
        key_init, key_run = jax.random.split(key)
        with jax.numpy_rank_promotion("allow"):  # BlackJAX relies on implicit rank promotion
            chain = blackjax.mcmc.mclmc.init(position=u0, logdensity_fn=lambda u: -potential(u, *data),
                                             rng_key=key_init)
        zero = jnp.zeros((), u0.dtype)
        return {
            "chain": chain, "key": key_run,
            # BlackJAX starts its step size at sqrt(dim)/4, far too long for a network at its MAP
            # (the first steps overflow, every estimate gets zero weight and the step size
            # collapses to 0). From a short step the first energy errors already give the
            # estimate of the right one (Var E ~ eps^6), so the tuner climbs to it at once
            # (1e-4 sqrt(dim): eps^6 stays far above float32's smallest normal number).
            "step_size": _INITIAL_STEP * jnp.sqrt(dim).astype(u0.dtype), "L": jnp.sqrt(dim).astype(u0.dtype),
            "inverse_mass": jnp.ones_like(u0),
            # the step-size estimate: decayed sums of weights and of weighted xi / eps^6, and the
            # largest step size not yet seen to fail
            "weights": zero, "weighted": zero, "step_size_max": jnp.asarray(jnp.inf, u0.dtype),
            # the step-size-weighted mean of (x - x0, (x - x0)^2) and the sum of its weights, x0 the
            # start: moments about a point near the mean, as E[x^2] - E[x]^2 about 0 cancels to
            # nothing (or below 0) in float32 for a coordinate whose spread is far below its size
            "moment_weight": zero, "moments": jnp.zeros((2, dim), u0.dtype), "shift": u0,
            "trace": jnp.zeros((max(schedule.trace, 1), dim), u0.dtype),
        }

    def retuned_step_size(s, energy_change, success):
        """The step-size estimate after one warm-up step (BlackJAX's ``predictor``)."""
        dim = s["inverse_mass"].shape[0]
        energy_change = jnp.where(success, energy_change, 0.0)
        step_size_max = jnp.where(success, s["step_size_max"], 0.8 * s["step_size"])
        xi = jnp.square(energy_change) / (dim * desired_energy_var) + 1e-8
        weight = jnp.exp(-0.5 * jnp.square(jnp.log(xi) / (6.0 * _TRUST_IN_ESTIMATE)))
        weighted = decay * s["weighted"] + weight * xi / s["step_size"] ** 6
        weights = decay * s["weights"] + weight
        step_size = jnp.minimum((weighted / weights) ** (-1.0 / 6.0), step_size_max)
        return {**s, "weighted": weighted, "weights": weights, "step_size_max": step_size_max, "step_size": step_size}

    def averaged(s, success):
        """The moments after one step of the ``moments`` phase, weighted by the (new) step size."""
        x = s["chain"].position - s["shift"]
        weight = success * s["step_size"]
        total = s["moment_weight"] + weight
        mean = jnp.where(total > 0, (s["moment_weight"] * s["moments"] + weight * jnp.stack([x, x * x]))
                         / jnp.where(total > 0, total, 1.0), s["moments"])
        return {**s, "moment_weight": total, "moments": mean}

    def preconditioned(s):
        """After the ``moments`` phase: L (and the diagonal preconditioner) from the variances."""
        dim = s["inverse_mass"].shape[0]
        variances = s["moments"][1] - jnp.square(s["moments"][0])
        # a coordinate seen at one value only (every step of the phase failed, or rounding) has no
        # variance to precondition by: it gets the largest seen, not a zero inverse mass (a chain
        # that can never move again)
        seen = jnp.isfinite(variances) & (variances > 0)
        widest = jnp.max(jnp.where(seen, variances, 0.0))
        variances = jnp.where(seen, variances, jnp.where(widest > 0, widest, 1.0))
        if not diagonal_preconditioning:
            return {**s, "L": jnp.sqrt(jnp.sum(variances))}
        # the step size is estimated afresh under the new preconditioner (its estimate restarts)
        return {**s, "inverse_mass": variances, "L": jnp.sqrt(dim).astype(variances.dtype),
                "weights": jnp.zeros_like(s["weights"]), "weighted": jnp.zeros_like(s["weighted"]),
                "step_size_max": jnp.full_like(s["step_size_max"], jnp.inf)}

    def decoherence_length(s):
        """After the ``trace`` phase: L = ``L_factor`` x step size x the integrated autocorrelation time."""
        ess = effective_sample_size(s["trace"][None])
        tau = schedule.trace / ess
        finite = jnp.isfinite(tau)
        L = jnp.where(jnp.any(finite), L_factor * s["step_size"] * jnp.mean(jnp.where(finite, tau, 0.0), where=finite),
                      s["L"])
        return {**s, "L": L}

    def step(t, s, data, key):
        """MCLMC step number ``t`` of the chain (warm-up steps first), and its diagnostics."""
        with jax.numpy_rank_promotion("allow"):
            chain, info = mclmc_step(key, s["chain"], lambda u: -potential(u, *data), s["inverse_mass"], s["L"],
                                     s["step_size"])
        success = info.nonans & jnp.isfinite(info.energy_change)
        s = {**s, "chain": chain}
        s = jax.lax.cond(t < tuning, retuned_step_size, lambda s, *_: s, s, info.energy_change, success)
        if schedule.moments > 1:
            s = jax.lax.cond((averaging[0] <= t) & (t < averaging[1]), averaged, lambda s, _: s, s, success)
            s = jax.lax.cond(t == averaging[1] - 1, preconditioned, lambda s: s, s)
        if schedule.trace >= 2:  # BlackJAX's tuner skips L from fewer than 2 positions
            # one row written in place at every step (the same row back outside the phase)
            row = jnp.clip(t - tuning, 0, schedule.trace - 1)
            kept = jnp.where((t >= tuning) & (t < schedule.total), chain.position, s["trace"][row])
            s = {**s, "trace": s["trace"].at[row].set(kept)}
            s = jax.lax.cond(t == schedule.total - 1, decoherence_length, lambda s: s, s)
        return s, info.energy_change, ~success

    def advance(state, data, first, count):
        def record(s, energy, bad):
            return {"z": s["chain"].position, "energy_change": energy, "diverging": bad,
                    "step_size": s["step_size"], "L": s["L"]}

        def body(i, s):
            iteration = first + i
            warmup = iteration < schedule.total
            # the step number of this iteration's first step: warm-up iterations are one step each
            t0 = jnp.where(warmup, iteration, schedule.total + (iteration - schedule.total) * thinning)
            key = jax.random.fold_in(s["key"], iteration)

            def one(j, inner):
                s, _, bad = inner
                s, energy, failed = step(t0 + j, s, data, jax.random.fold_in(key, j))
                return s, energy, bad | failed

            s, energy, bad = jax.lax.fori_loop(0, jnp.where(warmup, 1, thinning), one,
                                               (s, jnp.zeros((), s["L"].dtype), jnp.zeros((), bool)))
            return s, record(s, energy, bad)

        like = record(state, jnp.zeros((), state["L"].dtype), jnp.zeros((), bool))
        return recorded_loop(body, state, count, like, CHUNK)

    return Kernel(init, advance)
