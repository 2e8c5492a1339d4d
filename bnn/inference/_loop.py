"""The shared optimisation driver: a jitted ``lax.scan`` over steps, run in chunks.

Python only loops over chunks of steps, to update a progress bar, check that the
objective is finite, and let the caller stop early (validation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def draw_batch(key: jax.Array, n: int, batch_size: int | None) -> jax.Array | None:
    """``batch_size`` row indices in ``0..n-1`` drawn uniformly with replacement (O(batch_size))."""
    return None if batch_size is None else jax.random.randint(key, (batch_size,), 0, n)


def progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")


def run_in_chunks(
    run_chunk: Callable[[Any, jax.Array], tuple[Any, jax.Array]],
    state: Any,
    num_steps: int,
    key: jax.Array,
    chunk: int,
    desc: str,
    progress_bar: bool = False,
    on_chunk: Callable[[Any, int], bool] | None = None,
) -> tuple[Any, np.ndarray, int]:
    """Run ``num_steps`` steps as ``run_chunk(state, keys) -> (state, losses)`` calls of ``chunk`` steps.

    Each step gets its own key (``keys`` has one row per step). ``on_chunk(state, steps_done)``
    returning True stops early.

    Returns:
      the final state, the per-step losses ``(steps_done,)``, and ``steps_done``.

    Raises:
      FloatingPointError: when the loss becomes NaN or infinite.
    """
    losses, done = [], 0
    bar = progress(num_steps, desc, progress_bar)
    try:
        while done < num_steps:
            length = min(chunk, num_steps - done)
            keys = jax.random.split(jax.random.fold_in(key, done), length)
            state, values = run_chunk(state, keys)
            done += length
            losses.append(np.asarray(values))
            last = float(losses[-1][-1])
            if not np.isfinite(last):
                raise FloatingPointError(
                    f"the {desc} objective became {last} at step {done}; lower the learning rate or "
                    "check the scale of the data."
                )
            if bar is not None:
                bar.update(length)
                bar.set_postfix(loss=f"{last:.4g}")
            if on_chunk is not None and on_chunk(state, done):
                break
    finally:
        if bar is not None:
            bar.close()
    return state, np.concatenate(losses), done


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float):
    """Adam at ``learning_rate``: one object per rate, so compiled training loops keyed on it are reused."""
    import optax

    return optax.with_extra_args_support(optax.adam(learning_rate))


def make_optimizer(optimizer, learning_rate, default_learning_rate: float):
    """The optax transformation to use: ``optimizer``, or Adam at ``learning_rate`` (or the default)."""
    import optax

    from bnn import _checks

    if optimizer is not None and learning_rate is not None:
        raise ValueError("give either `optimizer` or `learning_rate` (for the default Adam), not both.")
    if optimizer is None:
        lr = default_learning_rate if learning_rate is None else _checks.positive_float(learning_rate, "learning_rate")
        return _adam(lr)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"`optimizer` must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    return optimizer


def check_batch_size(batch_size, n: int) -> int | None:
    """``None`` (full batch) or an int in ``1..n``."""
    from bnn import _checks

    if batch_size is None:
        return None
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"`batch_size` must be at most the {n} training rows; got {batch_size}.")
    return batch_size
