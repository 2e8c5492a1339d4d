"""Observation models against SciPy densities; stability; label checks."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import bnn

RNG = np.random.default_rng(0)


def test_gaussian_fixed_and_learned():
    f = RNG.normal(size=(6, 2)).astype(np.float32)
    y = RNG.normal(size=(6, 2)).astype(np.float32)
    fixed = bnn.Gaussian(scale=0.4)
    expected = stats.norm.logpdf(y, f, 0.4).sum(axis=1)
    np.testing.assert_allclose(fixed.log_prob(jnp.asarray(f), jnp.asarray(y), {}), expected, rtol=1e-5)
    learned = bnn.Gaussian()
    assert list(learned.latent_sites()) == ["noise_scale"]
    got = learned.log_prob(jnp.asarray(f), jnp.asarray(y), {"noise_scale": jnp.float32(0.7)})
    np.testing.assert_allclose(got, stats.norm.logpdf(y, f, 0.7).sum(axis=1), rtol=1e-5)
    mean, var = fixed.moments(jnp.asarray(f), {})
    np.testing.assert_allclose(var, np.full((1, 2), 0.16), rtol=1e-6)  # constant in x: (1, out)


def test_heteroscedastic_scale_is_softplus_plus_floor():
    f = RNG.normal(size=(5, 2)).astype(np.float32) * 3
    y = RNG.normal(size=(5, 1)).astype(np.float32)
    lik = bnn.Heteroscedastic(min_scale=0.01)
    scale = np.log1p(np.exp(f[:, 1:].astype(np.float64))) + 0.01
    np.testing.assert_allclose(lik.log_prob(jnp.asarray(f), jnp.asarray(y), {}), stats.norm.logpdf(y, f[:, :1], scale).sum(axis=1), rtol=1e-5)
    assert lik.targets(2) == 1
    with pytest.raises(ValueError, match="even number of outputs"):
        lik.targets(3)


def test_bernoulli_logits_are_stable_and_exact():
    f = np.array([[-800.0], [-3.0], [0.0], [2.5], [800.0]], np.float32)
    y = np.array([[1.0], [0.0], [1.0], [1.0], [0.0]], np.float32)
    got = np.asarray(bnn.Bernoulli().log_prob(jnp.asarray(f), jnp.asarray(y), {}))
    expected = y[:, 0] * special.log_expit(f[:, 0]) + (1 - y[:, 0]) * special.log_expit(-f[:, 0])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(np.isfinite(got))


def test_categorical_logits_are_stable_and_exact():
    f = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]], np.float32)
    y = np.array([1, 2], np.int32)
    got = np.asarray(bnn.Categorical().log_prob(jnp.asarray(f), jnp.asarray(y), {}))
    expected = special.log_softmax(f.astype(np.float64), axis=1)[np.arange(2), y]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    mean, var = bnn.Categorical().moments(jnp.asarray(f), {})
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(var, mean * (1 - mean), rtol=1e-6)


def test_label_checks():
    with pytest.raises(ValueError, match=r"`y` must hold integer class labels in 0..1; got value\(s\) such as \[2.0\]"):
        bnn.Bernoulli().check_y(np.array([0, 1, 2]), 1)
    with pytest.raises(ValueError, match=r"labels in 0..2"):
        bnn.Categorical().check_y(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integer class labels"):
        bnn.Categorical().check_y(np.array([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        bnn.Categorical().check_y(np.array([0, 1]), 1)
    assert bnn.Categorical().check_y(np.array([[0], [2]]), 3).tolist() == [0, 2]


def test_round_trip_to_dict():
    from bnn.likelihoods import likelihood_from_dict
    from bnn.priors import prior_from_dict

    for lik in (bnn.Gaussian(0.3), bnn.Gaussian(), bnn.Heteroscedastic(0.05), bnn.Bernoulli(), bnn.Categorical()):
        assert likelihood_from_dict(lik.to_dict()) == lik
    for prior in (bnn.Normal(0.5, loc=1.0), bnn.FanInNormal(2.0)):
        assert prior_from_dict(prior.to_dict()) == prior


def test_heteroscedastic_ggn_loss_has_the_fisher_as_hessian():
    import jax

    lik = bnn.Heteroscedastic(min_scale=0.01)
    f_star = jnp.asarray(RNG.normal(size=(1, 2)).astype(np.float32))
    y = jnp.asarray(f_star[:, :1] + 0.001)  # small residual: the observed Hessian in the scale is negative
    hess = jax.hessian(lambda f: lik.ggn_loss(f, f_star, y, {}))(f_star).reshape(2, 2)
    s = float(jax.nn.softplus(f_star[0, 1])) + 0.01
    ds = float(jax.nn.sigmoid(f_star[0, 1]))  # d softplus / dz
    np.testing.assert_allclose(hess, np.diag([1 / s**2, 2 * ds**2 / s**2]), rtol=1e-4)
    observed = jax.hessian(lambda f: -lik.log_prob(f, y, {}).sum())(f_star).reshape(2, 2)
    assert observed[1, 1] < 0  # why the plain Hessian cannot serve as a GGN here


def test_heteroscedastic_mean_first_objective_splits_the_gradients():
    """The first phase of a Heteroscedastic fit: the mean output gets the gradient of a Gaussian with one noise
    scale σ, the scale output that of N(y; μ, s²) at a fixed μ (hand-derived, not through the library's densities)."""
    import jax

    from bnn.likelihoods import HeteroscedasticMean

    lik = HeteroscedasticMean(min_scale=0.01)
    rng = np.random.default_rng(1)
    f = jnp.asarray(rng.normal(size=(4, 2)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(4, 1)).astype(np.float32))
    sigma = jnp.float32(0.6)
    grad = np.asarray(jax.jit(jax.grad(lambda f: lik.log_prob(f, y, {"noise_scale": sigma}).sum()))(f))
    mu, z, r = np.asarray(f[:, 0]), np.asarray(f[:, 1]), np.asarray(y[:, 0] - f[:, 0])
    s = np.log1p(np.exp(z)) + 0.01
    np.testing.assert_allclose(grad[:, 0], r / 0.6**2, rtol=1e-5)  # d/dμ log N(y; μ, σ²) only
    # a difference of two terms: float32 rounding of each, not of the difference, bounds the error
    terms = (r**2 / s**3 + 1 / s) / (1 + np.exp(-z))
    np.testing.assert_allclose(grad[:, 1], (r**2 / s**3 - 1 / s) / (1 + np.exp(-z)), rtol=0, atol=1e-5 * terms.max())
    expected = stats.norm.logpdf(np.asarray(y[:, 0]), mu, 0.6) + stats.norm.logpdf(np.asarray(y[:, 0]), mu, s)
    np.testing.assert_allclose(lik.log_prob(f, y, {"noise_scale": sigma}), expected, rtol=1e-5)
    assert lik.targets(2) == 1 and lik.width(1) == 2
