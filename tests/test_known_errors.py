"""Known measurement errors: ``fit(x, y, y_err=σ)`` with a Gaussian likelihood.

Observation i has noise ``scale · σᵢ``. On the linear network everything has a closed form:
weighted least squares, the heteroscedastic Gaussian posterior and its marginal likelihood.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro import handlers
from scipy import stats

import bnn

from conftest import linear_weights, sd_rel_mcse

PRIOR = 0.5
ORDER = [1, 2, 3, 0]  # Laplace ravel order (bias, kernel) -> (kernel, bias)


@pytest.fixture(scope="module")
def data():
    """N = 60 points, 3 inputs, each with its own known noise scale in [0.05, 0.6]."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    err = rng.uniform(0.05, 0.6, size=(60, 1)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.7 + err * rng.normal(size=(60, 1))).astype(np.float32)
    return x, y, err


def _design(x):
    return np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)


def _posterior(x, y, err, prior_scale):
    """Exact posterior over [kernel, bias] with per-point noise ``err`` and N(0, prior²) priors."""
    X, w = _design(x), 1.0 / np.asarray(err, np.float64)[:, 0] ** 2
    precision = (X.T * w) @ X + np.eye(X.shape[1]) / prior_scale**2
    mean = np.linalg.solve(precision, (X.T * w) @ np.asarray(y, np.float64)[:, 0])
    return mean, precision


def _linear(likelihood=None):
    return bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=likelihood or bnn.Gaussian(scale=1.0))


def test_mle_is_weighted_least_squares(data):
    x, y, err = data
    fit = _linear().fit(x, y, method="mle", y_err=err, optimizer=optax.lbfgs(), num_steps=100)
    X, w = _design(x), 1.0 / err[:, 0].astype(np.float64) ** 2
    wls = np.linalg.solve((X.T * w) @ X, (X.T * w) @ y[:, 0])
    np.testing.assert_allclose(linear_weights(fit.params), wls, rtol=1e-4, atol=1e-5)


def test_learned_scale_is_the_error_inflation_factor(data):
    """Errors reported at half their size: the MLE factor is the RMS of the standardised residuals."""
    x, y, err = data
    fit = _linear(bnn.Gaussian()).fit(x, y, method="mle", y_err=err / 2, optimizer=optax.lbfgs(), num_steps=200)
    X, w = _design(x), 4.0 / err[:, 0].astype(np.float64) ** 2
    beta = np.linalg.solve((X.T * w) @ X, (X.T * w) @ y[:, 0])
    factor = np.sqrt(np.mean((y[:, 0] - X @ beta) ** 2 * w))
    assert float(fit.likelihood_params["noise_scale"][0]) == pytest.approx(factor, rel=1e-4)
    assert 1.7 < factor < 2.3  # the true factor is 2


@pytest.mark.parametrize("hessian", ["ggn", "full"])
def test_laplace_is_the_exact_heteroscedastic_posterior(data, hessian):
    x, y, err = data
    fit = _linear().fit(x, y, method="laplace", y_err=err, hessian=hessian, optimizer=optax.lbfgs(),
                        num_steps=100, num_samples=10)
    mean, precision = _posterior(x, y, err, PRIOR)
    got = fit.info["precision"][np.ix_(ORDER, ORDER)]
    np.testing.assert_allclose(got, precision, rtol=1e-4, atol=1e-4 * np.abs(precision).max())
    np.testing.assert_allclose(fit.info["mean"][ORDER], mean, rtol=1e-4, atol=1e-5)
    # log p(y) = log N(y; 0, σ_p² X Xᵀ + diag(σᵢ²))
    X = _design(x)
    cov_y = PRIOR**2 * X @ X.T + np.diag(err[:, 0].astype(np.float64) ** 2)
    exact = stats.multivariate_normal(np.zeros(len(x)), cov_y).logpdf(y[:, 0])
    assert fit.info["log_evidence"] == pytest.approx(exact, abs=2e-3)


@pytest.mark.extended  # NUTS's draws are checked against a closed form in the default run (test_conjugate); known errors enter its model as for MLE and Laplace here
def test_nuts_matches_the_exact_posterior(data):
    x, y, err = data
    fit = _linear().fit(x, y, method="nuts", y_err=err, seed=0, num_chains=1, num_warmup=300, num_samples=1500)
    d = fit.draws
    draws = np.concatenate([np.asarray(d["Dense_0.kernel"])[:, :, 0], np.asarray(d["Dense_0.bias"])], axis=1)
    mean, precision = _posterior(x, y, err, PRIOR)
    sd = np.sqrt(np.diag(np.linalg.inv(precision)))
    from numpyro.diagnostics import effective_sample_size

    ess = np.asarray(effective_sample_size(draws[None]))
    z = (draws.mean(0) - mean) / (sd / np.sqrt(ess))
    assert np.all(np.abs(z) < 4), z
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 * sd_rel_mcse(draws[None], mean, sd))


