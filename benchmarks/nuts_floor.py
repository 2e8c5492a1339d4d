"""What bounds NUTS's ESS of f per second on the sine toy: the cost of a transition and the step size.

    python benchmarks/nuts_floor.py                        # all three parts, seeds 0 and 1 (~10 min, one core)
    python benchmarks/nuts_floor.py --parts cost           # ~1 min
    python benchmarks/nuts_floor.py --parts mass integrator --seeds 0 1 2 3

The posterior of ``sampling.py`` (sine toy, (10, 10, 1) tanh, 141 parameters), 4 chains in one
vectorised program, chains started from bnn's MAP starts (``init="map"``), one core. On this
posterior every NUTS tree reaches the depth cap (1023 leapfrog steps), so a transition costs
1023 gradients plus the tree's bookkeeping, and the ESS per draw is set by how far 1023 steps
of the adapted step size carry. Three measurements:

* ``cost``: milliseconds per 1023 steps of the 4 chains for (a) the leapfrog steps alone (the
  gradient floor); (b) a loop that does, per step, the work any NUTS does besides the gradient:
  kinetic energy, the multinomial weight, the proposal's selection, the U-turn checkpoints and
  the check of the new state against all of them (random numbers drawn once per tree, no
  nested loops) -- a cost model of the leanest tree building, not a sampler; (c) one transition
  of bnn's NUTS (NumPyro's kernel) after warm-up. Ratios to (a) are printed.
* ``mass``: the step size adapted at target 0.98 and the min ESS of f with each chain's own
  adapted diagonal mass matrix (bnn's default), against fixed "oracle" diagonal mass matrices
  taken from the draws of that run: their variance pooled over chains, and each chain's own.
  If the mass matrix's estimate limited the step size, the oracles would allow a larger one.
* ``integrator``: BlackJAX NUTS (its window adaptation, 250 steps, the same MAP starts,
  500 draws) with the leapfrog integrator at tree depth 10, against McLachlan's two-stage
  integrator (two gradients per step, a larger stable step) at depth 9 (as many gradients per
  transition), at the given targets. Seconds are those of calls after the first (compiled).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import blackjax
import blackjax.mcmc.integrators
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import hmc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the timers)
import sampling  # noqa: E402  (the sine toy and the ESS of f)

import bnn  # noqa: E402

# Internal on purpose: this script measures the NUTS program of fit(method="nuts") itself, on bnn's
# flat parameter vector, against the floor of its leapfrog steps.
from bnn import _keys  # noqa: E402  (the key stream of NUTS's chain starts, as fit draws them)
from bnn.inference import mcmc  # noqa: E402  (NUTS's kernel, the program measured)
from bnn.inference.chains import CHUNK, _chain_program, flat_potential, prepare_chains  # noqa: E402  (its chain driver)

CHAINS, DRAWS, WARMUP, STEPS = 4, 500, 250, 1023


class Posterior:
    """The sine toy's model, data and MAP chain starts for one seed, on bnn's flat vector."""

    def __init__(self, seed: int, model=None):
        self.problem = sampling.sine()
        self.model = model or sampling.new_model(self.problem)
        (self.x, self.y, _, self.key, self.transforms, self.starts, self.unravel) = prepare_chains(
            self.model, self.problem.x, self.problem.y, None, seed, _keys.NUTS, "map", CHAINS, None)
        self.potential = flat_potential(self.model, self.unravel)

    def min_ess(self, flat: np.ndarray) -> tuple[float, float]:
        """``(min ESS of f, max R-hat of f)`` over the 50 inputs, from flat draws (chains, draws, dim)."""
        samples = jax.vmap(self.unravel)(jnp.asarray(flat).reshape(-1, flat.shape[-1]))
        draws = {k: self.transforms[k](v) for k, v in samples.items()}
        fit = bnn.Fit(model=self.model, method="nuts", draws=draws, num_features=1, info={"num_chains": CHAINS})
        f = np.asarray(fit.predict(self.problem.grid).samples)[..., 0]
        return sampling.function_stats(f.reshape(CHAINS, -1, f.shape[-1]))


def leapfrog_loop(potential, x, y, step: float = 1e-3):
    """``(z, key) -> z``: :data:`STEPS` leapfrog steps of one chain, nothing else."""
    grad = jax.grad(potential)

    def run(z, key):
        r = jax.random.normal(key, z.shape)

        def body(_, carry):
            z, r, g = carry
            r = r - 0.5 * step * g
            z = z + step * r
            g = grad(z, x, y, None)
            return z, r - 0.5 * step * g, g

        return jax.lax.fori_loop(0, STEPS, body, (z, r, grad(z, x, y, None)))[0]

    return run


def lean_tree_loop(potential, x, y, step: float = 1e-3, depth: int = 10):
    """``(z, key) -> proposal``: the leapfrog steps of :func:`leapfrog_loop` plus the per-step
    work of a NUTS tree, in a ``while_loop`` that stops on a U-turn as a sampler's would (the
    check is kept but can never fire, so all :data:`STEPS` steps run, as on this posterior)."""
    value_and_grad = jax.value_and_grad(potential)
    slots = jnp.arange(depth)

    def run(z, key):
        k_momentum, k_select = jax.random.split(key)
        log_u = jnp.log(jax.random.uniform(k_select, (STEPS + 1,)))
        r = jax.random.normal(k_momentum, z.shape)
        inv_mass = jnp.ones_like(z)
        pe, g = value_and_grad(z, x, y, None)
        energy0 = pe + 0.5 * jnp.sum(inv_mass * r * r)
        checkpoints = jnp.zeros((depth,) + z.shape)

        def body(c):
            i, z, r, g, proposal, log_weight, r_sum, r_ckpt, r_sum_ckpt, turned = c
            r = r - 0.5 * step * g
            z = z + step * inv_mass * r
            pe, g = value_and_grad(z, x, y, None)
            r = r - 0.5 * step * g
            delta = energy0 - (pe + 0.5 * jnp.sum(inv_mass * r * r))
            new_log_weight = jnp.logaddexp(log_weight, delta)
            proposal = jnp.where(log_u[i] < delta - new_log_weight, z, proposal)
            r_sum = r_sum + r
            slot = (slots == i % depth)[:, None]
            r_ckpt, r_sum_ckpt = jnp.where(slot, r, r_ckpt), jnp.where(slot, r_sum, r_sum_ckpt)
            spans = r_sum[None] - r_sum_ckpt + r_ckpt
            turning = jnp.any((spans @ (inv_mass * r) <= 0) | (jnp.sum(spans * inv_mass[None] * r_ckpt, axis=1) <= 0))
            return i + 1, z, r, g, proposal, new_log_weight, r_sum, r_ckpt, r_sum_ckpt, turned | (turning & (i < 0))

        state = (0, z, r, g, z, 0.0, r, checkpoints, checkpoints, False)
        return jax.lax.while_loop(lambda c: (c[0] < STEPS) & ~c[-1], body, state)[4]

    return run


def part_cost(seed: int) -> dict[str, float]:
    """Prints and returns the milliseconds per 1023 steps of (a) ``"leapfrog"``, (b) ``"lean"``, (c) ``"nuts"``."""
    post = Posterior(seed)
    keys = jax.random.split(post.key, CHAINS)
    x, y = jnp.asarray(post.x), jnp.asarray(post.y)
    floor = 1000 * harness.median_seconds(jax.jit(jax.vmap(leapfrog_loop(post.potential, x, y))), post.starts, keys,
                                          repeats=15)
    lean = 1000 * harness.median_seconds(jax.jit(jax.vmap(lean_tree_loop(post.potential, x, y))), post.starts, keys,
                                         repeats=15)
    init_fn, advance_fn = _chain_program(post.model, mcmc._nuts_kernel, post.unravel, "vectorized", num_warmup=WARMUP,
                                         target_accept_prob=0.98, max_tree_depth=10, dense_mass=False)
    data = (x, y, None)
    state = init_fn(post.starts, keys, data)
    state, _ = advance_fn(state, data, CHUNK)
    state, out = jax.block_until_ready(advance_fn(state, data, WARMUP - CHUNK))
    count = 20
    # vectorised chains wait for the longest tree: a transition costs the largest tree of the chains
    steps = float(np.asarray(advance_fn(state, data, count)[1]["num_steps"])[:, :count].max(axis=0).mean())
    nuts = 1000 * harness.median_seconds(lambda s: advance_fn(s, data, count), state, repeats=5) / count * STEPS / steps
    print(f"cost: 4 vectorised chains, ms per {STEPS} steps (seed {seed}; NUTS trees after warm-up: "
          f"{steps:.0f} steps on average)")
    print(f"  (a) leapfrog steps alone            {floor:6.1f}   1.00")
    print(f"  (b) + the lean NUTS per-step work   {lean:6.1f}   {lean / floor:4.2f}")
    print(f"  (c) bnn's NUTS transition           {nuts:6.1f}   {nuts / floor:4.2f}   (c)/(b) {nuts / lean:4.2f}",
          flush=True)
    return {"leapfrog": floor, "lean": lean, "nuts": nuts}


def part_mass(seed: int) -> None:
    post = Posterior(seed)
    init_kernel, sample_kernel = hmc(potential_fn_gen=lambda x, y: functools.partial(
        post.potential, x=x, y=y, y_err=None), algo="NUTS")
    args = (jnp.asarray(post.x), jnp.asarray(post.y))

    def chain(z0, key, inverse_mass, adapt):
        state = init_kernel(z0, WARMUP, target_accept_prob=0.98, max_tree_depth=10, inverse_mass_matrix=inverse_mass,
                            adapt_mass_matrix=adapt, model_args=args, rng_key=key)

        def body(s, _):
            s = sample_kernel(s, model_args=args)
            return s, (s.z, s.diverging)

        state, (z, diverging) = jax.lax.scan(body, state, None, length=WARMUP + DRAWS)
        return z[WARMUP:], diverging[WARMUP:].sum(), state.adapt_state.step_size

    run = jax.jit(jax.vmap(chain, in_axes=(0, 0, 0, None)), static_argnums=3)
    keys = jax.random.split(post.key, CHAINS)
    flat, _, _ = run(post.starts, keys, jnp.ones_like(post.starts), True)
    flat = np.asarray(flat)
    masses = {"own adapted (default)": (jnp.ones_like(post.starts), True),
              "oracle, pooled variance": (jnp.broadcast_to(flat.reshape(-1, flat.shape[-1]).var(0), flat.shape[::2]),
                                          False),
              "oracle, each chain's variance": (jnp.asarray(flat.var(axis=1)), False)}
    print(f"mass (seed {seed}): diagonal mass matrix, target 0.98, {WARMUP} warm-up steps")
    for name, (inverse_mass, adapt) in masses.items():
        z, divergences, step_size = jax.block_until_ready(run(post.starts, keys, inverse_mass, adapt))
        ess, rhat = post.min_ess(np.asarray(z))
        print(f"  {name:30s} step sizes {np.round(np.asarray(step_size), 4).tolist()}  min ESS(f) {ess:5.0f}  "
              f"R-hat {rhat:.3f}  divergences {int(np.sum(divergences))}", flush=True)


def blackjax_program(post: Posterior, integrator_name: str, depth: int, target: float):
    integrator = getattr(blackjax.mcmc.integrators, integrator_name)

    def chain(z0, key, x, y):
        def logdensity(z):
            return -post.potential(z, x, y, None)

        k_warm, k_run = jax.random.split(key)
        adaptation = blackjax.window_adaptation(blackjax.nuts, logdensity, target_acceptance_rate=target,
                                                integrator=integrator, max_num_doublings=depth)
        (state, params), _ = adaptation.run(k_warm, z0, num_steps=WARMUP)
        kernel = blackjax.nuts(logdensity, **{**params, "integrator": integrator, "max_num_doublings": depth})

        def step(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.is_divergent, info.num_integration_steps)

        return jax.lax.scan(step, state, jax.random.split(k_run, DRAWS))[1] + (params["step_size"],)

    return jax.jit(jax.vmap(chain, in_axes=(0, 0, None, None)))


def part_integrator(seeds: list[int], targets: list[float]) -> None:
    configs = [("velocity_verlet", 10, 0.98)] + [("mclachlan", 9, t) for t in targets]
    model = sampling.new_model()
    print(f"integrator: BlackJAX NUTS, {WARMUP} warm-up + {DRAWS} draws, 4 chains; seconds after the first call")
    for name, depth, target in configs:
        program = None
        for i, seed in enumerate([seeds[0]] + list(seeds)):  # the first call compiles and is not reported
            post = Posterior(seed, model)
            program = program or blackjax_program(post, name, depth, target)
            (z, divergent, steps, step_size), seconds = harness.timed(
                program, post.starts, jax.random.split(post.key, CHAINS), jnp.asarray(post.x), jnp.asarray(post.y))
            if i == 0:
                continue
            ess, rhat = post.min_ess(np.asarray(z))
            print(f"  {name:16s} depth {depth:2d} target {target:.3f} seed {seed}: {seconds:5.1f} s  min ESS(f) "
                  f"{ess:5.0f}  ESS/s {ess / seconds:6.1f}  R-hat {rhat:.3f}  divergences {int(np.sum(divergent)):3d}  "
                  f"steps/draw {float(np.mean(steps)):6.1f}  step sizes {np.round(np.asarray(step_size), 4).tolist()}",
                  flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("cost", "mass", "integrator"),
                        default=["cost", "mass", "integrator"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.98, 0.99],
                        help="target acceptance rates of the McLachlan runs")
    args = parser.parse_args(argv)
    if "cost" in args.parts:
        part_cost(args.seeds[0])
    if "mass" in args.parts:
        for seed in args.seeds:
            part_mass(seed)
    if "integrator" in args.parts:
        part_integrator(args.seeds, args.targets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
