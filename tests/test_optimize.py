"""MLE and MAP against independent oracles: closed-form ridge, plain optax loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bnn
from bnn.inference.optimize import objective_fn

from conftest import linear_weights, ridge_posterior

NOISE = 0.1


def test_map_linear_equals_closed_form_ridge(linear_data):
    x, y = linear_data
    noise, prior = 0.3, 0.5
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(prior), likelihood=bnn.Gaussian(scale=noise))
    fit = model.fit(x, y, method="map", optimizer=optax.lbfgs(), num_steps=100)
    exact, _ = ridge_posterior(x, y, noise, prior)
    got = linear_weights(fit.params)
    rel = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert rel < 1e-4, (got, exact, rel)


@pytest.mark.extended  # the default run checks the default optimiser against ridge (test_conjugate.test_default_map_reaches_the_ridge_solution)
def test_map_linear_with_adam_default_reaches_ridge(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(0.5), likelihood=bnn.Gaussian(scale=0.3))
    fit = model.fit(x, y, method="map", num_steps=3000)
    exact, _ = ridge_posterior(x, y, 0.3, 0.5)
    assert np.allclose(linear_weights(fit.params), exact, atol=2e-3)


def _plain_loop(net, params, x, y, lam, steps, eps):
    """The conventional recipe: Adam on mean squared error + λ‖θ‖², written by hand."""
    opt = optax.adam(1e-2, eps=eps)

    def loss(p):
        mse = jnp.mean(jnp.square(net.apply(p, x) - y))
        return mse + lam * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(p))

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

    return run(params)


def _max_param_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.filterwarnings("ignore:.*loss had not settled:UserWarning")  # a trajectory test, not a convergence one
@pytest.mark.parametrize("method", ["map", "mle"])
def test_fit_equals_plain_optax_loop(sine_data, method):
    """MAP = Adam on MSE + λ‖θ‖² (λ from the helper); MLE = Adam on MSE; same init, same steps.

    bnn minimises the per-point negative log joint, which is the plain loss divided by 2σ²;
    Adam is invariant to that factor except through eps, so the plain loop uses eps·2σ².
    Both run in float32: the trajectories agree to rounding (~1e-6) for a few hundred steps,
    after which rounding differences can be amplified by the non-convex landscape, so the
    identity is pinned at 300 steps.
    """
    x, y = sine_data
    net = bnn.MLP((10, 10, 1), activation="tanh")
    model = bnn.BNN(net, prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=NOISE))
    steps = 300
    init = model.init_params(x, seed=3)
    fit = model.fit(x, y, method=method, seed=3, num_steps=steps, optimizer=optax.adam(1e-2))
    lam = bnn.prior_scale_to_weight_decay(1.0, NOISE, len(x)) if method == "map" else 0.0
    ref = _plain_loop(net, init, jnp.asarray(x), jnp.asarray(y), lam, steps, eps=1e-8 * 2 * NOISE**2)
    diff = _max_param_diff(fit.params, ref)
    assert diff < 1e-5, diff
    # and the fit really moved away from its start
    assert _max_param_diff(fit.params, init) > 0.1


@pytest.mark.filterwarnings("ignore:.*loss had not settled:UserWarning")
@pytest.mark.extended  # the default run checks MAP against ridge and MLE against least squares in closed form
def test_map_with_huge_prior_scale_is_mle(sine_data):
    x, y = sine_data
    net = bnn.MLP((10, 1))
    mle = bnn.BNN(net, prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=NOISE)).fit(x, y, method="mle", num_steps=300)
    flat = bnn.BNN(net, prior=bnn.Normal(1e6), likelihood=bnn.Gaussian(scale=NOISE)).fit(x, y, method="map", num_steps=300)
    assert _max_param_diff(mle.params, flat.params) < 1e-5


def test_objective_is_the_models_negative_log_joint_per_point(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((5, 1)), prior=bnn.Normal(0.7), likelihood=bnn.Gaussian())
    values = {k: v[0] for k, v in model.sample_prior(1, 1, seed=1).items()}
    from numpyro.infer.util import log_density

    log_joint = jax.jit(lambda v: log_density(model.model, (x, y), {}, v)[0])(values)  # one program, not one per op
    transforms = model.transforms(1)
    u = {k: transforms[k].inv(v) for k, v in values.items()}
    loss = jax.jit(objective_fn(model, "map", 1, len(x)))(u, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(float(loss), -float(log_joint) / len(x), rtol=1e-5)


def test_minibatch_objective_is_unbiased(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((5, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=NOISE))
    u = {k: v[0] for k, v in model.sample_prior(1, 1, seed=2).items()}
    loss = objective_fn(model, "map", 1, len(x))
    full = float(jax.jit(loss)(u, jnp.asarray(x), jnp.asarray(y)))
    # Every size-8 batch drawn with replacement, averaged over many draws (one program: run eagerly,
    # each operation would compile on its own).
    idx = jax.random.randint(jax.random.PRNGKey(0), (20000, 8), 0, len(x))
    batch = jax.jit(jax.vmap(lambda i: loss(u, jnp.asarray(x)[i], jnp.asarray(y)[i])))(idx)
    se = float(jnp.std(batch)) / np.sqrt(batch.shape[0])
    assert abs(float(jnp.mean(batch)) - full) < 4 * se


def test_minibatch_map_reaches_the_full_batch_optimum(linear_data):
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(0.5), likelihood=bnn.Gaussian(scale=0.3))
    sched = optax.exponential_decay(1e-2, transition_steps=1000, decay_rate=0.3)
    fit = model.fit(x, y, method="map", batch_size=10, num_steps=6000, optimizer=optax.adam(sched))
    exact, _ = ridge_posterior(x, y, 0.3, 0.5)
    assert np.allclose(linear_weights(fit.params), exact, atol=0.02)


def test_large_tables_train_on_minibatches_by_default():
    """``batch_size="auto"`` (the default): full-batch steps up to 2000 training rows, 250 rows per step
    above, and ``num_steps=None`` then runs 80 000 minibatch steps instead of 2000 full-batch ones. On 4000
    rows of a linear model the default MAP reaches the closed-form ridge solution: the default Adam's rate
    decays to 0, so the minibatch noise fades (the posterior sd of each weight is ~0.005 here, its error
    far smaller: 3e-4 to 8e-4 over three seeds, on AVX and SSE4.2 code alike; 2e-3 asserted)."""
    from bnn.inference._loop import check_num_steps

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.7 + 0.3 * rng.normal(size=(4000, 1))).astype(np.float32)
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(0.5), likelihood=bnn.Gaussian(scale=0.3))
    fit = model.fit(x, y, method="map")
    assert (fit.info["batch_size"], fit.info["num_steps"]) == (250, 80_000)
    exact, _ = ridge_posterior(x, y, 0.3, 0.5)
    np.testing.assert_allclose(linear_weights(fit.params), exact, atol=2e-3)
    assert model.fit(x[:2000], y[:2000], method="map", num_steps=3).info["batch_size"] is None
    assert model.fit(x[:2500], y[:2500], method="map", num_steps=3, validation=0.2).info["batch_size"] is None  # 2000 rows train
    members = model.fit(x, y, method="ensemble", num_members=2, num_steps=3)
    assert (members.info["batch_size"], members.info["num_steps"]) == (250, 3)
    assert (check_num_steps(None, None), check_num_steps(None, 100)) == (2000, 80_000)  # a batch_size given too


def test_learned_noise_mle_is_least_squares_and_rms_residual(linear_data):
    """Linear regression with a learned σ: the MLE is ordinary least squares, σ̂ = RMS residual.

    Both are closed forms (∂/∂log σ of Σ log N(yᵢ | fᵢ, σ) = Σ rᵢ²/σ² − N vanishes only at
    σ² = mean r²). The objective is smooth and has one optimum, so L-BFGS converges to
    float32 round-off: relative errors of ~1e-6 on well-conditioned data (XᵀX of 50 standard
    normal rows); 1e-4 leaves room for any CPU's rounding. (A constant-rate Adam would stop at
    a random point near the optimum instead.)
    """
    x, y = linear_data
    model = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian())
    fit = model.fit(x, y, method="mle", optimizer=optax.lbfgs(), num_steps=200)
    X = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
    beta = np.linalg.lstsq(X, y.astype(np.float64)[:, 0], rcond=None)[0]
    rms = np.sqrt(np.mean(np.square(X @ beta - y[:, 0])))
    np.testing.assert_allclose(linear_weights(fit.params), beta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(fit.likelihood_params["noise_scale"][0]), rms, rtol=1e-4)


def test_early_stopping_returns_the_best_validation_parameters(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((50, 50, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=NOISE))
    fit = model.fit(x, y, method="mle", num_steps=20000, validation=0.25, eval_every=100, patience=5, learning_rate=3e-2)
    info = fit.info
    assert info["num_steps"] < 20000  # stopped early
    assert info["best_step"] == 100 * (int(np.argmin(info["val_loss"])) + 1)
    assert info["num_steps"] == info["best_step"] + 5 * 100
    assert info["num_train"] == 30


def test_validation_tuple_and_progress_bar(sine_data, capsys):
    x, y = sine_data
    xv, yv = bnn.datasets.sine(n=20, seed=5)
    model = bnn.BNN(bnn.MLP((8, 1)), likelihood=bnn.Gaussian(scale=NOISE))
    fit = model.fit(x, y, method="map", num_steps=200, validation=(xv, yv), eval_every=50, progress_bar=True)
    assert fit.info["val_loss"].shape == (4,)
    assert "MAP" in capsys.readouterr().err


def test_heteroscedastic_learns_growing_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(400, 1)).astype(np.float32)
    scale = 0.05 + 0.5 * (x + 1) / 2  # from 0.05 at x = -1 to 0.55 at x = 1
    y = (np.sin(2 * x) + scale * rng.normal(size=x.shape)).astype(np.float32)
    model = bnn.BNN(bnn.MLP((20, 2)), prior=bnn.Normal(1.0), likelihood=bnn.Heteroscedastic())
    fit = model.fit(x, y, method="map", num_steps=3000)
    pred = fit.predict(np.array([[-0.9], [0.9]], np.float32))
    lo, hi = np.asarray(pred.aleatoric_std[:, 0])
    np.testing.assert_allclose([lo, hi], [0.075, 0.525], rtol=0.35)


def _almost_noise_free_table():
    """300 rows of a smooth function of two inputs with noise 0.01, the true function and a Heteroscedastic model."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(300, 2)).astype(np.float32)
    truth = np.sin(3 * x[:, :1]) * np.cos(2 * x[:, 1:])
    y = (truth + 0.01 * rng.normal(size=truth.shape)).astype(np.float32)
    model = bnn.BNN(bnn.MLP((30, 2), activation="relu"), prior=bnn.Normal(1.0), likelihood=bnn.Heteroscedastic())
    return x, y, truth, model