def test_minibatch_likelihood_reads_the_errors_of_the_batch_rows(data):
    x, y, err = data
    model = _linear()
    params = {"Dense_0.kernel": np.ones((3, 1), np.float32), "Dense_0.bias": np.zeros(1, np.float32)}
    idx = np.array([3, 17, 41, 59, 0])
    traced = handlers.trace(handlers.substitute(handlers.substitute(model.model, data=params), data={"data": jnp.asarray(idx)}))
    site = traced.get_trace(x, y, batch_size=5, y_err=err)["y"]
    got = float(site["scale"] * site["fn"].log_prob(site["value"]).sum())
    f = x[idx].sum(1)
    expected = 60 / 5 * stats.norm(f, err[idx, 0]).logpdf(y[idx, 0]).sum()
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def map_fit(data):
    x, y, err = data
    return _linear().fit(x, y, method="map", y_err=err, optimizer=optax.lbfgs(), num_steps=100)


def test_predictions_use_the_errors_of_the_new_points(map_fit, data):
    x, y, err = data
    new_err = np.linspace(0.0, 1.0, 60, dtype=np.float32)[:, None]
    pred = map_fit.predict(x, y_err=new_err)
    np.testing.assert_allclose(pred.aleatoric_std, new_err, rtol=1e-6)
    np.testing.assert_allclose(pred.std, new_err, rtol=1e-6)  # one draw: no epistemic part
    f = x.astype(np.float64) @ linear_weights(map_fit.params)[:3] + linear_weights(map_fit.params)[3]
    ll = map_fit.log_likelihood(x, y, y_err=err)
    np.testing.assert_allclose(ll[0], stats.norm(f, err[:, 0]).logpdf(y[:, 0]), rtol=1e-5, atol=1e-5)
    # the default log-likelihood is on the training data with the training errors
    np.testing.assert_allclose(map_fit.log_likelihood(), ll, rtol=1e-6)


def test_normalize_gives_the_same_fit_in_original_units(data):
    x, y, err = data
    y_big, err_big = 100.0 * y + 50.0, 100.0 * err
    kwargs = dict(method="mle", y_err=err_big, optimizer=optax.lbfgs(), num_steps=100)
    with pytest.warns(UserWarning, match="reaches .* in magnitude.*normalize=True"):
        plain = _linear().fit(x, y_big, **kwargs)
    scaled = _linear().fit(x, y_big, normalize=True, **kwargs)
    p, s = plain.predict(x, y_err=err_big), scaled.predict(x, y_err=err_big)
    np.testing.assert_allclose(s.mean, p.mean, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(s.aleatoric_std, err_big, rtol=1e-5)
    np.testing.assert_allclose(scaled.log_likelihood(), plain.log_likelihood(), rtol=1e-4, atol=1e-3)


def test_export_compare_and_save_carry_the_errors(map_fit, data, tmp_path):
    x, y, err = data
    tree = map_fit.to_arviz()
    np.testing.assert_allclose(tree["log_likelihood"]["y"].values.reshape(-1), map_fit.log_likelihood()[0], rtol=1e-6)
    table = bnn.compare({"map": map_fit}, x, y, y_err=err, loo=False)
    expected_nll = -np.mean(map_fit.log_likelihood(x, y, y_err=err))
    assert table.loc["map", "nll"] == pytest.approx(expected_nll, rel=1e-5)
    loaded = bnn.load(map_fit.save(tmp_path / "fit"))
    np.testing.assert_array_equal(loaded.y_err, map_fit.y_err)
    np.testing.assert_array_equal(loaded.predict(x, y_err=err).std, map_fit.predict(x, y_err=err).std)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y, e: bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Bernoulli()).fit(x, (y > 0), y_err=e), "needs a bnn.Gaussian"),
        (lambda m, x, y, e: m.fit(x, y, y_err=e[:10]), r"shape of `y`"),
        (lambda m, x, y, e: m.fit(x, y, y_err=-e), "positive"),
        (lambda m, x, y, e: m.fit(x, y, y_err=0 * e), "positive"),
        (lambda m, x, y, e: m.fit(x, y, y_err=np.where(e > 0.3, np.nan, e)), "y_err"),
        (lambda m, x, y, e: m.fit(x, y, y_err=e, validation=(x, y)), r"\(x_val, y_val, y_err_val\)"),
    ],
    ids=["bernoulli", "shape", "negative", "zero", "nan", "validation-pair"],
)
def test_bad_errors_raise(data, call, match):
    x, y, err = data
    with pytest.raises((ValueError, TypeError), match=match):
        call(_linear(), x, y, err)


def test_predict_requires_errors_exactly_when_fitted_with_them(map_fit, data):
    x, y, err = data
    with pytest.raises(ValueError, match="pass `y_err` for these points"):
        map_fit.predict(x)
    with pytest.raises(ValueError, match="positive"):
        map_fit.log_likelihood(x, y, y_err=0 * err)  # a density needs noise
    plain = _linear().fit(x, y, method="mle", num_steps=5)
    with pytest.raises(ValueError, match="only for fits made with known measurement errors"):
        plain.predict(x, y_err=err)


def test_prior_predictive_observations_use_the_errors(data):
    x, _, err = data
    pred = _linear().prior_predictive(x, num_samples=4000, seed=0, y_err=err)
    np.testing.assert_allclose(pred.aleatoric_std, err, rtol=1e-6)
    noise = np.asarray(pred.y_samples - pred.samples)  # observation noise of each draw
    ratio = noise.std(0) / err
    assert np.all(np.abs(ratio - 1) < 6 / np.sqrt(2 * 4000)), ratio.min()
    with pytest.raises(ValueError, match="shape of `y`"):
        _linear().prior_predictive(x, y_err=err[:5])
