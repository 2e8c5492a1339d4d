"""Priors and noise from the data: evidence tuning for every method, hierarchical priors sampled in
non-centred form, anchored ensembles. Oracles: the closed-form evidence and posterior of linear
regression, and quadrature over a hierarchical scale."""

import jax
import numpy as np
import optax
import pytest
from numpyro.diagnostics import effective_sample_size
from scipy import integrate, optimize, stats

import bnn
from bnn.inference.chains import flat_potential, prepare_chains
from bnn.inference.evidence import start_noise_scale

from conftest import linear_weights, ridge_posterior, sd_rel_mcse

NOISE, PRIOR = 0.3, 0.5
#: L-BFGS MAP fits: converged to float32 round-off on the convex objective of the linear model
LBFGS = {"optimizer": optax.lbfgs(), "num_steps": 100}


def _design(x):
    return np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)


def _log_evidence(x, y, prior_scale, noise_scale):
    """log N(y; 0, σ² I + σ_p² X Xᵀ) of linear regression with a bias (float64)."""
    X = _design(x)
    cov = noise_scale**2 * np.eye(len(x)) + prior_scale**2 * X @ X.T
    return stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(np.asarray(y, np.float64)[:, 0])


@pytest.fixture(scope="module")
def exact_scales(linear_data):
    """The exact type-II maximum likelihood (σ_p, σ) of the linear model, by scipy."""
    x, y = linear_data
    best = optimize.minimize(lambda h: -_log_evidence(x, y, *np.exp(h)), [0.0, np.log(0.5)], method="BFGS")
    return tuple(np.exp(best.x))


@pytest.mark.parametrize("method, options", [
    ("map", {}),
    pytest.param("ensemble", {"num_members": 2, "num_steps": 200}, marks=pytest.mark.extended),
    pytest.param("svi", {"num_steps": 50, "num_samples": 10}, marks=pytest.mark.extended),
    pytest.param("nuts", {"num_chains": 1, "num_warmup": 20, "num_samples": 20}, marks=pytest.mark.extended),
])
def test_every_method_runs_on_the_exact_evidence_maximiser(linear_data, exact_scales, method, options):
    """tune_prior=True chooses (σ_p, σ) by the evidence and fits the tuned model: at the fixed point the
    Laplace evidence of a linear-Gaussian model is exact, so the choice is the exact type-II ML (float32
    MAPs limit the agreement to ~1e-4; 1 % asserted). The learned noise is fixed at the chosen σ."""
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method=method, tune_prior=True, tune_options=LBFGS, **options)
    prior_scale, noise_scale = exact_scales
    assert fit.info["prior_scale"] == pytest.approx(prior_scale, rel=1e-2)
    assert fit.info["noise_scale"] == pytest.approx(noise_scale, rel=1e-2)
    assert fit.info["prior_scale_factor"] == pytest.approx(fit.info["prior_scale"] / PRIOR)
    assert fit.model.prior == bnn.Normal(fit.info["prior_scale"])
    assert fit.model.likelihood.scale == pytest.approx(fit.info["noise_scale"])
    assert fit.info["log_evidence"] == pytest.approx(_log_evidence(x, y, prior_scale, noise_scale), abs=1e-2)
    assert "noise_scale" not in fit.draws  # empirical Bayes: σ is a fixed value of the tuned model
    assert fit.info["tune_time"] > 0
    if method == "map":  # the tuned model's MAP: the ridge solution at the tuned scales (Adam to ~1e-5, as in test_conjugate)
        mean, _ = ridge_posterior(x, y, fit.info["noise_scale"], fit.info["prior_scale"])
        assert np.linalg.norm(linear_weights(fit.params) - mean) / np.linalg.norm(mean) < 1e-4


