"""Simulation-based calibration of the package's NUTS (``bnn.sbc``: the kernel of
``fit(method="nuts")``, its target acceptance 0.98 and its chain driver, with the replications
as one batch of data sets; chains start from prior draws here, from MAP fits in benchmarks/sbc.py).

Set-up: a one-hidden-layer tanh network with 3 units and one input (10 weights), Normal(0, 1)
priors, N = 15 inputs evenly spread on [-1, 1] and known Gaussian noise σ = 0.3. The prior's
functions vary by about ±1.5 on [-1, 1], so σ = 0.3 makes the data informative (the
posterior is much narrower than the prior, which is what gives the test power against wrong
posteriors) without making the posterior so sharp that short NUTS runs struggle.

Ranked quantities: the network at 5 test inputs (one beyond the data on each side) and the 10
weights in canonical form (hidden units sign-normalised and sorted; a chain stays in one of
the 48 equivalent copies of each mode, so raw weights are not ranked). Uniformity is judged by a
χ² test per quantity and an ECDF (simultaneous band) test per quantity, Bonferroni-corrected
over all 2K tests at a family-wise false-alarm probability ``ALPHA = 1e-3``: a correct sampler
fails the assertion by chance at most once in a thousand runs, on any CPU.
"""

import numpy as np
import pytest

import bnn
from bnn import sbc

SIGMA = 0.3
X = np.linspace(-1.0, 1.0, 15, dtype=np.float32)[:, None]
X_TEST = np.array([[-1.5], [-0.5], [0.25], [1.0], [1.5]], np.float32)
ALPHA = 1e-3
ECDF_SIMS = 50_000  # smallest ECDF p-value 2e-5; times 2K = 30 tests is below ALPHA

# Fast setting: R = 100 replications of L = 19 draws (ranks 0..19), B = 5 bins of 4 ranks
# (20 expected per bin). R = 100 rather than fewer because the negative control below must be
# flagged with overwhelming probability, not just usually (see there). Under jax.vmap a NUTS
# iteration lasts as long as the longest trajectory of the batch, so the tree depth is capped
# at 8 (255 leapfrog steps; the mean is about 80): 4x faster than depth 10 at R = 500, and
# still an exact MCMC kernel. These settings passed at R = 1000 (min corrected p = 0.27).
FAST = dict(num_replications=100, num_draws=19, num_warmup=150, thinning=4, max_tree_depth=8)
FAST_BINS = 5


