"""SVI programs are compiled once per model and settings, and reusing them changes nothing."""

import time

import numpy as np

import bnn


def _model():
    return bnn.BNN(bnn.MLP((8, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())


def _svi_programs(model):
    return [k for k in model._compiled if k[0][0] == "svi"]


def test_second_fit_reuses_the_compiled_programs_and_equals_a_fresh_model():
    x, y = bnn.datasets.sine(n=30, noise=0.1, seed=0)
    x2, y2 = bnn.datasets.sine(n=30, noise=0.1, seed=1)  # other data, same shapes
    options = dict(method="svi", num_steps=200, num_samples=50)
    model = _model()
    start = time.perf_counter()
    model.fit(x, y, seed=0, **options)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = model.fit(x2, y2, seed=3, **options)
    second = time.perf_counter() - start
    assert len(_svi_programs(model)) == 1
    # a cached program is only a faster route to the same numbers: a fresh model compiles its own
    fresh = _model().fit(x2, y2, seed=3, **options)
    for site in fresh.draws:
        np.testing.assert_array_equal(np.asarray(again.draws[site]), np.asarray(fresh.draws[site]))
    np.testing.assert_array_equal(again.info["loss"], fresh.info["loss"])
    # compilation dominates the first fit (seconds); the second only traces the guide's start
    assert second < 0.5 * first, (first, second)


def test_other_settings_compile_their_own_programs():
    x, y = bnn.datasets.sine(n=30, noise=0.1, seed=0)
    model = _model()
    model.fit(x, y, method="svi", num_steps=20, num_samples=5)
    model.fit(x, y, method="svi", num_steps=20, num_samples=5, guide="lowrank")
    model.fit(x, y, method="svi", num_steps=20, num_samples=5, batch_size=10)
    model.fit(x, y, method="svi", num_steps=30, num_samples=5)  # another schedule length
    assert len(_svi_programs(model)) == 4
