"""Data-parallel fitting: rows split over 4 host CPU devices give the one-device loss trace."""

import json
import os
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
    }
    out = {"devices": jax.local_device_count()}
    for name in sys.argv[1:]:
        options = runs[name]
        one = model.fit(x, y, seed=0, **options)
        four = model.fit(x, y, seed=0, mesh="all", **options)
        a, b = np.asarray(one.info["loss"], np.float64), np.asarray(four.info["loss"], np.float64)
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


@pytest.mark.parametrize("runs", [("map",), pytest.param(("ensemble", "svi-minibatch"), marks=pytest.mark.extended)])
def test_sharded_rows_give_the_one_device_loss_trace(runs):
    """The same program with rows split over 4 devices differs only by the order of its sums.

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