def test_layerwise_tuning_finds_the_exact_scale_of_each_parameter_array(linear_data):
    """tune_prior="layerwise": one factor per parameter array. For the linear model the evidence is
    N(y; 0, σ² I + σ_k² X Xᵀ + σ_b² 1 1ᵀ), maximised over (σ_k, σ_b, σ) exactly by scipy; the fixed
    point of the tuning is that maximiser (float32 MAPs: ~1e-4; 1 % asserted)."""
    x, y = linear_data
    X, yy = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]

    def log_evidence(h):
        kernel, bias, noise = np.exp(h)
        cov = noise**2 * np.eye(len(yy)) + kernel**2 * X @ X.T + bias**2
        return stats.multivariate_normal(np.zeros(len(yy)), cov).logpdf(yy)

    best = np.exp(optimize.minimize(lambda h: -log_evidence(h), [0.0, 0.0, np.log(0.3)], method="BFGS").x)
    assert abs(np.log(best[0] / best[1])) > 0.5  # the two arrays want different scales here
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method="map", tune_prior="layerwise", tune_options=LBFGS)
    scales = fit.info["prior_scale"]
    assert scales["Dense_0.kernel"] == pytest.approx(best[0], rel=1e-2)
    assert scales["Dense_0.bias"] == pytest.approx(best[1], rel=1e-2)
    assert fit.info["noise_scale"] == pytest.approx(best[2], rel=1e-2)
    assert fit.info["prior_scale_factor"] == pytest.approx({p: v / PRIOR for p, v in scales.items()})
    assert fit.model.prior == {p: bnn.Normal(v) for p, v in scales.items()}
    assert fit.info["log_evidence"] == pytest.approx(log_evidence(np.log(best)), abs=1e-2)
    assert fit.info["tune_history"].shape == (fit.info["tune_iterations"], 4)  # two factors, σ, evidence
    with pytest.raises(ValueError, match="layerwise prior tuning needs the curvature of every parameter array"):
        model.fit(x, y, method="laplace", tune_prior="layerwise", subset=["*.kernel"], num_steps=10)


@pytest.mark.extended  # known errors and evidence tuning each have their default-run oracle
def test_tuning_with_known_errors_finds_the_exact_factor_on_them(linear_data):
    """With y_err the learned noise is a factor σ on the reported errors: the evidence is
    N(y; 0, σ² diag(e²) + σ_p² X Xᵀ), maximised exactly by scipy."""
    x, y = linear_data
    errors = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    X, yy = _design(x), np.asarray(y, np.float64)[:, 0]

    def log_evidence(h):
        prior_scale, factor = np.exp(h)
        cov = factor**2 * np.diag(errors.astype(np.float64) ** 2) + prior_scale**2 * X @ X.T
        return stats.multivariate_normal(np.zeros(len(yy)), cov).logpdf(yy)

    best = np.exp(optimize.minimize(lambda h: -log_evidence(h), [0.0, np.log(0.3)], method="BFGS").x)
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method="map", y_err=errors, tune_prior=True, tune_options=LBFGS)
    assert fit.info["prior_scale"] == pytest.approx(best[0], rel=1e-2)
    assert fit.info["noise_scale"] == pytest.approx(best[1], rel=1e-2)


