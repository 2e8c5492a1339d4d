"""Microcanonical Langevin Monte Carlo (MCLMC) through BlackJAX, started from MAP fits.

MCLMC (Robnik, De Luca, Silverstein & Seljak 2023) moves at fixed speed along the
isokinetic dynamics and partially refreshes the momentum after each step, with one gradient
per step and no accept/reject step. BlackJAX provides the kernel and its tuner, which sets
the step size from the energy error and the momentum decoherence length L from the
autocorrelation of a short run. Following MILE (Sommer et al., ICLR 2025), every chain
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

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference.chains import Health, Kernel, chunk_buffers, flat_potential, prepare_chains, resolve_chain_method, run_chains
from bnn.lifting import LiftedModel

HEALTH = Health("MCLMC steps produced a non-finite state and were reverted",
                "a short num_warmup leaves the tuner without a usable step size or preconditioner (try >= 1000); "
                "otherwise try a smaller desired_energy_var (e.g. 1e-4), normalize=True or a tighter prior.")

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
    chain_method: str | None = None,
    progress_bar: bool = False,
    y_err=None,
) -> Fit:
    """Sample the posterior with MCLMC chains, each started from a MAP fit (MILE).

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      num_chains: chains, each from a different MAP start.
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
    chain_method = resolve_chain_method(chain_method, num_chains)

    start = time.perf_counter()
    settings = dict(num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                    desired_energy_var=desired_energy_var, diagonal_preconditioning=bool(diagonal_preconditioning))
    prepared = prepare_chains(model, x, y, y_err, seed, _keys.MCLMC, init, num_chains, map_options)
    if prepared.starts.shape[1] < 2:
        raise ValueError("MCLMC needs at least 2 latent dimensions; use method='nuts' for a one-parameter model.")
    run = run_chains(model, _mclmc_kernel, settings, prepared, chain_method, num_samples, slice(None), HEALTH,
                     progress_bar, "mclmc")
    stats = dict(run.stats)
    tuned = {k: stats.pop(k)[:, 0] for k in ("step_size", "L")}
    energy_var = np.mean(stats["energy_change"] ** 2, axis=1) / int(prepared.starts.shape[1])
    info = run._replace(stats=stats).info(num_warmup, chain_method, start, thinning=thinning, **tuned,
                                          energy_var=energy_var)
    return Fit(model=model, method="mclmc", draws=run.draws, num_features=run.x.shape[1], info=info, y_err=run.y_err)


def _mclmc_kernel(model: LiftedModel, unravel, num_warmup: int, num_samples: int, thinning: int,
                  desired_energy_var: float, diagonal_preconditioning: bool) -> Kernel:
    """One MCLMC chain for the chain driver (:mod:`bnn.inference.chains`).

    ``init`` runs BlackJAX's tuner from the start (the whole warm-up) and keeps the tuned step
    size, L and preconditioner in the state; each iteration of ``advance`` is one kept draw,
    ``thinning`` MCLMC steps apart, recorded with the last step's energy change and whether any
    of its steps was reverted (``"diverging"``).
    """
    potential = flat_potential(model, unravel)

    def init(u0, key, data):
        def logdensity(u):
            return -potential(u, *data)

        key_init, key_tune, key_sample = jax.random.split(key, 3)
        with jax.numpy_rank_promotion("allow"):  # BlackJAX and NumPyro rely on implicit rank promotion
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
        return {"chain": state, "params": params, "keys": jax.random.split(key_sample, num_samples), "done": 0}

    def advance(state, data, count):
        params = state["params"]
        with jax.numpy_rank_promotion("allow"):
            sampler = blackjax.mclmc(lambda u: -potential(u, *data), L=params.L, step_size=params.step_size,
                                     inverse_mass_matrix=params.inverse_mass_matrix)

            def one_step(chain, k):
                chain, info = sampler.step(k, chain)
                return chain, (info.energy_change, ~info.nonans)

            def record(chain, energy, bad):
                return {"z": chain.position, "energy_change": energy, "diverging": bad, "step_size": params.step_size,
                        "L": params.L}

            def body(i, carry):
                chain, out = carry
                key = state["keys"][state["done"] + i]
                chain, (energy, bad) = jax.lax.scan(one_step, chain, jax.random.split(key, thinning))
                row = record(chain, energy[-1], jnp.any(bad))
                return chain, jax.tree.map(lambda buffer, value: buffer.at[i].set(value), out, row)

            empty = chunk_buffers(record(state["chain"], jnp.zeros(()), jnp.zeros((), bool)))
            chain, out = jax.lax.fori_loop(0, count, body, (state["chain"], empty))
        return {**state, "chain": chain, "done": state["done"] + count}, out

    return Kernel(init, advance)
