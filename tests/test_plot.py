"""Figures of bnn.plot on tiny real fits: the artists drawn, not the pixels."""

import dataclasses
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import bnn  # noqa: E402
from bnn import plot  # noqa: E402

from conftest import likelihood_data  # noqa: E402


@pytest.fixture(autouse=True)
def _figures(monkeypatch):
    """No figure is shown, and every test leaves none open."""

    def no_show(*args, **kwargs):
        raise AssertionError("bnn.plot must not call plt.show()")

    monkeypatch.setattr(plt, "show", no_show)
    yield
    plt.close("all")


def _quietly(fn, *args, **kwargs):
    """Short fits warn that they have not settled / that NUTS diverged; that is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def sine(method_fit):
    """MAP, ensemble and NUTS on the sine toy with a learned noise: the shared fits of tests/test_contract.py
    (conftest's ``method_fit``; the two files run on one worker, see ``SHARED_SCOPES`` there)."""
    x, y = likelihood_data("learned")
    return x, y, {name: method_fit(method, "learned") for name, method in
                  (("MAP", "map"), ("Ensemble", "ensemble"), ("NUTS", "nuts"))}


@pytest.fixture(scope="module")
def hill(method_fit):
    """Binary MAP and Laplace fits and a categorical MAP fit on the hill toy (shared as ``sine``); the
    Laplace fit is the posterior with several draws."""
    x, y = likelihood_data("bernoulli")
    return x, y, {"MAP": method_fit("map", "bernoulli"), "Laplace": method_fit("laplace", "bernoulli"),
                  "Categorical": method_fit("map", "categorical")}


def _one_legend(ax):
    assert ax.get_legend() is not None
    assert not ax.figure.legends
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _contourf_spy(ax):
    """Record the (X, Y, Z) that ``ax.contourf`` is called with."""
    calls = []
    original = ax.contourf

    def spy(*args, **kwargs):
        calls.append(args[:3])
        return original(*args, **kwargs)

    ax.contourf = spy
    return calls


# --- uncertainty ------------------------------------------------------------------------


def test_uncertainty_lines_are_the_std_decomposition(sine):
    x, _, fits = sine
    grid = bnn.datasets.sine_grid(60)[::-1]  # unsorted on purpose
    pred = fits["NUTS"].predict(grid)
    ax = plot.uncertainty(pred, grid, x_train=x)
    assert isinstance(ax, matplotlib.axes.Axes)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["total std", "epistemic std", "aleatoric std", "training inputs"]
    order = np.argsort(grid[:, 0])
    for line, values in zip(ax.lines, (pred.std, pred.epistemic_std, pred.aleatoric_std)):
        np.testing.assert_array_equal(line.get_xdata(), grid[order, 0])
        np.testing.assert_allclose(line.get_ydata(), np.asarray(values)[order, 0], rtol=1e-6)
    np.testing.assert_array_equal(ax.lines[3].get_xdata(), x[:, 0])
    assert _one_legend(ax) == labels
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "Predictive uncertainty"
    assert ax.get_ylim()[0] == 0.0
    # the epistemic part grows away from the data
    eps = np.asarray(pred.epistemic_std)[order, 0]
    inside = np.abs(grid[order, 0]) < 0.8
    assert eps[~inside].max() > eps[inside].mean()


def test_uncertainty_of_a_point_fit_on_given_axes(sine):
    x, _, fits = sine
    grid = bnn.datasets.sine_grid(30)
    pred = fits["MAP"].predict(grid)
    _, given = plt.subplots()
    ax = plot.uncertainty(pred, grid[:, 0], ax=given, title=None)
    assert ax is given
    assert [line.get_label() for line in ax.lines] == ["total std", "epistemic std", "aleatoric std"]
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), 0.0)  # one draw: no epistemic part
    assert ax.get_title() == ""


def test_uncertainty_errors(sine, hill):
    x, _, fits = sine
    grid = bnn.datasets.sine_grid(20)
    pred = fits["MAP"].predict(grid)
    with pytest.raises(ValueError, match="`pred` must come from a continuous likelihood.*'binary'"):
        plot.uncertainty(hill[2]["MAP"].predict(hill[0]), hill[0][:, 0])
    with pytest.raises(ValueError, match=r"`x` must be 1-D inputs.*20 predicted points; got shape \(21,\)"):
        plot.uncertainty(pred, np.linspace(0, 1, 21))
    with pytest.raises(ValueError, match=r"`output` must be an output column in \[0, 0\]; got 1"):
        plot.uncertainty(pred, grid, output=1)
    with pytest.raises(ValueError, match=r"`x_train` must be 1-D inputs.*\(40, 2\)"):
        plot.uncertainty(pred, grid, x_train=np.hstack([x, x]))
    with pytest.raises(TypeError, match="`pred` must be bnn.Predictions"):
        plot.uncertainty(np.zeros((20, 1)), grid)