@pytest.mark.extended  # the default run checks the tuned MAP against ridge with a learned noise scale (above)
def test_tuned_map_is_the_ridge_solution_at_the_tuned_scales(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    fit = model.fit(x, y, method="map", tune_prior=True, tune_options=LBFGS, **LBFGS)
    mean, _ = ridge_posterior(x, y, NOISE, fit.info["prior_scale"])
    assert np.linalg.norm(linear_weights(fit.params) - mean) / np.linalg.norm(mean) < 1e-4


def test_tune_prior_bad_input(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    with pytest.raises(TypeError, match="`tune_prior` must be True, False or 'layerwise'"):
        model.fit(x, y, method="map", tune_prior=1)
    with pytest.raises(ValueError, match="`tune_options` apply with tune_prior=True only"):
        model.fit(x, y, method="map", tune_options={"num_steps": 10})
    with pytest.raises(TypeError, match="`tune_options` must be a dict"):
        model.fit(x, y, method="map", tune_prior=True, tune_options=10)
    with pytest.raises(ValueError, match="method='mle' has no prior"):
        model.fit(x, y, method="mle", tune_prior=True)
    with pytest.raises(ValueError, match="`tune_options` apply with tune_prior=True only"):
        model.fit(x, y, method="laplace", tune_options={"num_steps": 10})


@pytest.mark.extended  # anchored members are an option of the ensemble, not its default
def test_anchored_members_are_exact_posterior_draws_of_the_linear_model(linear_data):
    """Randomised MAP: member m minimises ‖ỹ_m − Xθ‖²/2σ² + ‖θ − a_m‖²/2σ_p² with a_m ~ prior and
    ỹ_m = y + σ ε_m, so θ_m = H⁻¹(Xᵀỹ_m/σ² + a_m/σ_p²) is Gaussian with mean H⁻¹Xᵀy/σ² and covariance
    H⁻¹(XᵀX/σ² + I/σ_p²)H⁻¹ = H⁻¹: exact independent posterior draws. With M members the sample mean's
    error is sd/√M and the std's sd/√(2M): 4 standard errors asserted, and correlations within 4/√M."""
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    members = 2000
    fit = model.fit(x, y, method="ensemble", num_members=members, anchored=True, num_steps=2000)
    draws = np.concatenate([np.asarray(fit.draws["Dense_0.kernel"])[:, :, 0], np.asarray(fit.draws["Dense_0.bias"])], 1)
    mean, cov = ridge_posterior(x, y, NOISE, PRIOR)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(members)), (draws.mean(0) - mean) / sd
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 / np.sqrt(2 * members)), draws.std(0) / sd
    assert np.abs(np.corrcoef(draws.T) - cov / np.outer(sd, sd)).max() < 4 / np.sqrt(members)
    assert fit.info["anchored"]
    # plain members all reach the one MAP: no spread at all
    plain = model.fit(x, y, method="ensemble", num_members=4, num_steps=2000, validation=None)
    assert np.asarray(plain.draws["Dense_0.bias"]).std() < 1e-3 * sd[-1]
    with pytest.raises(ValueError, match="needs objective='map'"):
        model.fit(x, y, method="ensemble", anchored=True, objective="mle", num_steps=10)
    with pytest.raises(TypeError, match="`anchored` must be True or False"):
        model.fit(x, y, method="ensemble", anchored="yes", num_steps=10)


# --- hierarchical priors -----------------------------------------------------------------------

HYPER = 1.0


@pytest.fixture(scope="module")
def hierarchical(linear_data):
    """Linear regression whose kernel has a sampled scale τ ~ HalfNormal(1) and bias prior Normal(0, 1)."""
    x, y = linear_data
    prior = {"Dense_0.kernel": bnn.Normal(scale=bnn.HalfNormal(HYPER)), "Dense_0.bias": bnn.Normal(1.0)}
    return bnn.BNN(bnn.MLP((1,)), prior=prior, likelihood=bnn.Gaussian(scale=NOISE)), x, y


def _quadrature(x, y):
    """Posterior moments of τ and of the weights [kernel, bias] by quadrature over τ (float64).

    Given τ the model is conjugate: with prior variances D = diag(τ², τ², τ², 1), the weights' conditional
    posterior has precision P = XᵀX/σ² + D⁻¹ and mean P⁻¹b (b = Xᵀy/σ²), and the marginal likelihood
    N(y; 0, σ²I + XDXᵀ) has, by the determinant lemma and Woodbury, log density
    −½(n log 2πσ² + log det D + log det P + yᵀy/σ² − bᵀP⁻¹b) (checked against scipy's at one τ).
    p(τ | y) ∝ HalfNormal(τ) p(y | τ) is integrated on [0, 20] by the trapezoid rule on 4001 points.
    """
    X, yy = _design(x), np.asarray(y, np.float64)[:, 0]
    n, d = X.shape
    grid = np.linspace(1e-4, 20.0, 4001)
    prior_var = np.concatenate([np.repeat(grid[:, None] ** 2, d - 1, axis=1), np.ones((len(grid), 1))], axis=1)
    precision = X.T @ X / NOISE**2 + prior_var[:, :, None] ** -1 * np.eye(d)
    cov = np.linalg.inv(precision)
    b = X.T @ yy / NOISE**2
    means = cov @ b
    log_marginal = -0.5 * (n * np.log(2 * np.pi * NOISE**2) + np.log(prior_var).sum(1) + np.linalg.slogdet(precision)[1]
                           + yy @ yy / NOISE**2 - means @ b)
    check = stats.multivariate_normal(np.zeros(n), NOISE**2 * np.eye(n) + X @ np.diag(prior_var[1000]) @ X.T).logpdf(yy)
    assert abs(log_marginal[1000] - check) < 1e-8 * abs(check), (log_marginal[1000], check)
    log_w = stats.halfnorm(scale=HYPER).logpdf(grid) + log_marginal
    w = np.exp(log_w - log_w.max())
    w /= integrate.trapezoid(w, grid)

    def expect(values):
        return integrate.trapezoid(w[:, None] * np.asarray(values).reshape(len(grid), -1), grid, axis=0)

    second = np.diagonal(cov, axis1=1, axis2=2) + means**2
    tau_mean, tau_sq = expect(grid)[0], expect(grid**2)[0]
    weight_mean = expect(means)
    return (tau_mean, np.sqrt(tau_sq - tau_mean**2)), (weight_mean, np.sqrt(expect(second) - weight_mean**2))


