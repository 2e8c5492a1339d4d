"""Flax NNX modules lift like linen ones: paths, seeds, every method, save/load, and the linen oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bnn

pytestmark = pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")

X, Y = bnn.datasets.sine(n=30, noise=0.1, seed=0)
GRID = bnn.datasets.sine_grid(17)
PATHS = ("layers.0.bias", "layers.0.kernel", "layers.1.bias", "layers.1.kernel", "linear1.bias", "linear1.kernel")
EPS = float(jnp.finfo(jnp.float32).eps)


class NNXMLP(nnx.Module):
    """``Linear(1, h) → tanh → Linear(h, h) → tanh → Linear(h, 1)``: one layer in an attribute, two in an ``nnx.List``."""

    def __init__(self, hidden: int = 4, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(1, hidden, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs), nnx.Linear(hidden, 1, rngs=rngs)])

    def __call__(self, x):
        x = jnp.tanh(self.linear1(x))
        x = jnp.tanh(self.layers[0](x))
        return self.layers[1](x)


def _model(hidden=4, **kwargs):
    kwargs.setdefault("likelihood", bnn.Gaussian(scale=0.1))
    return bnn.BNN(NNXMLP(hidden, rngs=nnx.Rngs(0)), **kwargs)


def _flat(variables):
    return bnn.lifting.flatten_params(variables)


@pytest.mark.extended  # the default run reads every NNX site by its dotted path in test_nnx_and_linen_mlps_have_the_same_log_joint_and_map_fit
def test_sites_are_the_dotted_nnx_paths():
    model = _model()
    spec = model.spec(1)
    assert spec.paths == PATHS and spec.width == 1
    assert dict(zip(spec.paths, spec.shapes))["layers.0.kernel"] == (4, 4)
    draws = model.sample_prior(1, 3)
    assert set(draws) == set(PATHS) and not any("/" in k for k in draws)
    assert draws["linear1.kernel"].shape == (3, 1, 4)


def test_state_other_than_params_is_refused_by_name():
    class WithState(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(1, 2, rngs=rngs)
            self.norm = nnx.BatchNorm(2, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.norm(self.linear(x)))

    with pytest.raises(ValueError, match=r"other than nnx.Param.*drop.rngs.key \(RngKey\).*norm.mean \(BatchStat\)"):
        bnn.BNN(WithState(nnx.Rngs(0)))
    with pytest.raises(TypeError, match="flax.nnx.Module instance; got int"):
        bnn.BNN(3)


def test_inputs_of_the_wrong_width_name_both_widths():
    model = _model()
    with pytest.raises(ValueError, match=r"`x` has 2 feature column\(s\).*takes inputs of width 1"):
        model.fit(np.c_[X, X], Y, num_steps=2)
    fit = model.fit(X, Y, num_steps=2)
    trained = model.module.merge(fit.params)  # the fitted network back as an nnx.Module
    assert isinstance(trained, NNXMLP) and trained is not model.module.module
    np.testing.assert_allclose(trained(jnp.asarray(GRID)), fit.predict(GRID).mean, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="1 feature column"):
        fit.predict(np.c_[GRID, GRID])


@pytest.mark.extended  # the bridge's seeds; the default run checks the bridge's log joint and MAP fit against linen's
def test_seeds_redraw_random_arrays_and_keep_constant_ones():
    model = _model(hidden=16)
    a, b, again = (_flat(model.init_params(X, s)) for s in (0, 1, 0))
    built = _flat(model.module.variables)
    for path in PATHS:
        np.testing.assert_array_equal(a[path], again[path])  # same seed, same start
        if path.endswith("bias"):  # nnx.Linear's zero biases are a constant initialisation
            np.testing.assert_array_equal(a[path], 0.0)
        else:
            assert not np.allclose(a[path], b[path]), path
            assert not np.allclose(a[path], built[path]), path
    # the redrawn (16, 16) kernel has the constructed scale: rms of 256 standard normals is within ~4.4% (1 sd)
    rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    assert rms(a["layers.0.kernel"]) == pytest.approx(rms(built["layers.0.kernel"]), rel=0.25)
    ensemble = model.fit(X, Y, method="ensemble", num_members=3, num_steps=1)
    kernels = np.asarray(ensemble.draws["linear1.kernel"])
    assert len({k.tobytes() for k in kernels}) == 3  # members start (and end) apart


def test_an_initializer_in_param_metadata_is_used():
    def sevens(key, shape, dtype):
        return jnp.full(shape, 7.0, dtype) + 0.0 * jax.random.normal(key, shape, dtype)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(1, 1, kernel_metadata={"initializer": sevens}, rngs=rngs)

        def __call__(self, x):
            return self.dense(x)

    model = bnn.BNN(Net(nnx.Rngs(0)), likelihood=bnn.Gaussian(scale=0.1))
    start = _flat(model.init_params(X, 5))
    np.testing.assert_array_equal(start["dense.kernel"], 7.0)
    fit = model.fit(X, Y, method="mle", num_steps=2)
    assert np.all(np.isfinite(fit.predict(GRID).mean))


@pytest.mark.parametrize("method, options", [
    pytest.param("mle", {"num_steps": 30}, marks=pytest.mark.extended),
    pytest.param("map", {"num_steps": 30}, marks=pytest.mark.extended),  # MAP through the bridge: test_inputs_of_the_wrong_width_name_both_widths
    pytest.param("ensemble", {"num_members": 2, "num_steps": 30}, marks=pytest.mark.extended),
    pytest.param("laplace", {"num_steps": 30, "num_samples": 5}, marks=pytest.mark.extended),
    pytest.param("svi", {"num_steps": 30, "num_samples": 5}, marks=pytest.mark.extended),
    pytest.param("nuts", {"num_chains": 1, "num_warmup": 10, "num_samples": 5, "max_tree_depth": 3,
                          "map_options": {"num_steps": 30}}, marks=pytest.mark.extended),
    pytest.param("mclmc", {"num_chains": 2, "num_warmup": 20, "num_samples": 10, "thinning": 1,
                           "map_options": {"num_steps": 30}}, marks=pytest.mark.extended),
])
# The runs are tiny: this checks that every method works through the NNX bridge, not how well
# it samples (that is tested on linen models elsewhere), so sampler-quality warnings are allowed.
@pytest.mark.filterwarnings("ignore:.*MCLMC steps produced a non-finite state:UserWarning")
@pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")
@pytest.mark.filterwarnings("ignore:.*had not settled:UserWarning")
def test_every_method_fits_an_nnx_model(method, options):
    fit = _model(likelihood=bnn.Gaussian()).fit(X, Y, method=method, **options)
    assert set(PATHS) <= set(fit.draws)
    pred = fit.predict(GRID)
    assert pred.mean.shape == (17, 1) and np.all(np.isfinite(pred.mean)) and np.all(np.isfinite(pred.std))


def test_dict_priors_by_nnx_path_are_strict():
    model = _model(prior={"linear1.kernel": bnn.Normal(2.0), "*.bias": bnn.Normal(0.5), "*": bnn.FanInNormal(1.0)})
    priors = model.spec(1).priors
    assert priors["linear1.kernel"] == bnn.Normal(2.0) and priors["layers.1.bias"] == bnn.Normal(0.5)
    assert priors["layers.0.kernel"] == bnn.FanInNormal(1.0)
    with pytest.raises(ValueError, match=r"linear9.kernel.*linear1.kernel"):
        _model(prior={"linear9.kernel": bnn.Normal(1.0), "*": bnn.Normal(1.0)}).spec(1)


@pytest.mark.extended  # test_io's custom-network round trip runs in the default run
def test_save_and_load_with_the_module(tmp_path):
    fit = _model(likelihood=bnn.Gaussian()).fit(X, Y, method="laplace", num_steps=30, num_samples=5)
    fit.save(tmp_path / "fit")
    spec = (tmp_path / "fit" / "spec.json").read_text()
    assert '"framework": "nnx"' in spec and "NNXMLP" in spec
    with pytest.raises(ValueError, match=r"custom nnx network .*NNXMLP.*module="):
        bnn.load(tmp_path / "fit")
    loaded = bnn.load(tmp_path / "fit", module=NNXMLP(rngs=nnx.Rngs(7)))  # weights come from the file
    a, b = fit.predict(GRID), loaded.predict(GRID)
    for name in ("mean", "epistemic_var", "aleatoric_var", "samples"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    with pytest.raises(ValueError, match="mismatched"):
        bnn.load(tmp_path / "fit", module=NNXMLP(hidden=5, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="mismatched"):
        bnn.load(tmp_path / "fit", module=bnn.MLP((4, 4, 1)))


# --- the oracle: an NNX MLP and bnn.MLP are the same model -----------------------------

LINEN_NAMES = {"linear1": "Dense_0", "layers.0": "Dense_1", "layers.1": "Dense_2"}


def _to_linen(flat):
    out = {}
    for path, value in flat.items():
        layer, _, leaf = path.rpartition(".")
        out[f"{LINEN_NAMES[layer]}.{leaf}" if layer in LINEN_NAMES else path] = value
    return out


def test_nnx_and_linen_mlps_have_the_same_log_joint_and_map_fit():
    prior = {"*.kernel": bnn.FanInNormal(1.5), "*": bnn.Normal(0.7)}
    nnx_model = _model(prior=prior, likelihood=bnn.Gaussian())
    linen_model = bnn.BNN(bnn.MLP((4, 4, 1), activation="tanh"), prior=prior, likelihood=bnn.Gaussian())
    params = {k: v for k, v in nnx_model.sample_prior(1, 1, seed=3).items()}
    params = {k: v[0] for k, v in params.items()}
    params["noise_scale"] = jnp.asarray(0.3)
    lp_nnx, ll_nnx = nnx_model.log_joint_terms(params, X, Y)
    lp_lin, ll_lin = linen_model.log_joint_terms(_to_linen(params), X, Y)
    # Error argument. Both models evaluate the same float32 operations on the same numbers; only the
    # order in which the per-site log-densities are added differs (sites sorted by path, and the paths
    # sort differently). Reordering a float32 sum of k terms moves it by at most ~k ulps of the sum of the
    # terms' magnitudes; the prior has k = 7 sites (6 weights + the noise scale). Per point, the
    # network output f may differ by a few ulps of the magnitudes in its dot products (same kernels,
    # possibly another summation order); the Gaussian log-density moves by |y - f| / σ² times that.
    spec = nnx_model.spec(1)
    assert spec.paths == PATHS  # the sites are the modules' dotted attribute paths
    magnitude = sum(float(jnp.sum(jnp.abs(spec.priors[p].distribution(s).log_prob(params[p]))))
                    for p, s in zip(spec.paths, spec.shapes)) + abs(float(lp_nnx))
    np.testing.assert_allclose(lp_nnx, lp_lin, rtol=0, atol=8 * EPS * magnitude)
    f = nnx_model.apply({k: params[k] for k in PATHS}, jnp.asarray(X))
    resid = np.abs(np.asarray(Y)[:, None] - np.asarray(f)) / 0.3**2
    per_point = 8 * EPS * (np.abs(np.asarray(ll_nnx)) + resid[:, 0] * (1.0 + np.abs(np.asarray(f))[:, 0] * 4))
    assert np.all(np.abs(np.asarray(ll_nnx) - np.asarray(ll_lin)) <= per_point)

    # MAP from the same weights: the same loss and gradients up to the rounding above, through 100 smooth
    # adam steps (each update a smooth function of the gradient); a 1e-5 relative band holds that margin.
    start = {k: v for k, v in params.items() if k in PATHS}
    fit_nnx = nnx_model.fit(X, Y, method="map", num_steps=100, init_params=start)
    fit_lin = linen_model.fit(X, Y, method="map", num_steps=100, init_params=_to_linen(start))
    a, b = np.asarray(fit_nnx.predict(GRID).mean), np.asarray(fit_lin.predict(GRID).mean)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.max(np.abs(b))))
