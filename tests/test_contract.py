"""One contract for every method and likelihood: the same Fit surface, shapes and identities; a saved fit predicts identically."""

import jax
import numpy as np
import pytest

import bnn

from conftest import LIKELIHOODS, METHOD_OPTIONS, assert_same_predictions, likelihood_data

pytestmark = pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")

OPTIONS = METHOD_OPTIONS
DRAWS = {"mle": 1, "map": 1, "laplace": 30, "svi": 30, "nuts": 100, "ensemble": 6, "mclmc": 30, "sgmcmc": 30}


def test_every_method_is_in_the_contract():
    assert set(OPTIONS) == set(bnn.model.METHODS)


#: A covering set rather than the full grid (each pair compiles its own programs): every
#: method with a regression and a classification likelihood, and every likelihood with one
#: method of each family (point, Gaussian approximation, variational). The default run takes
#: every method once (learned noise), every likelihood once (MAP) and a posterior classifier
#: (Laplace, binary; also the plots' and the mutual information's); the rest runs with ``-m extended``.
COVERING = sorted({(m, k) for m in OPTIONS for k in ("learned", "categorical")}
                  | {(m, k) for m in ("map", "laplace", "svi") for k in LIKELIHOODS})
DEFAULT_RUN = ({(m, "learned") for m in OPTIONS} | {("map", k) for k in LIKELIHOODS}
               | {("laplace", "bernoulli")})


@pytest.mark.parametrize(("method", "kind"), [pair if pair in DEFAULT_RUN else pytest.param(*pair, marks=pytest.mark.extended)
                                              for pair in COVERING])
def test_every_method_gives_the_same_fit_surface(method, kind, method_fit):
    x, y = likelihood_data(kind)
    fit = method_fit(method, kind)
    model = fit.model

    assert isinstance(fit, bnn.Fit) and fit.method == method
    assert list(fit.draws) == list(model.latent_sites(x.shape[1]))
    assert fit.num_draws == DRAWS[method]
    kernel = fit.samples["params"]["Dense_0"]["kernel"]
    assert kernel.shape == (DRAWS[method], x.shape[1], 5)
    # the ensemble holds out 10 % of a small table for early stopping by default
    assert fit.info["wall_time"] > 0 and fit.info["num_train"] == (36 if method == "ensemble" else 40)
    if fit.is_point:
        assert fit.params["params"]["Dense_0"]["kernel"].shape == (x.shape[1], 5)
    else:
        with pytest.raises(AttributeError):
            fit.params

    x_new = x[:7]
    pred = fit.predict(x_new)
    out = 2 if kind == "categorical" else 1
    assert pred.mean.shape == pred.std.shape == pred.epistemic_std.shape == pred.aleatoric_std.shape == (7, out)
    assert pred.samples.shape == (DRAWS[method], 7, out)
    np.testing.assert_allclose(pred.variance, pred.epistemic_var + pred.aleatoric_var, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(pred.std)))
    chunked = fit.predict(x_new, batch_size=3)
    np.testing.assert_allclose(chunked.mean, pred.mean, rtol=1e-5, atol=1e-6)
    if pred.continuous:
        with pytest.raises(AttributeError, match="probs"):
            pred.probs
        lo, hi = pred.interval(0.9)
        assert lo.shape == (7, out) and np.all(np.asarray(lo) < np.asarray(pred.mean)) and np.all(np.asarray(pred.mean) < np.asarray(hi))
    else:
        probs = np.asarray(pred.probs)  # Categorical: one column per class; Bernoulli: P(y = 1)
        assert probs.shape == (7, out) and np.all((probs >= 0) & (probs <= 1))
        if kind == "categorical":
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        with pytest.raises(ValueError, match="continuous likelihoods only"):
            pred.interval(0.9)
        assert np.all(np.asarray(pred.mutual_information) >= -1e-6)
        np.testing.assert_allclose(pred.entropy, pred.expected_entropy + pred.mutual_information, rtol=1e-5)
    if not fit.is_point:
        assert fit.predict(x_new, num_samples=5).samples.shape == (5, 7, out)


def test_fitting_leaves_the_users_arrays_and_network_alone():
    x, y = bnn.datasets.sine(n=40, seed=0)
    x0, y0 = x.copy(), y.copy()
    net = bnn.MLP((5, 1))
    model = bnn.BNN(net, likelihood=bnn.Gaussian(scale=0.1))
    init = model.init_params(x, seed=0)
    init0 = jax.tree.map(np.array, init)
    model.fit(x, y, method="map", num_steps=20, init_params=init)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    jax.tree.map(np.testing.assert_array_equal, init, init0)
    assert model.module is net


def test_mutual_information_is_zero_for_a_point_fit_and_positive_for_a_posterior(method_fit):
    """With one draw there is no epistemic part: MI = 0 exactly and the entropy is all aleatoric."""
    laplace = method_fit("laplace", "bernoulli")
    grid = np.random.default_rng(0).uniform(-0.5, 1.5, size=(50, 2)).astype(np.float32)
    point = laplace.info["map"].predict(grid)
    np.testing.assert_allclose(point.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_allclose(point.entropy, point.expected_entropy, rtol=1e-6)
    assert float(laplace.predict(grid).mutual_information.mean()) > 1e-3


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_round_trip_predicts_identically(tmp_path, method, method_fit):
    fit = method_fit(method, "learned")  # MLP((5, 1)), Normal(1) priors, learned noise, on (x, y)
    fit.save(tmp_path / "fit")
    loaded = bnn.load(tmp_path / "fit")
    assert loaded.method == method and loaded.num_draws == fit.num_draws and loaded.num_chains == fit.num_chains
    assert_same_predictions(fit, loaded, bnn.datasets.sine_grid(25))
    np.testing.assert_array_equal(loaded.log_likelihood(), fit.log_likelihood())
    assert loaded.info["wall_time"] == pytest.approx(fit.info["wall_time"])
    if method in ("nuts", "mclmc"):
        np.testing.assert_array_equal(loaded.info["sample_stats"]["diverging"], fit.info["sample_stats"]["diverging"])
    if method == "laplace":
        assert loaded.linearize_at is not None and loaded.info["subset"] == fit.info["subset"]
