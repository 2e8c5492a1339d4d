"""float64: every method runs under ``jax.enable_x64`` and agrees with float32 within float32 error.

Under ``with jax.enable_x64(True):`` data, priors, parameters and compiled programs are
float64 (each model caches its programs per float type). The oracle is the closed-form
posterior of linear regression (``conftest.ridge_posterior``, computed in float64).
"""

import jax
import numpy as np
import optax
import pytest

import bnn

from conftest import ridge_posterior

pytestmark = pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")

NOISE, PRIOR = 0.3, 0.5
#: float32 machine epsilon.
EPS32 = float(np.finfo(np.float32).eps)


def _linear_model():
    return bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))


def _stack(draws):
    """``(draws, 4)``: kernel entries then bias, per draw."""
    return np.concatenate([np.asarray(draws["Dense_0.kernel"])[:, :, 0], np.asarray(draws["Dense_0.bias"])], axis=1)


def _fit(precision: str, linear_data, method: str, **options):
    x, y = linear_data
    model = _linear_model()
    if precision == "float64":
        with jax.enable_x64(True):
            fit = model.fit(x, y, method=method, seed=0, **options)
            pred = fit.predict(x[:5])
    else:
        fit = model.fit(x, y, method=method, seed=0, **options)
        pred = fit.predict(x[:5])
    return fit, pred


@pytest.mark.parametrize("method,options", [
    pytest.param("mle", {"optimizer": optax.lbfgs(), "num_steps": 100}, marks=pytest.mark.extended),
    ("map", {"optimizer": optax.lbfgs(), "num_steps": 100}),
    pytest.param("laplace", {"optimizer": optax.lbfgs(), "num_steps": 100, "num_samples": 50},
                 marks=pytest.mark.extended),
    pytest.param("svi", {"guide": "fullrank", "num_steps": 300, "num_samples": 50}, marks=pytest.mark.extended),
    pytest.param("nuts", {"num_chains": 1, "num_warmup": 100, "num_samples": 100}, marks=pytest.mark.extended),
    pytest.param("mclmc", {"num_chains": 2, "num_warmup": 100, "num_samples": 100}, marks=pytest.mark.extended),
    pytest.param("sgmcmc", {"num_chains": 2, "num_cycles": 2, "cycle_length": 100, "draws_per_cycle": 5},
                 marks=pytest.mark.extended),
])
def test_every_method_runs_in_float64(linear_data, method, options):
    fit, pred = _fit("float64", linear_data, method, **options)
    assert all(np.asarray(v).dtype == np.float64 for v in fit.draws.values()), {k: v.dtype for k, v in fit.draws.items()}
    assert np.asarray(pred.mean).dtype == np.float64
    assert np.all(np.isfinite(np.asarray(pred.mean)))


def test_float64_map_reaches_the_ridge_solution_to_float64_precision(linear_data):
    """L-BFGS in float64 stops where the gradient is at float64 round-off: ~1e-12 relative here
    (XᵀX of 50 standard normal rows is well conditioned). 1e-9 is float32's 1e-4 bound scaled."""
    x, y = linear_data
    exact, _ = ridge_posterior(x, y, NOISE, PRIOR)
    fit64, _ = _fit("float64", linear_data, "map", optimizer=optax.lbfgs(), num_steps=200)
    got = _stack(fit64.draws)[0]
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 1e-9


def test_float32_and_float64_map_agree_within_float32_error(linear_data):
    """Both converge to the same optimum; float32's answer is off by its round-off,
    O(eps32 · cond) with cond(XᵀX/σ² + I/σ_p²) ≈ 4 here: a few 1e-7. 1e-5 bounds it on any CPU."""
    fit32, pred32 = _fit("float32", linear_data, "map", optimizer=optax.lbfgs(), num_steps=200)
    fit64, pred64 = _fit("float64", linear_data, "map", optimizer=optax.lbfgs(), num_steps=200)
    np.testing.assert_allclose(_stack(fit32.draws), _stack(fit64.draws), rtol=100 * EPS32, atol=100 * EPS32)
    np.testing.assert_allclose(np.asarray(pred32.mean), np.asarray(pred64.mean), rtol=100 * EPS32, atol=100 * EPS32)


def test_float64_laplace_is_the_exact_posterior(linear_data):
    """For a linear Gaussian model the GGN precision is XᵀX/σ² + I/σ_p² exactly; in float64 the
    computed precision matches the closed form to ~1e-13 relative (1e-10 asserted)."""
    x, y = linear_data
    _, cov = ridge_posterior(x, y, NOISE, PRIOR)
    fit, _ = _fit("float64", linear_data, "laplace", optimizer=optax.lbfgs(), num_steps=200, num_samples=10)
    precision = fit.info["precision"]
    # draws are stacked by the ravel order of {"Dense_0.bias", "Dense_0.kernel"}: bias first
    order = [3, 0, 1, 2]
    exact = np.linalg.inv(cov)[np.ix_(order, order)]
    assert precision.dtype == np.float64
    np.testing.assert_allclose(precision, exact, rtol=1e-10)


@pytest.mark.extended  # the default run checks Laplace against the exact posterior in float32 (test_conjugate) and float64 (above)
def test_float32_ggn_laplace_is_accurate_where_the_precision_is_ill_conditioned(sine_data):
    """A small noise scale (σ = 0.003) makes the GGN precision of a 20-unit net ill-conditioned
    beyond 1/ε₃₂ (condition number ~6e7): a Cholesky factorisation of the formed float32
    precision breaks down. The fit factorises the square root of the whitened GGN instead.

    Oracle: the GGN at the fit's own MAP point, recomputed in float64 (J by forward-mode AD,
    G = JᵀJ/σ²), whitened by the prior (here S = I): M = I + G. Along each eigenvector v_k of M
    the draws must have variance 1/μ_k; the sample variance of 4000 independent Gaussian draws
    has relative standard error √(2/4000) = 2.2 %, so 5 standard errors (11 %) bound the worst
    of the 61 directions, while float32 error is far below that (see `_whitened_spectrum`).
    """
    x, y = sine_data
    sigma, num_samples = 0.003, 4000
    model = bnn.BNN(bnn.MLP((20, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=sigma))
    fit = model.fit(x, y, method="laplace", num_steps=3000, num_samples=num_samples, seed=0)
    spec = model.spec(1)
    point = {p: np.asarray(fit.info["map"].draws[p][0], np.float64) for p in spec.paths}
    draws = np.concatenate([np.asarray(fit.draws[p], np.float64).reshape(num_samples, -1) for p in sorted(spec.paths)], 1)
    theta_star = np.concatenate([point[p].ravel() for p in sorted(spec.paths)])
    with jax.enable_x64(True):
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree({p: jnp.asarray(point[p]) for p in spec.paths})  # sorted path order
        jac = jax.jacfwd(lambda t: model.apply(unravel(t), jnp.asarray(x, jnp.float64)))(flat)[:, 0, :]
        precision = np.asarray(jac.T @ jac) / sigma**2 + np.eye(flat.shape[0])
    mu, vectors = np.linalg.eigh(precision)
    assert mu.max() / mu.min() > 1 / EPS32  # the regime where a float32 Cholesky of the formed matrix fails
    variances = np.var((draws - theta_star) @ vectors, axis=0)
    np.testing.assert_allclose(variances * mu, 1.0, rtol=5 * np.sqrt(2 / num_samples))
