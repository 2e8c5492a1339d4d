"""What an MCLMC step's compile time is made of: the sine toy's network, 4 vectorised chains, a loop of steps.

    python benchmarks/step_compile.py            # every variant, each in a fresh process, best of 2
    python benchmarks/step_compile.py --one onedraw --impl rbg    # one variant in this process (JSON line)

Variants (``--one``), each a ``jax.jit(jax.vmap(fori_loop of 100 steps))`` over 4 chain keys:

* ``gradient``: the log density's value and gradient only (the arithmetic every sampler needs);
* ``integrator``: BlackJAX's deterministic isokinetic McLachlan step (two gradients), no randomness;
* ``draw``: one ``jax.random.normal`` of ``(2, dim)`` per step from ``fold_in(key, step)``, nothing else;
* ``blackjax``: BlackJAX's MCLMC kernel (``blackjax.mcmc.mclmc.build_kernel``) with a key folded from the
  step number, as ``bnn.inference.mclmc`` drives it: 8 random-number call sites per step (its two
  momentum refreshes and two unit vectors for rejected steps, two key splits, two ``fold_in``);
* ``onedraw``: the same dynamics written around BlackJAX's integrator with one normal draw per step
  (both half refreshes from it) and a rejected step reverted without a draw.

``--impl`` is the chain keys' PRNG implementation: JAX's default ``threefry2x32`` or ``rbg`` (bits from
XLA's RngBitGenerator). Printed: XLA compile seconds of the jitted loop and the optimised program's line
count. Nothing here changes the package; it says where a first fit's compile time could be cut.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VARIANTS = ("gradient", "integrator", "draw", "blackjax", "onedraw")
IMPLS = ("threefry2x32", "rbg")
STEPS = 100


def compile_seconds(variant: str, impl: str) -> dict:
    """Compile the variant's loop in this process: ``{"seconds", "lines"}``."""
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.mcmc import integrators
    from jax.flatten_util import ravel_pytree

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    x = jnp.linspace(-1.0, 1.0, 40)[:, None]
    y = x * jnp.sin(5.0 * x)
    start_weights, unravel = ravel_pytree([(jnp.zeros(k), jnp.zeros(b)) for k, b in harness.layer_shapes(1, (10, 10, 1))])
    dim = start_weights.shape[0]

    def logdensity(u):
        resid = harness.mlp(unravel(u), x) - y
        return -0.5 * jnp.sum(resid ** 2) / 0.01 - 0.5 * jnp.sum(u ** 2)

    key = jax.random.key(0, impl=impl)
    start = blackjax.mcmc.mclmc.init(position=start_weights, logdensity_fn=logdensity, rng_key=key)
    integrate = integrators.isokinetic_mclachlan(logdensity_fn=logdensity, inverse_mass_matrix=jnp.ones(dim))
    kernel = blackjax.mcmc.mclmc.build_kernel(desired_energy_var=5e-4)
    gradient = jax.value_and_grad(logdensity)
    step_size, L = 0.1, 3.0

    def refreshed(momentum, noise):  # BlackJAX's partial refresh at half the step size
        nu = jnp.sqrt((jnp.exp(step_size / L) - 1.0) / dim)
        m = momentum + nu * noise
        return m / jnp.linalg.norm(m)

    def step(s, k, i):
        if variant == "gradient":
            value, grad = gradient(s.position + 1e-3 * s.momentum)
            return s._replace(position=s.position + 1e-4 * grad), value
        if variant == "integrator":
            s2, kinetic = integrate(s, step_size)
            return s2, kinetic
        if variant == "draw":
            z = jax.random.normal(jax.random.fold_in(k, i), (2, dim))
            m = s.momentum + z[0] * z[1]
            return s._replace(momentum=m / jnp.linalg.norm(m)), 0.0
        if variant == "blackjax":
            s2, info = kernel(jax.random.fold_in(jax.random.fold_in(k, i), 0), s, logdensity, jnp.ones(dim), L,
                              step_size)
            return s2, info.energy_change
        z = jax.lax.optimization_barrier(jax.random.normal(jax.random.fold_in(k, i), (2, dim)))
        s1 = s._replace(momentum=refreshed(s.momentum, z[0]))
        s2, kinetic = integrate(s1, step_size)
        s2 = s2._replace(momentum=refreshed(s2.momentum, z[1]))
        energy = kinetic - s2.logdensity + s.logdensity
        ok = jnp.all(jnp.isfinite(s2.position)) & jnp.isfinite(s2.logdensity) & jnp.isfinite(energy)
        return jax.tree.map(lambda new, old: jnp.where(ok, new, old), s2, s), jnp.where(ok, energy, 0.0)

    def run(s, k):
        def body(i, carry):
            s, total = carry
            s, e = step(s, k, i)
            return s, total + e
        return jax.lax.fori_loop(0, STEPS, body, (s, 0.0))

    program = jax.jit(jax.vmap(run, in_axes=(None, 0)))
    begin = time.perf_counter()
    compiled = program.lower(start, jax.random.split(key, 4)).compile()
    return {"seconds": time.perf_counter() - begin, "lines": len(compiled.as_text().splitlines())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", choices=VARIANTS)
    parser.add_argument("--impl", choices=IMPLS, default="threefry2x32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(compile_seconds(args.one, args.impl)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    print(harness.machine_line(harness.machine(devices=False)))
    print(f"| variant | keys | compile s (best of {args.repeats}) | optimised lines |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        for impl in IMPLS if variant in ("draw", "blackjax", "onedraw") else IMPLS[:1]:
            runs = [harness.json_from_process([sys.executable, __file__, "--one", variant, "--impl", impl])
                    for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            print(f"| {variant} | {impl} | {best['seconds']:.2f} | {best['lines']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
