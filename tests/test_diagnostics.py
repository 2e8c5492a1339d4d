"""ArviZ export and function-space diagnostics."""

import dataclasses
import warnings

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnn


def test_nuts_export_has_every_group_and_passes_arviz(linear_nuts):
    tree = linear_nuts.to_arviz(num_prior_samples=20)
    assert set(tree.children) == {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data", "sample_stats", "prior",
        "prior_predictive",
    }
    post = tree["posterior"]
    assert post["Dense_0.kernel"].dims == ("chain", "draw", "Dense_0_in", "Dense_0_out")
    assert post["Dense_0.bias"].dims == ("chain", "draw", "Dense_0_out")
    assert post["noise_scale"].shape == (4, 500)
    stats = tree["sample_stats"]
    for name in ("diverging", "n_steps", "tree_depth", "acceptance_rate", "energy", "step_size", "lp"):
        assert stats[name].shape == (4, 500), name
    summary = arviz.summary(tree)
    assert summary.loc["noise_scale", "r_hat"] < 1.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loo = arviz.loo(tree)
    assert np.isfinite(loo.elpd)
    assert np.all(np.asarray(arviz.rhat(tree)["noise_scale"]) < 1.02)
    assert np.all(np.asarray(arviz.ess(tree)["noise_scale"]) > 200)


def test_log_likelihood_is_pointwise_and_sums_to_the_models(linear_nuts):
    x, y = linear_nuts.data
    ll = linear_nuts.to_arviz()["log_likelihood"]["y"]
    assert ll.shape == (4, 500, 50)
    # independent oracle: the model's own log density of the data, draw by draw
    terms = jax.jit(linear_nuts.model.log_joint_terms)  # one program for the three draws
    for s in (0, 1234, 1999):
        draw = {k: v[s] for k, v in linear_nuts.draws.items()}
        _, log_lik = terms(draw, jnp.asarray(x), jnp.asarray(y))
        np.testing.assert_allclose(np.asarray(ll).reshape(2000, 50)[s].sum(), float(log_lik.sum()), rtol=1e-5)


def test_normalized_fit_log_likelihood_is_in_original_units(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.3))
    fit = model.fit(x * 10, y * 100, method="map", normalize=True, num_steps=500)
    pred = fit.predict(x * 10)
    # oracle: the Gaussian density of y in original units from the un-normalised predictive
    from scipy import stats

    expected = stats.norm.logpdf(y[:, 0] * 100, np.asarray(pred.mean[:, 0]), np.asarray(pred.std[:, 0]))
    np.testing.assert_allclose(fit.log_likelihood()[0], expected, rtol=1e-4)


def test_point_fit_exports_a_single_labelled_draw(sine_data):
    x, y = sine_data
    fit = bnn.BNN(bnn.MLP((5, 1)), likelihood=bnn.Gaussian(scale=0.1)).fit(x, y, method="map", num_steps=50)
    tree = fit.to_arviz()
    assert tree["posterior"]["Dense_0.kernel"].shape == (1, 1, 1, 5)
    assert tree.attrs["point_estimate"] == 1 and tree.attrs["method"] == "map"
    assert tree["sample_stats"]["loss"].dims == ("step",)


@pytest.mark.extended  # the default run checks the export's groups on a regression fit (and SVI's in test_contract)
def test_classifier_export(sine_data):
    x, y = bnn.datasets.hill(n=30)
    fit = bnn.BNN(bnn.MLP((4, 3)), likelihood=bnn.Categorical()).fit(x, y % 3, method="svi", num_steps=50, num_samples=10, init="module")
    tree = fit.to_arviz()
    assert tree["observed_data"]["y"].dims == ("obs",)
    assert tree["posterior_predictive"]["y"].shape == (1, 10, 30)
    assert tree["sample_stats"]["elbo"].dims == ("step",)


def test_function_space_rhat_is_one_for_well_mixed_chains(linear_nuts):
    grid = np.random.default_rng(0).normal(size=(15, 3)).astype(np.float32)
    report = bnn.diagnose(linear_nuts, grid)
    assert report.ok, report.verdict
    assert np.nanmax(report.function_rhat) < 1.01
    assert report.function_rhat.shape == (15, 1)
    assert "converged in function space" in str(report)


def _two_chains(fit, second):
    """A 2-chain fit: ``fit``'s one chain, then ``second(site, draws)`` of the same draws."""
    draws = {k: jnp.concatenate([v, second(k, v)]) for k, v in fit.draws.items()}
    return dataclasses.replace(fit, draws=draws, info={**fit.info, "num_chains": 2})


