"""Properties that hold for every network, likelihood and prior (hypothesis).

Each test draws random architectures (0–3 hidden layers of 1–32 units, 1–5 inputs, an
activation), a likelihood (Gaussian with fixed or learned noise, Heteroscedastic, Bernoulli,
Categorical) and a prior specification (one prior, or a dict mixing exact paths, globs such
as ``"*.kernel"`` / ``"Dense_0.*"`` and the default ``"*"``), and checks one property of the
public API on them.

Every new architecture costs JIT compilations, so the example counts are small; examples
are derandomised (the same ones on every run) and no example database is kept.

Tolerances come from float32 rounding arguments, written next to each check, with
``U = 2⁻²⁴`` the unit roundoff of float32 (a correctly rounded operation has relative
error at most ``U``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro import handlers
from numpyro.infer.util import log_density

import bnn

U = 2.0**-24  # unit roundoff of float32
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "softplus", "silu", "elu", "identity")
#: Activations with a continuous derivative: training is then a smooth map of the data.
SMOOTH_ACTIVATIONS = ("tanh", "gelu", "sigmoid", "softplus", "silu", "elu", "identity")
LIKELIHOODS = ("gaussian", "gaussian_learned", "heteroscedastic", "bernoulli", "categorical")
CONTINUOUS = ("gaussian", "gaussian_learned", "heteroscedastic")


def examples(n: int):
    """Hypothesis settings: ``n`` examples, reproducible (derandomised), no database, no deadline.

    Each example builds a new model and compiles its programs (about 1-2 s), so ``n`` is small:
    the counts keep the default suite within its time budget; a larger ``n`` explores further.
    """
    return settings(max_examples=n, deadline=None, derandomize=True, database=None)


# --- strategies ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One random model: an MLP, a likelihood and a prior specification, plus a seed for data."""

    num_features: int
    hidden: tuple[int, ...]
    kind: str  # one of LIKELIHOODS
    out: int  # target columns, or classes for Categorical
    activation: str
    prior: object  # a bnn prior or a dict of path / pattern -> prior
    noise: float | None  # the fixed noise scale of kind "gaussian"
    seed: int

    @property
    def depth(self) -> int:
        return len(self.hidden)

    @property
    def features(self) -> tuple[int, ...]:
        last = 2 * self.out if self.kind == "heteroscedastic" else self.out
        return self.hidden + (last,)

    @property
    def continuous(self) -> bool:
        return self.kind in CONTINUOUS

    @property
    def likelihood_sites(self) -> set[str]:
        return {"noise_scale"} if self.kind == "gaussian_learned" else set()

    def likelihood(self) -> bnn.Likelihood:
        return {
            "gaussian": lambda: bnn.Gaussian(scale=self.noise),
            "gaussian_learned": bnn.Gaussian,
            "heteroscedastic": bnn.Heteroscedastic,
            "bernoulli": bnn.Bernoulli,
            "categorical": bnn.Categorical,
        }[self.kind]()

    def net(self) -> bnn.MLP:
        return bnn.MLP(self.features, activation=self.activation)

    def model(self) -> bnn.BNN:
        return bnn.BNN(self.net(), prior=self.prior, likelihood=self.likelihood())

    def inputs(self, n: int, scale: float = 1.0, salt: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, salt, 0])
        return (scale * rng.normal(size=(n, self.num_features))).astype(np.float32)

    def targets(self, n: int, salt: int = 0) -> np.ndarray:
        """Random targets in the likelihood's canonical form: ``(n, out)`` floats or ``(n,)`` labels."""
        rng = np.random.default_rng([self.seed, salt, 1])
        if self.kind == "categorical":
            return rng.integers(0, self.out, size=n).astype(np.int32)
        if self.kind == "bernoulli":
            return rng.integers(0, 2, size=(n, self.out)).astype(np.float32)
        return rng.normal(size=(n, self.out)).astype(np.float32)


#: Fixed Gaussian noise scales.
NOISE_SCALES = st.floats(0.05, 2.0)

#: A leaf prior: Normal (sometimes off-centre) or FanInNormal.
PRIOR_LEAVES = st.one_of(
    st.builds(bnn.Normal, scale=st.floats(0.1, 3.0), loc=st.sampled_from([0.0, 0.0, 0.5, -1.0])),
    st.builds(bnn.FanInNormal, scale=st.floats(0.1, 3.0)),
)


