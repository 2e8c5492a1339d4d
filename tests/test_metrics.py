"""Metrics against independent references: closed forms, quadrature, naive sums, scipy, hand computation."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import bnn
from bnn import metrics


def _pred(m, v, kind="continuous"):
    """A ``Predictions`` from per-draw means ``(S, n, out)`` and variances ``(S, n or 1, out)``."""
    m = jnp.asarray(m, jnp.float32)
    v = jnp.asarray(v, jnp.float32)
    return bnn.Predictions(
        mean=jnp.mean(m, axis=0),
        epistemic_var=jnp.var(m, axis=0),
        aleatoric_var=jnp.broadcast_to(jnp.mean(v, axis=0), m.shape[1:]),
        samples=m,
        variance_samples=v,
        kind=kind,
    )


def _classifier(probs, kind="categorical"):
    p = jnp.asarray(probs, jnp.float32)
    return bnn.Predictions(mean=p, epistemic_var=jnp.zeros_like(p), aleatoric_var=p * (1 - p), samples=p[None],
                           variance_samples=(p * (1 - p))[None], kind=kind)


def _quad_crps(cdf, y, lo, hi):
    """∫ (F(t) − 1[t ≥ y])² dt by adaptive quadrature, split at the jump."""
    left, _ = integrate.quad(lambda t: cdf(t) ** 2, lo, y, limit=200, epsabs=1e-12, epsrel=1e-10)
    right, _ = integrate.quad(lambda t: (1.0 - cdf(t)) ** 2, y, hi, limit=200, epsabs=1e-12, epsrel=1e-10)
    return left + right


def _naive_crps(x, y, fair=False):
    """O(S²) energy form over axis 0."""
    s = x.shape[0]
    first = np.mean(np.abs(x - y[None]), axis=0)
    pair = np.sum(np.abs(x[:, None] - x[None]), axis=(0, 1))
    return first - 0.5 * pair / (s * (s - 1) if fair else s * s)


# ----------------------------------------------------------------------------- CRPS


@pytest.mark.parametrize(
    "mu, sigma, y", [(0.0, 1.0, 0.3), (1.5, 0.2, 1.1), (-2.0, 3.0, 4.0), (10.0, 0.5, 10.0), (0.0, 1.0, -6.0)]
)
def test_crps_gaussian_matches_quadrature(mu, sigma, y):
    expected = _quad_crps(lambda t: stats.norm.cdf(t, mu, sigma), y, mu - 40 * sigma, mu + 40 * sigma)
    got = float(metrics.crps_gaussian(mu, sigma, y))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_crps_gaussian_broadcasts_scalar_std():
    mean = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.5], [0.5], [0.5]])
    out = metrics.crps_gaussian(mean, 0.7, y)
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out[1, 0], metrics.crps_gaussian(1.0, 0.7, 0.5), rtol=1e-6)


def test_sample_crps_matches_naive_exactly():
    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(9, 6, 2)).astype(np.float32)
    y3 = rng.normal(size=(6, 2)).astype(np.float32)
    for fair in (False, True):
        np.testing.assert_allclose(metrics.crps(x3, y3, fair=fair), _naive_crps(x3, y3, fair), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics.crps(x3[..., 0], y3[:, 0], fair=fair), _naive_crps(x3[..., 0], y3[:, 0], fair),
                                   rtol=1e-5, atol=1e-6)
    # ties, a single draw (the absolute error), and (n, 1) targets for 3-D samples
    tied = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 2.0]], np.float32)[..., None]
    np.testing.assert_allclose(metrics.crps(tied, np.array([2.0, 0.0])), _naive_crps(tied, np.array([[2.0], [0.0]])),
                               rtol=1e-6)
    np.testing.assert_allclose(metrics.crps(x3[:1], y3), np.abs(x3[0] - y3), rtol=1e-6)
    assert metrics.crps(x3[..., :1], y3[:, 0]).shape == (6, 1)
    assert metrics.crps(x3[..., 0], y3[:, :1]).shape == (6,)


def test_sample_crps_precise_with_a_large_offset():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    y = rng.normal(size=4).astype(np.float32)
    np.testing.assert_allclose(metrics.crps(x + 1e4, y + 1e4), metrics.crps(x, y), atol=2e-3)


def test_sample_crps_of_gaussian_draws_matches_closed_form():
    """Within Monte Carlo error: the U-statistic's standard error is 2·sd(h₁)/√S."""
    rng = np.random.default_rng(2)
    n, s = 40, 4000
    mu = rng.normal(size=n)
    sigma = rng.uniform(0.3, 2.0, size=n)
    y = mu + sigma * rng.normal(size=n) * 1.5
    x = (mu[None] + sigma[None] * rng.normal(size=(s, n))).astype(np.float32)
    exact = np.asarray(metrics.crps_gaussian(mu, sigma, y), np.float64)
    for fair in (False, True):
        got = np.asarray(metrics.crps(x, y, fair=fair), np.float64)
        # first-order projection h₁(x) = ½|x − y| − ½ E|x − X'|, with E|x − X'| = A(x − μ, σ²)
        d = x - mu[None]
        a = 2 * sigma * stats.norm.pdf(d / sigma) + d * (2 * stats.norm.cdf(d / sigma) - 1)
        se = 2 * np.std(0.5 * np.abs(x - y[None]) - 0.5 * a, axis=0) / np.sqrt(s)
        bias = 0.0 if fair else sigma / np.sqrt(np.pi) / s  # the V-statistic's E|X − X'|/(2S)
        assert np.all(np.abs(got - exact - bias) < 4.5 * se), np.max(np.abs(got - exact - bias) / se)


