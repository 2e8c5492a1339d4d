"""Input validation shared by every public entry point.

Each check names the argument, says what was expected and what was received, so
that a user sees the fix in the message itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def as_seed_key(seed: Any, name: str = "seed") -> jax.Array:
    """Accept an ``int`` seed or a JAX PRNG key; return a key."""
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be an int or a jax.random key; got a bool ({seed!r}).")
    if isinstance(seed, (int, np.integer)):
        return jax.random.PRNGKey(int(seed))
    if isinstance(seed, jax.Array):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            return seed
        if seed.shape == (2,) and seed.dtype == np.uint32:
            return seed
    raise TypeError(
        f"`{name}` must be an int or a jax.random key; got {type(seed).__name__} {seed!r}."
    )


def positive_float(value: Any, name: str) -> float:
    """A finite, strictly positive float (scales, learning rates, levels of noise)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a positive number; got {type(value).__name__} {value!r}.") from None
    if not math.isfinite(out) or out <= 0.0:
        raise ValueError(f"`{name}` must be a finite number > 0; got {value!r}.")
    return out


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (counts of steps, draws, chains, units)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= {minimum}; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    return int(value)


def one_of(value: Any, name: str, choices: Iterable[str]) -> str:
    """A string from a fixed set of options."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}.")
    return value


def level(value: Any, name: str = "level", allow_zero: bool = False) -> float:
    """A probability strictly between 0 and 1; with ``allow_zero`` a share in [0, 1) (a bool is refused
    there, where ``False`` would pass as 0)."""
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    try:
        if allow_zero and isinstance(value, bool):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number in {interval}; got {type(value).__name__} {value!r}.") from None
    if allow_zero and not 0.0 <= out < 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1); got {value!r}.")
    if not allow_zero and not 0.0 < out < 1.0:
        raise ValueError(f"`{name}` must lie strictly between 0 and 1; got {value!r}.")
    return out


def float_dtype() -> type[np.floating]:
    """The float type of data and parameters: float64 under ``jax_enable_x64``, else float32.

    Read at call time, so ``with jax.enable_x64(True):`` switches a whole fit to float64.
    """
    return np.float64 if jax.config.jax_enable_x64 else np.float32


def floats(value: Any) -> jax.Array:
    """``value`` as a JAX array of :func:`float_dtype`."""
    return jax.numpy.asarray(value, float_dtype())


def finite_array(value: Any, name: str, ndims: tuple[int, ...], dtype: Any = "float") -> np.ndarray:
    """Convert to a NumPy array of an allowed rank and check every entry is finite."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # pragma: no cover - numpy raises many kinds
        raise TypeError(f"`{name}` must be array-like; got {type(value).__name__}: {err}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"`{name}` must hold numbers; got an array of dtype {arr.dtype}.")
    if arr.ndim not in ndims:
        allowed = " or ".join(str(d) for d in ndims)
        raise ValueError(f"`{name}` must be a {allowed}-D array; got shape {arr.shape} ({arr.ndim}-D).")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}); at least one value is needed.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(
            f"`{name}` contains NaN or inf (first at index {tuple(bad)}); "
            "remove or impute those entries before fitting."
        )
    if dtype == "float":
        dtype = float_dtype()
    return arr.astype(dtype) if dtype is not None else arr


def inputs(x: Any, name: str = "x", num_features: int | None = None) -> np.ndarray:
    """Inputs as a float ``(n, features)`` array (:func:`float_dtype`); a 1-D array is one feature."""
    arr = finite_array(x, name, ndims=(1, 2))
    if arr.ndim == 1:
        arr = arr[:, None]
    if num_features is not None and arr.shape[1] != num_features:
        raise ValueError(
            f"`{name}` must have {num_features} feature column(s), as the data the model was "
            f"fitted on; got shape {arr.shape}."
        )
    return arr


def same_length(x: np.ndarray, y: np.ndarray, x_name: str = "x", y_name: str = "y") -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same number of rows; "
            f"got {x.shape[0]} and {y.shape[0]} (shapes {x.shape} and {y.shape})."
        )


def from_type_dict(data, types: dict, what: str):
    """Rebuild a frozen dataclass from ``{"type": name, **fields}`` (the inverse of its ``to_dict``)."""
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in types:
        raise ValueError(f"unknown {what} type {kind!r}; known: {sorted(types)}.")
    return types[kind](**data)


#: Data entries beyond this magnitude, fitted as given, saturate tanh units and dwarf
#: Normal(0, 1)-scale weights: :func:`warn_if_large` suggests ``normalize=True``.
LARGE_MAGNITUDE = 100.0


def warn_if_large(arr: np.ndarray, name: str) -> None:
    """Warn when a column of ``arr`` ``(n, columns)`` holds values beyond ``LARGE_MAGNITUDE``."""
    peak = np.max(np.abs(arr), axis=0) if arr.ndim == 2 else np.max(np.abs(arr), keepdims=True)
    if np.any(peak > LARGE_MAGNITUDE):
        col = int(np.argmax(peak))
        import warnings

        warnings.warn(
            f"`{name}` column {col} reaches {float(peak[col]):.4g} in magnitude. Fitted as given, priors and "
            "initialisations meant for unit-scale data fit it poorly (saturated units, a NaN loss); pass "
            "fit(..., normalize=True) to standardise the data (predictions stay in original units).",
            UserWarning,
            stacklevel=4,
        )