def layer_paths(num_layers: int) -> list[str]:
    return [f"Dense_{i}.{name}" for i in range(num_layers) for name in ("kernel", "bias")]


def is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


@st.composite
def prior_specs(draw, num_layers: int, leaves=PRIOR_LEAVES, single=True):
    """One prior, or a valid dict mixing exact paths, globs and ``"*"``.

    Random keys are drawn first; then each path that no key covers (without ``"*"``) or
    that two patterns match gets an exact key, as the matching rules require.
    """
    if single and draw(st.booleans()):
        return draw(leaves)
    paths = layer_paths(num_layers)
    exact = set(draw(st.sets(st.sampled_from(paths))))
    candidates = ["*.kernel", "*.bias"] + [f"Dense_{i}.*" for i in range(num_layers)]
    patterns = set(draw(st.sets(st.sampled_from(candidates))))
    default = draw(st.booleans())
    for path in paths:
        hits = [k for k in patterns if fnmatch.fnmatchcase(path, k)]
        if path not in exact and (len(hits) > 1 or (not hits and not default)):
            exact.add(path)
    keys = sorted(exact) + sorted(patterns) + (["*"] if default else [])
    return {key: draw(leaves) for key in keys}


def expected_prior(spec, path: str):
    """The prior the documented rules give ``path``: exact key, else the one matching pattern, else ``"*"``."""
    if not isinstance(spec, dict):
        return spec
    if path in spec:
        return spec[path]
    hits = [k for k in spec if k != "*" and is_pattern(k) and fnmatch.fnmatchcase(path, k)]
    assert len(hits) <= 1, "the strategy only builds valid specifications"
    return spec[hits[0]] if hits else spec["*"]


def prior_loc_std(prior, shape: tuple[int, ...]) -> tuple[float, float]:
    """Mean and standard deviation of each entry under ``prior`` (README: FanInNormal = scale²/fan_in on kernels)."""
    if isinstance(prior, bnn.FanInNormal):
        fan_in = math.prod(shape[:-1]) if len(shape) >= 2 else 1
        return 0.0, prior.scale / math.sqrt(fan_in)
    return prior.loc, prior.scale


@st.composite
def cases(
    draw, likelihoods=LIKELIHOODS, activations=ACTIVATIONS, max_depth=3, max_width=32, priors=prior_specs, noise=NOISE_SCALES
):
    depth = draw(st.integers(0, max_depth))
    hidden = tuple(draw(st.lists(st.integers(1, max_width), min_size=depth, max_size=depth)))
    kind = draw(st.sampled_from(likelihoods))
    out = draw(st.integers(2, 5)) if kind == "categorical" else draw(st.integers(1, 3 if kind == "gaussian" else 2))
    return Case(
        num_features=draw(st.integers(1, 5)),
        hidden=hidden,
        kind=kind,
        out=out,
        activation=draw(st.sampled_from(activations)),
        prior=draw(priors(depth + 1)),
        noise=draw(noise) if kind == "gaussian" else None,
        seed=draw(st.integers(0, 2**31 - 1)),
    )


# --- shared checks -------------------------------------------------------------------


def check_decomposition(pred: bnn.Predictions, num_draws: int, n: int, out: int) -> None:
    """Shapes, and total = epistemic + aleatoric with each part what it is defined to be."""
    assert pred.samples.shape == (num_draws, n, out)
    for name in ("mean", "std", "epistemic_std", "aleatoric_std", "epistemic_var", "aleatoric_var"):
        assert getattr(pred, name).shape == (n, out), name
    assert pred.variance_samples.shape in ((num_draws, n, out), (num_draws, 1, out))

    std, epi, ale = (np.asarray(getattr(pred, k), np.float64) for k in ("std", "epistemic_std", "aleatoric_std"))
    assert np.all(np.isfinite(std))
    # std = sqrt(fl(e + a)) and epi = sqrt(e), ale = sqrt(a) in float32: the add, each
    # square root and each squaring here (in float64) are relative errors of at most U on
    # (e + a) or its parts, so the two sides agree to 8U relative.
    np.testing.assert_allclose(std**2, epi**2 + ale**2, rtol=8 * U, atol=0)

    # Against the definitions, in float64. A float32 mean of S terms is within S·U·max|m|
    # of the exact one (sequential summation bound); the variance of the centred values is
    # then off by (S + 4)·U relative plus the square of that centring error.
    m = np.asarray(pred.samples, np.float64)
    v = np.broadcast_to(np.asarray(pred.variance_samples, np.float64), m.shape)
    s = num_draws
    centring = (s + 2) * U * np.max(np.abs(m), axis=0)
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean, np.float64) - m.mean(0)), centring + 1e-30)
    var_exact = m.var(0)
    bound = (s + 4) * U * var_exact + 4 * centring**2 + 1e-30
    np.testing.assert_array_less(np.abs(np.asarray(pred.epistemic_var, np.float64) - var_exact), bound)
    ale_exact = v.mean(0)
    np.testing.assert_array_less(
        np.abs(np.asarray(pred.aleatoric_var, np.float64) - ale_exact), (s + 2) * U * np.max(v, axis=0) + 1e-30
    )