def _mixture_cdf(m, v):
    return lambda t: float(np.mean(stats.norm.cdf(t, m, np.sqrt(v))))


@pytest.mark.parametrize("homoscedastic", [False, True])
def test_crps_predictive_matches_quadrature_of_mixture(homoscedastic):
    rng = np.random.default_rng(3)
    s, n, out = 7, 4, 2
    m = rng.normal(size=(s, n, out))
    v = rng.uniform(0.05, 1.5, size=(s, 1 if homoscedastic else n, out))
    y = rng.normal(size=(n, out)) * 1.5
    got = np.asarray(metrics.crps_predictive(_pred(m, v), y))
    assert got.shape == (n, out)
    vb = np.broadcast_to(v, m.shape)
    for i in range(n):
        for j in range(out):
            expected = _quad_crps(_mixture_cdf(m[:, i, j], vb[:, i, j]), y[i, j], -40.0, 40.0)
            np.testing.assert_allclose(got[i, j], expected, rtol=2e-5, atol=1e-6)


def test_crps_predictive_chunked_pairwise_term(monkeypatch):
    """Tiles of draw pairs (with a padded last block) give the same answer as quadrature."""
    rng = np.random.default_rng(4)
    s, n, out = 13, 3, 1
    monkeypatch.setattr(metrics, "CRPS_CHUNK_ELEMENTS", 16 * n * out)  # 4 × 4 tiles: blocks 4+4+4+1(+3 padding)
    m = rng.normal(size=(s, n, out))
    v = rng.uniform(0.05, 1.0, size=(s, n, out))
    y = rng.normal(size=(n,))
    got = np.asarray(metrics.crps_predictive(_pred(m, v), y))
    for i in range(n):
        expected = _quad_crps(_mixture_cdf(m[:, i, 0], v[:, i, 0]), y[i], -40.0, 40.0)
        np.testing.assert_allclose(got[i, 0], expected, rtol=2e-5, atol=1e-6)


