"""Microcanonical Langevin Monte Carlo (MCLMC) through BlackJAX, started from MAP fits.

MCLMC (Robnik, De Luca, Silverstein & Seljak 2023) moves at fixed speed along the
isokinetic dynamics and partially refreshes the momentum after each step, with one gradient
per step and no accept/reject step. BlackJAX provides the kernel and its tuner, which sets
the step size from the energy error and the momentum decoherence length L from the
autocorrelation of a short run. Following MILE (Sommer et al., ICLR 2025), every chain
starts from its own optimised network (a MAP fit from its own initialisation), is tuned on
its own and then samples; all chains run in one vectorised program. Chains started in
different modes stay there: the fit is the mixture of the chains, and cross-chain R-hat
measures how different the modes' predictions are rather than how well one mode was sampled.

The sampler is unadjusted: its stationary distribution differs from the posterior by a bias
that shrinks with the step size, which the tuner chooses so that the energy error per
dimension has variance ``desired_energy_var`` (BlackJAX's 5e-4).
"""

from __future__ import annotations

import functools
import time
import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from bnn import _checks
from bnn.fit import Fit
from bnn.inference.optimize import constrained_draws, flat_potential, prepare_chains
from bnn.lifting import LiftedModel

#: the share of BlackJAX's tuning budget in each of its three phases (step size, then the
#: step size with a diagonal preconditioner, then L from the effective sample size)
_TUNE_FRACTION = 0.1


#: the first step size of the tuner, times sqrt(dim)
_INITIAL_STEP = 1e-4


def _tuner_budget(num_warmup: int) -> int:
    """BlackJAX's ``num_steps`` argument for which its three tuning phases take ``num_warmup`` steps."""
    return max(int(round(num_warmup / (3 * _TUNE_FRACTION))), 10)