# --- 1. sites ------------------------------------------------------------------------


@pytest.mark.extended  # test_model checks the sites of each likelihood once
@examples(15)
@given(case=cases(), n=st.integers(1, 12))
def test_sites_are_the_parameter_paths_the_likelihood_sites_and_y(case, n):
    model = case.model()
    x, y = case.inputs(n), case.targets(n)
    dummy = jnp.zeros((1, case.num_features), jnp.float32)
    variables = jax.eval_shape(case.net().init, jax.random.PRNGKey(0), dummy)  # the module's own init, shapes only
    shapes = {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(dict(variables["params"]), sep=".").items()}
    latent = set(shapes) | case.likelihood_sites

    def sample_sites(y):
        """Names, observed flags and shapes of the sample sites of a seeded trace (traced only, nothing compiled)."""
        observed = {}

        def run(key):
            trace = handlers.trace(handlers.seed(model.model, key)).get_trace(x, y)
            sites = {name: s for name, s in trace.items() if s["type"] == "sample"}
            observed.update({name: s["is_observed"] for name, s in sites.items()})
            return {name: s["value"] for name, s in sites.items()}

        shapes = jax.eval_shape(run, jax.random.PRNGKey(case.seed))
        return observed, {name: tuple(v.shape) for name, v in shapes.items()}

    observed, site_shapes = sample_sites(y)
    assert set(site_shapes) == latent | {"y"}
    assert [name for name, flag in observed.items() if flag] == ["y"]
    for path, shape in shapes.items():
        assert site_shapes[path] == shape, path
    assert site_shapes["y"] == y.shape
    observed, site_shapes = sample_sites(None)  # without observations, y is sampled with the likelihood's shape
    assert not any(observed.values()) and site_shapes["y"] == ((n,) if case.kind == "categorical" else (n, case.out))

    spec = model.spec(case.num_features)
    assert dict(zip(spec.paths, spec.shapes)) == shapes
    assert len(model.latent_sites(case.num_features)) == len(latent)
    assert set(model.latent_sites(case.num_features)) == latent
    init = jax.eval_shape(lambda: model.init_params(x, seed=case.seed))
    assert {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(dict(init["params"]), sep=".").items()} == shapes

    # Each parameter's prior is the one the matching rules assign it: the log density of
    # each site at random values against the prior's formula. Per entry the float32 log
    # density -½((v − loc)/σ)² − log σ − ½ log 2π is within 6U of the sum of the magnitudes
    # of its parts (σ itself is rounded to float32); summing k entries adds at most k·U
    # times the sum of magnitudes.
    rng = np.random.default_rng([case.seed, 3])
    values = {p: rng.normal(scale=2.0, size=s).astype(np.float32) for p, s in shapes.items()}
    values.update({name: np.float32(rng.uniform(0.1, 2.0)) for name in case.likelihood_sites})

    def log_probs(values):
        trace = handlers.trace(handlers.substitute(model.model, data=values)).get_trace(x, y)
        return {name: s["fn"].log_prob(s["value"]) for name, s in trace.items() if s["type"] == "sample"}, trace["y"]["value"]

    got, y_value = jax.jit(log_probs)(values)  # one compilation instead of one per operation
    np.testing.assert_array_equal(np.asarray(y_value), y)
    for path, shape in shapes.items():
        loc, std = prior_loc_std(expected_prior(case.prior, path), shape)
        value = values[path].astype(np.float64)
        z2 = ((value - loc) / std) ** 2
        magnitudes = np.sum(0.5 * z2 + abs(math.log(std)) + HALF_LOG_2PI)
        expected = np.sum(-0.5 * z2 - math.log(std) - HALF_LOG_2PI)
        assert abs(float(got[path]) - expected) <= (value.size + 6) * U * magnitudes, path


