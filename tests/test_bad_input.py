"""Every public entry point names the argument, what it expected and what it got."""

import numpy as np
import optax
import pytest

import bnn

X, Y = bnn.datasets.sine(n=20, seed=0)


@pytest.fixture(scope="module")
def model():
    return bnn.BNN(bnn.MLP((5, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))


@pytest.fixture(scope="module")
def fitted(model):
    return model.fit(X, Y, method="map", num_steps=5)


@pytest.mark.parametrize(
    "x,y,match",
    [
        (X, np.where(np.arange(20)[:, None] == 3, np.nan, Y), r"`y` contains NaN or inf \(first at index \(3, 0\)\)"),
        (np.where(np.arange(20)[:, None] == 1, np.inf, X), Y, r"`x` contains NaN or inf"),
        (X[:15], Y, r"`x` and `y` must have the same number of rows; got 15 and 20"),
        (X[None], Y, r"`x` must be a 1 or 2-D array; got shape \(1, 20, 1\)"),
        (X, Y[None], r"`y` must be a 1 or 2-D array; got shape \(1, 20, 1\)"),
        (X, np.concatenate([Y, Y], axis=1), r"`y` must have 1 column\(s\) to match the network's 1 output"),
        (X[:0], Y[:0], r"`x` is empty"),
    ],
)
def test_bad_data(model, x, y, match):
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, method="map", num_steps=1)


def test_strings_are_not_data(model):
    with pytest.raises(TypeError, match="`y` must hold numbers"):
        model.fit(X, np.array(["a"] * 20), num_steps=1)


def test_labels_out_of_range():
    x, _ = bnn.datasets.hill(n=10)
    with pytest.raises(ValueError, match=r"`y` must hold integer class labels in 0..1"):
        bnn.BNN(bnn.MLP((4, 1)), likelihood=bnn.Bernoulli()).fit(x, np.arange(10) % 3, num_steps=1)
    with pytest.raises(ValueError, match=r"`y` must hold integer class labels in 0..2"):
        bnn.BNN(bnn.MLP((4, 3)), likelihood=bnn.Categorical()).fit(x, np.arange(10) % 4, num_steps=1)
    with pytest.raises(ValueError, match=r"labels in 0..2"):
        bnn.BNN(bnn.MLP((4, 3)), likelihood=bnn.Categorical()).fit(x, -(np.arange(10) % 2), num_steps=1)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: bnn.Gaussian(scale=-0.1), ValueError, r"`Gaussian\(scale\)` must be a finite number > 0; got -0.1"),
        (lambda: bnn.Gaussian(scale=0.0), ValueError, r"Gaussian\(scale\)"),
        (lambda: bnn.Normal(scale=-1.0), ValueError, r"`Normal\(scale\)` must be a finite number > 0"),
        (lambda: bnn.Heteroscedastic(min_scale=0), ValueError, r"min_scale"),
        (lambda: bnn.MLP((10, 0)), ValueError, r"`features` must be a non-empty tuple of ints >= 1"),
        (lambda: bnn.MLP((10, 1), activation="swishy"), ValueError, r"`activation` must be a callable or one of"),
        (lambda: bnn.BNN("not a module"), TypeError, r"`module` must be a flax.linen.Module"),
        (lambda: bnn.BNN(bnn.MLP((1,)), prior=1.0), TypeError, r"`prior` must be a bnn prior"),
        (lambda: bnn.BNN(bnn.MLP((1,)), likelihood="gaussian"), TypeError, r"`likelihood` must be a bnn likelihood"),
    ],
)
def test_bad_specifications(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "options,error,match",
    [
        ({"method": "adam"}, ValueError, r"`method` must be one of 'mle', 'map', 'nuts', 'svi', 'laplace', 'ensemble', 'mclmc', 'sgmcmc'; got 'adam'"),
        ({"num_steps": 0}, ValueError, r"`num_steps` must be an int >= 1; got 0"),
        ({"num_steps": 10.5}, TypeError, r"`num_steps` must be an int"),
        ({"batch_size": 21}, ValueError, r"`batch_size` must be at most the 20 training rows; got 21"),
        ({"batch_size": "big"}, ValueError, r"`batch_size` must be a positive int, None \(full batch\) or 'auto'; got 'big'"),
        ({"optimizer": optax.sgd(0.1), "learning_rate": 0.1}, ValueError, r"either `optimizer` or `learning_rate`"),
        ({"optimizer": "adam"}, TypeError, r"`optimizer` must be an optax GradientTransformation"),
        ({"learning_rate": -1.0}, ValueError, r"`learning_rate` must be a finite number > 0"),
        ({"validation": 1.5}, ValueError, r"`validation` as a fraction must lie strictly between 0 and 1"),
        ({"validation": "10%"}, TypeError, r"`validation` must be a fraction"),
        ({"seed": "zero"}, TypeError, r"`seed` must be an int or a jax.random key"),
        ({"init_params": {"Dense_0.kernel": np.zeros((2, 5))}}, ValueError, r"`init_params` must hold exactly"),
        ({"bogus": 1}, TypeError, r"bogus"),
    ],
)
def test_bad_fit_options(model, options, error, match):
    options = {"method": "map", "num_steps": 1, **options}
    with pytest.raises(error, match=match):
        model.fit(X, Y, **options)


def test_bad_laplace_rank(model):
    with pytest.raises(ValueError, match=r"`rank` applies to hessian='lowrank' only; got rank=5 with hessian='ggn'"):
        model.fit(X, Y, method="laplace", rank=5, num_steps=1)
    with pytest.raises(ValueError, match=r"`rank` must be an int >= 1; got 0"):
        model.fit(X, Y, method="laplace", hessian="lowrank", rank=0, num_steps=1)
    with pytest.raises(ValueError, match=r"tune_prior needs the GGN's whole spectrum"):
        model.fit(X, Y, method="laplace", hessian="lowrank", tune_prior=True, num_steps=1)


def test_bad_mclmc_tuning_targets(model):
    with pytest.raises(ValueError, match=r"`L_factor` must be a finite number > 0; got 0"):
        model.fit(X, Y, method="mclmc", L_factor=0)
    with pytest.raises(ValueError, match=r"`desired_energy_var` must be a finite number > 0; got -1"):
        model.fit(X, Y, method="mclmc", desired_energy_var=-1)


def test_predict_on_inputs_of_the_wrong_width(fitted):
    with pytest.raises(ValueError, match=r"`x` must have 1 feature column\(s\), as the data the model was fitted on; got shape \(5, 2\)"):
        fitted.predict(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"`num_samples` must be at most the 1 draws"):
        fitted.predict(X, num_samples=2)


def test_bad_prediction_levels(fitted):
    pred = fitted.predict(X)
    with pytest.raises(ValueError, match=r"`level` must lie strictly between 0 and 1; got 90"):
        pred.interval(90)
    with pytest.raises(ValueError, match=r"`q` must be probabilities"):
        pred.quantiles([0.5, 1.0])


def test_bad_prior_predictive_arguments(model):
    with pytest.raises(ValueError, match=r"`num_samples` must be an int >= 1; got 0"):
        model.prior_predictive(X, num_samples=0)
    with pytest.raises(ValueError, match=r"`x` contains NaN"):
        model.prior_predictive(np.full((3, 1), np.nan))


def test_diverging_optimisation_is_reported(model):
    with pytest.raises(FloatingPointError, match=r"MAP objective became .* at step \d+ of 5.*lower learning rate.*normalize=True"):
        with pytest.warns(UserWarning, match="`y` column 0 reaches"):
            model.fit(X, Y * 1e30, method="map", num_steps=5, learning_rate=1e30)