def fit_mclmc(
    model: LiftedModel,
    x,
    y,
    seed=0,
    num_chains: int = 4,
    num_warmup: int = 2000,
    num_samples: int = 1000,
    thinning: int = 10,
    init="map",
    desired_energy_var: float = 5e-4,
    diagonal_preconditioning: bool = True,
    map_options: dict | None = None,
    progress_bar: bool = False,
    y_err=None,
) -> Fit:
    """Sample the posterior with MCLMC chains, each started from a MAP fit (MILE).

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      num_chains: chains, run in one vectorised program (a different MAP start each).
      num_warmup: tuning steps per chain (BlackJAX's three tuning phases together).
      num_samples: draws kept per chain.
      thinning: MCLMC steps per kept draw (the chain runs ``num_samples * thinning`` steps).
        The defaults (2000 tuning steps, 1000 draws 10 steps apart) were chosen on the UCI
        protocol's energy split 0: 1000 + 1000 x 1 steps gave test log-likelihood -0.13,
        2000 + 1000 x 10 gave -0.075, 4000 + 2000 x 5 gave -0.047 (NUTS 2 x 300/300: 0.25).
      init: ``"map"`` (default), ``"module"``, ``"prior"`` or Flax variables, as for NUTS.
      desired_energy_var: target variance of the energy error per dimension; the tuner
        picks the step size from it (smaller: smaller steps and less bias).
      diagonal_preconditioning: tune a diagonal preconditioner (mass matrix).
      map_options: options of the MAP fits of ``init="map"``.
      progress_bar: unused by the vectorised program (accepted for symmetry with NUTS).
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
    del progress_bar
    num_chains = _checks.positive_int(num_chains, "num_chains")
    num_warmup = _checks.positive_int(num_warmup, "num_warmup")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    thinning = _checks.positive_int(thinning, "thinning")
    desired_energy_var = _checks.positive_float(desired_energy_var, "desired_energy_var")

    start = time.perf_counter()
    x, y, y_err, key_run, transforms, starts, unravel = prepare_chains(
        model, x, y, y_err, seed, 6, init, num_chains, map_options
    )
    dim = int(starts.shape[1])
    if dim < 2:
        raise ValueError("MCLMC needs at least 2 latent dimensions; use method='nuts' for a one-parameter model.")

    run = model.program(_build, unravel=unravel, num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                        desired_energy_var=desired_energy_var, diagonal_preconditioning=bool(diagonal_preconditioning))
    data = jax.tree.map(jnp.asarray, (x, y, y_err))
    positions, stats, tuned = run(starts, jax.random.split(key_run, num_chains), data)

    draws = constrained_draws(model, {k: v.reshape((num_chains * num_samples,) + v.shape[2:]) for k, v in positions.items()},
                              x.shape[1])
    stats = {k: np.asarray(v) for k, v in stats.items()}
    divergences = int(stats["diverging"].sum())
    info = {
        "num_chains": num_chains,
        "num_samples": num_samples,
        "num_warmup": num_warmup,
        "thinning": thinning,
        "step_size": np.asarray(tuned["step_size"]),
        "L": np.asarray(tuned["L"]),
        "energy_var": np.mean(stats["energy_change"] ** 2, axis=1) / dim,
        "sample_stats": stats,
        "num_divergences": divergences,
        "wall_time": time.perf_counter() - start,
        "num_train": x.shape[0],
    }
    if divergences:
        warnings.warn(
            f"{divergences} of {stats['diverging'].size} MCLMC steps produced a non-finite state and were reverted: "
            "a short num_warmup leaves the tuner without a usable step size or preconditioner (try >= 1000); "
            "otherwise try a smaller desired_energy_var (e.g. 1e-4), normalize=True or a tighter prior.",
            UserWarning,
            stacklevel=3,
        )
    return Fit(model=model, method="mclmc", draws=draws, num_features=x.shape[1], info=info, y_err=y_err)


def _build(model: LiftedModel, unravel, num_warmup: int, num_samples: int, thinning: int, desired_energy_var: float,
           diagonal_preconditioning: bool):
    """The jitted program: tune and sample every chain, vectorised over chains.

    Chains start from flat vectors ``(num_chains, dim)``; ``unravel`` maps one back to
    ``{site: unconstrained value}`` (as from :func:`bnn.inference.optimize.prepare_chains`).
    """
    potential = flat_potential(model, unravel)

    def run_chain(u0, key, data):
        def logdensity(u):
            return -potential(u, *data)

        key_init, key_tune, key_sample = jax.random.split(key, 3)
        state = blackjax.mcmc.mclmc.init(position=u0, logdensity_fn=logdensity, rng_key=key_init)
        kernel = blackjax.mcmc.mclmc.build_kernel(desired_energy_var=desired_energy_var)
        dim = u0.shape[0]
        # BlackJAX starts its step size at sqrt(dim)/4, far too long for a network at its MAP
        # (the first steps overflow, every estimate gets zero weight and the step size
        # collapses to 0). From a short step the first energy errors already give the
        # estimate of the right one (Var E ~ eps^6), so the tuner climbs to it at once
        # (1e-4 sqrt(dim): eps^6 stays far above float32's smallest normal number).
        start = blackjax.adaptation.mclmc_adaptation.MCLMCAdaptationState(
            L=jnp.sqrt(dim), step_size=_INITIAL_STEP * jnp.sqrt(dim), inverse_mass_matrix=jnp.ones(dim)
        )
        state, params, _ = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=kernel,
            num_steps=_tuner_budget(num_warmup),
            state=state,
            rng_key=key_tune,
            logdensity_fn=logdensity,
            frac_tune1=_TUNE_FRACTION,
            frac_tune2=_TUNE_FRACTION,
            frac_tune3=_TUNE_FRACTION,
            desired_energy_var=desired_energy_var,
            diagonal_preconditioning=diagonal_preconditioning,
            params=start,
        )
        sampler = blackjax.mclmc(
            logdensity, L=params.L, step_size=params.step_size, inverse_mass_matrix=params.inverse_mass_matrix
        )

        def one_step(state, k):
            state, info = sampler.step(k, state)
            return state, (info.energy_change, ~info.nonans)

        def one_draw(state, k):
            state, (energy, bad) = jax.lax.scan(one_step, state, jax.random.split(k, thinning))
            return state, (state.position, energy[-1], jnp.any(bad))

        _, (positions, energy, bad) = jax.lax.scan(one_draw, state, jax.random.split(key_sample, num_samples))
        stats = {"energy_change": energy, "diverging": bad}
        return jax.vmap(unravel)(positions), stats, {"L": params.L, "step_size": params.step_size}

    @jax.jit
    def run(u0, keys, data):
        with jax.numpy_rank_promotion("allow"):  # BlackJAX and NumPyro rely on implicit rank promotion
            return jax.vmap(functools.partial(run_chain, data=data))(u0, keys)

    return run