# --- 2. log joint --------------------------------------------------------------------


@pytest.mark.extended  # test_model checks the log joint against hand-written densities
@examples(4)
@given(case=cases(), n=st.integers(1, 16), x_scale=st.sampled_from([1e-2, 1.0, 30.0]))
def test_log_joint_at_a_prior_draw_is_finite(case, n, x_scale):
    model = case.model()
    x, y = case.inputs(n, x_scale), case.targets(n)
    draws = model.sample_prior(case.num_features, 1, seed=case.seed)
    assert set(draws) == set(model.latent_sites(case.num_features))
    params = {k: v[0] for k, v in draws.items()}
    log_joint = jax.jit(lambda p: log_density(model.model, (x, y), {}, p)[0])(params)
    assert np.isfinite(float(log_joint))


# --- 3. prior predictive -------------------------------------------------------------


@pytest.mark.extended  # test_model checks the prior predictive, test_fit the decomposition
@examples(5)
@given(case=cases(), n=st.integers(1, 12), num_samples=st.integers(1, 40))
def test_prior_predictive_shapes_and_variance_decomposition(case, n, num_samples):
    model = case.model()
    pred = model.prior_predictive(case.inputs(n), num_samples=num_samples, seed=case.seed)
    check_decomposition(pred, num_samples, n, case.out)
    assert pred.y_samples.shape[:2] == (num_samples, n)


# --- 4. MAP <-> L2 -------------------------------------------------------------------


@st.composite
def l2_cases(draw):
    """Gaussian noise σ fixed, Normal(0, σ_p) on every weight (written in several equivalent ways)."""
    prior_scale = draw(st.floats(0.1, 3.0))

    def same_normal(num_layers):
        return prior_specs(num_layers, leaves=st.just(bnn.Normal(prior_scale)))

    case = draw(cases(likelihoods=("gaussian",), priors=same_normal))
    return case, prior_scale