def _model(sigma=SIGMA):
    return bnn.BNN(bnn.MLP((3, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=sigma))


@pytest.fixture(scope="module")
def model():
    """One model object for the module, so the compiled NUTS program is reused."""
    return _model()


def _test(result, num_bins):
    return sbc.uniformity(result.ranks, result.num_draws, num_bins, names=result.names, alpha=ALPHA,
                          ecdf_sims=ECDF_SIMS)


def _report(test):
    order = np.argsort(test.p_bonferroni)[:5]
    return ", ".join(f"{test.names[k]}: p_bonf={test.p_bonferroni[k]:.2g} counts={test.counts[k].tolist()}" for k in order)


@pytest.mark.extended  # the default run runs SBC end to end with Laplace (below) and checks NUTS's draws against the closed form (test_conjugate)
def test_nuts_ranks_are_uniform(model):
    result = sbc.run(model, X, X_TEST, seed=0, **FAST)
    assert result.ranks.shape == (100, 15) and result.ranks.min() >= 0 and result.ranks.max() <= 19
    assert result.names[:5] == ("f(-1.50)", "f(-0.50)", "f(+0.25)", "f(+1.00)", "f(+1.50)")
    test = _test(result, FAST_BINS)
    assert test.passed, _report(test)


@pytest.mark.extended  # the default run checks the uniformity tests' power on extreme ranks (test_chi2_test_against_scipy_and_extremes)
def test_a_misspecified_noise_scale_is_flagged(model):
    """Negative control: data with noise 4σ, posterior computed with σ (overconfident by 4x).

    Sampled by the same compiled program as the positive test. The function values' ranks pile
    up at 0 and L (the truth lies outside the too-narrow posterior). With R = 100 their χ²
    statistics were 47–100 (4 degrees of freedom; the Bonferroni threshold is about 26) in six
    trial runs, for every one of the 5 test inputs, so a miss is astronomically unlikely. A 2x
    mis-specification gave corrected p-values of only 3e-4 – 2e-7 at R = 100 (too close to the
    threshold for a test; benchmarks/sbc.py shows it at R = 200, p ≈ 1e-26), and prior draws
    used as the "posterior" are not a negative control at all (see the next test).
    """
    result = sbc.run(model, X, X_TEST, seed=1, simulator=_model(4 * SIGMA), **FAST)
    test = _test(result, FAST_BINS)
    assert not test.passed, _report(test)
    flagged = [n for n, p in zip(test.names, test.p_bonferroni, strict=True) if p <= ALPHA]
    assert any(n.startswith("f(") for n in flagged), flagged


def test_prior_draws_pass_so_sbc_needs_informative_data(model):
    """SBC's blind spot, and an exact null for the rank and test machinery.

    Draws from the prior ranked against a prior draw are exactly uniform, whatever the data:
    SBC cannot tell the prior from the posterior. The test must therefore pass here (false
    alarm at most ALPHA), and a negative control must use a wrong posterior that is not the prior.
    """
    num_replications, num_draws = 100, 19
    truth = model.sample_prior(1, num_replications, seed=3)
    draws = model.sample_prior(1, num_replications * num_draws, seed=4)
    draws = {k: v.reshape((num_replications, num_draws) + v.shape[1:]) for k, v in draws.items()}
    names, ranks = sbc.ranks(sbc.quantities(model, truth, X_TEST),
                             sbc.quantities(model, draws, X_TEST, batch_ndim=2))
    test = sbc.uniformity(ranks, num_draws, FAST_BINS, names=names, alpha=ALPHA, ecdf_sims=ECDF_SIMS)
    assert test.passed, _report(test)


def test_canonical_weights_are_invariant_and_keep_the_function(model):
    rng = np.random.default_rng(0)
    params = {k: np.asarray(v[0]) for k, v in model.sample_prior(1, 1, seed=5).items()}
    perm, signs = rng.permutation(3), np.array([1.0, -1.0, -1.0], np.float32)
    twin = {
        "Dense_0.kernel": (params["Dense_0.kernel"] * signs)[:, perm],
        "Dense_0.bias": (params["Dense_0.bias"] * signs)[perm],
        "Dense_1.kernel": (params["Dense_1.kernel"] * signs[:, None])[perm, :],
        "Dense_1.bias": params["Dense_1.bias"],
    }
    f = np.asarray(model.apply(params, X_TEST))
    np.testing.assert_allclose(np.asarray(model.apply(twin, X_TEST)), f, rtol=1e-5, atol=1e-6)
    a, b = sbc.canonicalize(params, flip_signs=True), sbc.canonicalize(twin, flip_signs=True)
    for k in params:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    np.testing.assert_allclose(np.asarray(model.apply(a, X_TEST)), f, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.asarray(a["Dense_0.bias"])) >= 0) and np.all(np.asarray(a["Dense_0.bias"]) >= 0)


def test_canonical_weights_need_an_mlp():
    poly = bnn.BNN(bnn.Polynomial(degree=2), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=SIGMA))
    draws = poly.sample_prior(1, 4, seed=0)
    with pytest.raises(ValueError, match="canonical=False"):
        sbc.quantities(poly, draws, X_TEST)
    assert len(sbc.quantities(poly, draws, X_TEST, canonical=False)) >= 5


