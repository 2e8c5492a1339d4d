"""The public surface: everything in the design's contract is importable from `bnn`."""

import pytest

import bnn


def test_all_names_resolve():
    for name in bnn.__all__:
        assert getattr(bnn, name) is not None, name


def test_contract_names():
    for name in ["BNN", "MLP", "Normal", "FanInNormal", "Gaussian", "Heteroscedastic", "Bernoulli", "Categorical",
                 "Fit", "Predictions", "weight_decay_to_prior_scale", "prior_scale_to_weight_decay"]:
        assert name in bnn.__all__, name
    for name in ["sine", "sine_grid", "hill", "polynomial", "uci", "from_csv"]:
        assert callable(getattr(bnn.datasets, name)), name
    for name in ["rmse", "mae", "nll", "coverage", "interval_width", "accuracy", "brier"]:
        assert callable(getattr(bnn.metrics, name)), name
    for name in ["prior_functions", "predictive", "loss_curve"]:
        assert callable(getattr(bnn.plot, name)), name


@pytest.mark.extended  # a fresh interpreter: an import-order regression guard
def test_importing_arviz_first_does_not_break_numpyro():
    """arviz_base loads numpyro lazily; bnn must still sample models with constrained sites."""
    import subprocess
    import sys

    code = (
        "import arviz, bnn, numpy as np\n"
        "x = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]\n"
        "fit = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian()).fit(x, 2 * x, method='nuts', num_chains=1, "
        "num_warmup=5, num_samples=5)\n"
        "print(fit.num_draws)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip().endswith("5")


def test_importing_bnn_changes_no_global_jax_setting():
    """The package leaves JAX's global configuration to the user (the CLI alone sets a cache)."""
    import subprocess
    import sys

    names = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
             "jax_compilation_cache_dir", "jax_platforms")
    code = (
        "import jax\n"
        f"names = {names!r}\n"
        "before = {n: getattr(jax.config, n) for n in names}\n"
        "import bnn, bnn.plot, bnn.sbc\n"
        "after = {n: getattr(jax.config, n) for n in names}\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
