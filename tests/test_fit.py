"""Fit and Predictions: the decomposition identity, exact mixture quantiles, chunking, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

import bnn


@pytest.fixture(scope="module")
def map_fit(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    return model.fit(x, y, method="map", num_steps=500)


@pytest.fixture(scope="module")
def many_draws(map_fit):
    """A Fit with 64 draws: the MAP parameters plus Gaussian jitter (a stand-in posterior)."""
    key = jax.random.PRNGKey(0)
    draws = {}
    for i, (k, v) in enumerate(map_fit.draws.items()):
        draws[k] = v + 0.05 * jax.random.normal(jax.random.fold_in(key, i), (64,) + v.shape[1:])
    return bnn.Fit(model=map_fit.model, method="samples", draws=draws, num_features=1)


def test_point_fit_surface(map_fit):
    assert map_fit.num_draws == 1 and map_fit.is_point
    assert jax.tree.map(jnp.shape, map_fit.params)["params"]["Dense_0"]["kernel"] == (1, 10)
    assert jax.tree.map(jnp.shape, map_fit.samples)["params"]["Dense_0"]["kernel"] == (1, 1, 10)
    pred = map_fit.predict(bnn.datasets.sine_grid(50))
    assert pred.mean.shape == pred.std.shape == (50, 1)
    np.testing.assert_array_equal(pred.epistemic_std, 0.0)
    np.testing.assert_allclose(pred.aleatoric_std, 0.1, rtol=1e-6)


def test_interval_of_a_point_fit_is_the_gaussian_interval(map_fit):
    pred = map_fit.predict(bnn.datasets.sine_grid(50))
    lo, hi = pred.interval(0.9)
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(lo, pred.mean - z * 0.1, atol=2e-6)
    np.testing.assert_allclose(hi, pred.mean + z * 0.1, atol=2e-6)


def test_variance_decomposition_is_exact(many_draws):
    pred = many_draws.predict(bnn.datasets.sine_grid(30))
    m = np.asarray(pred.samples, np.float64)
    v = np.broadcast_to(np.asarray(pred.variance_samples, np.float64), m.shape)
    np.testing.assert_allclose(pred.epistemic_var, m.var(axis=0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(pred.aleatoric_var, v.mean(axis=0), rtol=1e-6)
    # law of total variance against the second moment of the mixture, computed directly
    second = (v + m**2).mean(axis=0) - m.mean(axis=0) ** 2
    np.testing.assert_allclose(pred.variance, second, rtol=1e-4)
    np.testing.assert_allclose(pred.std**2, pred.epistemic_std**2 + pred.aleatoric_std**2, rtol=1e-6)


def test_mixture_quantiles_solve_the_mixture_cdf(many_draws):
    pred = many_draws.predict(bnn.datasets.sine_grid(5))
    q = np.asarray(pred.quantiles([0.05, 0.5, 0.95]))
    m = np.asarray(pred.samples[:, :, 0], np.float64)
    s = np.sqrt(np.broadcast_to(np.asarray(pred.variance_samples, np.float64), pred.samples.shape)[:, :, 0])
    for j in range(5):
        cdf = lambda t: stats.norm.cdf((t - m[:, j]) / s[:, j]).mean()  # noqa: E731
        for i, level in enumerate([0.05, 0.5, 0.95]):
            exact = optimize.brentq(lambda t: cdf(t) - level, -10, 10, xtol=1e-12)
            assert q[i, j, 0] == pytest.approx(exact, abs=2e-5)


def test_chunked_prediction_equals_unchunked(many_draws):
    grid = bnn.datasets.sine_grid(101)
    whole = many_draws.predict(grid, batch_size=101)
    chunked = many_draws.predict(grid, batch_size=7)
    wider = many_draws.predict(grid, batch_size=128)  # a chunk wider than the inputs holds just them
    for name in ("mean", "epistemic_var", "aleatoric_var", "samples"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(getattr(wider, name), getattr(whole, name))


def test_predict_subsets_draws_and_samples_y(many_draws):
    pred = many_draws.predict(bnn.datasets.sine_grid(10), num_samples=8, seed=0)
    assert pred.samples.shape == (8, 10, 1) and pred.y_samples.shape == (8, 10, 1)
    assert many_draws.predict(bnn.datasets.sine_grid(10)).y_samples is None


def test_params_of_a_sampling_fit_is_an_error(many_draws):
    with pytest.raises(AttributeError, match="use `samples`"):
        many_draws.params


@pytest.mark.extended  # the default run checks the probabilities of every classifier likelihood in test_contract
def test_classifier_predictions_have_probs():
    x, y = bnn.datasets.hill(n=100, seed=0)
    fit = bnn.BNN(bnn.MLP((8, 3)), likelihood=bnn.Categorical()).fit(x, y, method="mle", num_steps=50)
    pred = fit.predict(x)
    assert pred.probs.shape == (100, 3)
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="continuous likelihoods only"):
        pred.interval(0.9)
    with pytest.raises(AttributeError, match="probs"):
        bnn.BNN(bnn.MLP((1,))).fit(x, x[:, 0], num_steps=2).predict(x).probs


def test_metrics_on_a_gaussian_predictive(map_fit):
    x, y = bnn.datasets.sine(n=20, seed=9)
    pred = map_fit.predict(x)
    mean = np.asarray(pred.mean, np.float64)
    np.testing.assert_allclose(bnn.metrics.rmse(pred.mean, y), np.sqrt(np.mean((mean - y) ** 2)), rtol=1e-5)
    np.testing.assert_allclose(bnn.metrics.mae(pred.mean, y), np.mean(np.abs(mean - y)), rtol=1e-5)
    np.testing.assert_allclose(bnn.metrics.nll(pred, y), -stats.norm.logpdf(y[:, 0], mean[:, 0], 0.1), rtol=1e-4)
    np.testing.assert_allclose(bnn.metrics.interval_width(pred, 0.9), 2 * stats.norm.ppf(0.95) * 0.1, rtol=1e-5)
    inside = np.abs(y - mean) <= stats.norm.ppf(0.95) * 0.1
    np.testing.assert_array_equal(bnn.metrics.coverage(pred, y, 0.9), inside.astype(np.float32))
    with pytest.raises(ValueError, match=r"`y` must have shape \(20, 1\)"):
        bnn.metrics.rmse(pred.mean, y[:10])
