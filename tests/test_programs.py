"""The program cache: keys derived from the builder and its settings, never assembled by hand."""

import jax
import numpy as np
import optax
import pytest

import bnn
from bnn._programs import Programs, settings_key

BUILT = []


def _counting_builder(model, **settings):
    BUILT.append(settings)
    return object()


SETTINGS = {"num_warmup": 10, "target": 0.9, "dense": False, "method": "map", "batch_size": None, "paths": ("a", "b"),
            "optimizer": optax.adam(1e-2)}
CHANGED = {"num_warmup": 11, "target": 0.95, "dense": True, "method": "mle", "batch_size": 8, "paths": ("a",),
           "optimizer": optax.adam(2e-2)}


def test_changing_any_setting_builds_a_new_program_and_changing_none_reuses_it():
    programs = Programs()
    BUILT.clear()
    first = programs.get(_counting_builder, None, **SETTINGS)
    assert programs.get(_counting_builder, None, **{**SETTINGS, "optimizer": optax.adam(1e-2)}) is first
    assert programs.get(_counting_builder, None, **dict(reversed(SETTINGS.items()))) is first  # order is not a setting
    assert len(BUILT) == 1 and BUILT[0] == SETTINGS
    for name, value in CHANGED.items():
        other = programs.get(_counting_builder, None, **{**SETTINGS, name: value})
        assert other is not first, name
    assert len(programs) == len(BUILT) == 1 + len(CHANGED)
    # a setting left out is another key too (the builder would see its default)
    programs.get(_counting_builder, None, **{k: v for k, v in SETTINGS.items() if k != "dense"})
    assert len(programs) == 2 + len(CHANGED)
    with jax.enable_x64(True):  # float64 programs are their own
        assert programs.get(_counting_builder, None, **SETTINGS) is not first
    assert len(programs.built_by(_counting_builder)) == len(programs)


def test_values_of_other_types_or_builders_never_share_a_key():
    assert settings_key(1) != settings_key(1.0) != settings_key(True)
    assert settings_key(np.float32(0.5)) == settings_key(np.float32(0.5)) != settings_key(np.float64(0.5))
    assert settings_key(optax.sgd(0.1)) != settings_key(optax.adam(0.1))
    big = np.zeros(10_000)
    assert settings_key(big) != settings_key(np.zeros(10_000))  # large arrays: by identity only
    programs = Programs()

    def local_builder(model):
        return object()

    with pytest.raises(TypeError, match="module-level function"):
        programs.get(local_builder, None)  # a closure could capture values its key does not hold
    with pytest.raises(TypeError, match="module-level function"):
        programs.get(lambda model: 0, None)


def test_fits_reuse_programs_exactly_when_their_settings_match(sine_data):
    from bnn.inference.optimize import _point_program

    x, y = sine_data
    bnn._programs.clear()  # models with equal parts share programs: start with none compiled
    model = bnn.BNN(bnn.MLP((4, 1), activation="tanh"), likelihood=bnn.Gaussian(scale=0.1))
    fit = lambda **o: model.fit(x, y, method="map", num_steps=20, **o)  # noqa: E731
    fit()
    fit(seed=3)  # seeds and data values are arguments, not settings
    assert len(model._programs.built_by(_point_program)) == 1
    fit(batch_size=10)
    fit(learning_rate=0.02)
    model.fit(x, y, method="mle", num_steps=20)
    model.fit(x[:30], y[:30], method="map", num_steps=20)  # another number of rows
    assert len(model._programs.built_by(_point_program)) == 5


def test_models_with_equal_parts_share_one_store_and_others_do_not():
    """A model built again from equal parts (a notebook cell run twice) reuses the compiled
    programs; another module, prior, likelihood or precision gets its own (the module's
    initialisers are shared by every model of that module); a flax.nnx module,
    which has no value equality, keeps a store of its own model."""
    from flax import nnx

    from bnn import _programs

    def make(**change):
        parts = dict(module=bnn.MLP((3, 1), activation="tanh"), prior={"*.kernel": bnn.Normal(0.5), "*": bnn.Normal(1.0)},
                     likelihood=bnn.Gaussian(scale=0.1))
        return bnn.BNN(**{**parts, **change})

    _programs.clear()
    first, again = make(), make()
    assert first._programs is again._programs
    others = [make(module=bnn.MLP((4, 1), activation="tanh")), make(prior=bnn.Normal(0.5)),
              make(prior={"*": bnn.Normal(1.0), "*.kernel": bnn.Normal(0.5)}),  # key order kept (a conservative key)
              make(likelihood=bnn.Gaussian()), make(matmul_precision="default")]
    stores = {id(m._programs) for m in others}
    assert len(stores) == len(others) and id(first._programs) not in stores
    # the initialisers depend on the module alone: shared unless the module differs
    assert [m._init_programs is first._init_programs for m in others] == [False, True, True, True, True]
    nnx_model = bnn.BNN(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    assert bnn.BNN(nnx_model.module.module)._programs is not nnx_model._programs
    _programs.clear()
    assert make()._programs is not first._programs


def test_a_model_s_parts_cannot_change_under_its_programs():
    """Programs are cached by the model's parts, so the parts are read-only: a dict prior is kept
    as a read-only copy (changing the caller's dict later changes nothing) and assigning a part raises."""
    priors = {"*.kernel": bnn.Normal(0.5), "*": bnn.Normal(1.0)}
    model = bnn.BNN(bnn.MLP((3, 1)), prior=priors)
    priors["*"] = bnn.Normal(9.0)
    assert model.prior["*"] == bnn.Normal(1.0) and model.prior == {"*.kernel": bnn.Normal(0.5), "*": bnn.Normal(1.0)}
    with pytest.raises(TypeError):
        model.prior["*"] = bnn.Normal(9.0)
    for part in ("module", "prior", "likelihood", "matmul_precision"):
        with pytest.raises(AttributeError):
            setattr(model, part, getattr(model, part))
    assert "prior={'*.kernel': Normal(scale=0.5" in repr(model)