def test_chi2_test_against_scipy_and_extremes():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, 20, size=(60, 3))
    counts, chi2, p = sbc.chi2_test(ranks, num_draws=19, num_bins=4)
    assert counts.shape == (3, 4) and np.all(counts.sum(axis=1) == 60)
    for k in range(3):
        ref = stats.chisquare(counts[k])
        np.testing.assert_allclose(chi2[k], ref.statistic, rtol=1e-12)
        np.testing.assert_allclose(p[k], ref.pvalue, rtol=1e-10)
    for df in (1, 2, 3, 4, 9, 19):
        for x in (0.0, 0.5, 3.0, 20.0, 150.0, 900.0):
            np.testing.assert_allclose(sbc.chi2_sf(x, df), stats.chi2.sf(x, df), rtol=1e-10, atol=1e-300)
    flat = np.repeat(np.arange(20), 3)[:, None]  # every rank value equally often
    assert sbc.chi2_test(flat, 19, 4)[1][0] == 0.0
    assert 0 < sbc.chi2_test(np.zeros((60, 1), int), 19, 4)[2][0] < 1e-30  # χ² = 180, p ≈ 1e-38
    with pytest.raises(ValueError, match="must divide"):
        sbc.chi2_test(ranks, num_draws=19, num_bins=3)


def test_ecdf_band_has_its_level():
    """The simultaneous band holds all ECDF points of uniform ranks with probability 1 − α.

    Checked on fresh simulations: the fraction of 4000 uniform rank sets leaving a band of level
    0.9 is binomial with mean ≤ 0.1 (discreteness makes the band slightly conservative), so it
    must stay below 0.1 + 6 standard errors; and above 0.05, or the band would be uselessly wide.
    The ECDF test's p-values of uniform ranks must be (super-)uniform in the same sense.
    """
    num_replications, num_draws, alpha = 50, 19, 0.1
    z, lower, upper = sbc.ecdf_band(num_replications, num_draws, alpha=alpha, num_sims=20_000, seed=0)
    assert np.all(lower <= z) and np.all(z <= upper)
    rng = np.random.default_rng(7)
    ranks = rng.integers(0, num_draws + 1, size=(4000, num_replications))
    ecdf = np.stack([(ranks <= j).mean(axis=1) for j in range(num_draws)], axis=1)
    outside = np.mean(np.any((ecdf < lower - 1e-12) | (ecdf > upper + 1e-12), axis=1))
    se = np.sqrt(alpha * (1 - alpha) / 4000)
    assert 0.05 < outside <= alpha + 6 * se, outside
    p = sbc.ecdf_test(ranks[:200].T, num_draws, num_sims=20_000, seed=1)  # 200 quantities of 50 ranks
    assert np.mean(p <= alpha) <= alpha + 6 * np.sqrt(alpha * (1 - alpha) / 200)


@pytest.mark.slow
def test_nuts_ranks_are_uniform_many_replications(model):
    """R = 200 replications, L = 99 draws pooled from 2 chains each, 10 bins (20 expected per bin)."""
    result = sbc.run(model, X, X_TEST, num_replications=200, num_draws=99, seed=2, num_chains=2,
                     num_warmup=300, thinning=4, max_tree_depth=8)
    assert result.ranks.shape == (200, 15)
    test = sbc.uniformity(result.ranks, 99, 10, names=result.names, alpha=ALPHA, ecdf_sims=200_000)
    assert test.passed, _report(test)


def test_laplace_through_model_fit_passes(model):
    """Any method of ``model.fit`` through ``sbc.run(method=...)``: one fit per replication, the
    function values ranked as the fit predicts them (the default linearised predictive). The
    GGN Laplace posterior of this model passed at R = 200, L = 99 (benchmarks/SBC.md, min corrected
    p = 0.022); at R = 100, L = 19 and 5 bins the test has less power, so it must pass too."""
    result = sbc.run(model, X, X_TEST, seed=5, method="laplace", **{k: FAST[k] for k in ("num_replications", "num_draws")})
    assert result.ranks.shape == (100, 15) and result.ranks.max() <= 19
    assert result.posterior.draws["Dense_0.kernel"].shape == (100, 19, 1, 3)
    test = _test(result, FAST_BINS)
    assert test.passed, _report(test)


def test_given_simulations_must_match_the_run(model):
    sims = sbc.simulate(model, X, 3, seed=0)
    with pytest.raises(ValueError, match=r"`simulations` hold 3 data sets .* expected num_replications=4"):
        sbc.run(model, X, X_TEST, num_replications=4, simulations=sims, method="laplace")