def _error(fit, x, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(fit.predict(x).mean) - truth) ** 2)))


def test_heteroscedastic_map_fits_the_mean_first():
    """Fitted jointly from the start, the scale outputs cover for a mean that does not fit yet and the
    mean stays poor (here twice a homoscedastic network's error); fitted mean first it does not."""
    x, y, truth, model = _almost_noise_free_table()
    first = model.fit(x, y, method="map", seed=0)
    joint = model.fit(x, y, method="map", seed=0, init_params=model.init_params(x, 0))  # a given start: no first phase
    assert first.info["mean_first_steps"] == 1000 and first.info["num_steps"] == 1000
    assert joint.info["mean_first_steps"] == 0 and joint.info["num_steps"] == 2000
    assert _error(first, x, truth) < 0.7 * _error(joint, x, truth), (_error(first, x, truth), _error(joint, x, truth))


@pytest.mark.extended  # the ensemble shares the first phase's code with MAP (test_heteroscedastic_map_fits_the_mean_first)
def test_heteroscedastic_fits_come_near_a_homoscedastic_mean():
    """MAP and the ensemble fitted mean first come within 1.5 times a homoscedastic network's error (MAP
    fitted jointly from the start: 2.3 times)."""
    x, y, truth, model = _almost_noise_free_table()
    plain = _error(bnn.BNN(bnn.MLP((30, 1), activation="relu"), prior=bnn.Normal(1.0)).fit(x, y, method="map", seed=0),
                   x, truth)
    members = model.fit(x, y, method="ensemble", num_members=3, seed=0)
    assert members.info["mean_first_steps"] == 1000
    assert _error(members, x, truth) < 1.5 * plain
    assert _error(model.fit(x, y, method="map", seed=0), x, truth) < 1.5 * plain


