"""Save / load: identical predictions for every method; clear errors for bad folders."""

import json
import warnings

import numpy as np
import pytest

import bnn

from conftest import assert_same_predictions

pytestmark = pytest.mark.filterwarnings("ignore:.*NUTS transitions diverged:UserWarning")

X, Y = bnn.datasets.sine(n=40, seed=0)
GRID = bnn.datasets.sine_grid(25)
def _round_trip_cases():
    xh, yh = bnn.datasets.hill(n=60)
    prior = {"*.kernel": bnn.FanInNormal(2.0), "*": bnn.Normal(0.5)}
    return {
        "classifier": (bnn.BNN(bnn.MLP((4, 3), activation="relu"), prior=prior, likelihood=bnn.Categorical()), xh, yh % 3),
        "hetero": (bnn.BNN(bnn.MLP((4, 2)), likelihood=bnn.Heteroscedastic(min_scale=0.01)), X * 10, Y * 5 + 3),
        "poly": (bnn.BNN(bnn.Polynomial(degree=2), likelihood=bnn.Gaussian(scale=0.2)), X, Y),
    }


# the default run saves the richest case (a normalized classifier with a dict prior); the others repeat it
# over another likelihood and a custom network
@pytest.mark.parametrize("name", ["classifier", pytest.param("hetero", marks=pytest.mark.extended),
                                  pytest.param("poly", marks=pytest.mark.extended)])
@pytest.mark.extended  # the default run checks the round trip of every method (test_contract) and of a normalized classifier through the CLI (test_cli_table)
def test_round_trip_of_normalized_classifier_polynomial_and_dict_prior(tmp_path, name):
    model, x, y = _round_trip_cases()[name]
    fit = model.fit(x, y, method="laplace", normalize=True, num_steps=100, num_samples=10)
    fit.save(tmp_path / name)
    loaded = bnn.load(tmp_path / name)
    assert_same_predictions(fit, loaded, x[:9])
    assert loaded.model.prior == model.prior and loaded.model.likelihood == model.likelihood
    np.testing.assert_array_equal(loaded.normalizer.x_mean, fit.normalizer.x_mean)


def test_folder_is_inspectable(tmp_path):
    fit = bnn.BNN(bnn.MLP((3, 1)), likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=10)
    fit.save(tmp_path / "f")
    spec = json.loads((tmp_path / "f" / "spec.json").read_text())
    assert spec["network"] == {"type": "MLP", "features": [3, 1], "activation": "tanh", "custom_initializers": False}
    assert spec["likelihood"] == {"type": "Gaussian", "scale": 0.1, "noise_prior_scale": 1.0}
    with np.load(tmp_path / "f" / "arrays.npz") as npz:
        assert "draws/Dense_0.kernel" in npz.files and npz["draws/Dense_0.kernel"].shape == (1, 1, 3)


@pytest.fixture
def saved(tmp_path):
    fit = bnn.BNN(bnn.MLP((3, 1)), likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=10)
    return fit.save(tmp_path / "f")


def test_missing_and_corrupt_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder holding a saved bnn fit"):
        bnn.load(tmp_path / "nowhere")
    data = (saved / "arrays.npz").read_bytes()
    (saved / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"arrays.npz' is corrupt: its SHA-256 does not match"):
        bnn.load(saved)
    (saved / "arrays.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"arrays.npz' is missing"):
        bnn.load(saved)
    (saved / "spec.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        bnn.load(saved)
    (saved / "spec.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"spec.json' is missing"):
        bnn.load(saved)


def test_version_and_mismatched_network(saved):
    spec = json.loads((saved / "spec.json").read_text())
    (saved / "spec.json").write_text(json.dumps({**spec, "version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        bnn.load(saved)
    spec["network"]["features"] = [4, 1]
    (saved / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="mismatched"):
        bnn.load(saved)


def test_save_refuses_to_overwrite_and_custom_networks_load_with_module(saved, tmp_path):
    fit = bnn.BNN(bnn.MLP((3, 1)), likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=10)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fit.save(saved)
    fit.save(saved, overwrite=True)
    import flax.linen as nn

    class Custom(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(x)

    cube = lambda a: a**3  # noqa: E731
    networks = {"odd": (bnn.MLP((3, 1), activation=cube), bnn.MLP((3, 1), activation=cube)), "custom": (Custom(), Custom())}
    for name, (net, again) in networks.items():
        custom = bnn.BNN(net, likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=2)
        custom.save(tmp_path / name)
        spec = json.loads((tmp_path / name / "spec.json").read_text())
        assert spec["network"]["type"] == "custom" and spec["network"]["framework"] == "linen"
        assert spec["network"]["class"].endswith("MLP" if name == "odd" else "Custom")
        with pytest.raises(ValueError, match=r"custom linen network.*bnn.load\(path, module=network\)"):
            bnn.load(tmp_path / name)
        assert_same_predictions(custom, bnn.load(tmp_path / name, module=again), GRID)
    with pytest.raises(ValueError, match="mismatched with the given network"):
        bnn.load(tmp_path / "custom", module=bnn.MLP((2, 1)))


def test_an_interrupted_save_keeps_the_previous_fit(saved, monkeypatch):
    old = bnn.load(saved)
    new = bnn.BNN(bnn.MLP((4, 1)), likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=10)

    def disk_full(file, spec):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bnn.io, "_write_spec", disk_full)  # arrays.npz written, spec.json fails
    with pytest.raises(OSError, match="No space left"):
        new.save(saved, overwrite=True)
    assert_same_predictions(old, bnn.load(saved), GRID)
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no staging folder left behind
    monkeypatch.undo()
    new.save(saved, overwrite=True)
    assert_same_predictions(new, bnn.load(saved), GRID)
    assert sorted(p.name for p in saved.iterdir()) == ["arrays.npz", "spec.json"]
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    mkdir_mode = saved.parent / "plain"
    mkdir_mode.mkdir()
    assert saved.stat().st_mode == mkdir_mode.stat().st_mode  # not the staging folder's private mode


def test_overwrite_never_deletes_other_files(saved):
    fit = bnn.load(saved)
    (saved / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files other than a saved fit \(notes.txt\)"):
        fit.save(saved, overwrite=True)
    assert (saved / "notes.txt").read_text() == "mine"
    (saved.parent / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        fit.save(saved.parent / "file", overwrite=True)


def test_custom_initializers_are_flagged_on_load(tmp_path):
    import flax.linen as nn

    net = bnn.MLP((3, 1), kernel_init=nn.initializers.normal(0.5))
    fit = bnn.BNN(net, likelihood=bnn.Gaussian(scale=0.1)).fit(X, Y, num_steps=5)
    fit.save(tmp_path / "f")
    with pytest.warns(UserWarning, match="custom initialisers"):
        loaded = bnn.load(tmp_path / "f")
    with warnings.catch_warnings():
        assert_same_predictions(fit, loaded, GRID)
