"""Performance contracts, measured as ratios against hand-written baselines in one process.

    python benchmarks/bench_contracts.py            # about 3 minutes on 2 CPU cores

Each measurement is the median of several repeats, alternating baseline and candidate,
after a warm-up run (compilation excluded). Printed ratios > 1 mean bnn is faster.
"""

from __future__ import annotations

import resource
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (timers, machine description, the hand-written NumPyro model)

import bnn  # noqa: E402


def plain_map_loop(net, x, y, lam, steps):
    """The conventional recipe: Adam on MSE + λ‖θ‖² in a jitted lax.scan."""
    opt = optax.adam(1e-2)

    def loss(p):
        return jnp.mean(jnp.square(net.apply(p, x) - y)) + lam * sum(jnp.sum(w**2) for w in jax.tree.leaves(p))

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

    return run


def bench_map():
    print("MAP training steps/s vs a plain jitted optax loop (contract: ratio >= 0.9)")
    for name, (n, feats, features, act) in {
        "sine n=40 [10,10,1] tanh": (40, 1, (10, 10, 1), "tanh"),
        "n=10000 8 features [50,1] relu": (10_000, 8, (50, 1), "relu"),
    }.items():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, feats)).astype(np.float32)
        y = np.sin(x.sum(1, keepdims=True)).astype(np.float32)
        net = bnn.MLP(features, activation=act)
        model = bnn.BNN(net, prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
        steps = 2000
        init = model.init_params(x, seed=0)
        lam = bnn.prior_scale_to_weight_decay(1.0, 0.1, n)
        plains = {k: plain_map_loop(net, jnp.asarray(x), jnp.asarray(y), lam, k) for k in (steps, 2 * steps)}
        for k in (steps, 2 * steps):  # compile everything once; later fits reuse it
            plains[k](init)
            model.fit(x, y, method="map", num_steps=k)
        t_plain = {k: harness.median_seconds(lambda k=k: plains[k](init), warmup=False) for k in plains}
        t_bnn = {k: harness.median_seconds(lambda k=k: model.fit(x, y, method="map", num_steps=k).draws["Dense_0.kernel"],
                                          warmup=False) for k in plains}
        # marginal cost of `steps` more steps: per-call set-up cancels out
        per_plain = (t_plain[2 * steps] - t_plain[steps]) / steps
        per_bnn = (t_bnn[2 * steps] - t_bnn[steps]) / steps
        fixed = t_bnn[steps] - steps * per_bnn
        print(f"  {name:32s} plain {1 / per_plain:8.0f} steps/s  bnn {1 / per_bnn:8.0f} steps/s  ratio {per_plain / per_bnn:.2f}"
              f"   (bnn per-call set-up {1e3 * fixed:.0f} ms)")


def bench_nuts():
    print("NUTS wall time, lifted model vs hand-written NumPyro model (contract: bnn <= 1.10x)")
    x, y = bnn.datasets.sine(n=40, seed=0)
    model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    # the same network and priors written directly in NumPyro
    hand_model = harness.mlp_model((10, 10, 1), "tanh", prior_scale=1.0, noise=0.1)
    kw = dict(num_warmup=300, num_samples=300, num_chains=1, progress_bar=False)
    times = {"hand": [], "bnn": []}
    for rep in range(3):
        for kind in ("hand", "bnn"):
            fn = hand_model if kind == "hand" else model.model
            mcmc = MCMC(NUTS(fn), **kw)

            def run(mcmc=mcmc, rep=rep):
                mcmc.run(jax.random.PRNGKey(rep), jnp.asarray(x), jnp.asarray(y), extra_fields=("num_steps",))
                return mcmc.get_samples()

            times[kind].append(harness.timed(run)[1])
            steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
            times.setdefault(kind + "_grads", []).append(steps)
    # same seed -> same trajectories only if densities agree to the bit; compare time per gradient step
    per_hand = [t / g for t, g in zip(times["hand"], times["hand_grads"])]
    per_bnn = [t / g for t, g in zip(times["bnn"], times["bnn_grads"])]
    ratio = statistics.median(per_bnn) / statistics.median(per_hand)
    print(f"  time per leapfrog step: hand {1e6 * statistics.median(per_hand):.1f} us, bnn {1e6 * statistics.median(per_bnn):.1f} us,"
          f" ratio bnn/hand {ratio:.2f}  (wall incl. compile: hand {statistics.median(times['hand']):.1f} s,"
          f" bnn {statistics.median(times['bnn']):.1f} s)")


def bench_svi_minibatch():
    print("Minibatch (128 rows) step time vs N (contract: does not grow with N)")
    for method, kw in (("svi", {"num_samples": 1}), ("map", {})):
        per_step = {}
        for n in (1_000, 1_000_000):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = x[:, :1] + 0.1 * rng.normal(size=(n, 1)).astype(np.float32)
            model = bnn.BNN(bnn.MLP((20, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
            t = {}
            for steps in (1_000, 11_000):
                model.fit(x, y, method=method, batch_size=128, num_steps=steps, **kw)  # warm-up / compile
                t[steps] = harness.median_seconds(lambda s=steps: model.fit(x, y, method=method, batch_size=128, num_steps=s,
                                                                            **kw).draws["Dense_0.kernel"], repeats=3,
                                                  warmup=False)
            per_step[n] = (t[11_000] - t[1_000]) / 10_000
        print(f"  {method}: N=1e3 {1e6 * per_step[1_000]:.0f} us/step, N=1e6 {1e6 * per_step[1_000_000]:.0f} us/step,"
              f" ratio {per_step[1_000_000] / per_step[1_000]:.2f} for 1000x the data (set-up per call {t[1_000] - 1_000 * per_step[1_000_000]:.2f} s)")


def bench_ensemble():
    print("Ensemble of 10 members vs one MAP fit, same steps (contract: well under 10x)")
    for name, (n, feats, features, act) in {
        "sine n=40 [10,10,1] tanh": (40, 1, (10, 10, 1), "tanh"),
        "n=2000 8 features [50,1] relu": (2_000, 8, (50, 1), "relu"),
    }.items():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, feats)).astype(np.float32)
        y = (np.sin(x.sum(1, keepdims=True)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
        model = bnn.BNN(bnn.MLP(features, activation=act), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
        one = lambda: model.fit(x, y, method="map", num_steps=2000).draws["Dense_0.kernel"]  # noqa: E731
        ten = lambda: model.fit(x, y, method="ensemble", num_members=10, num_steps=2000).draws["Dense_0.kernel"]  # noqa: E731
        one(), ten()  # compile
        t_one, t_ten = harness.median_seconds(one, warmup=False), harness.median_seconds(ten, warmup=False)
        print(f"  {name}: one MAP {t_one:.3f} s, 10 members {t_ten:.3f} s, ratio {t_ten / t_one:.1f}x")


def bench_predict():
    print("Chunked prediction: 1e5 inputs x 1e3 draws")
    x, y = bnn.datasets.sine(n=40, seed=0)
    model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    point = model.fit(x, y, method="map", num_steps=500)
    key = jax.random.PRNGKey(0)
    draws = {k: v + 0.01 * jax.random.normal(jax.random.fold_in(key, i), (1000,) + v.shape[1:])
             for i, (k, v) in enumerate(point.draws.items())}
    fit = bnn.Fit(model=model, method="samples", draws=draws, num_features=1)
    grid = np.linspace(-1.5, 1.5, 100_000, dtype=np.float32)[:, None]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def predict():
        pred = fit.predict(grid)
        return pred, pred.mean  # the timer waits for the mean

    (pred, _), elapsed = harness.timed(predict)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  {elapsed:.1f} s, peak RSS grew by {(after - before) / 1024:.0f} MiB; the kept samples alone are "
          f"{pred.samples.nbytes / 2**20:.0f} MiB (variance kept once: {pred.variance_samples.nbytes / 2**10:.0f} KiB)")


if __name__ == "__main__":
    print(harness.machine_line(harness.machine()))
    bench_map()
    bench_ensemble()
    bench_nuts()
    bench_svi_minibatch()
    bench_predict()