@pytest.mark.parametrize("likelihood,width", [(bnn.Bernoulli(), 1), pytest.param(bnn.Categorical(), 2, marks=pytest.mark.extended)])
def test_classifiers_fit_the_hill(likelihood, width):
    x, y = bnn.datasets.hill(n=300, seed=0)
    xt, yt = bnn.datasets.hill(n=500, seed=1)
    model = bnn.BNN(bnn.MLP((16, 16, width)), prior=bnn.Normal(1.0), likelihood=likelihood)
    fit = model.fit(x, y, method="map", num_steps=2000)
    pred = fit.predict(xt)
    assert float(bnn.metrics.accuracy(pred, yt).mean()) > 0.9
    total = pred.epistemic_var + pred.aleatoric_var
    np.testing.assert_allclose(pred.variance, total)


def test_custom_flax_module_is_liftable():
    class Quadratic(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = self.param("a", nn.initializers.zeros, ())
            return a * x**2

    x = np.linspace(-1, 1, 30, dtype=np.float32)[:, None]
    y = 3.0 * x**2
    fit = bnn.BNN(Quadratic(), prior=bnn.Normal(10.0), likelihood=bnn.Gaussian(scale=0.1)).fit(
        x, y, method="map", optimizer=optax.lbfgs(), num_steps=50
    )
    # closed form: a = Σ x²y / (Σ x⁴ + σ²/σ_p²)
    xs, ys = x.astype(np.float64), y.astype(np.float64)
    exact = float((xs**2 * ys).sum() / ((xs**4).sum() + 0.1**2 / 10.0**2))
    np.testing.assert_allclose(float(fit.params["params"]["a"]), exact, rtol=1e-4)


@pytest.mark.extended  # the default run checks when MAP's programs are reused (test_programs)
def test_equal_optax_optimizers_share_compiled_programs(sine_data):
    """``optax.adam(1e-2)`` is a new object on every call; MAP and ensemble fits given equal ones
    reuse one compiled program (and give the same result), a different rate compiles anew."""
    x, y = sine_data
    bnn._programs.clear()  # models with equal parts share programs: start with none compiled
    model = bnn.BNN(bnn.MLP((5, 1), activation="tanh"), likelihood=bnn.Gaussian(scale=0.1))
    first = model.fit(x, y, method="map", num_steps=50, optimizer=optax.adam(1e-2))
    programs = len(model._programs)
    again = model.fit(x, y, method="map", num_steps=50, optimizer=optax.adam(1e-2))
    assert len(model._programs) == programs
    np.testing.assert_array_equal(np.asarray(first.info["loss"]), np.asarray(again.info["loss"]))
    model.fit(x, y, method="ensemble", num_members=2, num_steps=50, optimizer=optax.adam(1e-2))
    model.fit(x, y, method="ensemble", num_members=2, num_steps=50, optimizer=optax.adam(1e-2))
    assert len(model._programs) == programs + 3  # the members' training steps, optimiser start and validation loss
    model.fit(x, y, method="map", num_steps=50, optimizer=optax.adam(2e-2))
    from bnn.inference.optimize import _point_program, start_program

    assert len(model._programs.built_by(_point_program)) == 2  # MAP's training steps, one per rate
    assert len(model._programs.built_by(start_program)) == 3  # the optimiser's start: per rate, and the members'


def test_default_optimizer_is_adam_with_optax_cosine_decay_and_one_program_serves_every_length(sine_data):
    """The default optimiser keeps the run's length in its state, not its code: fits of 30 and 70
    steps run one compiled program, and each follows ``optax.adam(cosine_decay_schedule(1e-2,
    num_steps))`` (the oracle: optax's own schedule in a plain loop on the same objective, from
    the same start) to float32 rounding."""
    from bnn._programs import clear
    from bnn.inference.optimize import _point_program

    x, y = sine_data
    clear()
    model = bnn.BNN(bnn.MLP((4, 1), activation="tanh"), likelihood=bnn.Gaussian(scale=0.1))
    loss = objective_fn(model, "map", 1, x.shape[0])
    transforms = model.transforms(1)
    for num_steps in (30, 70):
        fit = model.fit(x, y, method="map", num_steps=num_steps, seed=0)
        start = {k: transforms[k].inv(v) for k, v in model.initial_values(x, y, jax.random.key(0)).items()}
        opt = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps))

        def step(carry, _, opt=opt):
            u, s = carry
            value, g = jax.value_and_grad(loss)(u, jnp.asarray(x), jnp.asarray(y))
            updates, s = opt.update(g, s, u)
            return (optax.apply_updates(u, updates), s), value

        (u, _), values = jax.lax.scan(step, (start, opt.init(start)), None, length=num_steps)
        # float32 rounding of the same arithmetic, amplified by at most num_steps Adam steps
        np.testing.assert_allclose(fit.info["loss"], np.asarray(values), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(fit.draws["Dense_0.kernel"][0]), np.asarray(u["Dense_0.kernel"]),
                                   rtol=1e-4, atol=1e-6)
    (program,) = model._programs.built_by(_point_program)
    assert program._cache_size() == 1  # one XLA executable: the number of steps is an argument


