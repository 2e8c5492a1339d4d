"""Test configuration: strict JAX numerics and shared small fixtures."""

import os

#: Tests compile at LLVM optimisation level 1 (XLA's default is 3): most of the suite's time is
#: compiling programs that then run for milliseconds, and level 1 compiles them about 15 % faster.
#: The arithmetic is the same (no fast-math at any level); only instruction selection and
#: scheduling differ, a variation the oracle tolerances must absorb anyway. CI runs the oracle
#: tests a second time at the default level (and another instruction set), and any run that
#: names a level in XLA_FLAGS keeps it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()

import jax  # noqa: E402  (after XLA_FLAGS: the CPU backend reads them when it starts)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

#: Many tests build a new model of an architecture another test already built; its programs are then
#: new functions with the same program text, and JAX's in-memory cache (keyed by function) compiles
#: them again. A persistent compilation cache keyed by the text finds them instead: one fresh folder
#: per test session, shared by its xdist workers and deleted at its end, so no run depends on an
#: earlier one. Programs that compile in under 50 ms are not written (reading one back costs about as
#: much). A loaded program is the one XLA would have compiled (same text, flags and options).
JAX_CACHE_KEY = "bnn_test_jax_cache"
_CACHE_FOLDER = pytest.StashKey[str]()


def pytest_configure(config):
    import shutil
    import tempfile

    folder = getattr(config, "workerinput", {}).get(JAX_CACHE_KEY)
    if folder is None:  # the session's controller (or a run without xdist) owns the folder
        folder = tempfile.mkdtemp(prefix="bnn-test-jax-cache-")
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    config.stash[_CACHE_FOLDER] = folder
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Each xdist worker gets the controller's cache folder."""
    node.workerinput[JAX_CACHE_KEY] = node.config.stash[_CACHE_FOLDER]


#: Test modules that compare numbers with an independent oracle (closed forms, hand-written
#: loops and models, Monte Carlo standard errors). They carry the ``oracle`` marker, and CI
#: runs them a second time under another CPU instruction set (``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``):
#: their tolerances must come from an error argument, not from one machine's rounding.
ORACLE_MODULES = {
    "test_conjugate",
    "test_data_priors",
    "test_diagnostics",
    "test_fit",
    "test_float64",
    "test_known_errors",
    "test_likelihoods",
    "test_mcmc",
    "test_metrics",
    "test_model",
    "test_normalize",
    "test_nnx",
    "test_optimize",
    "test_priors",
    "test_properties",
    "test_sbc",
    "test_sgmcmc",
    "test_sharding",
    "test_svi",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in ORACLE_MODULES:
            item.add_marker(pytest.mark.oracle)


#: Test files that read another file's session fixtures run on that file's xdist worker (``--dist
#: loadfile`` otherwise sends each file to whichever worker is free): the fits are then made once.
SHARED_SCOPES = {"tests/test_plot.py": "tests/test_contract.py", "tests/test_bad_input.py": "tests/test_contract.py",
                 "tests/test_diagnostics.py": "tests/test_contract.py", "tests/test_mcmc.py": "tests/test_contract.py",
                 "tests/test_cli.py": "tests/test_compare.py"}  # `bnn demo --fast` fits sine_nuts's model


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the files of :data:`SHARED_SCOPES` grouped; other modes as xdist makes them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SHARED_SCOPES.get(scope, scope)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(autouse=True)
def _no_process_settings(monkeypatch):
    """A `bnn` command run in a test's process would point JAX's persistent compilation cache at the
    user's cache folder (bnn.cli) for the rest of that process: every later test's compilations would be
    written there and read back by later runs, so a test's time would depend on the runs before it. Its
    heap setting (bnn.limit_heap_growth) would likewise stay with the worker; it has its own test."""
    import bnn.cli

    monkeypatch.setattr(bnn.cli, "_process_settings", lambda: None)


@pytest.fixture(scope="session")
def sine_data():
    import bnn

    return bnn.datasets.sine(n=40, noise=0.1, seed=0)


@pytest.fixture(scope="session")
def linear_data():
    """N = 50 points, 3 inputs, known noise σ = 0.3: the conjugate oracle's data."""
    rng = np.random.default_rng(42)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    w = np.array([[1.0], [-2.0], [0.5]])
    y = (x @ w + 0.7 + 0.3 * rng.normal(size=(50, 1))).astype(np.float32)
    return x, y


def sd_rel_mcse(by_chain, mean, sd):
    """Relative Monte Carlo standard error of the draws' standard deviation, per coordinate.

    ``by_chain``: ``(chains, draws, dim)``; ``mean``, ``sd``: the exact posterior's ``(dim,)``. The
    variance is the mean of the squared deviations ``(x - mean)²``, so its error is their std over the
    square root of *their* effective sample size, not the draws' (chains whose successive draws are
    anti-correlated have an ESS of ``x`` above the number of draws but not of ``x²``); and
    ``d sd / sd = d var / (2 var)``. For Gaussian draws this is ``1 / sqrt(2 ESS(x²))``.
    """
    from numpyro.diagnostics import effective_sample_size

    squares = (np.asarray(by_chain, np.float64) - mean) ** 2
    ess = np.asarray(effective_sample_size(squares))
    return squares.reshape(-1, squares.shape[-1]).std(0) / (2 * np.square(sd) * np.sqrt(ess))


def ridge_posterior(x, y, noise_scale, prior_scale):
    """Closed-form Gaussian posterior of linear regression with a bias and N(0, σ_p²) priors.

    Returns (mean, covariance) over the stacked vector [kernel (features,), bias], in float64.
    """
    X = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)
    precision = X.T @ X / noise_scale**2 + np.eye(X.shape[1]) / prior_scale**2
    cov = np.linalg.inv(precision)
    mean = cov @ X.T @ np.asarray(y, np.float64)[:, 0] / noise_scale**2
    return mean, cov


