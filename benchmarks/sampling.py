"""Sampling efficiency: ESS of f(x) per second, bnn against hand-written samplers.

    python benchmarks/sampling.py                 # the sine toy, 3 seeds, 4 chains, 500 draws each
    python benchmarks/sampling.py --seeds 0 --draws 200
    python benchmarks/sampling.py --problem energy --seeds 0   # the UCI-size problem

Posterior (``--problem sine``, the default): 40 points of x sin(5x) + N(0, 0.1²), an MLP
(10, 10, 1) with tanh, Normal(0, 1) on every weight, σ = 0.1 known; f judged at 50 inputs on
[-1.5, 1.5]. ``--problem energy``: UCI energy split 0 (691 × 8, standardised with the training
split), (50, 1) ReLU, Normal(0, 1) weights, learned noise with a HalfNormal(1) prior (bnn's
default); f judged at the 77 test inputs. For each method and seed: the minimum over those
inputs of the bulk ESS of f(x) (NumPyro's estimator, the same for every method), divided by the
total wall time of the call (warm-up, sampling, starts; JIT compilation included, as a user
meets it), plus the largest function-space R-hat; and, for posteriors whose chains stay in
different modes, the ESS within chains (each chain's own ESS of f, summed over chains; minimum
over inputs). Methods:

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
* ``bnn-mclmc``: ``fit(method="mclmc")`` with the package defaults (``bnn.inference.mclmc``'s
  ``DEFAULT_WARMUP`` tuning steps, draws ``DEFAULT_THINNING`` steps apart), on the same model as ``bnn-nuts``.

Every method keeps ``--draws`` draws per chain. The seeds are the outer loop, so every method
meets the same machine load; every ratio is against ``numpyro-nuts`` with the same seed in
the same process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the timer and the hand-written NumPyro model)

import bnn  # noqa: E402


class Problem(NamedTuple):
    """A posterior of the benchmark: data, the inputs where f is judged, the network and the noise."""

    name: str
    x: np.ndarray
    y: np.ndarray
    grid: np.ndarray  # inputs at which the ESS of f(x) is computed
    widths: tuple[int, ...]
    activation: str  # "tanh" or "relu" (hidden layers; the output is linear)
    noise: float | None  # known noise scale, or None: learned, HalfNormal(1) prior (bnn.Gaussian())


def sine() -> Problem:
    """The sine toy: 40 points of x sin(5x) + N(0, 0.1²), (10, 10, 1) tanh, σ = 0.1 known."""
    x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
    grid = np.linspace(-1.5, 1.5, 50)[:, None].astype(np.float32)
    return Problem("sine", x, y, grid, (10, 10, 1), "tanh", 0.1)


def energy(data_dir=None) -> Problem:
    """UCI energy, split 0 (691 rows, 8 features), standardised with the training split as
    ``normalize=True`` does; (50, 1) ReLU, learned noise; f judged at the 77 test inputs."""
    split = bnn.datasets.uci("energy", 0, data_dir=data_dir)
    x, y = split.x_train, split.y_train.reshape(len(split.x_train), -1)
    normalizer = bnn.Normalizer.from_data(x, y, continuous=True)
    return Problem("energy", normalizer.inputs(x), normalizer.targets(y), normalizer.inputs(split.x_test), (50, 1),
                   "relu", None)


def hand_model(problem: Problem):
    """The problem's network and priors written directly in NumPyro (:func:`harness.mlp_model`)."""
    return harness.mlp_model(problem.widths, problem.activation, prior_scale=1.0, noise=problem.noise)


def function_stats(f_draws: np.ndarray) -> tuple[float, float]:
    """``(min bulk ESS, max R-hat)`` over inputs of ``f_draws`` shaped (chains, draws, inputs)."""
    ess = effective_sample_size(f_draws)
    rhat = split_gelman_rubin(f_draws)
    return float(np.min(ess)), float(np.max(rhat))


def within_chain_ess(f_draws: np.ndarray) -> float:
    """Min over inputs of the sum over chains of each chain's own ESS of f (chains, draws, inputs).

    Where chains stay in different modes (R-hat far above 1), the cross-chain ESS says only that;
    this one measures how fast each sampler explores the mode it is in. A chain whose f did not
    move at an input, or too short a run for the single-chain estimator, contributes 0.
    """
    with np.errstate(all="ignore"):
        per_chain = np.stack([effective_sample_size(f_draws[c:c + 1]) for c in range(f_draws.shape[0])])
    per_chain = np.clip(np.nan_to_num(per_chain, nan=0.0), 0.0, None)
    return float(np.min(per_chain.sum(axis=0)))