def test_crps_predictive_single_draw_is_gaussian():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(1, 10, 2))
    v = rng.uniform(0.1, 2.0, size=(1, 1, 2))
    y = rng.normal(size=(10, 2))
    np.testing.assert_allclose(metrics.crps_predictive(_pred(m, v), y),
                               metrics.crps_gaussian(m[0], np.sqrt(v[0]), y), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- NLL and calibration


def test_nll_of_mixture_matches_scipy():
    rng = np.random.default_rng(6)
    s, n, out = 5, 8, 2
    m = rng.normal(size=(s, n, out))
    v = rng.uniform(0.1, 1.0, size=(s, n, out))
    y = rng.normal(size=(n, out))
    dens = np.prod(stats.norm.pdf(y[None], m, np.sqrt(v)), axis=-1)  # (S, n): outputs independent given a draw
    np.testing.assert_allclose(metrics.nll(_pred(m, v), y), -np.log(np.mean(dens, axis=0)), rtol=1e-5)


def test_coverage_of_exact_predictive_matches_nominal():
    """y drawn from the predictive mixture itself: coverage ≈ level within binomial error."""
    rng = np.random.default_rng(7)
    s, n = 5, 20000
    m = rng.normal(size=(s, n, 1)) * 2.0
    v = rng.uniform(0.2, 1.0, size=(s, 1, 1))
    which = rng.integers(0, s, size=n)
    y = m[which, np.arange(n), 0] + np.sqrt(v[which, 0, 0]) * rng.normal(size=n)
    pred = _pred(m, v)
    levels, observed = metrics.calibration_curve(pred, y)
    np.testing.assert_allclose(levels, np.linspace(0.05, 0.95, 19))
    binomial_se = np.sqrt(levels * (1 - levels) / n)
    assert np.all(np.abs(observed - levels) < 4.5 * binomial_se), (observed - levels) / binomial_se
    for level in (0.5, 0.9):
        direct = float(np.mean(metrics.coverage(pred, y, level)))
        assert abs(direct - level) < 4.5 * np.sqrt(level * (1 - level) / n)
        np.testing.assert_allclose(metrics.calibration_curve(pred, y, [level])[1][0], direct, atol=2.0 / n)


def test_calibration_curve_detects_overconfidence():
    rng = np.random.default_rng(8)
    y = rng.normal(size=5000)
    narrow = _pred(np.zeros((1, 5000, 1)), np.full((1, 1, 1), 0.25))  # σ = 0.5 for data with σ = 1
    _, observed = metrics.calibration_curve(narrow, y, levels=[0.9])
    np.testing.assert_allclose(observed, 2 * stats.norm.cdf(0.5 * stats.norm.ppf(0.95)) - 1, atol=0.03)


# ----------------------------------------------------------------------------- classification

TINY_PROBS = np.array([
    [0.85, 0.10, 0.05],  # conf .85, bin 8, predicts 0, correct
    [0.13, 0.82, 0.05],  # conf .82, bin 8, predicts 1, wrong
    [0.33, 0.25, 0.42],  # conf .42, bin 4, predicts 2, correct
    [0.55, 0.30, 0.15],  # conf .55, bin 5, predicts 0, wrong
    [0.03, 0.02, 0.95],  # conf .95, bin 9, predicts 2, correct
])
TINY_LABELS = np.array([0, 2, 2, 1, 2])


def test_ece_and_reliability_by_hand():
    conf, acc, counts = metrics.reliability_curve(TINY_PROBS, TINY_LABELS, bins=10)
    np.testing.assert_array_equal(counts, [0, 0, 0, 0, 1, 1, 0, 0, 2, 1])
    full = counts > 0
    np.testing.assert_allclose(conf[full], [0.42, 0.55, 0.835, 0.95])
    np.testing.assert_allclose(acc[full], [1.0, 0.0, 0.5, 1.0])
    assert np.all(np.isnan(conf[~full])) and np.all(np.isnan(acc[~full]))
    # (2·|0.5 − 0.835| + |1 − 0.42| + |0 − 0.55| + |1 − 0.95|) / 5
    assert metrics.ece(TINY_PROBS, TINY_LABELS) == pytest.approx(0.37, abs=1e-12)
    # one bin: |accuracy − mean confidence|
    assert metrics.ece(TINY_PROBS, TINY_LABELS, bins=1) == pytest.approx(abs(0.6 - TINY_PROBS.max(1).mean()))
    # a classifier's Predictions is accepted too
    assert metrics.ece(_classifier(TINY_PROBS), TINY_LABELS) == pytest.approx(0.37, abs=1e-6)


def test_ece_bernoulli_forms_agree():
    p = np.array([0.72, 0.15, 0.95, 0.45])
    labels = np.array([1, 0, 0, 1])
    expected = (0.28 + 0.15 + 0.95 + 0.55) / 4
    for form in (p, p[:, None], np.stack([1 - p, p], axis=1)):
        assert metrics.ece(form, labels) == pytest.approx(expected, abs=1e-12)
    assert metrics.ece(_classifier(p[:, None], kind="binary"), labels) == pytest.approx(expected, abs=1e-6)


def test_ece_near_zero_when_calibrated():
    rng = np.random.default_rng(9)
    n = 200_000
    probs = rng.dirichlet(np.ones(3), size=n)
    u = rng.uniform(size=(n, 1))
    labels = np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1), 2)  # labels drawn from the probs
    assert metrics.ece(probs, labels) < 0.01
    sharpened = probs**3 / np.sum(probs**3, axis=1, keepdims=True)  # over-confident
    assert metrics.ece(sharpened, labels) > 0.05
    bern = rng.uniform(size=n)
    assert metrics.ece(bern, (rng.uniform(size=n) < bern).astype(int)) < 0.01