def linear_weights(params):
    """The linear model's Flax parameters as [kernel (features,), bias], the order of :func:`ridge_posterior`."""
    layer = params["params"]["Dense_0"]
    return np.concatenate([np.asarray(layer["kernel"])[:, 0], np.asarray(layer["bias"])])


@pytest.fixture(scope="session")
def sine_nuts():
    """NUTS on the sine toy (40 points, [10, 10, 1] tanh, σ = 0.1, Normal(0, 1)): 2 × 200 draws after 150 warm-up
    steps, trees of at most 2⁶ leapfrog steps as in `bnn demo --fast` (at NumPyro's default depth of 10 every tree here takes 1023 steps,
    sixteen times the sampling time for the same coverage and the same growth of the epistemic std outside the data)."""
    import warnings

    import bnn

    x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
    model = bnn.BNN(bnn.MLP((10, 10, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a few divergences are expected on this posterior
        return model.fit(x, y, method="nuts", seed=0, num_chains=2, num_warmup=150, num_samples=200, max_tree_depth=6)


@pytest.fixture(scope="session")
def linear_nuts(linear_data):
    """NUTS on the linear data (MLP((1,)), Normal(1) priors, learned noise), 4 chains from MAP starts, 500 draws
    each after 300 warm-up steps: tests/test_diagnostics.py and tests/test_mcmc.py (one worker, see SHARED_SCOPES)."""
    import bnn

    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    return model.fit(x, y, method="nuts", seed=0, num_chains=4, num_warmup=300, num_samples=500)


#: Small settings of every method for the shared fits below (the contract and save/load tests).
METHOD_OPTIONS = {
    "mle": {"num_steps": 200},
    "map": {"num_steps": 200},
    "laplace": {"num_steps": 200, "num_samples": 30},
    "svi": {"num_steps": 200, "num_samples": 30},
    "nuts": {"num_chains": 2, "num_warmup": 40, "num_samples": 50},  # 100 draws: enough for PSIS-LOO (test_plot)
    "ensemble": {"num_members": 6, "num_steps": 200},
    "mclmc": {"num_chains": 2, "num_warmup": 60, "num_samples": 15, "map_options": {"num_steps": 200}},
    "sgmcmc": {"num_chains": 2, "num_cycles": 3, "cycle_length": 40, "draws_per_cycle": 5, "map_options": {"num_steps": 200}},
}
#: likelihood name -> (constructor, output width)
LIKELIHOODS = {
    "gaussian": (lambda: __import__("bnn").Gaussian(scale=0.1), 1),
    "learned": (lambda: __import__("bnn").Gaussian(), 1),
    "heteroscedastic": (lambda: __import__("bnn").Heteroscedastic(), 2),
    "bernoulli": (lambda: __import__("bnn").Bernoulli(), 1),
    "categorical": (lambda: __import__("bnn").Categorical(), 2),
}


def likelihood_data(kind):
    import bnn

    if kind in ("bernoulli", "categorical"):
        return bnn.datasets.hill(n=40, seed=0)
    return bnn.datasets.sine(n=40, seed=0)


@pytest.fixture(scope="session")
def method_fit():
    """``method_fit(method, kind)``: one fit per method and likelihood per test run, on a fresh
    ``MLP((5, width))`` with Normal(1) priors, seed 0 and :data:`METHOD_OPTIONS`, for the tests of
    tests/test_contract.py (one xdist worker runs a whole file: ``--dist loadfile``): each fit
    compiles its own programs, so fitting it once instead of once per test saves most of their time.
    """
    import warnings

    import bnn

    fits = {}

    def get(method, kind):
        if (method, kind) not in fits:
            make, width = LIKELIHOODS[kind]
            x, y = likelihood_data(kind)
            model = bnn.BNN(bnn.MLP((5, width)), prior=bnn.Normal(1.0), likelihood=make())
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*NUTS transitions diverged", UserWarning)
                fits[method, kind] = model.fit(x, y, method=method, seed=0, **METHOD_OPTIONS[method])
        return fits[method, kind]

    return get


def check_sine_behaviour(fit):
    """NUTS on the sine toy: the 90 % interval covers held-out points; epistemic std grows outside [-1, 1]."""
    import bnn

    x_test, y_test = bnn.datasets.sine(n=500, noise=0.1, seed=123)  # held-out, from the true function on [-1, 1]
    covered = float(bnn.metrics.coverage(fit.predict(x_test), y_test, 0.9).mean())
    grid = bnn.datasets.sine_grid(301)
    eps = np.asarray(fit.predict(grid).epistemic_std[:, 0])
    inside = np.abs(grid[:, 0]) <= 1.0
    assert covered >= 0.85, covered
    assert eps[~inside].mean() > 2 * eps[inside].mean(), (eps[~inside].mean(), eps[inside].mean())
    return covered


def assert_same_predictions(a, b, x):
    """Two fits predict the same at ``x``, to the bit."""
    pa, pb = a.predict(x), b.predict(x)
    for name in ("mean", "epistemic_var", "aleatoric_var", "samples", "variance_samples"):
        np.testing.assert_array_equal(np.asarray(getattr(pa, name)), np.asarray(getattr(pb, name)), err_msg=name)
