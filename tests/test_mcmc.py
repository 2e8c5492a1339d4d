"""NUTS on the lifted model: the sine toy's predictive behaviour, chains, diagnostics fields."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

import bnn

from conftest import check_sine_behaviour

pytestmark = pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")


def _sine_nuts(num_chains, num_warmup, num_samples, seed=0):
    x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
    model = bnn.BNN(bnn.MLP((10, 10, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    return model.fit(x, y, method="nuts", seed=seed, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples)


@pytest.mark.slow
def test_sine_toy_with_the_design_settings():
    check_sine_behaviour(_sine_nuts(num_chains=4, num_warmup=500, num_samples=500))


def test_sample_stats_and_init_from_map(linear_nuts):
    fit = linear_nuts  # chains from MAP starts (init="map", the default)
    stats = fit.info["sample_stats"]
    assert set(stats) >= {"diverging", "num_steps", "accept_prob", "energy", "step_size"}
    assert fit.info["chain_method"] == "vectorized"  # one CPU device here
    assert fit.likelihood_params["noise_scale"].shape == (2000,)
    assert abs(float(np.median(fit.likelihood_params["noise_scale"])) - 0.3) < 0.1


def test_divergences_are_counted_and_warned():
    x, y = bnn.datasets.sine(n=40, seed=0)
    # a stiff posterior (σ = 0.03) and 5 warm-up steps from a random network: the step size is
    # far too long for where the chain goes (every transition diverged for seeds 0-2)
    model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.03))
    with pytest.warns(UserWarning, match=r"of 50 NUTS transitions diverged"):
        fit = model.fit(x, y, method="nuts", num_chains=1, num_warmup=5, num_samples=50, max_tree_depth=3, init="module")
    assert fit.info["num_divergences"] == int(fit.info["sample_stats"]["diverging"].sum()) > 0


def test_parallel_needs_devices(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian(scale=0.3))
    with pytest.raises(ValueError, match=r"needs one device per chain: 4 chains but JAX sees 1 device.*xla_force_host_platform_device_count=4"):
        model.fit(x, y, method="nuts", num_chains=4, chain_method="parallel")
    with pytest.raises(ValueError, match=r"`chain_method` must be one of"):
        model.fit(x, y, method="nuts", chain_method="threads")
    with pytest.raises(ValueError, match=r"`init` must be one of 'module', 'prior', 'map'"):
        model.fit(x, y, method="nuts", init="zeros")


@pytest.mark.extended  # the default run checks the program cache on MAP (test_programs); this is the samplers' twin
def test_repeat_fits_reuse_one_program_and_match_a_fresh_model(linear_data, capsys):
    """The NUTS program is compiled once per model and settings: a later fit with another seed,
    other targets and another number of draws runs on it (no new trace) and gives exactly what a
    fresh model gives."""
    x, y = linear_data
    y2 = y + np.float32(0.5)
    options = {"num_chains": 2, "num_warmup": 50, "init": "prior"}
    bnn._programs.clear()  # models with equal parts share programs: start with none compiled

    def new_model():
        return bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.3))

    model = new_model()
    model.fit(x, y, method="nuts", seed=0, num_samples=30, **options)
    again = model.fit(x, y2, method="nuts", seed=1, num_samples=250, progress_bar=True, **options)
    programs = model._programs.built_by(bnn.inference.chains._chain_program)
    assert len(programs) == 1 and [f._cache_size() for f in programs[0]] == [1, 1]
    bnn._programs.clear()  # a fresh model compiles its own programs
    fresh = new_model().fit(x, y2, method="nuts", seed=1, num_samples=250, **options)
    np.testing.assert_array_equal(again.draws["Dense_0.kernel"], fresh.draws["Dense_0.kernel"])
    assert again.draws["Dense_0.kernel"].shape == (500, 3, 1)
    # the posterior mean of the new targets (ridge solution, σ = 0.3, prior N(0, 1)); Monte Carlo
    # error of 500 draws: posterior sd ~0.04 / sqrt(ESS ≳ 100) ≲ 0.004
    design = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    mean = np.linalg.solve(design.T @ design / 0.09 + np.eye(4), design.T @ y2[:, 0] / 0.09)
    assert abs(float(np.mean(again.draws["Dense_0.bias"])) - mean[3]) < 0.02
    assert "nuts: 100%" in capsys.readouterr().err  # 300 iterations in two chunks


SHORT_RUNS = {"nuts": {"num_warmup": 5, "num_samples": 20},
              "mclmc": {"num_warmup": 30, "num_samples": 20, "thinning": 2}}


@pytest.mark.extended  # an option of the chain driver (vectorized chains are the default)
@pytest.mark.parametrize("sampler", ["nuts", "mclmc"])
def test_sequential_chains_equal_vectorized_chains(linear_data, sampler):
    """Each chain gets the same key and start whatever the chain method (one driver for every
    sampler), so the draws agree up to rounding carried along the chain.

    Batched and one-chain programs round differently (~1e-7). NUTS's 25 iterations of ~14 leapfrog
    steps amplify that to ~4e-7 here: far inside 1e-4. MCLMC's tuner turns energy errors into its
    step size and L and amplifies that rounding without bound: identical draws under SSE4.2, but on
    an AVX machine one chain's tuned step size came out 0.078 in one program and 0.105 in the other,
    and its draws then follow another path. So MCLMC's two runs are compared as two samples of one
    posterior: per coordinate, means within 4 Monte Carlo standard errors (each from its own ESS).
    """
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.3))
    runs = {method: model.fit(x, y, method=sampler, seed=2, num_chains=3, chain_method=method, init="prior",
                              progress_bar=method == "sequential", **SHORT_RUNS[sampler])
            for method in ("sequential", "vectorized")}
    assert runs["sequential"].info["chain_method"] == "sequential"
    assert runs["vectorized"].info["num_divergences"] == 0
    a, b = (np.asarray(runs[m].draws["Dense_0.kernel"]) for m in ("sequential", "vectorized"))
    if sampler == "nuts":
        np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        mcse = [d.std(0)[:, 0] / np.sqrt(np.asarray(effective_sample_size(d[:, :, 0].reshape(3, -1, d.shape[1]))))
                for d in (a.astype(np.float64), b.astype(np.float64))]
        np.testing.assert_array_less(np.abs(a.mean(0) - b.mean(0))[:, 0], 4 * np.hypot(*mcse))
    assert runs["sequential"].info["sample_stats"]["diverging"].shape == (3, 20)


@pytest.mark.slow  # a subprocess with 4 host devices: 20 s
def test_parallel_chains_equal_vectorized_chains(tmp_path):
    """With 4 host devices, chain_method='parallel' runs one chain per device.

    Both methods give each chain the same key, so without adaptation the draws are
    identical. Batched (vmap) and per-device programs round differently at float
    precision (~1e-6 after 5 warm-up steps), and step-size adaptation and NUTS's
    accept / U-turn decisions amplify such differences chaotically, so after a full
    warm-up the chains agree in distribution rather than draw for draw.
    """
    code = textwrap.dedent(
        """
        import json, numpy as np, jax, bnn
        x, y = bnn.datasets.sine(n=30, seed=0)
        model = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian(scale=0.5))
        out = {"devices": jax.local_device_count()}
        for warmup, samples in ((0, 20), (5, 5), (300, 500)):
            for method in ("parallel", "vectorized"):
                fit = model.fit(x, y, method="nuts", seed=3, num_chains=4, num_warmup=warmup, num_samples=samples,
                                chain_method=method)
                out[f"{method}_{warmup}"] = np.asarray(fit.draws["Dense_0.kernel"]).ravel().tolist()
                out[f"{method}_used"] = fit.info["chain_method"]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["parallel_used"] == "parallel" and out["vectorized_used"] == "vectorized"
    np.testing.assert_array_equal(out["parallel_0"], out["vectorized_0"])
    np.testing.assert_allclose(out["parallel_5"], out["vectorized_5"], atol=1e-4)
    a, b = np.asarray(out["parallel_300"]), np.asarray(out["vectorized_300"])
    se = np.sqrt(a.var() / 500 + b.var() / 500)  # generous: draws are autocorrelated but ESS is high here
    assert abs(a.mean() - b.mean()) < 4 * se and abs(a.std() / b.std() - 1) < 0.15


@pytest.mark.extended  # NUTS's twin above checks the chain driver's program cache in the default run
def test_mclmc_warm_up_and_draws_share_one_program_across_numbers_of_draws(linear_data):
    """MCLMC's tuning phases and its draws run on one compiled kernel (the chain driver's
    ``advance``); a fit with another number of draws reuses it, and its draws continue the same
    chains (the first draws agree, as each chain's key stream depends on the iteration only)."""
    x, y = linear_data
    bnn._programs.clear()
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.3))
    options = {"num_chains": 2, "num_warmup": 60, "thinning": 2, "init": "prior"}
    short = model.fit(x, y, method="mclmc", num_samples=10, **options)
    long = model.fit(x, y, method="mclmc", num_samples=30, **options)
    programs = model._programs.built_by(bnn.inference.chains._chain_program)
    assert len(programs) == 1 and [f._cache_size() for f in programs[0]] == [1, 1]
    first = long.draws["Dense_0.kernel"].reshape(2, 30, -1)[:, :10]
    np.testing.assert_array_equal(short.draws["Dense_0.kernel"].reshape(2, 10, -1), first)
