"""Embedded data sets (generated deterministically from a seed) and loaders.

Toy problems:

* :func:`sine` — ``f(x) = x·sin(5x)``, ``x ~ U(-1, 1)``, Gaussian noise 0.1, 40 points;
  :func:`sine_grid` gives the test grid on ``[-1.5, 1.5]`` (beyond the data).
* :func:`hill` — 2-D classification in the unit square, label ``x₂ ≥ 2.5·x₁(1 − x₁)``.
* :func:`polynomial` — noisy polynomial regression.

Loaders: :func:`uci` for the standard UCI regression splits (``shared/data/uci``) and
:func:`from_csv`. Regression targets are returned as ``(n, 1)``, class labels as ``(n,)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bnn import _checks

__all__ = [
    "sine",
    "sine_function",
    "sine_grid",
    "hill",
    "hill_boundary",
    "polynomial",
    "uci",
    "uci_names",
    "uci_dir",
    "UCISplit",
    "UCI_ENV",
    "from_csv",
]


def sine_function(x) -> np.ndarray:
    """The noiseless sine toy function ``f(x) = x·sin(5x)`` (elementwise)."""
    x = np.asarray(x, dtype=np.float32)
    return x * np.sin(5.0 * x)


def sine(n: int = 40, noise: float = 0.1, seed: int = 0, low: float = -1.0, high: float = 1.0):
    """Noisy samples of ``f(x) = x·sin(5x)`` with ``x ~ U(low, high)``.

    Returns:
      ``x`` of shape ``(n, 1)`` and ``y`` of shape ``(n, 1)``, float32.
    """
    n = _checks.positive_int(n, "n")
    noise = _checks.positive_float(noise, "noise")
    if not low < high:
        raise ValueError(f"`low` must be below `high`; got low={low!r}, high={high!r}.")
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n, 1)).astype(np.float32)
    y = (sine_function(x) + noise * rng.standard_normal((n, 1))).astype(np.float32)
    return x, y


def sine_grid(n: int = 200, low: float = -1.5, high: float = 1.5) -> np.ndarray:
    """Evenly spaced test inputs ``(n, 1)`` on ``[low, high]`` (default reaches beyond the data)."""
    n = _checks.positive_int(n, "n", minimum=2)
    return np.linspace(low, high, n, dtype=np.float32)[:, None]


def hill_boundary(x1) -> np.ndarray:
    """The class boundary of :func:`hill`: ``x₂ = 2.5·x₁(1 − x₁)``."""
    x1 = np.asarray(x1, dtype=np.float32)
    return 2.5 * x1 * (1.0 - x1)


def hill(n: int = 200, seed: int = 0):
    """2-D binary classification: points uniform in the unit square, label ``x₂ ≥ 2.5·x₁(1 − x₁)``.

    Returns:
      ``x`` of shape ``(n, 2)`` (float32) and labels ``y`` of shape ``(n,)`` (int32, 0 or 1).
    """
    n = _checks.positive_int(n, "n")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, 2)).astype(np.float32)
    y = (x[:, 1] >= hill_boundary(x[:, 0])).astype(np.int32)
    return x, y


def polynomial(n: int = 50, coefficients=(0.5, -1.0, 2.0), noise: float = 0.1, seed: int = 0):
    """Noisy samples of ``f(x) = Σₖ coefficients[k]·xᵏ`` with ``x ~ U(-1, 1)``.

    Returns:
      ``x`` ``(n, 1)`` and ``y`` ``(n, 1)``, float32.
    """
    n = _checks.positive_int(n, "n")
    noise = _checks.positive_float(noise, "noise")
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if coefficients.ndim != 1 or coefficients.size == 0:
        raise ValueError(f"`coefficients` must be a non-empty 1-D sequence; got {coefficients.tolist()!r}.")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1))
    f = np.polynomial.polynomial.polyval(x, coefficients)
    y = f + noise * rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


class UCISplit(NamedTuple):
    """One train/test split of a UCI regression data set (targets ``(n, 1)``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    split: int


UCI_ENV = "BNN_UCI_DIR"


def _uci_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    cands = [Path(os.environ[UCI_ENV])] if os.environ.get(UCI_ENV) else []
    cands += [Path.cwd() / "shared/data/uci", Path.cwd().parent / "shared/data/uci", here.parent.parent / "shared/data/uci"]
    return cands


def uci_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the UCI data sets: ``data_dir``, else ``$BNN_UCI_DIR``, else ``../shared/data/uci``."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"`data_dir` {str(path)!r} is not a folder of UCI data sets.")
        return path
    for cand in _uci_candidates():
        if cand.is_dir():
            return cand
    tried = ", ".join(str(c) for c in _uci_candidates())
    raise FileNotFoundError(
        f"no UCI data folder found (tried {tried}). Pass `data_dir=` or set ${UCI_ENV} to the folder "
        "holding e.g. yacht/data.txt."
    )


def uci_names(data_dir=None) -> list[str]:
    """Names of the UCI data sets available in the data folder."""
    root = uci_dir(data_dir)
    return sorted(p.name for p in root.iterdir() if (p / "data.txt").is_file())


def uci(name: str, split: int = 0, data_dir=None) -> UCISplit:
    """Load split ``split`` of a UCI regression data set (standard 20 PBP splits).

    Args:
      name: e.g. ``"yacht"``, ``"energy"``, ``"kin8nm"``, ``"naval-propulsion-plant"``,
        ``"power-plant"``, ``"wine-quality-red"``.
      split: index of the train/test split.
      data_dir: folder of the data sets (see :func:`uci_dir`).
    """
    root = uci_dir(data_dir)
    folder = root / str(name)
    if not (folder / "data.txt").is_file():
        raise ValueError(f"`name` must be one of {uci_names(root)}; got {name!r} (no {folder}/data.txt).")
    n_splits = int((folder / "n_splits.txt").read_text().split()[0]) if (folder / "n_splits.txt").is_file() else 20
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or not 0 <= split < n_splits:
        raise ValueError(f"`split` must be an int in 0..{n_splits - 1} for {name!r}; got {split!r}.")
    data = np.loadtxt(folder / "data.txt")
    features = np.loadtxt(folder / "index_features.txt", dtype=int, ndmin=1)
    target = np.loadtxt(folder / "index_target.txt", dtype=int, ndmin=1)
    train = np.loadtxt(folder / f"index_train_{split}.txt", dtype=int, ndmin=1)
    test = np.loadtxt(folder / f"index_test_{split}.txt", dtype=int, ndmin=1)
    x, y = data[:, features].astype(np.float32), data[:, target].astype(np.float32).reshape(-1, 1)
    return UCISplit(x[train], y[train], x[test], y[test], str(name), int(split))


def from_csv(path, target=-1, delimiter: str = ",", skip_header: int = 1):
    """Load a numeric CSV file: ``target`` column(s) become ``y`` ``(n, k)``, the rest ``x``.

    Args:
      path: the file.
      target: column index or list of indices of the target(s).
      delimiter: field separator.
      skip_header: header lines to skip.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist.")
    data = np.genfromtxt(path, delimiter=delimiter, skip_header=skip_header, dtype=np.float64, ndmin=2)
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"{str(path)!r} must hold at least two numeric columns; got an array of shape {data.shape}.")
    if np.isnan(data).any():
        row = int(np.argwhere(np.isnan(data))[0][0]) + skip_header + 1
        raise ValueError(f"{str(path)!r} has a missing or non-numeric value (first at line {row}).")
    cols = np.atleast_1d(np.arange(data.shape[1])[target])
    rest = np.setdiff1d(np.arange(data.shape[1]), cols)
    return data[:, rest].astype(np.float32), data[:, cols].astype(np.float32)