# --- decision_map -----------------------------------------------------------------------


def test_decision_map_probability_is_the_predicted_probability(hill):
    x, y, fits = hill
    fit = fits["Laplace"]
    _, ax = plt.subplots()
    calls = _contourf_spy(ax)
    out = plot.decision_map(fit, ax=ax, grid_size=12)
    assert out is ax
    (g0, g1, z), = calls
    assert z.shape == (12, 12)
    for i, j in [(0, 0), (3, 7), (11, 5)]:
        point = np.array([[g0[i, j], g1[i, j]]])
        np.testing.assert_allclose(z[i, j], np.asarray(fit.predict(point).probs)[0, 0], rtol=1e-5, atol=1e-6)
    filled = ax.collections[0]
    assert filled.colorbar is not None and filled.colorbar.ax.get_ylabel() == "P(y = 1 | x)"
    # default bounds: the data range, padded by 0.5
    np.testing.assert_allclose(ax.get_xlim(), (x[:, 0].min() - 0.5, x[:, 0].max() + 0.5), rtol=1e-6)
    np.testing.assert_allclose(ax.get_ylim(), (x[:, 1].min() - 0.5, x[:, 1].max() + 0.5), rtol=1e-6)
    assert _one_legend(ax) == ["P(y = 1) = 0.5", "y = 0", "y = 1"]
    scatters = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [int(np.sum(y == 0)), int(np.sum(y == 1))]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "Predictive probability (LAPLACE)"


@pytest.mark.parametrize(
    "quantity, label", [("entropy", "predictive entropy (nats)"), ("mutual_information", "mutual information (nats)")]
)
def test_decision_map_entropies(hill, quantity, label):
    _, _, fits = hill
    fit = fits["Laplace"]
    _, ax = plt.subplots()
    calls = _contourf_spy(ax)
    plot.decision_map(fit, quantity=quantity, ax=ax, grid_size=9, bounds=((-1, 2), (0, 1)), title="custom")
    (g0, g1, z), = calls
    expected = np.asarray(getattr(fit.predict(np.stack([g0.ravel(), g1.ravel()], 1)), quantity)).reshape(9, 9)
    np.testing.assert_allclose(z, np.clip(expected, 0, None), rtol=1e-5, atol=1e-6)
    assert ax.collections[0].colorbar.ax.get_ylabel() == label
    np.testing.assert_allclose(ax.get_xlim(), (-1, 2))
    np.testing.assert_allclose(ax.get_ylim(), (0, 1))
    assert ax.get_title() == "custom"
    assert _one_legend(ax)[-2:] == ["y = 0", "y = 1"]


def test_decision_map_of_a_point_fit_has_no_mutual_information(hill):
    _, ax = plt.subplots()
    calls = _contourf_spy(ax)
    plot.decision_map(hill[2]["MAP"], quantity="mutual_information", ax=ax, grid_size=5)
    np.testing.assert_array_equal(calls[0][2], 0.0)


def test_decision_map_categorical_uses_the_top_class(hill):
    x, y, fits = hill
    fit = fits["Categorical"]
    _, ax = plt.subplots()
    calls = _contourf_spy(ax)
    plot.decision_map(fit, x_train=x[:10], y_train=y[:10], ax=ax, grid_size=6)
    (g0, g1, z), = calls
    probs = np.asarray(fit.predict(np.stack([g0.ravel(), g1.ravel()], 1)).probs)
    np.testing.assert_allclose(z.ravel(), probs.max(axis=1), rtol=1e-5, atol=1e-6)
    assert ax.collections[0].colorbar.ax.get_ylabel() == "top-class probability"
    labels = _one_legend(ax)
    assert labels == [f"y = {c}" for c in np.unique(y[:10])]


def test_decision_map_points_without_labels(hill):
    x, _, fits = hill
    ax = plot.decision_map(fits["MAP"], x_train=x[:5], grid_size=4, padding=0.0)
    assert "data" in _one_legend(ax)
    np.testing.assert_allclose(ax.get_xlim(), (x[:5, 0].min(), x[:5, 0].max()), rtol=1e-6)


