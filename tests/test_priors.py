"""Prior specifications, strict path matching, and the prior ↔ weight-decay conversions."""

import math

import numpy as np
import pytest

import bnn
from bnn.priors import resolve

PATHS = ["Dense_0.bias", "Dense_0.kernel", "Dense_1.bias", "Dense_1.kernel"]


def test_single_prior_applies_everywhere():
    p = bnn.Normal(2.0)
    assert resolve(p, PATHS) == {k: p for k in PATHS}


def test_exact_beats_pattern_beats_default():
    a, b, c = bnn.Normal(1.0), bnn.Normal(2.0), bnn.FanInNormal(3.0)
    got = resolve({"*": a, "*.bias": b, "Dense_1.bias": c}, PATHS)
    assert got == {"Dense_0.bias": b, "Dense_0.kernel": a, "Dense_1.bias": c, "Dense_1.kernel": a}


def test_unknown_key_lists_valid_paths():
    with pytest.raises(ValueError) as err:
        resolve({"Dense_0.kernal": bnn.Normal(1.0), "*": bnn.Normal(1.0)}, PATHS)
    msg = str(err.value)
    assert "'Dense_0.kernal'" in msg and "match no parameter" in msg
    assert all(repr(p) in msg for p in PATHS)


def test_parameter_without_prior_lists_valid_paths():
    with pytest.raises(ValueError, match=r"'Dense_1.bias'.*have no prior.*Valid paths: 'Dense_0.bias'"):
        resolve({"*.kernel": bnn.Normal(1.0), "Dense_0.bias": bnn.Normal(1.0)}, PATHS)


def test_overlapping_patterns_are_ambiguous():
    with pytest.raises(ValueError, match="several `prior` patterns"):
        resolve({"Dense_0.*": bnn.Normal(1.0), "*.kernel": bnn.Normal(2.0), "*": bnn.Normal(1.0)}, PATHS)


def test_non_prior_values_are_rejected():
    with pytest.raises(TypeError, match=r"prior\['\*'\]"):
        resolve({"*": 1.0}, PATHS)


def test_wrong_key_raises_from_the_public_api(sine_data):
    x, y = sine_data
    model = bnn.BNN(bnn.MLP((10, 1)), prior={"Dense_9.kernel": bnn.Normal(1.0), "*": bnn.Normal(1.0)})
    with pytest.raises(ValueError, match=r"'Dense_9.kernel'.*Valid paths: 'Dense_0.bias', 'Dense_0.kernel', 'Dense_1.bias', 'Dense_1.kernel'"):
        model.fit(x, y, method="map", num_steps=1)


def test_fan_in_scale():
    p = bnn.FanInNormal(2.0)
    assert p.std((100, 5)) == pytest.approx(0.2)
    assert p.std((3, 3, 16, 8)) == pytest.approx(2.0 / math.sqrt(3 * 3 * 16))
    assert p.std((7,)) == 2.0  # biases keep the plain scale


@pytest.mark.parametrize("loss", ["mse", "half_mse", "sse"])
def test_conversions_round_trip_and_values(loss):
    lam = bnn.prior_scale_to_weight_decay(0.5, 0.1, 40, loss=loss)
    expected = 0.01 / 0.25 * (1.0 if loss == "sse" else 1 / 40)
    assert lam == pytest.approx(expected)
    assert bnn.weight_decay_to_prior_scale(lam, 0.1, 40, loss=loss) == pytest.approx(0.5)


def test_conversion_minimisers_agree():
    """The minimiser of each loss form equals the exact posterior mode (1-D, closed form)."""
    rng = np.random.default_rng(0)
    x, s, sp = rng.normal(size=40), 0.3, 0.4
    y = 1.3 * x + s * rng.normal(size=40)
    mode = (x @ y / s**2) / (x @ x / s**2 + 1 / sp**2)
    n = len(x)
    for loss, (a, b) in {"mse": (1 / n, 1.0), "half_mse": (1 / (2 * n), 0.5), "sse": (1.0, 1.0)}.items():
        lam = bnn.prior_scale_to_weight_decay(sp, s, n, loss=loss)
        # d/dw [a Σ(y − wx)² + b λ w²] = 0  ⇒  w = a xᵀy / (a xᵀx + b λ)
        assert a * (x @ y) / (a * (x @ x) + b * lam) == pytest.approx(mode, rel=1e-12), loss


@pytest.mark.parametrize("make", [lambda: bnn.Normal(-1.0), lambda: bnn.Normal(0.0), lambda: bnn.FanInNormal(float("nan"))])
def test_bad_prior_scales(make):
    with pytest.raises(ValueError, match="scale"):
        make()


def test_bad_conversion_inputs():
    with pytest.raises(ValueError, match="`noise_scale`"):
        bnn.prior_scale_to_weight_decay(1.0, -0.1, 40)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        bnn.prior_scale_to_weight_decay(1.0, 0.1, 40, loss="l2")
    with pytest.raises(ValueError, match="`n`"):
        bnn.weight_decay_to_prior_scale(1e-3, 0.1, 0)