def test_hierarchical_nuts_matches_quadrature_over_the_scale(hierarchical):
    model, x, y = hierarchical
    assert model.latent_sites(3) == ("Dense_0.bias", "Dense_0.kernel", "Dense_0.kernel.scale")
    chains, draws = 4, 1000
    fit = model.fit(x, y, method="nuts", seed=0, num_chains=chains, num_warmup=500, num_samples=draws)
    tau = np.asarray(fit.draws["Dense_0.kernel.scale"]).reshape(chains, draws, 1)
    weights = np.concatenate([np.asarray(fit.draws["Dense_0.kernel"])[:, :, 0],
                              np.asarray(fit.draws["Dense_0.bias"])], 1).reshape(chains, draws, 4)
    (tau_mean, tau_sd), (w_mean, w_sd) = _quadrature(x, y)
    for got, mean, sd in ((tau, np.array([tau_mean]), np.array([tau_sd])), (weights, w_mean, w_sd)):
        ess = np.asarray(effective_sample_size(got))
        assert np.all(ess > 300), ess
        est = got.reshape(-1, got.shape[-1])
        assert np.all(np.abs(est.mean(0) - mean) < 4 * sd / np.sqrt(ess)), (est.mean(0) - mean) / (sd / np.sqrt(ess))
        mcse_sd = sd * sd_rel_mcse(got, mean, sd)
        assert np.all(np.abs(est.std(0) - sd) < 4 * mcse_sd), (est.std(0) - sd) / mcse_sd
    assert fit.info["num_divergences"] == 0


@pytest.mark.extended  # the default run checks the evidence's noise scale of a hierarchical model at the chains' starts (below)
def test_a_hierarchical_prior_takes_only_its_noise_scale_from_the_evidence(linear_data, exact_scales):
    """With a sampled weight scale, tune_prior=True chooses what is fixed, the noise scale, by the
    evidence of the point model (each hyperprior's scale as a fixed prior scale: Normal(0, 1) on every
    weight here, so its tuning is the linear model's exact type-II ML; 1 % as above); the weights'
    scales stay sampled."""
    x, y = linear_data
    prior = {"Dense_0.kernel": bnn.Normal(scale=bnn.HalfNormal(HYPER)), "Dense_0.bias": bnn.Normal(1.0)}
    model = bnn.BNN(bnn.MLP((1,)), prior=prior, likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method="nuts", tune_prior=True, tune_options=LBFGS, num_chains=1, num_warmup=20,
                    num_samples=20)
    assert fit.info["noise_scale"] == pytest.approx(exact_scales[1], rel=1e-2)
    assert fit.model.likelihood.scale == fit.info["noise_scale"] and fit.model.prior == prior
    assert "Dense_0.kernel.scale" in fit.draws and "noise_scale" not in fit.draws
    assert not any(k.startswith("prior_scale") for k in fit.info)  # the weights' scales are in the draws


