"""Sampling efficiency on the sine toy: ESS of f(x) per second, bnn against hand-written samplers.

    python benchmarks/sampling.py                 # 3 seeds, 4 chains, 500 draws each
    python benchmarks/sampling.py --seeds 0 --draws 200

Posterior: 40 points of x sin(5x) + N(0, 0.1²), an MLP (10, 10, 1) with tanh, Normal(0, 1) on
every weight, σ = 0.1 known. For each method and seed: the minimum over 50 inputs on
[-1.5, 1.5] of the bulk ESS of f(x) (NumPyro's estimator, the same for every method), divided
by the total wall time of the call (warm-up, sampling, starts; JIT compilation included, as a
user meets it, and also reported without it by timing a second call with another seed), plus
the largest function-space R-hat. Methods:

* ``bnn-nuts``: ``fit(method="nuts")`` with the package defaults (chains from MAP fits,
  target acceptance 0.98, 250 warm-up steps) on one model built once per process, as a script
  fitting several seeds or folds does: its first call compiles the programs, later calls reuse
  them;
* ``bnn-nuts-new-model``: the same with a new ``bnn.BNN`` built for every call (everything
  compiled again, as NumPyro's ``MCMC`` does on every call);
* ``numpyro-nuts``: a NumPyro model written by hand, ``NUTS`` with NumPyro's defaults and
  ``--warmup`` warm-up steps (500);
* ``blackjax-nuts``: BlackJAX NUTS after BlackJAX's window adaptation of ``--warmup`` steps, on
  the same log density;
* ``bnn-mclmc``: ``fit(method="mclmc")`` with the package defaults (2000 tuning steps, draws
  10 steps apart), on the same model as ``bnn-nuts``.

Every method keeps ``--draws`` draws per chain. The seeds are the outer loop, so every method
meets the same machine load; every ratio is against ``numpyro-nuts`` with the same seed in
the same process.
"""

from __future__ import annotations

import argparse
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

import bnn

WIDTHS = (10, 10, 1)
NOISE = 0.1


def data():
    x, y = bnn.datasets.sine(n=40, noise=NOISE, seed=0)
    grid = np.linspace(-1.5, 1.5, 50)[:, None].astype(np.float32)
    return x, y, grid


def mlp(weights: list, x):
    """The network of the hand-written baselines: tanh hidden layers, a linear output."""
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = jnp.tanh(h)
    return h


def shapes(num_features: int) -> list[tuple[tuple[int, int], tuple[int]]]:
    sizes = (num_features,) + WIDTHS
    return [((a, b), (b,)) for a, b in zip(sizes[:-1], sizes[1:])]


def hand_model(x, y=None):
    weights = []
    for i, (ws, bs) in enumerate(shapes(x.shape[1])):
        w = numpyro.sample(f"w{i}", dist.Normal(0.0, 1.0).expand(ws).to_event(2))
        b = numpyro.sample(f"b{i}", dist.Normal(0.0, 1.0).expand(bs).to_event(1))
        weights.append((w, b))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(mlp(weights, x), NOISE).to_event(1), obs=y)


def _weights(sample: dict, n_layers: int) -> list:
    return [(sample[f"w{i}"], sample[f"b{i}"]) for i in range(n_layers)]


def function_stats(f_draws: np.ndarray) -> tuple[float, float]:
    """``(min bulk ESS, max R-hat)`` over inputs of ``f_draws`` shaped (chains, draws, inputs)."""
    ess = effective_sample_size(f_draws)
    rhat = split_gelman_rubin(f_draws)
    return float(np.min(ess)), float(np.max(rhat))


def run_numpyro(x, y, grid, seed, chains, warmup, draws):
    mcmc = MCMC(NUTS(hand_model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), jnp.asarray(x), jnp.asarray(y))
    samples = mcmc.get_samples(group_by_chain=True)
    n_layers = len(WIDTHS)
    f = jax.vmap(jax.vmap(lambda s: mlp(_weights(s, n_layers), grid)[:, 0]))(samples)
    return np.asarray(f)


