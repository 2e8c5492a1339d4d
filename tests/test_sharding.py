"""Data-parallel fitting: rows split over 4 host CPU devices, or over two processes, give the one-device result."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import bnn

CODE = textwrap.dedent(
    """
    import json, sys, numpy as np, jax, bnn
    x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
    model = bnn.BNN(bnn.MLP((8, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    runs = {
        "map": dict(method="map", num_steps=100),
        "ensemble": dict(method="ensemble", num_members=3, num_steps=100),
        # from the module's start: the default MAP start is a 2000-step MAP fit, whose
        # over-parametrised optimum amplifies rounding far beyond the SVI program's own
        "svi-minibatch": dict(method="svi", num_steps=100, batch_size=8, num_samples=5, init="module"),
        # 4 chains on 4 devices: with mesh= they run vectorised over the rows' devices, without it one per device
        "sgmcmc": dict(method="sgmcmc", num_chains=4, num_cycles=2, cycle_length=50, draws_per_cycle=2, batch_size=8,
                       map_options={"num_steps": 100}),
    }
    out = {"devices": jax.local_device_count()}
    for name in sys.argv[1:]:
        options = runs[name]
        one = model.fit(x, y, seed=0, **options)
        four = model.fit(x, y, seed=0, mesh="all", **options)
        if "loss" in one.info:
            a, b = np.asarray(one.info["loss"], np.float64), np.asarray(four.info["loss"], np.float64)
        else:  # a sampler: its draws
            a, b = (np.concatenate([np.asarray(f.draws[k], np.float64).ravel() for k in sorted(f.draws)]) for f in (one, four))
        out[name] = float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
    try:
        model.fit(x[:42 - 4], y[:38], method="map", num_steps=5, mesh="all")
    except ValueError as err:
        out["error"] = str(err)
    print(json.dumps(out))
    """
)


def _sharded(*runs):
    """Run ``runs`` (names in CODE) with and without rows split over 4 host devices, in a fresh interpreter."""
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()  # keeps e.g. max_isa
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", CODE, *runs], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    return out


@pytest.mark.parametrize("runs", [("map",), pytest.param(("ensemble", "svi-minibatch", "sgmcmc"),
                                                         marks=pytest.mark.extended)])
def test_sharded_rows_give_the_one_device_loss_trace(runs):
    """The same program with rows split over 4 devices differs only by the order of its sums (loss
    traces; SG-MCMC: its draws, same keys and minibatches).

    float32 sums of 40 terms re-associated across devices differ by a few eps32 (~1e-7
    relative); Adam's normalised steps carry such differences along 100 steps of a smooth,
    well-conditioned objective without amplifying them much (measured: at most 2.3e-7 relative,
    default and SSE4.2 code); 1e-4 leaves room for other CPUs while a wrong reduction (a missing
    all-reduce: a quarter of the rows) would be off by O(1).
    """
    out = _sharded(*runs)
    for name in runs:
        assert out[name] < 1e-4, (name, out[name])
    assert "the rows must divide evenly (38 % 4 = 2)" in out["error"]


def test_bad_mesh_is_named():
    x, y = bnn.datasets.sine(n=20, seed=0)
    model = bnn.BNN(bnn.MLP((4, 1)), likelihood=bnn.Gaussian(scale=0.1))
    with pytest.raises(ValueError, match=r"`mesh` must be None, 'all' or a jax.sharding.Mesh; got 'gpu'"):
        model.fit(x, y, method="map", num_steps=2, mesh="gpu")
    with pytest.raises(TypeError, match=r"`mesh` must be None, 'all' or a jax.sharding.Mesh; got list"):
        model.fit(x, y, method="ensemble", num_steps=2, mesh=[0, 1])


TWO_PROCESSES = textwrap.dedent(
    """
    import json, sys, jax
    process, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process)
    import numpy as np, bnn
    x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
    model = bnn.BNN(bnn.MLP((8, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    runs = {
        "map": dict(method="map", num_steps=100),
        "ensemble": dict(method="ensemble", num_members=3, num_steps=100, validation=None),
        "svi": dict(method="svi", num_steps=100, batch_size=8, num_samples=5, init="module"),
        "sgmcmc": dict(method="sgmcmc", num_chains=2, num_cycles=2, cycle_length=50, draws_per_cycle=2,
                       batch_size=8, map_options={"num_steps": 100}),
    }
    out = {"processes": jax.process_count(), "devices": jax.device_count()}
    for name in sys.argv[3:]:
        one = model.fit(x, y, seed=0, **runs[name])               # this process's own device
        two = model.fit(x, y, seed=0, mesh="all", **runs[name])   # the rows split over both processes
        if "loss" in one.info:
            a, b = np.asarray(one.info["loss"], np.float64), np.asarray(two.info["loss"], np.float64)
            out[name + ".loss"] = float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
        out[name + ".draws"] = max(float(np.max(np.abs(np.asarray(one.draws[k], np.float64) - np.asarray(two.draws[k]))))
                                   for k in one.draws)
    print(json.dumps(out))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.extended  # two fresh interpreters: the default run checks the row split on 4 devices of one process
@pytest.mark.parametrize("runs", [("map", "ensemble", "svi", "sgmcmc")])
def test_two_processes_give_the_one_process_result(runs):
    """Two CPU processes joined by ``jax.distributed`` (a localhost coordinator, gloo collectives),
    each passing the same table, with ``mesh="all"`` each device holds half of the rows: the loss
    traces and the draws equal each process's one-device fit up to the order of the sums (the
    argument of the 4-device test: a few eps32, not amplified by 100 Adam steps or 200 SG-MCMC
    steps of a smooth objective; measured at most 3.6e-7), where a missing all-reduce (half the
    rows) or another minibatch would be off by O(0.1)."""
    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    workers = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, str(p), port, *runs], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for p in (0, 1)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0] == results[1]  # both processes hold the same (replicated) result
    out = results[0]
    assert out["processes"] == 2 and out["devices"] == 2
    for name in runs:
        if name != "sgmcmc":
            assert out[name + ".loss"] < 1e-4, (name, out)
        assert out[name + ".draws"] < 1e-3, (name, out)