@pytest.mark.extended  # the default run checks the evidence's noise scale (test_every_method_runs_on_the_exact_evidence_maximiser) and hierarchical NUTS against quadrature
def test_hierarchical_chains_start_at_the_evidence_noise_scale(linear_data, exact_scales):
    """A hierarchical model with a learned noise: each chain's MAP start holds σ at the evidence's
    choice for the point model (the exact type-II ML σ of the linear model here, 1 %), so its weights
    are the ridge solution at that σ and the hyperprior's scale (float32 L-BFGS: 1e-4), and σ starts there."""
    x, y = linear_data
    prior = {"Dense_0.kernel": bnn.Normal(scale=bnn.HalfNormal(HYPER)), "Dense_0.bias": bnn.Normal(1.0)}
    model = bnn.BNN(bnn.MLP((1,)), prior=prior, likelihood=bnn.Gaussian())
    prepared = prepare_chains(model, x, y, None, 0, 0, "map", 2, LBFGS, start_noise_scale)
    noise_scale = exact_scales[1]
    ridge, _ = ridge_posterior(x, y, noise_scale, 1.0)
    for flat in prepared.starts:
        values, _ = model.constrain(prepared.unravel(flat), x.shape[1])
        assert float(values["noise_scale"]) == pytest.approx(noise_scale, rel=1e-2)
        weights = np.concatenate([np.asarray(values["Dense_0.kernel"])[:, 0], np.asarray(values["Dense_0.bias"])])
        np.testing.assert_allclose(weights, ridge, rtol=1e-2, atol=1e-3)  # σ itself is known to 1 %


@pytest.mark.extended  # the quadrature test checks NUTS's scale draws on the linear model in the default run
def test_hierarchical_nuts_draws_every_scale_site_of_a_network(sine_data):
    """NUTS on a two-layer network with a sampled scale per weight array: each scale site has a
    positive draw per kept draw (the chain driver's coordinates, shared with MCLMC)."""
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((4, 1), activation="tanh"), prior=bnn.Normal(scale=bnn.HalfNormal(1.0)),
                    likelihood=bnn.Gaussian(scale=0.1))
    fit = model.fit(x, y, method="nuts", num_chains=2, num_warmup=20, num_samples=10, map_options={"num_steps": 200})
    for site in ("Dense_0.bias.scale", "Dense_0.kernel.scale", "Dense_1.bias.scale", "Dense_1.kernel.scale"):
        assert np.asarray(fit.draws[site]).shape[0] == fit.num_draws and np.all(np.asarray(fit.draws[site]) > 0)


def test_non_centred_potential_is_the_log_joint_plus_the_jacobian(hierarchical):
    """The samplers' coordinates: log τ, and u = w / τ for the kernel. The potential must be the
    negative log joint at (τ, w) minus log |∂(τ, w)/∂(log τ, u)| = log τ + 3 log τ."""
    model, x, y = hierarchical
    x, y, y_err, _, _, starts, unravel = prepare_chains(model, x, y, None, 0, 0, "prior", 3, None)
    potential, terms = jax.jit(flat_potential(model, unravel)), jax.jit(model.log_joint_terms)
    for flat in starts:
        u = unravel(flat)
        tau = float(np.exp(u["Dense_0.kernel.scale"]))
        values = {"Dense_0.kernel.scale": tau, "Dense_0.kernel": tau * np.asarray(u["Dense_0.kernel"]),
                  "Dense_0.bias": np.asarray(u["Dense_0.bias"])}
        log_prior, log_lik = terms(values, x, y)
        expected = -(float(log_prior) + float(np.sum(log_lik))) - 4 * np.log(tau)
        assert float(potential(flat, x, y, y_err)) == pytest.approx(expected, rel=1e-5, abs=1e-3)