def test_decision_map_errors(sine, hill):
    x, y, fits = hill
    fit = fits["MAP"]
    with pytest.raises(ValueError, match="`fit` must be a classifier.*Gaussian"):
        plot.decision_map(sine[2]["MAP"])
    with pytest.raises(ValueError, match="`fit` must have 2 input features.*got 3"):
        plot.decision_map(dataclasses.replace(fit, num_features=3))
    with pytest.raises(TypeError, match="`fit` must be a bnn.Fit"):
        plot.decision_map(fit.predict(x))
    with pytest.raises(ValueError, match="`quantity` must be one of 'probability', 'entropy', 'mutual_information'; got 'variance'"):
        plot.decision_map(fit, quantity="variance")
    for bad in [((0, 1),), ((0, 1), (1, 0)), ((0, np.nan), (0, 1)), "wide"]:
        with pytest.raises(ValueError, match="`bounds` must"):
            plot.decision_map(fit, bounds=bad, grid_size=3)
    with pytest.raises(ValueError, match="`bounds` is needed"):
        plot.decision_map(dataclasses.replace(fit, data=None), grid_size=3)
    with pytest.raises(ValueError, match="`padding` must be a finite number >= 0; got -1"):
        plot.decision_map(fit, padding=-1, grid_size=3)
    with pytest.raises(ValueError, match="`grid_size` must be an int >= 2; got 1"):
        plot.decision_map(fit, grid_size=1)
    with pytest.raises(ValueError, match="`y_train` needs `x_train`"):
        plot.decision_map(fit, y_train=y, grid_size=3)
    with pytest.raises(ValueError, match="`y_train` must have one label per row of `x_train` \\(40\\); got 39"):
        plot.decision_map(fit, x_train=x, y_train=y[:-1], grid_size=3)
    with pytest.raises(ValueError, match=r"`x_train` must be \(m, 2\) inputs.*\(40, 1\)"):
        plot.decision_map(fit, x_train=x[:, :1], grid_size=3)


# --- trace and rank ---------------------------------------------------------------------


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.has_data()]


def test_default_var_names_are_the_noise_and_output_bias(sine, hill):
    assert plot.default_var_names(sine[2]["NUTS"]) == ["noise_scale", "Dense_1.bias"]
    assert plot.default_var_names(hill[2]["MAP"]) == ["Dense_1.bias"]  # Bernoulli: no latent site of its own
    paths = ["Dense_10.bias", "Dense_10.kernel", "Dense_2.bias", "Dense_9.bias"]
    assert sorted(paths, key=plot._natural_key)[-2] == "Dense_10.bias"


@pytest.mark.parametrize("name", ["trace", "rank"])
def test_trace_and_rank_draw_one_panel_per_default_site(sine, name):
    fig = getattr(plot, name)(sine[2]["NUTS"])
    assert isinstance(fig, matplotlib.figure.Figure)
    panels = _panels(fig)
    assert len(panels) == 2
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["noise_scale", "Dense_1.bias"]


def test_trace_with_var_names_and_kwargs(sine):
    fit = sine[2]["NUTS"]
    fig = plot.trace(fit, var_names="Dense_0.bias")
    assert len(_panels(fig)) == fit.draws["Dense_0.bias"].shape[1]  # one per hidden unit
    lines = _panels(fig)[0].get_lines()
    assert len(lines) == 2 and all(len(line.get_xdata()) == 50 for line in lines)  # 2 chains of 50 draws
    fig = plot.trace(fit, var_names=["noise_scale"], coords={})
    assert len(_panels(fig)) == 1
    fig = plot.rank(fit, var_names=["Dense_1"], filter_vars="like")
    assert len(_panels(fig)) == 1 + fit.draws["Dense_1.kernel"].shape[1]  # Dense_1.bias (1) and Dense_1.kernel


def test_trace_of_independent_draws_is_one_chain(sine):
    fig = plot.trace(sine[2]["Ensemble"])
    assert all(len(ax.get_lines()) == 1 for ax in _panels(fig))


def test_trace_and_rank_errors(sine):
    _, _, fits = sine
    for fn in (plot.trace, plot.rank):
        with pytest.raises(ValueError, match="`fit` must have several draws per chain.*'map' fit has 1 draw per chain \\(a point estimate\\)"):
            fn(fits["MAP"])
        with pytest.raises(ValueError, match=r"`var_names` has unknown site\(s\) \['sigma'\]; the posterior has"):
            fn(fits["NUTS"], var_names=["noise_scale", "sigma"])
        with pytest.raises(TypeError, match="`var_names` must be a site name or a non-empty list"):
            fn(fits["NUTS"], var_names=[])
        with pytest.raises(ValueError, match="`backend` must be 'matplotlib'.*'bokeh'"):
            fn(fits["NUTS"], backend="bokeh")
    with pytest.raises(ValueError, match="`fit` must have at least 2 chains for a rank plot.*'ensemble' fit has 1"):
        plot.rank(fits["Ensemble"])
    with pytest.raises(TypeError, match="`fit` must be a bnn.Fit"):
        plot.trace(fits["NUTS"].to_arviz())


# --- compare ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_table(sine):
    _, _, fits = sine
    x_test, y_test = bnn.datasets.sine(n=30, noise=0.1, seed=1)
    return _quietly(bnn.compare, fits, x_test, y_test)  # warns: too few draws / Pareto k for LOO


