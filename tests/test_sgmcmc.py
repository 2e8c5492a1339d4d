"""Cyclical SG-MCMC: the schedule, the kept draws, and the conjugate posterior against its closed form."""

import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

import bnn
from bnn.inference.sgmcmc import cyclical_step_size, kept_steps

from conftest import ridge_posterior, sd_rel_mcse

NOISE, PRIOR = 0.3, 0.5


def test_cosine_schedule_and_kept_steps():
    """Zhang et al.'s schedule: the peak at a cycle's first step, half of it halfway, near 0 at its end;
    the draws are the last steps of each cycle's sampling stage, evenly spread."""
    steps = np.array([0, 5, 9, 10, 15])
    np.testing.assert_allclose(np.asarray(cyclical_step_size(steps, 0.2, 10)),
                               0.1 * (np.cos(np.pi * np.array([0, 5, 9, 0, 5]) / 10) + 1), rtol=1e-6)
    np.testing.assert_array_equal(kept_steps(2, 10, 2, 5), [7, 9, 17, 19])
    np.testing.assert_array_equal(kept_steps(1, 100, 3, 60), [59, 79, 99])
    np.testing.assert_array_equal(kept_steps(3, 4, 1, 2), [3, 7, 11])


def _conjugate_check(fit, x, y, sigmas=4.0):
    """Mean and sd of every coordinate against the closed form, within ``sigmas`` Monte Carlo standard
    errors from the chains' own ESS (the sd's from that of the squared deviations: ``sd_rel_mcse``)."""
    mean, cov = ridge_posterior(x, y, NOISE, PRIOR)
    sd = np.sqrt(np.diag(cov))
    chains = fit.num_chains
    draws = np.concatenate([np.asarray(fit.draws["Dense_0.kernel"])[:, :, 0], np.asarray(fit.draws["Dense_0.bias"])], axis=1)
    by_chain = draws.reshape(chains, -1, draws.shape[1]).astype(np.float64)
    ess = np.asarray(effective_sample_size(by_chain))
    assert np.all(ess > 50), ess
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), sigmas * sd / np.sqrt(ess))
    np.testing.assert_array_less(np.abs(draws.std(0) / sd - 1.0), sigmas * sd_rel_mcse(by_chain, mean, sd))


def test_sghmc_samples_the_conjugate_posterior(linear_data):
    """Full batch (50 rows): the unadjusted dynamics' bias at the default step size is within Monte Carlo error."""
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    fit = model.fit(x, y, method="sgmcmc", num_chains=4, num_cycles=8, draws_per_cycle=40)
    assert fit.info["batch_size"] is None and fit.num_draws == 4 * 8 * 40 and fit.info["num_divergences"] == 0
    _conjugate_check(fit, x, y)
    # chains like any sampler's: ArviZ's chain axis, chain diagnostics
    assert fit.to_arviz()["posterior"]["Dense_0.kernel"].shape == (4, 320, 3, 1)
    report = bnn.diagnose(fit, x[:5])
    assert report.num_chains == 4 and np.all(np.isfinite(report.function_rhat))
    np.testing.assert_array_equal(fit.info["kept"], kept_steps(8, 2000, 40, 1000))


@pytest.mark.extended  # the same check on minibatches: the corrected gradient noise (sd 1.03-1.14 of exact at 2000 / 50 rows)
def test_minibatch_sghmc_samples_the_conjugate_posterior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.7 + NOISE * rng.normal(size=(2000, 1))).astype(np.float32)
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    fit = model.fit(x, y, method="sgmcmc", num_chains=4, num_cycles=8, draws_per_cycle=40, batch_size=100)
    _conjugate_check(fit, x, y)


@pytest.mark.parametrize("options,error,match", [
    ({"sampler": "sgnht"}, ValueError, "`sampler` must be one of 'sghmc', 'sgld'"),
    ({"exploration": 1.0}, ValueError, r"`exploration` must lie in \[0, 1\)"),
    ({"exploration": "half"}, TypeError, "`exploration` must be a number"),
    ({"draws_per_cycle": 600, "cycle_length": 1000}, ValueError, "`draws_per_cycle` must be at most the 500 sampling steps"),
    ({"step_size": -0.1}, ValueError, "`step_size`"),
    ({"batch_size": 41}, ValueError, "`batch_size` must be at most the 40 training rows"),
    ({"mesh": "all", "chain_method": "sequential"}, ValueError, "`mesh` splits the rows of vectorised chains"),
    ({"mesh": "gpu"}, ValueError, "`mesh` must be None, 'all' or a jax.sharding.Mesh"),
])
def test_bad_sgmcmc_options(sine_data, options, error, match):
    x, y = sine_data
    with pytest.raises(error, match=match):
        bnn.BNN(bnn.MLP((4, 1))).fit(x, y, method="sgmcmc", init="module", **options)


@pytest.mark.extended  # a program of its own (a patched divergence limit): the default run checks SG-MCMC's draws
def test_a_diverging_step_restarts_its_chain_from_the_start(sine_data, monkeypatch):
    """With every step judged diverging, each chain restarts at every step: its draws are its start,
    every step is counted, its step sizes halve each time, and a warning says so."""
    from bnn.inference import sgmcmc

    monkeypatch.setattr(sgmcmc, "KINETIC_LIMIT", -1.0)
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((3, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    with pytest.warns(UserWarning, match=r"SG-MCMC: 14 step\(s\) diverged .*restarts per chain: \[7, 7\]"):
        fit = model.fit(x, y, method="sgmcmc", init="module", num_chains=2, num_cycles=1, cycle_length=7,
                        draws_per_cycle=2)
    for site, draws in fit.draws.items():  # each chain's two draws are its start (its two chains differ)
        d = np.asarray(draws).reshape((2, 2) + np.shape(draws)[1:])
        np.testing.assert_array_equal(d[:, 0], d[:, 1], err_msg=site)
    assert not np.allclose(np.asarray(fit.draws["Dense_0.kernel"])[0], np.asarray(fit.draws["Dense_0.kernel"])[2])
    np.testing.assert_array_equal(fit.info["restarts"], [7, 7])
    assert fit.info["num_divergences"] == 14
    # the first draw is step 5: six halvings of the peak that the start's curvature allows
    peak = np.minimum(0.2, 0.5 / np.sqrt(fit.info["curvature"]))
    np.testing.assert_allclose(fit.info["step_size"], peak / 2**6, rtol=1e-5)
