"""bnn.compare: one table over fits; on the sine toy the posterior beats MAP in test NLL."""

import warnings

import numpy as np
import pytest

import bnn

from conftest import check_sine_behaviour


@pytest.fixture(scope="module")
def sine_table(sine_nuts):
    """Test points reach beyond the data (x ~ U(-1.5, 1.5); training x ~ U(-1, 1))."""
    x, y = sine_nuts.data
    model = sine_nuts.model
    x_test, y_test = bnn.datasets.sine(n=500, noise=0.1, seed=11, low=-1.5, high=1.5)
    map_fit = model.fit(x, y, method="map", num_steps=5000)
    # 100 draws as in `bnn demo --fast` (tests/test_cli.py, the same worker): the demo's compiled programs serve
    laplace = model.fit(x, y, method="laplace", map_fit=map_fit, num_samples=100)
    fits = {"MAP": map_fit, "Laplace": laplace, "NUTS": sine_nuts}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k warnings are tested below
        return bnn.compare(fits, x_test, y_test), fits, (x_test, y_test)


def test_sine_toy_interval_covers_and_epistemic_grows_outside_the_data(sine_nuts):
    fit = sine_nuts
    assert fit.num_draws == 400 and fit.info["sample_stats"]["diverging"].shape == (2, 200)
    check_sine_behaviour(fit)


def test_posterior_fits_have_lower_test_nll_than_map(sine_table):
    """Where test inputs leave the data, MAP is overconfident and the posterior fits win."""
    table, _, _ = sine_table
    print("\n" + table.to_string())
    assert table.loc["NUTS", "nll"] < table.loc["MAP", "nll"]
    assert table.loc["Laplace", "nll"] < table.loc["MAP", "nll"]


def test_inside_the_data_the_posterior_is_no_worse_than_map(sine_table):
    """On [-1, 1], with σ known and 40 points, MAP is already good: the posterior ties with it."""
    _, fits, _ = sine_table
    x_in, y_in = bnn.datasets.sine(n=500, noise=0.1, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = bnn.compare(fits, x_in, y_in, loo=False)
    print("\n" + table.to_string())
    assert table.loc["NUTS", "nll"] < table.loc["MAP", "nll"] + 0.05
    assert table.loc["Laplace", "nll"] < table.loc["MAP", "nll"] + 0.05


def test_table_columns_match_the_metrics(sine_table):
    table, fits, (x_test, y_test) = sine_table
    assert list(table.index) == ["MAP", "Laplace", "NUTS"]
    for col in ("rmse", "mae", "nll", "crps", "coverage_50", "coverage_90", "coverage_95", "width_90", "elpd_loo",
                "elpd_loo_se", "pareto_k_max", "num_draws", "wall_time"):
        assert col in table.columns, col
    pred = fits["NUTS"].predict(x_test)
    assert table.loc["NUTS", "nll"] == pytest.approx(float(bnn.metrics.nll(pred, y_test).mean()), rel=1e-6)
    assert table.loc["NUTS", "coverage_90"] == pytest.approx(float(bnn.metrics.coverage(pred, y_test, 0.9).mean()))
    assert np.isnan(table.loc["MAP", "elpd_loo"]) and np.isfinite(table.loc["NUTS", "elpd_loo"])
    assert table.loc["MAP", "num_draws"] == 1 and table.loc["NUTS", "num_draws"] == 400


def test_missing_loo_is_warned(sine_table):
    import dataclasses

    _, fits, (x_test, y_test) = sine_table
    tiny = dataclasses.replace(fits["NUTS"], draws={k: v[:4] for k, v in fits["NUTS"].draws.items()})
    with pytest.warns(UserWarning, match=r"tiny: PSIS-LOO is not available"):
        table = bnn.compare({"tiny": tiny}, x_test, y_test)
    assert np.isnan(table.loc["tiny", "elpd_loo"])


@pytest.mark.extended  # a second LOO warning; the default run checks the one for too few draws
def test_pareto_k_is_warned(sine_table):
    _, fits, (x_test, y_test) = sine_table
    x, y = fits["NUTS"].data
    mean_field = fits["NUTS"].model.fit(x, y, method="svi", num_steps=500, num_samples=200, init="module")
    with pytest.warns(UserWarning, match=r"mean-field: \d+ of 40 training points have Pareto k > 0.7"):
        bnn.compare({"mean-field": mean_field}, x_test, y_test)


def test_classifier_table():
    x, y = bnn.datasets.hill(n=100, seed=0)
    xt, yt = bnn.datasets.hill(n=200, seed=1)
    model = bnn.BNN(bnn.MLP((8, 1)), likelihood=bnn.Bernoulli())
    table = bnn.compare({"MAP": model.fit(x, y, method="map", num_steps=500)}, xt, yt)
    assert {"accuracy", "nll", "brier", "ece"} <= set(table.columns)
    assert table.loc["MAP", "accuracy"] > 0.8


def test_bad_compare_input(sine_table):
    _, fits, (x_test, y_test) = sine_table
    with pytest.raises(TypeError, match="non-empty dict"):
        bnn.compare([fits["MAP"]], x_test, y_test)
    with pytest.raises(TypeError, match=r"`fits\['x'\]` must be a bnn.Fit"):
        bnn.compare({"x": 1}, x_test, y_test)
    with pytest.raises(ValueError, match=r"`x` must have 1 feature"):
        bnn.compare({"MAP": fits["MAP"]}, np.zeros((3, 2)), y_test[:3])