def test_brier_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    labels = np.array([0, 1])
    expected = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.7**2 + 0.6**2]
    np.testing.assert_allclose(metrics.brier(_classifier(probs), labels), expected, rtol=1e-6)
    # binary: two classes [1 − p, p], so 2 (p − y)²
    p = np.array([[0.8], [0.3]])
    np.testing.assert_allclose(metrics.brier(_classifier(p, kind="binary"), np.array([1, 1])),
                               [2 * 0.2**2, 2 * 0.7**2], rtol=1e-6)


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(5, 4, 2))
    with pytest.raises(ValueError, match="`y`"):
        metrics.crps(x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`y`"):
        metrics.crps(x[..., 0], np.zeros(3))
    with pytest.raises(ValueError, match="`samples`"):
        metrics.crps(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="`samples`"):
        metrics.crps(x[:1], np.zeros((4, 2)), fair=True)
    with pytest.raises(ValueError, match="`std`"):
        metrics.crps_gaussian(0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="`mean`.*`std`.*`y`"):
        metrics.crps_gaussian(np.zeros(3), 1.0, np.zeros(4))
    pred = _pred(x, np.ones((5, 1, 2)))
    with pytest.raises(ValueError, match="`y`"):
        metrics.crps_predictive(pred, np.zeros((4, 3)))
    for bad in ([0.0, 0.5], [0.5, 1.0], [[0.5]], []):
        with pytest.raises(ValueError, match="`levels`"):
            metrics.calibration_curve(pred, np.zeros((4, 2)), levels=bad)
    classifier = _classifier(TINY_PROBS)
    with pytest.raises(ValueError, match="continuous"):
        metrics.crps_predictive(classifier, TINY_LABELS)
    with pytest.raises(ValueError, match="continuous"):
        metrics.calibration_curve(classifier, TINY_LABELS)
    with pytest.raises(ValueError, match="`probs`.*sum to 1"):
        metrics.ece(TINY_PROBS * 2 / 3, TINY_LABELS)
    with pytest.raises(ValueError, match=r"`probs`.*\[0, 1\]"):
        metrics.ece(np.array([0.5, 1.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="`labels`"):
        metrics.ece(TINY_PROBS, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="`labels`"):
        metrics.reliability_curve(TINY_PROBS, TINY_LABELS[:3])
    with pytest.raises(ValueError, match="`bins`"):
        metrics.ece(TINY_PROBS, TINY_LABELS, bins=0)


# ----------------------------------------------------------------------------- plots


def test_calibration_and_reliability_plots_return_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(11)
    pred = _pred(rng.normal(size=(3, 50, 1)), np.ones((3, 1, 1)))
    ax = bnn.plot.calibration(pred, rng.normal(size=50))
    assert isinstance(ax, matplotlib.axes.Axes)
    _, given = plt.subplots()
    assert bnn.plot.reliability(TINY_PROBS, TINY_LABELS, ax=given) is given
    assert isinstance(bnn.plot.reliability(rng.uniform(size=30), rng.integers(0, 2, size=30), bins=5), matplotlib.axes.Axes)
    plt.close("all")
