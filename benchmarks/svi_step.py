"""Per-step cost of minibatch SVI against a hand-written jitted mean-field step.

    taskset -c 0 .venv/bin/python benchmarks/svi_step.py          # a few minutes; writes SVI_STEP.md
    .venv/bin/python benchmarks/svi_step.py --fast                 # tiny sizes, seconds; writes nothing

Contract: the marginal cost of one step of ``fit(method="svi", guide="normal",
batch_size=B)`` is at most 1.2× that of the conventional recipe written by hand in pure
JAX + optax: every weight drawn once per step from ``Normal(mu, softplus(rho))``
(reparameterised), the minibatch Gaussian log-likelihood scaled by ``N / B``, the prior's
log density, minus the log density of the draw under the guide, one Adam update, all in one
``jax.lax.scan`` over steps. Both optimise the same objective on the same data: the same
model (a tanh MLP, ``Normal(0, 1)`` prior on every weight, a Gaussian likelihood whose noise
scale is learned under a ``HalfNormal(1)`` prior through ``log``) and the same guide
parametrisation as NumPyro's ``AutoNormal`` (:func:`hand_negative_elbo` evaluates it, the
tests check that it equals bnn's estimate for the same parameters and draw).

Timing: a fit of ``K`` steps and one of ``2K`` steps, each on a warm cache (compiled
beforehand), repeated with bnn and hand-written runs interleaved; per-step cost is
``(t(2K) - t(K)) / K`` from the medians, so fixed per-call work cancels, and bnn's fixed
per-fit overhead is ``t(K) - K · per_step``. MAP (``fit(method="map")`` against Adam on
the same negative log joint by hand) is shown for reference. Ratios, not absolute times,
are the result: pin to one core (``taskset -c 0``) on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (timer, machine description, report writing)

import bnn  # noqa: E402

NOISE = "noise_scale"
LEARNING_RATE = 1e-3
INIT_SCALE = 0.01


def make_data(n: int, num_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic regression rows: ``x ~ N(0, I)``, ``y = sin(Σx) + 0.1 ε`` (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, num_features)).astype(np.float32)
    y = (np.sin(x.sum(1)) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def make_model(sizes: tuple[int, ...]) -> bnn.BNN:
    """The benchmark's model: tanh MLP, ``Normal(0, 1)`` prior, Gaussian likelihood with learned noise."""
    return bnn.BNN(bnn.MLP(sizes, activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())


def site_shapes(model: bnn.BNN, num_features: int) -> dict[str, tuple[int, ...]]:
    """Every latent site's shape: the network's parameter paths, then the noise scale."""
    spec = model.spec(num_features)
    return {**dict(zip(spec.paths, spec.shapes)), NOISE: ()}


def _network(net, flat: dict, xb: jax.Array) -> jax.Array:
    """The Flax module at flat parameters ``{"Dense_0.kernel": array, ...}``."""
    tree: dict = {}
    for path, value in flat.items():
        if path == NOISE:
            continue
        layer, name = path.split(".")
        tree.setdefault(layer, {})[name] = value
    return net.apply({"params": tree}, xb)


def _normal_logpdf(value, loc, scale):
    return -0.5 * jnp.square((value - loc) / scale) - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def hand_negative_elbo(net, n: int, params: dict, eps: dict, xb: jax.Array, yb: jax.Array) -> jax.Array:
    """The single-draw negative ELBO of the mean-field guide, written out by hand.

    ``params = {"loc": {site: array}, "rho": {site: array}}`` (unconstrained; the guide's
    scale is ``softplus(rho)``), ``eps`` a standard normal draw per site, ``xb, yb`` a
    minibatch of the ``n`` rows. Weights ``w = loc + softplus(rho) · eps`` with a
    ``Normal(0, 1)`` prior; the noise scale is ``exp(z)`` for its ``z``, with a
    ``HalfNormal(1)`` prior and the Jacobian ``z`` of ``exp``.
    """
    scale = {k: jax.nn.softplus(r) for k, r in params["rho"].items()}
    z = {k: params["loc"][k] + scale[k] * eps[k] for k in eps}
    log_q = sum(jnp.sum(_normal_logpdf(z[k], params["loc"][k], scale[k])) for k in z)
    sigma = jnp.exp(z[NOISE])
    log_prior = sum(jnp.sum(_normal_logpdf(z[k], 0.0, 1.0)) for k in z if k != NOISE)
    log_prior = log_prior + _normal_logpdf(sigma, 0.0, 1.0) + jnp.log(2.0) + z[NOISE]
    f = _network(net, z, xb)
    log_lik = jnp.sum(_normal_logpdf(yb[:, None], f, sigma)) * (n / xb.shape[0])
    return -(log_lik + log_prior - log_q)


def bnn_negative_elbo(model: bnn.BNN, params: dict, eps: dict, x: jax.Array, y: jax.Array, idx: jax.Array) -> jax.Array:
    """bnn's SVI objective at the same guide parameters and draw as :func:`hand_negative_elbo`.

    NumPyro's ``Trace_ELBO`` on the model that ``fit(method="svi", batch_size=...)`` fits
    (:func:`bnn.inference.svi.minibatch_model`, rows ``idx``) and the ``AutoNormal`` guide it
    builds (:func:`bnn.inference.svi.make_guide`), with the guide's draw fixed to
    ``loc + softplus(rho) · eps`` (constrained: ``exp`` of it for the noise scale).
    """
    from numpyro import handlers
    from numpyro.infer import Trace_ELBO

    # internal on purpose: the objective that fit(method="svi") optimises, measured against the hand-written one
    from bnn.inference.svi import make_guide, minibatch_model

    fn = minibatch_model(model)
    values = {k: jnp.exp(v) if k == NOISE else v for k, v in params["loc"].items()}
    guide = make_guide("normal", fn, values, INIT_SCALE, None)
    with handlers.seed(rng_seed=0):
        guide(x, y, idx)  # sets up the guide's structure
    scale = {k: jax.nn.softplus(r) for k, r in params["rho"].items()}
    draw = {k: params["loc"][k] + scale[k] * eps[k] for k in eps}
    draw[NOISE] = jnp.exp(draw[NOISE])
    guide_params = {**{f"{k}_auto_loc": v for k, v in params["loc"].items()}, **{f"{k}_auto_scale": v for k, v in scale.items()}}
    fixed = handlers.substitute(guide, data=draw)
    return Trace_ELBO().loss(jax.random.PRNGKey(0), guide_params, fn, fixed, x, y, idx)


def hand_svi_init(values: dict, init_scale: float = INIT_SCALE) -> dict:
    """Guide parameters centred on constrained ``values`` with scale ``init_scale``, as ``AutoNormal`` starts."""
    loc = {k: jnp.log(v) if k == NOISE else jnp.asarray(v) for k, v in values.items()}
    rho = {k: jnp.full(jnp.shape(v), np.log(np.expm1(init_scale)), jnp.float32) for k, v in loc.items()}
    return {"loc": loc, "rho": rho}


def draw_eps(key: jax.Array, shapes: dict) -> dict:
    """One standard normal draw per site."""
    keys = jax.random.split(key, len(shapes))
    return {k: jax.random.normal(kk, s, jnp.float32) for kk, (k, s) in zip(keys, shapes.items())}


def hand_svi_program(net, shapes: dict, n: int, batch_size: int, optimizer):
    """Jitted ``run(params, opt_state, keys, x, y) -> ((params, opt_state), losses)``: one SVI step per key."""

    def step(carry, key):
        params, opt_state, x, y = carry
        k_idx, k_eps = jax.random.split(key)
        idx = jax.random.randint(k_idx, (batch_size,), 0, n)
        loss, grads = jax.value_and_grad(hand_negative_elbo, argnums=2)(net, n, params, draw_eps(k_eps, shapes), x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, x, y), loss

    return _scanned(step)


def hand_map_program(net, n: int, batch_size: int, optimizer):
    """Jitted MAP loop by hand: Adam on the minibatch negative log joint per point (noise through ``log``)."""

    def loss_fn(u, xb, yb):
        sigma = jnp.exp(u[NOISE])
        log_prior = sum(jnp.sum(_normal_logpdf(v, 0.0, 1.0)) for k, v in u.items() if k != NOISE)
        log_prior = log_prior + _normal_logpdf(sigma, 0.0, 1.0) + jnp.log(2.0)
        log_lik = jnp.sum(_normal_logpdf(yb[:, None], _network(net, u, xb), sigma)) * (n / xb.shape[0])
        return -(log_lik + log_prior) / n

    def step(carry, key):
        u, opt_state, x, y = carry
        idx = jax.random.randint(key, (batch_size,), 0, n)
        loss, grads = jax.value_and_grad(loss_fn)(u, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, u)
        return (optax.apply_updates(u, updates), opt_state, x, y), loss

    return _scanned(step)


def _scanned(step):
    """Jitted ``run(params, opt_state, keys, x, y) -> ((params, opt_state), losses)``: ``step`` once per key."""

    @jax.jit
    def run(params, opt_state, keys, x, y):
        (params, opt_state, _, _), losses = jax.lax.scan(step, (params, opt_state, x, y), keys)
        return (params, opt_state), losses

    return run


def measure(sizes: tuple[int, ...], n: int, batch_size: int, steps: int, repeats: int, num_features: int = 8) -> dict:
    """Per-step µs of bnn's and the hand-written SVI and MAP, and bnn's fixed per-fit seconds.

    Every program is compiled before timing; each repeat runs every fit (two lengths per
    program) interleaved; medians over repeats. bnn's SVI fits draw the default 1000
    posterior samples; one more fit of ``steps`` steps with a single draw separates the
    fixed set-up from the draws, and a fit given a new ``optax.adam(...)`` object each time
    shows whether equal optimisers share the compiled programs.
    """
    x, y = make_data(n, num_features)
    model = make_model(sizes)
    net = model.module
    optimizer = optax.adam(LEARNING_RATE)
    shapes = site_shapes(model, num_features)
    values = model.initial_values(x, y, jax.random.PRNGKey(0))
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    hand_svi = hand_svi_program(net, shapes, n, batch_size, optimizer)
    hand_map = hand_map_program(net, n, batch_size, optimizer)
    svi_start = hand_svi_init(values)
    map_start = {k: jnp.log(v) if k == NOISE else v for k, v in values.items()}

    def bnn_svi(k, num_samples=1000, opt=optimizer):
        return lambda: model.fit(x, y, method="svi", guide="normal", init="module", batch_size=batch_size, num_steps=k,
                                 optimizer=opt() if callable(opt) else opt, num_samples=num_samples).draws

    def runs(k):
        keys = jax.random.split(jax.random.PRNGKey(1), k)
        return {
            "hand_svi": lambda: hand_svi(svi_start, optimizer.init(svi_start), keys, xs, ys),
            "bnn_svi": bnn_svi(k),
            "hand_map": lambda: hand_map(map_start, optimizer.init(map_start), keys, xs, ys),
            "bnn_map": lambda: model.fit(x, y, method="map", batch_size=batch_size, num_steps=k,
                                         optimizer=optimizer).draws,
        }

    lengths = (steps, 2 * steps)
    programs = {k: runs(k) for k in lengths}
    programs[steps]["bnn_svi_1_draw"] = bnn_svi(steps, num_samples=1)
    fresh = bnn_svi(steps, opt=lambda: optax.adam(LEARNING_RATE))
    times: dict = {(name, k): [] for k in lengths for name in programs[k]}
    fresh_times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs have not settled; that is not measured here
        for k in lengths:
            for fn in programs[k].values():
                fn(), fn()  # compile, then once warm
        fresh()
        for r in range(repeats):
            for k in lengths:
                for name, fn in programs[k].items():
                    times[name, k].append(harness.timed(fn)[1])
            if r < 2:  # a recompiling fit costs seconds: two repeats
                fresh_times.append(harness.timed(fresh)[1])
    med = {key: statistics.median(v) for key, v in times.items()}
    per_step = {name: (med[name, 2 * steps] - med[name, steps]) / steps for name in programs[2 * steps]}
    fixed = med["bnn_svi", steps] - steps * per_step["bnn_svi"]
    return {
        "per_step_us": {k: 1e6 * v for k, v in per_step.items()},
        "bnn_svi_fixed_s": fixed,
        "bnn_svi_draws_s": med["bnn_svi", steps] - med["bnn_svi_1_draw", steps],
        "bnn_svi_fresh_optimizer_s": statistics.median(fresh_times),
        "bnn_svi_fit_s": med["bnn_svi", steps],
        "steps": steps,
        "ratio": per_step["bnn_svi"] / per_step["hand_svi"],
        "map_ratio": per_step["bnn_map"] / per_step["hand_map"],
    }


CASES = {
    # name: (sizes, n, batch_size, steps, repeats)
    "[256,256,1], batch 1024, N=100000": ((256, 256, 1), 100_000, 1024, 200, 5),
    "[32,32,1], batch 128, N=5000": ((32, 32, 1), 5000, 128, 2000, 7),
}
FAST_CASES = {"[8,1], batch 16, N=200": ((8, 1), 200, 16, 100, 2)}
# on an accelerator a step costs microseconds: longer runs, and a 10^6-row case
GPU_CASES = {
    "[256,256,1], batch 1024, N=1000000": ((256, 256, 1), 1_000_000, 1024, 1000, 3),
    "[32,32,1], batch 128, N=5000": ((32, 32, 1), 5000, 128, 2000, 3),
}


def table(results: dict) -> str:
    """The Markdown table of :func:`measure` results per case."""
    lines = [
        "| case | hand SVI µs/step | bnn SVI µs/step | ratio | hand MAP µs/step | bnn MAP µs/step | MAP ratio "
        "| bnn SVI fixed s/fit | of which 1000 draws, s | fit of K steps, s | same, new `optax.adam` object, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        p = r["per_step_us"]
        lines.append(
            f"| {name} | {p['hand_svi']:.0f} | {p['bnn_svi']:.0f} | **{r['ratio']:.2f}** | {p['hand_map']:.0f} | "
            f"{p['bnn_map']:.0f} | {r['map_ratio']:.2f} | {r['bnn_svi_fixed_s']:.3f} | {r['bnn_svi_draws_s']:.3f} | "
            f"{r['bnn_svi_fit_s']:.3f} (K={r['steps']}) | {r['bnn_svi_fresh_optimizer_s']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a smoke test); writes no file")
    parser.add_argument("--gpu", action="store_true", help="the accelerator cases (longer runs, 10^6 rows)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("SVI_STEP.md")), help="Markdown output")
    args = parser.parse_args(argv)
    cases = FAST_CASES if args.fast else GPU_CASES if args.gpu else CASES
    results = {name: measure(*case) for name, case in cases.items()}
    text = table(results)
    print(text)
    if not args.fast:
        info = harness.machine()
        header = (
            "# Minibatch SVI: per-step cost against a hand-written mean-field step\n\n"
            f"`python benchmarks/svi_step.py` on {harness.machine_line(info)}; {info['date']}.\n\n"
            "Per-step = (t(2K) − t(K)) / K from medians of interleaved warm fits; fixed = t(K) − K · per-step "
            "(bnn's set-up per `fit` call, including the default 1000 posterior draws). Contract: ratio ≤ 1.2.\n\n"
        )
        # the hand-written sections of an earlier report (from its first "## " heading on) are kept
        harness.write_report(Path(args.out), header + text + "\n", keep_from="## ")
    return results


if __name__ == "__main__":
    main()
