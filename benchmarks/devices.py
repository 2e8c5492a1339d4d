"""The protein table on 1, 2 and 4 host devices: the mechanics of ``mesh="all"``, not its speed.

    python benchmarks/devices.py            # writes benchmarks/DEVICES.md (a few minutes)

UCI protein, split 0 (``$BNN_UCI_DIR`` or ``--data-dir``): its first 41 156 training rows (a
multiple of 4, as the row split needs), ``normalize=True``, one hidden layer of 50 ReLU units,
a learned Gaussian noise, Normal(0, 1) priors, seed 0. Each device count runs in a fresh process
with ``XLA_FLAGS=--xla_force_host_platform_device_count=K``: a MAP fit (80 000 minibatch steps of
250 rows, the default) and an SG-MCMC fit (4 chains, 2 cycles of 2000 steps, MAP starts of 4000
steps) with ``mesh="all"``, the rows split over the K devices. Host devices share this machine's
cores, so the seconds show the cost of the split (the all-reduce and the minibatch gathers), not
a speed-up; on a machine with K accelerators each holds its share of the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

ROWS = 41156
COUNTS = (1, 2, 4)


def one(data_dir) -> dict:
    """Both fits on this process's devices, rows split over all of them."""
    import jax

    import bnn

    split = bnn.datasets.uci("protein-tertiary-structure", 0, data_dir=data_dir)
    x, y = split.x_train[:ROWS], split.y_train[:ROWS]
    model = bnn.BNN(bnn.MLP((50, 1), activation="relu"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    out = {"devices": jax.device_count()}
    runs = {"map": dict(method="map"),
            "sgmcmc": dict(method="sgmcmc", num_cycles=2, map_options={"num_steps": 4000})}
    for name, options in runs.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fit = model.fit(x, y, seed=0, normalize=True, mesh="all", **options)
        seconds = time.perf_counter() - start
        pred = fit.predict(split.x_test)
        out[name] = {"seconds": seconds, "ll": -float(np.mean(bnn.metrics.nll(pred, split.y_test))),
                     "rmse": float(np.mean(bnn.metrics.rmse(pred.mean, split.y_test)))}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder of the UCI data sets")
    parser.add_argument("--out", default=str(HERE / "DEVICES.md"))
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.data_dir)))
        return
    rows = []
    for count in COUNTS:
        flags = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, __file__, "--one"] + (["--data-dir", args.data_dir] if args.data_dir else [])
        rows.append(harness.json_from_process(command, env=env))
        print(rows[-1], flush=True)
    base = rows[0]
    lines = ["# Several devices: the protein table on 1, 2 and 4 host devices", "",
             f"Written by `python benchmarks/devices.py`. Machine: {harness.machine_line(harness.machine())}.", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "| devices | MAP test LL | MAP s | MAP s / 1 device | SG-MCMC test LL | SG-MCMC s | SG-MCMC s / 1 device |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['map']['ll']:.5f} | {r['map']['seconds']:.1f} | "
                     f"{r['map']['seconds'] / base['map']['seconds']:.2f} | {r['sgmcmc']['ll']:.5f} | "
                     f"{r['sgmcmc']['seconds']:.1f} | {r['sgmcmc']['seconds'] / base['sgmcmc']['seconds']:.2f} |")
    spread = {name: max(abs(r[name]["ll"] - base[name]["ll"]) for r in rows) for name in ("map", "sgmcmc")}
    lines += ["", f"The test log-likelihoods agree across device counts within {spread['map']:.1e} (MAP) and "
              f"{spread['sgmcmc']:.1e} (SG-MCMC) nats per row: the same programs, with sums taken in another order.", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
