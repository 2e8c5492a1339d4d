"""SVI programs are compiled once per model and settings, and reusing them changes nothing."""

import functools
import time

import numpy as np
import pytest
from _scripts import load_script

import bnn
from bnn.likelihoods import NOISE_SITE


def _model():
    return bnn.BNN(bnn.MLP((8, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())


def _svi_programs(model):
    return model._programs.built_by(bnn.inference.svi._svi_programs)


@pytest.mark.extended  # the default run checks the program cache on MAP (test_programs); this is SVI's twin
def test_second_fit_reuses_the_compiled_programs_and_equals_a_fresh_model():
    x, y = bnn.datasets.sine(n=30, noise=0.1, seed=0)
    x2, y2 = bnn.datasets.sine(n=30, noise=0.1, seed=1)  # other data, same shapes
    options = dict(method="svi", num_steps=200, num_samples=50)
    bnn._programs.clear()  # models with equal parts share programs: start with none compiled
    model = _model()
    start = time.perf_counter()
    model.fit(x, y, seed=0, **options)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = model.fit(x2, y2, seed=3, **options)
    second = time.perf_counter() - start
    assert len(_svi_programs(model)) == 1
    # every setting of the SVI programs is in their key by construction (tests/test_programs.py);
    # here, that the fit passes them: another guide compiles anew
    model.fit(x, y, seed=0, **{**options, "num_steps": 20, "guide": "lowrank"})
    assert len(_svi_programs(model)) == 2
    # a cached program is only a faster route to the same numbers: a fresh model compiles its own
    bnn._programs.clear()
    fresh = _model().fit(x2, y2, seed=3, **options)
    for site in fresh.draws:
        np.testing.assert_array_equal(np.asarray(again.draws[site]), np.asarray(fresh.draws[site]))
    np.testing.assert_array_equal(again.info["loss"], fresh.info["loss"])
    # compilation dominates the first fit (seconds); the second only traces the guide's start
    assert second < 0.5 * first, (first, second)


def _svi_step_benchmark():
    """``benchmarks/svi_step.py`` as a module (the benchmarks folder is not a package)."""
    return load_script("benchmarks/svi_step.py", "svi_step_benchmark")


@pytest.mark.extended  # a benchmark's baseline, not the package
def test_the_hand_written_step_of_the_benchmark_optimises_bnns_objective():
    """The per-step benchmark compares like with like: the same negative ELBO for the same guide and draw."""
    import jax
    import jax.numpy as jnp

    bench = _svi_step_benchmark()
    x, y = bench.make_data(200, 3)
    model = bench.make_model((8, 8, 1))
    shapes = bench.site_shapes(model, 3)
    assert set(shapes) == set(model.latent_sites(3))
    values = model.initial_values(x, y, jax.random.PRNGKey(0))
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    idx = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 200)
    # compiled once each (op by op, NumPyro's guide set-up alone compiles hundreds of small programs)
    hand_fn = jax.jit(lambda params, eps: bench.hand_negative_elbo(model.module, 200, params, eps, xs[idx], ys[idx]))
    bnn_fn = jax.jit(lambda params, eps: bench.bnn_negative_elbo(model, params, eps, xs, ys, idx))
    for trial in range(3):
        k_eps, k_loc, k_rho = jax.random.split(jax.random.PRNGKey(10 + trial), 3)
        params = bench.hand_svi_init(values)
        if trial:  # away from the start: other means, wider and unequal scales
            params = {
                "loc": {k: v + 0.3 * jax.random.normal(jax.random.fold_in(k_loc, i), jnp.shape(v))
                        for i, (k, v) in enumerate(params["loc"].items())},
                "rho": {k: v + 3.0 + jax.random.normal(jax.random.fold_in(k_rho, i), jnp.shape(v))
                        for i, (k, v) in enumerate(params["rho"].items())},
            }
        eps = bench.draw_eps(k_eps, shapes)
        hand, ours = hand_fn(params, eps), bnn_fn(params, eps)
        np.testing.assert_allclose(float(ours), float(hand), rtol=2e-5)


@pytest.mark.slow
def test_the_benchmark_runs_in_fast_mode(tmp_path):
    """``benchmarks/svi_step.py --fast`` measures every column and writes no report."""
    bench = _svi_step_benchmark()
    out = tmp_path / "report.md"
    results = bench.main(["--fast", "--out", str(out)])
    assert not out.exists()
    (result,) = results.values()
    assert set(result["per_step_us"]) == {"hand_svi", "bnn_svi", "hand_map", "bnn_map"}
    assert all(np.isfinite(v) for v in result["per_step_us"].values())
    assert np.isfinite(result["ratio"]) and result["bnn_svi_fit_s"] > 0


@pytest.mark.oracle
@pytest.mark.extended  # the default run checks the mean-field guide's draws against its parameters in test_the_one_draw_mean_field_guide_is_numpyros_autonormal
def test_mean_field_draws_follow_the_fitted_guide():
    """Draws of the mean-field guide are loc + scale * N(0, 1) per site, mapped to its support.

    Oracle: the guide's own parameters. With 4000 draws the sample mean of a site's
    unconstrained draws lies within 5 standard errors (scale / sqrt(4000)) of its loc and the
    sample sd within 5 of its scale (se ≈ scale / sqrt(2 · 4000)) for every entry; the learned
    noise scale is drawn through its exp transform (its log follows the guide).
    """
    x, y = bnn.datasets.sine(n=30, noise=0.1, seed=0)
    num = 4000
    fit = _model().fit(x, y, method="svi", num_steps=300, num_samples=num, seed=2)
    params = fit.info["guide_params"]
    standardised = []
    for site, draws in fit.draws.items():
        draws = np.asarray(draws, np.float64)
        z = np.log(draws) if site == NOISE_SITE else draws
        loc, scale = params[f"{site}_auto_loc"], params[f"{site}_auto_scale"]
        assert z.shape == (num,) + loc.shape
        np.testing.assert_array_less(np.abs(z.mean(axis=0) - loc), 5 * scale / np.sqrt(num) + 1e-6)
        np.testing.assert_array_less(np.abs(z.std(axis=0) - scale), 5 * scale / np.sqrt(2 * num) + 1e-6)
        standardised.append(((z - loc) / scale).reshape(num, -1))
    # every entry of every site has its own normal: the standardised draws are uncorrelated
    # (null sd of a correlation 1/sqrt(num); 5 of them over a few hundred pairs)
    corr = np.corrcoef(np.concatenate(standardised, axis=1), rowvar=False)
    off_diagonal = np.abs(corr[~np.eye(len(corr), dtype=bool)])
    assert off_diagonal.max() < 5 / np.sqrt(num), off_diagonal.max()


def _elbo_data():
    """The sine toy's 30 rows and a minibatch of every third row (NumPyro's plate takes JAX indices)."""
    import jax.numpy as jnp

    return (*bnn.datasets.sine(n=30, noise=0.1, seed=0), jnp.arange(0, 30, 3))


@functools.cache
def _away_from_start(guide: str):
    """``(model function, guide, MAP values, guide parameters)``: ``guide`` started at a short MAP fit of
    :func:`_model`, set up by NumPyro's SVI on the minibatch model, then 5 Adam steps of ``Trace_ELBO`` on
    the minibatch of :func:`_elbo_data`, so that every parameter is away from its start. Shared by the
    tests below (one compiled SVI step per guide)."""
    import jax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    from bnn.inference.svi import make_guide, minibatch_model

    x, y, idx = _elbo_data()
    model = _model()
    fn = minibatch_model(model)
    values = {k: v[0] for k, v in model.fit(x, y, method="map", num_steps=20).draws.items()}
    guide_fn = make_guide(guide, fn, values, 0.1, 2 if guide == "lowrank" else None)
    svi = SVI(fn, guide_fn, Adam(0.05), Trace_ELBO())
    state = jax.jit(svi.init)(jax.random.PRNGKey(0), x, y, idx)  # an autoguide builds itself on a first call
    state = jax.jit(lambda s: jax.lax.fori_loop(0, 5, lambda i, s: svi.update(s, x, y, idx)[0], s))(state)
    return fn, guide_fn, values, svi.get_params(state)


@pytest.mark.oracle
@pytest.mark.parametrize("guide", ["normal", pytest.param("lowrank", marks=pytest.mark.extended),
                                   pytest.param("delta", marks=pytest.mark.extended)])  # delta = MAP: test_conjugate
def test_the_elbo_is_numpyros_trace_elbo_summed_in_trace_order(guide):
    """SVI's objective against NumPyro's ``Trace_ELBO`` on the same keys, at a guide away from its
    start (``"fullrank"`` is an ``AutoContinuous`` guide as ``"lowrank"`` is: one auxiliary latent
    unpacked into the sites), with a minibatch (the plate's N / batch scaling) and two particles: equal up to the
    order of the sum, i.e. within (number of terms) · U · Σ|terms| with U = 2⁻²⁴ (bounded here by
    100 U times the magnitudes of log p and log q)."""
    import jax
    from numpyro import handlers
    from numpyro.infer import Trace_ELBO
    from numpyro.infer.util import log_density

    from bnn.inference.svi import TraceOrderELBO

    x, y, idx = _elbo_data()
    fn, guide_fn, _, params = _away_from_start(guide)  # away from the start, so every parameter matters

    @jax.jit
    def compare(key):
        out = []
        for particles in (1, 2):
            out.append(TraceOrderELBO(num_particles=particles).loss(key, params, fn, guide_fn, x, y, idx))
            out.append(Trace_ELBO(num_particles=particles).loss(key, params, fn, guide_fn, x, y, idx))
        log_q, trace = log_density(handlers.seed(guide_fn, key), (x, y, idx), {}, params)
        log_p, _ = log_density(handlers.replay(handlers.seed(fn, key), trace), (x, y, idx), {}, params)
        return out, log_p, log_q

    (ours1, theirs1, ours2, theirs2), log_p, log_q = compare(jax.random.PRNGKey(7))
    bound = 100 * 2.0**-24 * (abs(float(log_p)) + abs(float(log_q)) + abs(float(theirs1)))
    for ours, theirs in ((ours1, theirs1), (ours2, theirs2)):
        assert abs(float(ours) - float(theirs)) <= bound, (float(ours), float(theirs), bound)


@pytest.mark.oracle
def test_the_one_draw_mean_field_guide_is_numpyros_autonormal():
    """The mean-field guide draws all its sites' normals at once; it must be ``AutoNormal`` at the same
    parameters (a guide away from its start, a minibatch, the learned noise through its exp transform).

    1. Its log density at the values it draws is the float64 oracle ``Σ log N(u; loc, scale) − Σ log|J|``
       (u the unconstrained value, log|J| = u for the noise's exp) and ``AutoNormal``'s log density at
       those values, within the rounding of a float32 sum: 100 U times the sum of the terms' magnitudes.
    2. Its draws have ``AutoNormal``'s distribution: over 4000 keys, each entry's unconstrained mean and
       sd lie within 5 standard errors of ``loc`` and ``scale`` (se = scale/√4000, scale/√8000), and
       the entries are independent (every |correlation| below 5/√4000).
    """
    import jax
    from numpyro import handlers
    from numpyro.infer import autoguide
    from numpyro.infer.initialization import init_to_value
    from numpyro.infer.util import log_density
    from scipy import stats

    from bnn.inference.svi import OneDrawNormal

    x, y, idx = _elbo_data()
    fn, ours, values, params = _away_from_start("normal")
    assert isinstance(ours, OneDrawNormal)

    @jax.jit  # one program each: the densities' many small operations would each compile on their own
    def ours_at_a_draw(params):
        log_q, trace = log_density(handlers.seed(ours, jax.random.PRNGKey(3)), (x, y, idx), {}, params)
        return log_q, {name: site["value"] for name, site in trace.items() if site["type"] == "sample"}

    @jax.jit
    def autonormal_log_q(params, drawn):
        auto = autoguide.AutoNormal(fn, init_loc_fn=init_to_value(values=values), init_scale=0.1)
        handlers.seed(auto, 0)(x, y, idx)  # AutoNormal sets itself up on a first call
        return log_density(handlers.condition(auto, drawn), (x, y, idx), {}, params)[0]

    log_q, drawn = ours_at_a_draw(params)
    log_q_auto = autonormal_log_q(params, drawn)
    terms = []
    for name, value in drawn.items():
        u = np.log(np.asarray(value, np.float64)) if name == NOISE_SITE else np.asarray(value, np.float64)
        loc, scale = (np.asarray(params[f"{name}_auto_{k}"], np.float64) for k in ("loc", "scale"))
        terms += list(np.ravel(stats.norm.logpdf(u, loc, scale) - (u if name == NOISE_SITE else 0.0)))
    bound = 100 * 2.0**-24 * np.sum(np.abs(terms))
    assert abs(float(log_q) - np.sum(terms)) <= bound, (float(log_q), np.sum(terms), bound)
    assert abs(float(log_q) - float(log_q_auto)) <= bound

    num = 4000
    guide = handlers.substitute(ours, data=params)
    draws = jax.jit(jax.vmap(lambda k: handlers.seed(guide, k)(x, y, idx)))(jax.random.split(jax.random.PRNGKey(4), num))
    standardised = []
    for name, value in draws.items():
        u = np.log(np.asarray(value, np.float64)) if name == NOISE_SITE else np.asarray(value, np.float64)
        loc, scale = (np.asarray(params[f"{name}_auto_{k}"], np.float64) for k in ("loc", "scale"))
        np.testing.assert_array_less(np.abs(u.mean(axis=0) - loc), 5 * scale / np.sqrt(num) + 1e-6)
        np.testing.assert_array_less(np.abs(u.std(axis=0) - scale), 5 * scale / np.sqrt(2 * num) + 1e-6)
        standardised.append(((u - loc) / scale).reshape(num, -1))
    corr = np.corrcoef(np.concatenate(standardised, axis=1), rowvar=False)
    assert np.abs(corr[~np.eye(len(corr), dtype=bool)]).max() < 5 / np.sqrt(num)


@pytest.mark.extended  # two fresh interpreters: a guard for the persistent compilation cache
def test_the_step_program_is_the_same_in_every_process():
    """JAX's persistent compilation cache finds a program by its text: SVI's step must lower to
    the same text whatever the process's string hashing (PYTHONHASHSEED), which NumPyro's
    Trace_ELBO's set of site names did not."""
    import os
    import subprocess
    import sys

    code = (
        "import jax, bnn\n"
        "from bnn.inference.svi import TraceOrderELBO, make_guide, minibatch_model\n"
        "x, y = bnn.datasets.sine(n=10, seed=0)\n"
        "model = bnn.BNN(bnn.MLP((3, 1), activation='tanh'), likelihood=bnn.Gaussian())\n"
        "fn = minibatch_model(model)\n"
        "values = model.initial_values(x, y, jax.random.PRNGKey(0))\n"
        "guide = make_guide('normal', fn, values, 0.1, None)\n"
        "from numpyro.infer import SVI\n"
        "from numpyro.optim import Adam\n"
        "svi = SVI(fn, guide, Adam(0.01), TraceOrderELBO())\n"
        "state = jax.eval_shape(svi.init, jax.random.PRNGKey(0), x, y)  # lowered, never run\n"
        "print(jax.jit(lambda s: svi.update(s, x, y)).lower(state).as_text())\n"
    )
    texts = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert texts[0] and texts[0] == texts[1]