@pytest.mark.parametrize("method, options", [("map", {}), pytest.param("ensemble", {"num_members": 2, "validation": None}, marks=pytest.mark.extended),
                                             pytest.param("svi", {"num_samples": 5}, marks=pytest.mark.extended)])
def test_a_fit_does_not_depend_on_how_its_steps_are_chunked(sine_data, capsys, method, options):
    """Step ``i`` draws its minibatch from ``fold_in(key, i)``, and one compiled program runs any
    number of steps: ``eval_every`` and a progress bar (chunks of 7 steps instead of one) change
    neither the losses nor the result, bit for bit."""
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((4, 1), activation="tanh"), likelihood=bnn.Gaussian(scale=0.1))
    fits = [model.fit(x, y, method=method, num_steps=45, batch_size=10, seed=1, **options, **how)
            for how in ({}, {"eval_every": 7, "progress_bar": True})]
    np.testing.assert_array_equal(fits[0].info["loss"], fits[1].info["loss"])
    for site in fits[0].draws:
        np.testing.assert_array_equal(np.asarray(fits[0].draws[site]), np.asarray(fits[1].draws[site]))
    assert "45/45" in capsys.readouterr().err


def test_chunks_stop_at_every_check_and_hold_at_most_chunk_steps():
    """``run_in_chunks`` calls the compiled chunk with ``(first, count)``, ``count`` at most
    ``CHUNK``, and checks (``on_chunk``) after every ``eval_every`` steps and at the end."""
    from bnn.inference._loop import CHUNK, run_in_chunks

    calls, checks = [], []

    def run_chunk(state, key, first, count):
        calls.append((first, count))
        return state + count, np.arange(first, first + CHUNK, dtype=np.float32)  # rows past count are ignored

    state, losses, done = run_in_chunks(run_chunk, 0, 2 * CHUNK + 700, None, CHUNK + 500, "MAP",
                                        on_chunk=lambda state, done: checks.append(done) is not None)
    assert calls == [(0, CHUNK), (CHUNK, 500), (CHUNK + 500, CHUNK), (2 * CHUNK + 500, 200)]
    assert checks == [CHUNK + 500, 2 * CHUNK + 700]
    assert state == done == 2 * CHUNK + 700
    np.testing.assert_array_equal(losses, np.arange(done))


def test_the_default_optimizer_needs_its_run_length():
    """Without ``for_run`` the default optimiser's first update is NaN (a loud failure), not a
    rate that silently falls to 0 after one step; with it, the first rate is the peak."""
    from bnn.inference._loop import for_run, make_optimizer

    optimizer = make_optimizer(None, None, 1e-2)
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.ones(3)}
    unset, _ = optimizer.update(grads, optimizer.init(params), params)
    assert np.all(np.isnan(np.asarray(unset["w"])))
    updates, _ = optimizer.update(grads, for_run(optimizer.init(params), 10), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-2, rtol=1e-5)  # Adam's first step: -rate · sign(g)