@examples(3)
@given(l2=l2_cases(), n=st.integers(1, 30), theta_ratio=st.floats(0.3, 3.0))
def test_map_objective_is_mse_plus_weight_decay(l2, n, theta_ratio):
    case, prior_scale = l2
    sigma = case.noise
    model = case.model()
    x = case.inputs(n)
    rng = np.random.default_rng([case.seed, 2])
    spec = model.spec(case.num_features)
    params = {p: (theta_ratio * prior_scale * rng.normal(size=s)).astype(np.float32) for p, s in zip(spec.paths, spec.shapes)}
    f = np.asarray(jax.jit(model.apply)({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(x)))
    y = (f + sigma * rng.normal(scale=rng.uniform(0.3, 3.0), size=f.shape)).astype(np.float32)
    log_joint = jax.jit(lambda p: log_density(model.model, (x, y), {}, p)[0])(params)  # one program, not one per op
    neg = -float(log_joint)

    r = y.astype(np.float64) - f.astype(np.float64)  # f is the network evaluated in float32, as in the model
    theta = np.concatenate([v.astype(np.float64).ravel() for v in params.values()])
    d, m = theta.size, r.size
    sse, sq = float(np.sum(r**2)), float(np.sum(theta**2))
    const = m * math.log(sigma * math.sqrt(2 * math.pi)) + d * math.log(prior_scale * math.sqrt(2 * math.pi))

    # Error bound: each of the m + d float32 log densities is within 6U of the sum of the
    # magnitudes of its parts (r²/2σ², |log σ|, ½ log 2π; the same for the prior), σ and σ_p
    # being rounded to float32 too; adding the m + d terms (in any order, plus a few sums of
    # sites) costs at most (m + d + 8)·U times the sum of all magnitudes. For these sizes
    # (m + d ≤ 2500) tol stays below a few per cent of the penalty ‖θ‖²/2σ_p² (θ drawn at
    # 0.3–3 σ_p), so a wrong λ or a missing factor 2 would show.
    magnitudes = (
        sse / (2 * sigma**2)
        + m * (abs(math.log(sigma)) + HALF_LOG_2PI)
        + sq / (2 * prior_scale**2)
        + d * (abs(math.log(prior_scale)) + HALF_LOG_2PI)
    )
    tol = (m + d + 14) * U * magnitudes
    assert abs(neg - (sse / (2 * sigma**2) + sq / (2 * prior_scale**2) + const)) <= tol

    # The same identity in the loss forms of bnn.prior_scale_to_weight_decay.
    forms = {"mse": (2 * sigma**2 / n, sse / n), "sse": (2 * sigma**2, sse), "half_mse": (sigma**2 / n, sse / (2 * n))}
    for loss, (factor, data_term) in forms.items():
        lam = bnn.prior_scale_to_weight_decay(prior_scale, sigma, n, loss=loss)
        penalty = lam * sq / 2 if loss == "half_mse" else lam * sq
        assert abs(factor * (neg - const) - (data_term + penalty)) <= factor * tol, loss


# --- 5. posterior predictive ---------------------------------------------------------


@pytest.mark.extended  # test_fit checks the exact decomposition of a fit's draws in the default run
@examples(3)
@given(
    case=cases(max_width=16),
    n=st.integers(2, 16),
    num_samples=st.integers(2, 30),
    predictive=st.sampled_from(["glm", "nn"]),
    normalize=st.booleans(),
)
def test_posterior_predictive_variance_decomposes(case, n, num_samples, predictive, normalize):
    """Laplace fits: draws through the linearised network ("glm") or the network itself ("nn").

    (A short SVI fit would do as well, but its set-up costs 5–15 s per new architecture.)
    """
    model = case.model()
    x, y = case.inputs(n), case.targets(n)
    subset = "last_layer" if case.depth else "all"
    fit = model.fit(
        x,
        y,
        method="laplace",
        seed=case.seed,
        normalize=normalize,
        num_steps=10,
        num_samples=num_samples,
        subset=subset,
        predictive=predictive,
    )
    assert fit.num_draws == num_samples
    check_decomposition(fit.predict(case.inputs(7, salt=1)), num_samples, 7, case.out)


# --- 6. save / load ------------------------------------------------------------------


@pytest.mark.extended  # the contract's round trip covers every method once
@examples(5)
@given(
    case=cases(max_width=16),
    n=st.integers(3, 16),
    method=st.sampled_from(["map", "laplace"]),
    normalize=st.booleans(),
)
def test_saved_fit_predicts_exactly_like_the_original(case, n, method, normalize):
    model = case.model()
    x, y = case.inputs(n), case.targets(n)
    options = {
        "map": {"num_steps": 10},
        "laplace": {"num_steps": 10, "num_samples": 5, "subset": "last_layer" if case.depth else "all"},
    }[method]
    fit = model.fit(x, y, method=method, seed=case.seed, normalize=normalize, **options)
    x_new = case.inputs(6, salt=1)
    with tempfile.TemporaryDirectory() as tmp:
        fit.save(Path(tmp) / "fit")
        loaded = bnn.load(Path(tmp) / "fit")
    assert loaded.method == method and loaded.num_features == case.num_features
    assert set(loaded.draws) == set(fit.draws)
    for site in fit.draws:
        np.testing.assert_array_equal(np.asarray(loaded.draws[site]), np.asarray(fit.draws[site]), err_msg=site)
    a, b = fit.predict(x_new), loaded.predict(x_new)
    for name in ("mean", "std", "epistemic_var", "aleatoric_var", "samples", "variance_samples"):
        np.testing.assert_array_equal(np.asarray(getattr(b, name)), np.asarray(getattr(a, name)), err_msg=name)


# --- 7. normalize=True is affine-equivariant -----------------------------------------


@st.composite
def positive_scales(draw, width: int):
    """A positive scale per column (a scalar or one per column), log-uniform in [1e-2, 1e2]."""
    if draw(st.booleans()):
        return np.full(width, 10.0 ** draw(st.floats(-2.0, 2.0)))
    return 10.0 ** np.asarray(draw(st.lists(st.floats(-2.0, 2.0), min_size=width, max_size=width)))


@st.composite
def affine_cases(draw):
    case = draw(cases(activations=SMOOTH_ACTIVATIONS, max_depth=2, noise=st.floats(0.5, 2.0)))
    a = draw(positive_scales(case.num_features))
    b = a * np.asarray(draw(st.lists(st.floats(-3.0, 3.0), min_size=case.num_features, max_size=case.num_features)))
    if case.continuous:
        c = draw(positive_scales(case.out))
        d = c * np.asarray(draw(st.lists(st.floats(-3.0, 3.0), min_size=case.out, max_size=case.out)))
    else:  # class labels are never transformed
        c, d = np.ones(case.out), np.zeros(case.out)
    return case, a, b, c, d


def _affine(v: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return (scale[None] * v.astype(np.float64) + shift[None]).astype(np.float32)


def _standardising_error(v: np.ndarray) -> float:
    """Largest error of the standardised ``v`` in float32, in units of its std.

    Rounding ``v`` to float32 (U·|v|), its mean and std (pairwise sums, ≲ log₂ n · U · max|v|),
    the subtraction and the division: at most 16U·(1 + max|v| / std(v)) per entry for n ≤ 2¹⁰.
    """
    v = v.astype(np.float64)
    return float(16 * U * (1 + np.max(np.abs(v) / v.std(0))))


@pytest.mark.extended  # test_normalize checks a normalised fit in original units against least squares
@examples(4)
@given(affine=affine_cases(), n=st.integers(6, 24))
def test_normalized_fit_is_equivariant_under_affine_maps_of_the_data(affine, n):
    case, a, b, c, d = affine
    model = case.model()
    x, y = case.inputs(n), case.targets(n)
    x_new = case.inputs(9, salt=1)
    x2, x2_new = _affine(x, a, b), _affine(x_new, a, b)
    y2 = _affine(y, c, d) if case.continuous else y

    # Plain gradient descent: a smooth map of the data (smooth activations). Adam is not:
    # its first step is lr·sign(g), and gradients that vanish by the symmetry of standardised
    # data (the output bias at a centred start) are pure rounding noise whose sign differs.
    def fit(xs, ys):
        return model.fit(xs, ys, method="map", normalize=True, seed=case.seed, num_steps=20, optimizer=optax.sgd(5e-3))

    p1, p2 = fit(x, y).predict(x_new), fit(x2, y2).predict(x2_new)

    # Both fits see the same standardised data up to δ (see _standardising_error) and start
    # from the same parameters. A gradient step θ ← θ − η∇L(θ) carries a perturbation of θ
    # through I − η∇²L and adds η times the change of ∇L with the data; while η·λ_max < 2 the
    # step expands perturbations only along negative curvature, by 1 + η|λ_min|. On
    # standardised data, with at most 32 units, noise scales ≥ 0.5 (fixed, or learned from 1)
    # and priors ≥ 0.1, λ_max ≲ 100 < 2/η = 400 and |λ_min| (residual-weighted second
    # derivatives of the network) ≲ 40, so 20 steps at η = 5·10⁻³ amplify δ by at most
    # e^(20·5·10⁻³·40) ≈ 55. With the O(1) sensitivity of the network to its inputs,
    # standardised predictions agree within τ = 100·δ, a few 10⁻⁴ (the fits themselves move
    # the predictions by 10⁻² to a few std, so a mapping error would show).
    delta = max(_standardising_error(v) for v in (x, x2, x_new, x2_new))
    y_scale = np.ones(case.out)
    if case.continuous:
        delta = max(delta, _standardising_error(y), _standardising_error(y2))
        y_scale = y.astype(np.float64).std(0)
    tau = 100 * delta
    # Mapping back to original units rounds once more: a few U of |c·m| + |d|.
    mean1 = np.asarray(p1.mean, np.float64)
    mean2 = np.asarray(p2.mean, np.float64)
    expected_mean = c[None] * mean1 + d[None]
    atol = c[None] * y_scale[None] * tau + 8 * U * (np.abs(c[None] * mean1) + np.abs(d[None]))
    np.testing.assert_array_less(np.abs(mean2 - expected_mean), atol)
    for name in ("std", "epistemic_std", "aleatoric_std"):
        s1, s2 = np.asarray(getattr(p1, name), np.float64), np.asarray(getattr(p2, name), np.float64)
        bound = c[None] * y_scale[None] * tau + 8 * U * c[None] * s1
        np.testing.assert_array_less(np.abs(s2 - c[None] * s1), bound, err_msg=name)


@st.composite
def power_of_two_cases(draw):
    case = draw(cases(max_depth=2))
    a = 2.0 ** np.asarray(draw(st.lists(st.integers(-6, 6), min_size=case.num_features, max_size=case.num_features)))
    c = 2.0 ** np.asarray(draw(st.lists(st.integers(-6, 6), min_size=case.out, max_size=case.out)))
    return case, a, c if case.continuous else np.ones(case.out)


@pytest.mark.extended  # the exact twin of the affine equivariance above
@examples(4)
@given(scaled=power_of_two_cases(), n=st.integers(3, 24))
def test_normalized_fit_is_exactly_equivariant_under_power_of_two_scalings(scaled, n):
    """Scaling by powers of two commutes with float rounding, so here equivariance is exact.

    x·a and y·c are exact, and so are their means, standard deviations and standardised
    values: both fits see bit-identical data, run the same default optimiser (Adam, any
    activation) and return bit-identical draws; mapping predictions back multiplies by c
    exactly. Log-likelihoods in original units shift by the Jacobian −Σ log c, up to the
    rounding of that one float32 addition and of the logarithms of the scales.
    """
    case, a, c = scaled
    model = case.model()
    x, y = case.inputs(n), case.targets(n)
    x_new = case.inputs(5, salt=1)
    y2 = (y * c[None]).astype(np.float32) if case.continuous else y
    fits = [
        model.fit(xs, ys, method="map", normalize=True, seed=case.seed, num_steps=20)
        for xs, ys in ((x, y), ((x * a[None]).astype(np.float32), y2))
    ]
    for site in fits[0].draws:
        np.testing.assert_array_equal(np.asarray(fits[1].draws[site]), np.asarray(fits[0].draws[site]), err_msg=site)
    p1, p2 = fits[0].predict(x_new), fits[1].predict((x_new * a[None]).astype(np.float32))
    for name in ("mean", "std", "epistemic_std", "aleatoric_std"):
        expected = c[None] * np.asarray(getattr(p1, name), np.float64)
        np.testing.assert_array_equal(np.asarray(getattr(p2, name), np.float64), expected, err_msg=name)
    ll1, ll2 = (np.asarray(f.log_likelihood(), np.float64) for f in fits)
    shift = float(np.sum(np.log(c)))
    logs = (
        float(np.sum(np.abs(np.log(y.astype(np.float64).std(0))))) + float(np.sum(np.abs(np.log(c)))) if case.continuous else 0.0
    )
    np.testing.assert_array_less(np.abs(ll2 - (ll1 - shift)), 4 * U * (np.abs(ll1) + np.abs(ll2) + logs) + 1e-30)


# --- 8. strict prior matching --------------------------------------------------------


@st.composite
def broken_priors(draw):
    """A valid prior dict for a random MLP, then one documented mistake: (spec, mistake, path involved)."""
    depth = draw(st.integers(0, 3))
    features = tuple(draw(st.lists(st.integers(1, 32), min_size=depth + 1, max_size=depth + 1)))
    num_features = draw(st.integers(1, 5))
    spec = draw(prior_specs(depth + 1, single=False))
    paths = layer_paths(depth + 1)
    mistake = draw(st.sampled_from(["unknown key", "uncovered path", "overlapping patterns"]))
    path = draw(st.sampled_from(paths))
    layer, kind = path.split(".")
    if mistake == "unknown key":
        key = draw(st.sampled_from([f"Dense_{depth + 1}.kernel", f"Dense_{depth + 1}.*", "*.kernal", f"{layer}.weight"]))
        spec = {**spec, key: bnn.Normal(1.0)}
    elif mistake == "uncovered path":
        spec = {k: v for k, v in spec.items() if not (k == path or k == "*" or (is_pattern(k) and fnmatch.fnmatchcase(path, k)))}
    else:
        spec = {k: v for k, v in spec.items() if k != path}
        spec.update({f"*.{kind}": bnn.Normal(1.0), f"{layer}.*": bnn.Normal(2.0)})
    return bnn.MLP(features), num_features, spec, mistake, path, paths


@examples(30)
@given(broken=broken_priors())
def test_prior_mistakes_raise_and_name_the_valid_paths(broken):
    net, num_features, spec, mistake, path, paths = broken
    try:
        bnn.BNN(net, prior=spec, likelihood=bnn.Gaussian()).spec(num_features)
    except ValueError as err:
        message = str(err)
    else:
        raise AssertionError(f"{mistake}: no error for prior {spec}")
    if mistake == "overlapping patterns":  # the message names a path that two patterns match
        patterns = [k for k in spec if k != "*" and is_pattern(k)]
        clashes = [p for p in paths if p not in spec and sum(fnmatch.fnmatchcase(p, k) for k in patterns) > 1]
        assert path in clashes and any(repr(p) in message for p in clashes), message
    else:  # the README promises the list of valid paths for these two
        assert all(p in message for p in paths), message
