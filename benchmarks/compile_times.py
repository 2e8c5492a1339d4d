"""First-call cost of each method in a fresh process, with and without JAX's persistent compilation cache.

    python benchmarks/compile_times.py            # writes benchmarks/COMPILE.md (about 2 minutes)

For every method, fresh Python processes fit the sine toy ([10, 10, 1] tanh, 40 points,
tiny step counts so that compilation dominates): ``--repeats`` without the persistent cache
(the best of them is reported), one that fills an empty cache folder, one that reads it. Each
reports the wall time of its first and second ``fit`` call; the first minus the second is the
set-up (tracing and compilation). The ratio column divides each method's first fit by MAP's,
both measured in this run (the budget: at most 2.5).
"""

from __future__ import annotations

import argparse
import json
import os
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
    return harness.json_from_process([sys.executable, "-c", CHILD, method, json.dumps(OPTIONS[method]), cache, str(HERE)],
                                     env=os.environ.copy())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per method without the cache (best kept)")
    parser.add_argument("--out", default=str(HERE / "COMPILE.md"), help="Markdown report ('' to print only)")
    args = parser.parse_args(argv)
    methods = ["map"] + [m for m in args.methods if m != "map"]  # MAP first: the other rows are ratios to it
    # no device is touched here: the children own the accelerator
    info = harness.machine(devices=False)
    lines = ["| method | first fit, no cache (s) | ratio to MAP | second fit (s) | first fit, filling the cache (s) "
             "| first fit, cache warm (s) |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    base = None
    for method in methods:
        with tempfile.TemporaryDirectory() as cache:
            cold = min((run(method, "") for _ in range(args.repeats)), key=lambda t: t[0])
            filling = run(method, cache)
            warm = run(method, cache)
        base = cold[0] if base is None else base
        lines.append(f"| {method} | {cold[0]:.1f} | {cold[0] / base:.1f} | {cold[1]:.2f} | {filling[0]:.1f} | {warm[0]:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        head = (f"# First-call cost per method\n\n`python benchmarks/compile_times.py` on {info['date']}: "
                f"{harness.machine_line(info)}. A fresh Python process per entry fits the sine toy ([10, 10, 1] tanh, "
                "40 points) with tiny step counts, so the first call is almost all tracing and XLA compilation; "
                f"without the cache the best of {args.repeats} processes. \"Ratio to MAP\": the first fit over MAP's "
                "first fit in this run (the budget is 2.5). \"Second fit\": the same model again with another seed "
                "in the same process. The persistent cache is JAX's (`jax_compilation_cache_dir`; `bnn demo` turns "
                "it on under ~/.cache/bnn/jax).\n\n")
        harness.write_report(Path(args.out), head + "\n".join(lines) + "\n", keep_from="## ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