def run_blackjax(x, y, grid, seed, chains, warmup, draws):
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    layer_shapes = shapes(x.shape[1])
    n_layers = len(layer_shapes)

    def logdensity(p):
        prior = sum(jnp.sum(dist.Normal(0.0, 1.0).log_prob(v)) for v in jax.tree.leaves(p))
        f = mlp(_weights(p, n_layers), xs)
        return prior + jnp.sum(dist.Normal(f, NOISE).log_prob(ys))

    def one_chain(key):
        k_init, k_warm, k_run = jax.random.split(key, 3)
        keys = jax.random.split(k_init, 2 * n_layers)
        init = {}
        for i, (ws, bs) in enumerate(layer_shapes):  # NumPyro's default start: uniform(-2, 2)
            init[f"w{i}"] = jax.random.uniform(keys[2 * i], ws, minval=-2, maxval=2)
            init[f"b{i}"] = jax.random.uniform(keys[2 * i + 1], bs, minval=-2, maxval=2)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), _ = warm.run(k_warm, init, num_steps=warmup)
        kernel = blackjax.nuts(logdensity, **params)

        def step(state, k):
            state, _ = kernel.step(k, state)
            return state, state.position

        _, positions = jax.lax.scan(step, state, jax.random.split(k_run, draws))
        return jax.vmap(lambda s: mlp(_weights(s, n_layers), jnp.asarray(grid))[:, 0])(positions)

    f = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(seed), chains))
    return np.asarray(f)


def new_model() -> bnn.BNN:
    return bnn.BNN(bnn.MLP(WIDTHS, activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=NOISE))


_MODEL: list[bnn.BNN] = []


def run_bnn(method, x, y, grid, seed, chains, warmup, draws, fresh=False):
    """bnn's ``fit`` on one model built once per process (as a script fitting several seeds does),
    or, with ``fresh``, on a model built for this call (every program compiled again)."""
    if not _MODEL:
        _MODEL.append(new_model())
    model = new_model() if fresh else _MODEL[0]
    fit = model.fit(x, y, method=method, seed=seed, num_chains=chains, num_samples=draws)  # default warm-up
    return np.asarray(fit.predict(grid).samples)[..., 0].reshape(chains, draws, -1)


METHODS = {
    "numpyro-nuts": run_numpyro,
    "blackjax-nuts": run_blackjax,
    "bnn-nuts": lambda *a: run_bnn("nuts", *a),
    "bnn-nuts-new-model": lambda *a: run_bnn("nuts", *a, fresh=True),
    "bnn-mclmc": lambda *a: run_bnn("mclmc", *a),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args(argv)
    x, y, grid = data()
    rows = []
    for i, seed in enumerate(args.seeds):
        for name in args.methods:
            with np.errstate(all="ignore"):
                start = time.perf_counter()
                f = METHODS[name](x, y, grid, seed, args.chains, args.warmup, args.draws)
                seconds = time.perf_counter() - start
            ess, rhat = function_stats(f)
            rows.append({"method": name, "seed": seed, "seconds": seconds, "ess": ess, "rhat": rhat,
                         "first": i == 0})
            print(f"{name:14s} seed {seed}  min ESS(f) {ess:7.0f}  max R-hat(f) {rhat:6.3f}  {seconds:7.1f} s  "
                  f"ESS/s {ess / seconds:7.2f}", flush=True)
    print("\n| method | ESS(f)/s per seed (total time) | ratio to numpyro-nuts (same seed) | ESS/s of the later seeds | max R-hat(f) |")
    print("|---|---|---|---|---|")
    base = {r["seed"]: r["ess"] / r["seconds"] for r in rows if r["method"] == "numpyro-nuts"}
    for name in args.methods:
        rs = [r for r in rows if r["method"] == name]
        rates = [r["ess"] / r["seconds"] for r in rs]
        ratios = [r["ess"] / r["seconds"] / base[r["seed"]] for r in rs if r["seed"] in base]
        warm = [r["ess"] / r["seconds"] for r in rs if not r["first"]]
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in rates)} | {', '.join(f'{v:.2f}' for v in ratios)} | "
              f"{', '.join(f'{v:.1f}' for v in warm) or '—'} | {max(r['rhat'] for r in rs):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
