"""fit(..., normalize=True): fitted on standardised data, everything returned in original units."""

import numpy as np
import optax
import pytest

import bnn


@pytest.fixture(scope="module")
def shifted():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(60, 2)) * [50.0, 0.01] + [1000.0, -3.0]).astype(np.float32)
    y = (0.02 * x[:, :1] + 40.0 * x[:, 1:] + 7.0 + 0.5 * rng.normal(size=(60, 1))).astype(np.float32)
    return x, y


def test_normalized_mle_predicts_ols_in_original_units(shifted):
    x, y = shifted
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method="mle", normalize=True, optimizer=optax.lbfgs(), num_steps=200)
    X = np.concatenate([x.astype(np.float64), np.ones((60, 1))], axis=1)
    beta, *_ = np.linalg.lstsq(X, y.astype(np.float64), rcond=None)
    x_new = x[:10] + np.float32([5.0, 0.001])
    pred = fit.predict(x_new)
    expected = np.concatenate([x_new.astype(np.float64), np.ones((10, 1))], axis=1) @ beta
    np.testing.assert_allclose(pred.mean, expected, rtol=1e-4)
    rms = np.sqrt(np.mean((X @ beta - y) ** 2))
    np.testing.assert_allclose(pred.aleatoric_std, rms, rtol=1e-3)  # the MLE noise, in units of y


def test_normalizer_statistics_and_round_trip(shifted):
    x, y = shifted
    fit = bnn.BNN(bnn.MLP((3, 1)), likelihood=bnn.Gaussian()).fit(x, y, method="map", normalize=True, num_steps=10)
    norm = fit.normalizer
    np.testing.assert_allclose(norm.x_mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.x_scale, x.std(0), rtol=1e-5)
    np.testing.assert_allclose(norm.targets(y).std(0), 1.0, rtol=1e-4)
    assert norm.log_jacobian() == pytest.approx(-np.log(y.std()), rel=1e-5)
    with pytest.warns(UserWarning, match="`x` column 0 reaches .* normalize=True"):
        raw = bnn.BNN(bnn.MLP((3, 1)), likelihood=bnn.Gaussian()).fit(x, y, method="map", num_steps=10)
    assert raw.normalizer is None


def test_constant_columns_are_guarded():
    x = np.ones((20, 2), np.float32)
    x[:, 0] = np.linspace(0, 1, 20)
    y = x[:, :1] * 2
    fit = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian(scale=0.1)).fit(x, y, method="map", normalize=True, num_steps=10)
    assert fit.normalizer.x_scale[1] == 1.0
    assert np.all(np.isfinite(np.asarray(fit.predict(x).mean)))


def test_class_labels_are_never_transformed():
    x, y = bnn.datasets.hill(n=200, seed=0)
    fit = bnn.BNN(bnn.MLP((16, 1)), likelihood=bnn.Bernoulli()).fit(x * 100 + 5, y, method="map", normalize=True, num_steps=1500)
    assert fit.normalizer.y_mean is None
    xt, yt = bnn.datasets.hill(n=300, seed=1)
    pred = fit.predict(xt * 100 + 5)
    assert float(bnn.metrics.accuracy(pred, yt).mean()) > 0.9
    assert np.all((np.asarray(pred.probs) >= 0) & (np.asarray(pred.probs) <= 1))


def test_validation_data_are_normalized_too(shifted):
    x, y = shifted
    model = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian(scale=0.5))
    fit = model.fit(x[:40], y[:40], method="mle", normalize=True, num_steps=400, validation=(x[40:], y[40:]), eval_every=100)
    assert np.all(np.asarray(fit.info["val_loss"]) < 5.0)  # in standardised units; unscaled inputs would give ~1e5


def test_normalize_must_be_a_bool(shifted):
    x, y = shifted
    with pytest.raises(TypeError, match="`normalize` must be True or False"):
        bnn.BNN(bnn.MLP((1,))).fit(x, y, normalize="yes")
