"""Embedded toy data and the loaders."""

import numpy as np
import pytest

import bnn
from bnn import datasets


def test_sine_is_deterministic_and_follows_its_function():
    x, y = datasets.sine(n=40, noise=0.1, seed=0)
    assert x.shape == y.shape == (40, 1) and x.dtype == np.float32
    assert np.all((x >= -1) & (x <= 1))
    np.testing.assert_array_equal(datasets.sine(seed=0)[1], y)
    resid = y - x * np.sin(5 * x)
    assert 0.06 < resid.std() < 0.14  # the noise is 0.1
    assert not np.allclose(datasets.sine(seed=1)[0], x)
    grid = datasets.sine_grid()
    assert grid.shape == (200, 1) and grid[0, 0] == -1.5 and grid[-1, 0] == 1.5


def test_hill_labels_follow_the_boundary():
    x, y = datasets.hill(n=500, seed=0)
    assert x.shape == (500, 2) and y.shape == (500,) and y.dtype == np.int32
    np.testing.assert_array_equal(y, (x[:, 1] >= 2.5 * x[:, 0] * (1 - x[:, 0])).astype(int))
    assert 0.2 < y.mean() < 0.8


def test_polynomial():
    x, y = datasets.polynomial(n=200, coefficients=(1.0, 0.0, -2.0), noise=0.05, seed=3)
    resid = y[:, 0] - (1.0 - 2.0 * x[:, 0] ** 2)
    assert abs(resid.std() - 0.05) < 0.01


def _uci_available() -> bool:
    try:
        datasets.uci_dir()
    except FileNotFoundError:
        return False
    return True


needs_uci = pytest.mark.skipif(not _uci_available(), reason="UCI data folder (../shared/data/uci) not present")


@needs_uci
def test_uci_standard_split():
    split = datasets.uci("yacht", split=0)
    assert split.x_train.shape == (277, 6) and split.x_test.shape == (31, 6)
    assert split.y_train.shape == (277, 1)
    assert "yacht" in datasets.uci_names()
    raw = np.loadtxt(datasets.uci_dir() / "yacht" / "data.txt")
    first_train = int(np.loadtxt(datasets.uci_dir() / "yacht" / "index_train_0.txt", dtype=int)[0])
    np.testing.assert_allclose(split.x_train[0], raw[first_train, :6], rtol=1e-6)


@needs_uci
def test_uci_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'yacht'.*\]; got 'yachts'"):
        datasets.uci("yachts")
    with pytest.raises(ValueError, match=r"`split` must be an int in 0..19"):
        datasets.uci("yacht", split=20)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        datasets.uci("yacht", data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("BNN_UCI_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "_uci_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"no UCI data folder found .*BNN_UCI_DIR"):
        datasets.uci("yacht")


def test_from_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,target\n1,2,3\n4,5,6\n")
    x, y = datasets.from_csv(path)
    np.testing.assert_array_equal(x, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [[3], [6]])
    path.write_text("a,b\n1,\n")
    with pytest.raises(ValueError, match="missing or non-numeric value"):
        datasets.from_csv(path)
    with pytest.raises(FileNotFoundError):
        datasets.from_csv(tmp_path / "none.csv")


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="`noise`"):
        bnn.datasets.sine(noise=-1)
    with pytest.raises(ValueError, match="`n`"):
        bnn.datasets.hill(n=0)
