"""The lifting: site names, log joint against a hand-written NumPyro model, prior predictive."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density

import bnn


def test_sites_are_dotted_flax_paths_without_slashes(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((10, 10, 1)), likelihood=bnn.Gaussian())
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model.model, 0)).get_trace(x, y)
    latent = [k for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]
    assert latent == [
        "Dense_0.bias", "Dense_0.kernel", "Dense_1.bias", "Dense_1.kernel", "Dense_2.bias", "Dense_2.kernel", "noise_scale",
    ]
    assert trace["y"]["is_observed"] and trace["y"]["value"].shape == (40, 1)
    assert not any("/" in k for k in trace)


def _hand_mlp(p, x):
    h = jnp.tanh(x @ p["Dense_0.kernel"] + p["Dense_0.bias"][None, :])
    h = jnp.tanh(h @ p["Dense_1.kernel"] + p["Dense_1.bias"][None, :])
    return h @ p["Dense_2.kernel"] + p["Dense_2.bias"][None, :]


def test_log_joint_equals_hand_written_numpyro_densities(sine_data):
    x, y = sine_data
    prior = {"*.kernel": bnn.Normal(0.8), "*.bias": bnn.Normal(2.0), "Dense_2.kernel": bnn.FanInNormal(1.5)}
    model = bnn.BNN(bnn.MLP((10, 10, 1), activation="tanh"), prior=prior, likelihood=bnn.Gaussian())
    params = {k: v[0] for k, v in model.sample_prior(1, 1, seed=7).items()}
    got = jax.jit(lambda p: log_density(model.model, (x, y), {}, p)[0])(params)

    @jax.jit  # one program, not one per operation
    def hand_written(params):
        expected = dist.HalfNormal(1.0).log_prob(params["noise_scale"])
        for path, w in params.items():
            if path == "noise_scale":
                continue
            scale = 2.0 if path.endswith("bias") else 0.8
            if path == "Dense_2.kernel":
                scale = 1.5 / np.sqrt(10)
            expected += jnp.sum(dist.Normal(0.0, scale).log_prob(w))
        return expected + jnp.sum(dist.Normal(_hand_mlp(params, jnp.asarray(x)), params["noise_scale"]).log_prob(y))

    np.testing.assert_allclose(float(got), float(hand_written(params)), rtol=1e-6)


def test_log_joint_terms_split_prior_and_pointwise_likelihood(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((4, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.2))
    params = {k: v[0] for k, v in model.sample_prior(1, 1, seed=1).items()}
    log_prior, log_lik = model.log_joint_terms(params, x, y)
    assert log_lik.shape == (40,)
    total, _ = log_density(model.model, (x, y), {}, params)
    np.testing.assert_allclose(float(log_prior + log_lik.sum()), float(total), rtol=1e-6)


def test_model_subsamples_and_scales_the_likelihood(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((4, 1)), likelihood=bnn.Gaussian(scale=0.2))
    params = {k: v[0] for k, v in model.sample_prior(1, 1, seed=1).items()}
    seeded = numpyro.handlers.seed(numpyro.handlers.substitute(model.model, data=params), 3)
    trace = numpyro.handlers.trace(seeded).get_trace(x, y, batch_size=8)
    assert trace["y"]["value"].shape == (8, 1)
    assert trace["y"]["scale"] == pytest.approx(40 / 8)


@pytest.mark.extended  # fit(method="nuts") runs NumPyro's NUTS kernel on the same model in the default run
def test_any_numpyro_algorithm_runs_on_the_model(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.3))
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model.model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    assert mcmc.get_samples()["Dense_0.kernel"].shape == (100, 1, 1)


def test_module_with_state_is_rejected():
    class WithBatchStats(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=True)(nn.Dense(1)(x))

    with pytest.raises(ValueError, match="'params' collection"):
        bnn.BNN(WithBatchStats()).spec(1)


def test_polynomial_module_lifts_and_matches_bayesian_linear_regression():
    x, y = bnn.datasets.polynomial(n=30, coefficients=(0.5, -1.0, 2.0), noise=0.1, seed=0)
    model = bnn.BNN(bnn.Polynomial(degree=2), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    assert model.spec(1).paths == ("coefficients",)
    import optax

    fit = model.fit(x, y, method="map", optimizer=optax.lbfgs(), num_steps=50)
    X = np.asarray(x, np.float64) ** np.arange(3)
    exact = np.linalg.solve(X.T @ X / 0.01 + np.eye(3), X.T @ np.asarray(y, np.float64)[:, 0] / 0.01)
    np.testing.assert_allclose(np.asarray(fit.params["params"]["coefficients"])[:, 0], exact, rtol=1e-4)


# --- prior predictive -------------------------------------------------------------


def test_linear_prior_predictive_variance_is_analytic():
    """f(x) = wᵀx + b with w, b ~ N(0, σ_p²): Var f(x) = σ_p² (‖x‖² + 1); Var y = that + σ²."""
    x = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 3.0]], np.float32)
    sp, s, num = 0.7, 0.3, 20000
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(sp), likelihood=bnn.Gaussian(scale=s))
    pred = model.prior_predictive(x, num_samples=num, seed=0)
    assert pred.samples.shape == (num, 3, 1) and pred.y_samples.shape == (num, 3, 1)
    var_f = sp**2 * (np.sum(x.astype(np.float64) ** 2, axis=1) + 1.0)
    rel_se = np.sqrt(2.0 / (num - 1))  # standard error of a Gaussian sample variance, relative
    np.testing.assert_allclose(np.var(np.asarray(pred.samples[:, :, 0]), axis=0), var_f, rtol=4 * rel_se)
    np.testing.assert_allclose(np.var(np.asarray(pred.y_samples[:, :, 0]), axis=0), var_f + s**2, rtol=4 * rel_se)
    # the decomposition reports the same two parts
    np.testing.assert_allclose(np.asarray(pred.aleatoric_var[:, 0]), s**2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pred.epistemic_var[:, 0]), var_f, rtol=4 * rel_se)


def _output_variance(prior, width, num=4000):
    x = np.array([[-1.0], [0.3], [1.0]], np.float32)
    model = bnn.BNN(bnn.MLP((width, 1), activation="tanh"), prior=prior, likelihood=bnn.Gaussian(scale=0.1))
    return np.asarray(model.prior_predictive(x, num_samples=num, seed=1).epistemic_var[:, 0])


@pytest.mark.extended
def test_fan_in_prior_keeps_output_variance_bounded_as_width_grows():
    """Neal (1996): scaling the output-layer prior by 1/√width gives a finite limit."""
    fan = {w: _output_variance(bnn.FanInNormal(1.0), w) for w in (10, 100, 1000)}
    plain = {w: _output_variance(bnn.Normal(1.0), w) for w in (10, 100, 1000)}
    ratio_fan = fan[1000] / fan[10]
    ratio_plain = plain[1000] / plain[10]
    assert np.all((ratio_fan > 0.6) & (ratio_fan < 1.6)), ratio_fan
    assert np.all(ratio_plain > 50), ratio_plain  # grows ~linearly with the width (x100)


def test_prior_predictive_is_reproducible_and_chunked(sine_data):
    grid = bnn.datasets.sine_grid(37)
    model = bnn.BNN(bnn.MLP((10, 1)), likelihood=bnn.Gaussian(scale=0.1))
    a = model.prior_predictive(grid, num_samples=16, seed=4)
    b = model.prior_predictive(grid, num_samples=16, seed=4, batch_size=5)
    np.testing.assert_allclose(np.asarray(a.samples), np.asarray(b.samples), rtol=1e-5, atol=1e-6)
    c = model.prior_predictive(grid, num_samples=16, seed=5)
    assert not np.allclose(np.asarray(a.samples), np.asarray(c.samples))


def test_init_params_inside_a_users_trace_equals_the_top_level_call(sine_data):
    """``init_params`` at the top level (its own program, compiled with ``RUN_ONCE``) and inside a
    user's ``jax.jit`` / ``jax.eval_shape`` (traced into theirs) gives the same initial weights:
    the same initialisers, compiled at two optimisation levels, agree to float32 rounding."""
    x, _ = sine_data
    model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0))
    top = model.init_params(x, seed=3)
    inside = jax.jit(lambda: model.init_params(x, seed=3))()
    shapes = jax.eval_shape(lambda: model.init_params(x, seed=3))
    for a, b, s in zip(jax.tree.leaves(top), jax.tree.leaves(inside), jax.tree.leaves(shapes)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        assert a.shape == s.shape