def test_permuted_chains_fool_weight_space_but_not_function_space(sine_data):
    """Chain 2 = chain 1 with hidden units permuted: the same functions, different weights.

    The draws are independent Gaussian draws around one MAP (a Laplace fit evaluated on the
    network itself), labelled as two chains, so nothing depends on how one short MCMC chain
    mixed. The comparison is with chain 2 = an exact copy of chain 1: permuting the units
    must leave every function-space number unchanged, up to the float rounding of a
    re-ordered sum, while weight-space R-hat jumps (the units differ at the MAP).
    """
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((6, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    laplace = model.fit(x, y, method="laplace", predictive="nn", num_steps=2000, num_samples=400)
    fit = dataclasses.replace(laplace, method="nuts", linearize_at=None, info={"num_chains": 1})
    perm = np.array([3, 4, 5, 0, 1, 2])

    def permute(site, v):
        if site == "Dense_0.kernel":
            return v[:, :, perm]
        if site == "Dense_0.bias":
            return v[:, perm]
        if site == "Dense_1.kernel":
            return v[:, perm, :]
        return v

    grid = bnn.datasets.sine_grid(25)
    permuted = bnn.diagnose(_two_chains(fit, permute), grid)
    copied = bnn.diagnose(_two_chains(fit, lambda site, v: v), grid)
    # independent draws, two identical halves: R-hat ≈ 1 (its sampling spread at 800 draws is ~0.01)
    assert max(copied.weight_rhat.values()) < 1.05
    assert max(permuted.weight_rhat.values()) > 1.5  # weight space cries wolf
    # Function values agree to float32 rounding of a 6-term sum, so ranks (and R-hat) can only
    # move where two draws are within ~1e-6 of each other: a shift far below 1e-3.
    np.testing.assert_allclose(permuted.function_rhat, copied.function_rhat, atol=1e-3)
    np.testing.assert_allclose(permuted.function_ess_bulk, copied.function_ess_bulk, rtol=1e-2)
    assert np.nanmax(permuted.function_rhat) < 1.05
    assert "equivalent modes" in permuted.verdict


def test_chains_in_different_modes_are_flagged(sine_data):
    """Two MAP-like modes with different extrapolations, one per chain: function-space R-hat flags them."""
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((6, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))  # the network above
    a = model.fit(x, y, method="laplace", seed=1, num_steps=2000, num_samples=300, subset="last_layer")
    b = model.fit(x, y, method="laplace", seed=2, num_steps=2000, num_samples=300, subset="last_layer")
    draws = {k: jnp.concatenate([a.draws[k], b.draws[k]]) for k in a.draws}
    mixed = dataclasses.replace(a, method="nuts", draws=draws, info={"num_chains": 2}, linearize_at=None)
    # last-layer draws: the network is linear in them, so each chain stays tight around its own MAP
    report = bnn.diagnose(mixed, bnn.datasets.sine_grid(40))
    assert not report.ok
    assert "chains disagree at" in report.verdict


def test_independent_and_point_fits_get_a_plain_verdict(method_fit):
    assert "point estimate" in bnn.diagnose(method_fit("map", "learned")).verdict
    assert "independent draws" in bnn.diagnose(method_fit("svi", "learned")).verdict


def test_one_chain_is_reported_as_unverified(linear_nuts):
    """R-hat needs two chains: one chain gets ESS but no convergence verdict, and no NaN R-hat."""
    one = dataclasses.replace(
        linear_nuts,
        draws={k: v[:500] for k, v in linear_nuts.draws.items()},
        info={**linear_nuts.info, "num_chains": 1},
    )
    report = bnn.diagnose(one, np.linspace(-2, 2, 7, dtype=np.float32)[:, None].repeat(3, 1))
    assert not report.ok
    assert report.verdict.startswith("unverified: one chain")
    assert np.all(np.isnan(report.function_rhat)) and np.all(report.function_ess_bulk > 100)


def test_mclmc_energy_error_is_reported_and_fails_the_fit_when_large(method_fit):
    """MCLMC's energy error while sampling (``info["energy_var"]``, per chain) enters the report: its worst
    chain is shown, and above ENERGY_VAR_THRESHOLD the fit fails whatever R-hat says (a step size too long
    for where the chains went biases the draws without a divergence)."""
    from bnn.diagnostics import ENERGY_VAR_THRESHOLD

    fit = method_fit("mclmc", "learned")
    report = bnn.diagnose(fit)
    assert report.energy_var == pytest.approx(float(np.max(fit.info["energy_var"])))
    assert fit.info["energy_var"].shape == (fit.num_chains,)
    assert (report.energy_var > ENERGY_VAR_THRESHOLD) == ("while sampling" in report.verdict and not report.ok)
    for worst, fails in ((0.5 * ENERGY_VAR_THRESHOLD, False), (3.0, True)):
        info = {**fit.info, "energy_var": np.array([1e-4, worst])}
        judged = bnn.diagnose(dataclasses.replace(fit, info=info))
        assert judged.energy_var == worst
        assert (f"energy error variance per dimension {worst:.2g} while sampling" in judged.verdict) == fails
        if fails:
            assert not judged.ok and judged.verdict.startswith("not converged:")
        else:  # the chains' other checks decide, and the verdict shows the energy error
            assert judged.ok == report.ok and report.energy_var <= ENERGY_VAR_THRESHOLD
            assert f"energy error variance per dimension ≤ {worst:.2g}" in judged.verdict.lower()
    assert np.isnan(bnn.diagnose(method_fit("nuts", "learned")).energy_var)