def _heights(ax):
    return np.array([bar.get_height() for bar in ax.patches])


def test_compare_regression_defaults(regression_table):
    table = regression_table
    fig = plot.compare(table, title="Sine toy")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.get_suptitle() == "Sine toy"
    metrics = ["nll", "crps", "coverage_90", "elpd_loo"]
    assert len(fig.axes) == len(metrics)
    titles = ["nll (lower is better)", "crps (lower is better)", "coverage_90 (nominal 0.90)", "elpd_loo (higher is better)"]
    for ax, metric, title in zip(fig.axes, metrics, titles):
        assert ax.get_title() == title
        assert ax.get_ylabel() == metric and ax.get_xlabel()
        np.testing.assert_allclose(_heights(ax), table[metric].to_numpy(float), rtol=1e-12)  # NaN where NaN
        assert [t.get_text() for t in ax.get_xticklabels()] == list(table.index)
    coverage = fig.axes[2]
    assert any(line.get_linestyle() == "--" and np.allclose(line.get_ydata(), 0.9) for line in coverage.get_lines())
    elpd = fig.axes[3]
    bars, = [c for c in elpd.containers if isinstance(c, matplotlib.container.BarContainer)]
    assert bars.errorbar is not None
    segments = bars.errorbar.lines[2][0].get_segments()
    nuts = list(table.index).index("NUTS")
    np.testing.assert_allclose(np.ptp(segments[nuts][:, 1]), 2 * table["elpd_loo_se"]["NUTS"], rtol=1e-6)
    assert "n/a" in [t.get_text() for t in elpd.texts]  # the MAP fit has no elpd_loo


def test_compare_drops_elpd_when_all_nan_and_takes_given_axes(regression_table):
    table = regression_table.assign(elpd_loo=np.nan)
    fig = plot.compare(table)
    assert [ax.get_ylabel() for ax in fig.axes] == ["nll", "crps", "coverage_90"]
    fig, axes = plt.subplots(2, 1)
    out = plot.compare(table, metrics=["rmse", "width_90"], ax=axes)
    assert out is fig
    assert [ax.get_title() for ax in axes] == ["rmse (lower is better)", "width_90"]
    np.testing.assert_allclose(_heights(axes[1]), table["width_90"].to_numpy(float))
    fig = plot.compare(table, metrics="coverage_50")
    assert fig.axes[0].get_title() == "coverage_50 (nominal 0.50)"


def test_compare_classification_defaults(hill):
    _, _, fits = hill
    x_test, y_test = bnn.datasets.hill(n=40, seed=1)
    table = bnn.compare({"MAP": fits["MAP"], "Laplace": fits["Laplace"]}, x_test, y_test, loo=False)
    fig = plot.compare(table)
    metrics = ["nll", "accuracy", "brier", "ece"]
    assert [ax.get_ylabel() for ax in fig.axes] == metrics
    assert fig.axes[1].get_title() == "accuracy (higher is better)"
    for ax, metric in zip(fig.axes, metrics):
        np.testing.assert_allclose(_heights(ax), table[metric].to_numpy(float))


def test_compare_errors(regression_table):
    table = regression_table
    with pytest.raises(TypeError, match="`table` must be the pandas DataFrame returned by bnn.compare.*got dict"):
        plot.compare(table.to_dict())
    with pytest.raises(ValueError, match=r"`metrics` \['accuracy'\] not in `table`; its columns are \['rmse'"):
        plot.compare(table, metrics=["nll", "accuracy"])
    with pytest.raises(ValueError, match="`table` must have some of the columns"):
        plot.compare(pd.DataFrame({"score": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="`table` must have at least one row"):
        plot.compare(table.iloc[:0])
    with pytest.raises(TypeError, match="`metrics` must name numeric columns.*\\['label'\\]"):
        plot.compare(table.assign(label="x"), metrics=["label"])
    with pytest.raises(TypeError, match="`metrics` must be a column name or a non-empty list"):
        plot.compare(table, metrics=[])
    with pytest.raises(ValueError, match=r"`ax` must hold one Axes per metric \(2\); got 1"):
        plot.compare(table, metrics=["nll", "crps"], ax=plt.subplots()[1])


def test_existing_figures_keep_working_with_the_palette(sine):
    x, y, fits = sine
    grid = bnn.datasets.sine_grid(20)
    ax = plot.predictive(fits["Ensemble"].predict(grid), grid, x, y)
    assert matplotlib.colors.to_hex(ax.lines[0].get_color()) == plot.PALETTE[0].lower()
    ax = plot.loss_curve(fits["MAP"])
    assert matplotlib.colors.to_hex(ax.lines[0].get_color()) == plot.PALETTE[0].lower()
