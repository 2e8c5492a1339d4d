"""First-call cost of each method in a fresh process, with and without JAX's persistent compilation cache.

    python benchmarks/compile_times.py

For every method, three fresh Python processes fit the sine toy ([10, 10, 1] tanh, 40 points,
tiny step counts so that compilation dominates): one without the persistent cache, one that
fills an empty cache folder, one that reads it. Each reports the wall time of its first and
second ``fit`` call; the first minus the second is the set-up (tracing and compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402  (timer, machine description)

OPTIONS = {
    "map": {"num_steps": 50},
    "ensemble": {"num_members": 4, "num_steps": 50},
    "laplace": {"num_steps": 50, "num_samples": 50},
    "svi": {"num_steps": 50, "num_samples": 50},
    "nuts": {"num_chains": 2, "num_warmup": 20, "num_samples": 20, "map_options": {"num_steps": 50}},
    "mclmc": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1, "map_options": {"num_steps": 50}},
}

CHILD = """
import json, sys, warnings
import jax
sys.path.insert(0, sys.argv[4])
import harness
cache = sys.argv[3]
if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import bnn
warnings.simplefilter("ignore")
method, options = sys.argv[1], json.loads(sys.argv[2])
x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
model = bnn.BNN(bnn.MLP((10, 10, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
times = []
for seed in (0, 1):
    times.append(harness.timed(lambda: model.fit(x, y, method=method, seed=seed, **options))[1])
print(json.dumps(times))
"""


def run(method: str, cache: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", CHILD, method, json.dumps(OPTIONS[method]), cache, str(HERE)],
                          capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    args = parser.parse_args(argv)
    # no device is touched here: the children own the accelerator
    print(harness.machine_line(harness.machine(devices=False)) + "\n", flush=True)
    print("| method | first fit, no cache (s) | second fit (s) | first fit, filling the cache (s) | first fit, cache warm (s) |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        with tempfile.TemporaryDirectory() as cache:
            cold = run(method, "")
            filling = run(method, cache)
            warm = run(method, cache)
        print(f"| {method} | {cold[0]:.1f} | {cold[1]:.2f} | {filling[0]:.1f} | {warm[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
