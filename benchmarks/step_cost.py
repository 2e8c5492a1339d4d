"""Cost of one gradient step of bnn's samplers on a UCI-size network, on this machine's devices.

    python benchmarks/step_cost.py                 # default backend, then the host CPU in a child process
    python benchmarks/step_cost.py --fast          # tiny run (a smoke test)

Problem: 455 rows × 13 features (the size of the Boston housing training split; synthetic
rows), one hidden layer of 50 ReLU units, learned Gaussian noise, ``normalize=True``. For NUTS
and MCLMC with 1 and 8 vectorised chains: two fits that differ only in ``num_samples`` (same
seed, same warm-up) give the marginal cost of the extra draws; divided by the difference of
the two fits' gradient steps, counted from each fit's own statistics, it is the cost of one
step of all chains together (NUTS: the sum over the extra draws of the largest tree among the
chains, since vectorised chains wait for each other; MCLMC: draws × thinning). Compilation,
warm-up and the MAP starts cancel in the difference (every program is compiled by the fits
before the timed pair: NUTS's serves any number of draws, MCLMC's is kept per number of
draws). Each line also gives the first fit's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (timer, machine description)


def make_data(n: int = 455, num_features: int = 13, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, num_features)).astype(np.float32)
    w = rng.normal(size=num_features) / np.sqrt(num_features)
    y = (np.tanh(x @ w) + 0.3 * np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def leapfrog_steps(fit, method: str) -> int:
    """Gradient steps of all chains together in ``fit``'s kept draws (see the module docstring)."""
    if method == "nuts":
        return int(np.asarray(fit.info["sample_stats"]["num_steps"]).max(axis=0).sum())
    return fit.info["num_samples"] * fit.info["thinning"]


def measure(method: str, chains: int, short: int, extra: int, warmup: int) -> dict:
    import bnn

    x, y = make_data()
    model = bnn.BNN(bnn.MLP((50, 1)), likelihood=bnn.Gaussian())
    options = {"num_chains": chains, "num_warmup": warmup, "seed": 0, "normalize": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: sampler-quality warnings are not measured here
        _, first = harness.timed(lambda: model.fit(x, y, method=method, num_samples=short, **options))  # compiles the MAP starts
        if method == "mclmc":  # bnn keeps MCLMC's programs per shape: compile the longer one too
            model.fit(x, y, method=method, num_samples=short + extra, **options)
        runs = []
        for n in (short, short + extra):
            fit, seconds = harness.timed(lambda n=n: model.fit(x, y, method=method, num_samples=n, **options))
            runs.append((seconds, leapfrog_steps(fit, method)))
    (t0, s0), (t1, s1) = runs
    return {"method": method, "chains": chains, "us_per_step": 1e6 * (t1 - t0) / max(s1 - s0, 1),
            "steps": s1 - s0, "first_fit_s": first}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-cpu", action="store_true", help="skip the host-CPU child run")
    parser.add_argument("--cases", nargs="+", default=["nuts:1", "nuts:8", "mclmc:1", "mclmc:8"], help="method:chains")
    args = parser.parse_args(argv)
    short, extra, warmup = (5, 5, 20) if args.fast else (20, 60, 100)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases]
    rows = []
    for m, c in cases:
        rows.append(measure(m, c, short, extra if m == "nuts" else 5 * extra, warmup))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    info = harness.machine()
    label = f"{info['jax_backend']}: {info['device']}"
    if args.child:
        print(json.dumps({"label": label, "rows": rows, "machine": info}))
        return 0
    tables = [(label, rows)]
    if info["jax_backend"] != "cpu" and not args.no_cpu:
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        done = harness.json_from_process([sys.executable, __file__, "--child", "--cases", *args.cases]
                                         + (["--fast"] if args.fast else []), env=env)
        tables.append((f"{done['label']} ({done['machine']['cpus']} cores)", done["rows"]))
    print(harness.machine_line(info) + "\n")
    print("| device | method | chains | µs per gradient step (all chains) | steps timed | first fit, s |")
    print("|---|---|---|---|---|---|")
    for name, rs in tables:
        for r in rs:
            print(f"| {name} | {r['method']} | {r['chains']} | {r['us_per_step']:.0f} | {r['steps']} | {r['first_fit_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