def test_guide_sites_round_trip():
    from bnn.inference.svi import from_guide_sites, to_guide_sites

    prior = {"Dense_0.kernel": bnn.Normal(bnn.HalfNormal(1.0), loc=0.5), "Dense_0.bias": bnn.Normal(1.0)}
    model = bnn.BNN(bnn.MLP((2,)), prior=prior, likelihood=bnn.Gaussian(scale=1.0))
    values = {"Dense_0.kernel": np.array([[1.0, -2.0], [0.0, 3.0]]), "Dense_0.kernel.scale": np.array(2.0),
              "Dense_0.bias": np.array([0.3, 0.1])}
    guide = to_guide_sites(model, values, 2)
    np.testing.assert_allclose(guide["Dense_0.kernel_decentered"], (values["Dense_0.kernel"] - 0.5) / 2.0)
    back = from_guide_sites(model, {k: np.asarray(v)[None] for k, v in guide.items()}, 2)
    for k, v in values.items():
        np.testing.assert_allclose(back[k][0], v)


def test_hierarchical_sites_methods_and_errors(sine_data):
    x, y = sine_data
    net = bnn.MLP((4, 1), activation="tanh")
    model = bnn.BNN(net, prior=bnn.Normal(scale=bnn.HalfNormal(1.0)), likelihood=bnn.Gaussian(scale=0.1))
    scales = ("Dense_0.bias.scale", "Dense_0.kernel.scale", "Dense_1.bias.scale", "Dense_1.kernel.scale")
    assert model.latent_sites(1)[4:] == scales  # one scale per array for a single prior
    grouped = bnn.BNN(net, prior={"*.kernel": bnn.Normal(scale=bnn.HalfNormal(2.0)), "*.bias": bnn.Normal(1.0)})
    assert model.hierarchical and grouped.hierarchical
    assert grouped.latent_sites(1) == ("Dense_0.bias", "Dense_0.kernel", "Dense_1.bias", "Dense_1.kernel",
                                       "*.kernel.scale", "noise_scale")  # one scale per key in a dict
    prior_draws = grouped.sample_prior(1, 4000, seed=0)["*.kernel.scale"]
    assert float(np.mean(prior_draws)) == pytest.approx(2.0 * np.sqrt(2 / np.pi), rel=4 * 0.6 / np.sqrt(4000))

    for method in ("mle", "map", "ensemble", "laplace"):
        with pytest.raises(ValueError, match="sampled prior scale .* has no useful mode"):
            model.fit(x, y, method=method)
    with pytest.raises(ValueError, match="tune_prior chooses only the noise scale of a learned Gaussian noise"):
        model.fit(x, y, method="nuts", tune_prior=True)  # σ is fixed here: nothing left to tune
    with pytest.raises(ValueError, match=r"`HalfNormal\(scale\)` must be"):
        bnn.HalfNormal(-1.0)


# the default run samples a hierarchical model with NUTS (the quadrature test above); SVI repeats it
@pytest.mark.extended
def test_hierarchical_svi_guide_sites_and_round_trip(sine_data, tmp_path):
    """SVI's guide sites are its own (the samplers' hierarchical coordinates are the chain driver's,
    whose draws of the scale sites the quadrature test checks); its fits save and load."""
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((4, 1), activation="tanh"), prior=bnn.Normal(scale=bnn.HalfNormal(1.0)),
                    likelihood=bnn.Gaussian(scale=0.1))
    scales = ("Dense_0.bias.scale", "Dense_0.kernel.scale", "Dense_1.bias.scale", "Dense_1.kernel.scale")
    fit = model.fit(x, y, method="svi", num_steps=50, num_samples=20, map_options={"num_steps": 200})
    for site in scales:
        assert np.asarray(fit.draws[site]).shape[0] == fit.num_draws and np.all(np.asarray(fit.draws[site]) > 0)
    assert set(scales) <= set(fit.to_arviz().posterior.data_vars)
    # SVI's guide is over the non-centred weights z = (w − loc) / scale, and w = loc + scale · z per draw
    assert "Dense_0.kernel_decentered_auto_loc" in fit.info["guide_params"]
    assert "Dense_0.kernel_auto_loc" not in fit.info["guide_params"]
    fit.save(tmp_path / "fit")
    loaded = bnn.load(tmp_path / "fit")
    assert loaded.model.prior == model.prior
    np.testing.assert_allclose(np.asarray(loaded.predict(x).mean), np.asarray(fit.predict(x).mean), rtol=1e-6)