def run_numpyro(problem: Problem, seed, chains, warmup, draws):
    mcmc = MCMC(NUTS(hand_model(problem)), num_warmup=warmup, num_samples=draws,
                num_chains=chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), jnp.asarray(problem.x), jnp.asarray(problem.y))
    samples = mcmc.get_samples(group_by_chain=True)
    n_layers = len(problem.widths)
    f = jax.vmap(jax.vmap(lambda s: harness.mlp(harness.layer_weights(s, n_layers), problem.grid,
                                                problem.activation)[:, 0]))(samples)
    return np.asarray(f)


def run_blackjax(problem: Problem, seed, chains, warmup, draws):
    xs, ys = jnp.asarray(problem.x), jnp.asarray(problem.y)
    layer_shapes = harness.layer_shapes(problem.x.shape[1], problem.widths)
    n_layers = len(layer_shapes)

    def logdensity(p):
        weights = {k: v for k, v in p.items() if k != "log_noise"}
        prior = sum(jnp.sum(dist.Normal(0.0, 1.0).log_prob(v)) for v in jax.tree.leaves(weights))
        if problem.noise is None:  # the noise scale on the log scale, with its Jacobian
            noise = jnp.exp(p["log_noise"])
            prior = prior + dist.HalfNormal(1.0).log_prob(noise) + p["log_noise"]
        else:
            noise = problem.noise
        f = harness.mlp(harness.layer_weights(p, n_layers), xs, problem.activation)
        return prior + jnp.sum(dist.Normal(f, noise).log_prob(ys))

    def one_chain(key):
        k_init, k_warm, k_run = jax.random.split(key, 3)
        keys = jax.random.split(k_init, 2 * n_layers + 1)
        init = {}
        for i, (ws, bs) in enumerate(layer_shapes):  # NumPyro's default start: uniform(-2, 2), unconstrained
            init[f"Dense_{i}.kernel"] = jax.random.uniform(keys[2 * i], ws, minval=-2, maxval=2)
            init[f"Dense_{i}.bias"] = jax.random.uniform(keys[2 * i + 1], bs, minval=-2, maxval=2)
        if problem.noise is None:
            init["log_noise"] = jax.random.uniform(keys[-1], (), minval=-2, maxval=2)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), _ = warm.run(k_warm, init, num_steps=warmup)
        kernel = blackjax.nuts(logdensity, **params)

        def step(state, k):
            state, _ = kernel.step(k, state)
            return state, state.position

        _, positions = jax.lax.scan(step, state, jax.random.split(k_run, draws))
        grid = jnp.asarray(problem.grid)
        return jax.vmap(lambda s: harness.mlp(harness.layer_weights(s, n_layers), grid, problem.activation)[:, 0])(positions)

    f = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(seed), chains))
    return np.asarray(f)


def new_model(problem: Problem | None = None) -> bnn.BNN:
    problem = problem or sine()
    likelihood = bnn.Gaussian() if problem.noise is None else bnn.Gaussian(scale=problem.noise)
    return bnn.BNN(bnn.MLP(problem.widths, activation=problem.activation), prior=bnn.Normal(1.0), likelihood=likelihood)


_MODEL: list[bnn.BNN] = []


def run_bnn(method, problem: Problem, seed, chains, warmup, draws, fresh=False):
    """bnn's ``fit`` on one model built once per process (as a script fitting several seeds does),
    or, with ``fresh``, on a model built for this call (every program compiled again)."""
    if not _MODEL:
        _MODEL.append(new_model(problem))
    model = new_model(problem) if fresh else _MODEL[0]
    fit = model.fit(problem.x, problem.y, method=method, seed=seed, num_chains=chains, num_samples=draws)
    return np.asarray(fit.predict(problem.grid).samples)[..., 0].reshape(chains, draws, -1)


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
    parser.add_argument("--problem", choices=("sine", "energy"), default="sine")
    parser.add_argument("--data-dir", default=None, help="UCI data folder (energy; default as bnn.datasets.uci)")
    args = parser.parse_args(argv)
    problem = sine() if args.problem == "sine" else energy(args.data_dir)
    rows = []
    for i, seed in enumerate(args.seeds):
        for name in args.methods:
            with np.errstate(all="ignore"):
                f, seconds = harness.timed(METHODS[name], problem, seed, args.chains, args.warmup, args.draws)
            ess, rhat = function_stats(f)
            within = within_chain_ess(f)
            rows.append({"method": name, "seed": seed, "seconds": seconds, "ess": ess, "rhat": rhat,
                         "first": i == 0})
            print(f"{name:14s} seed {seed}  min ESS(f) {ess:7.0f}  max R-hat(f) {rhat:6.3f}  {seconds:7.1f} s  "
                  f"ESS/s {ess / seconds:7.2f}  within chains: ESS {within:7.0f}, per s {within / seconds:7.2f}",
                  flush=True)
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
