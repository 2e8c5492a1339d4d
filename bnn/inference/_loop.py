"""The shared optimisation driver: compiled chunks of steps, run from a Python loop.

A compiled chunk runs ``count`` steps (at most :data:`CHUNK`; ``count`` and the first step's
index are arguments, not constants), so one program serves runs of any length and any
``eval_every``. Step ``i`` of a run draws its randomness (minibatches) from
``fold_in(key, i)``: a fit's result does not depend on how its steps are split into chunks
(``eval_every``, a progress bar). Python only loops over chunks, to update a progress bar,
check that the objective is finite, and let the caller stop early (validation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: The most steps one compiled call runs (the length of its loss buffer). Calls cost a dispatch
#: and a copy of the losses each, negligible at this length.
CHUNK = 1000


def recorded_loop(step: Callable[[jax.Array, Any], tuple[Any, Any]], state: Any, count: jax.Array, like: Any,
                  length: int) -> tuple[Any, Any]:
    """Inside a compiled program: ``count`` (at most ``length``, traced) iterations
    ``state, record = step(i, state)``, each record written into row ``i`` of zeroed buffers
    ``(length, ...)`` shaped as ``like`` (a record of the same structure; rows from ``count`` on
    stay 0). The compiled program does not depend on ``count``. Returns the final state and the buffers.
    """

    def body(i, carry):
        state, out = carry
        state, record = step(i, state)
        return state, jax.tree.map(lambda buffer, value: buffer.at[i].set(value), out, record)

    buffers = jax.tree.map(lambda v: jnp.zeros((length,) + jnp.shape(v), jnp.result_type(v)), like)
    return jax.lax.fori_loop(0, count, body, (state, buffers))


def run_steps(step: Callable[[Any, jax.Array], tuple[Any, jax.Array]], state: Any, key: jax.Array,
              first: jax.Array, count: jax.Array) -> tuple[Any, jax.Array]:
    """Inside a compiled program: ``count`` (at most :data:`CHUNK`) steps of ``step(state, key) ->
    (state, value)`` from ``state``, step ``j`` with the key ``fold_in(key, first + j)``.

    ``first`` and ``count`` are traced integers, so the program does not depend on them.
    Returns the final state and the steps' scalar values ``(CHUNK,)`` (rows from ``count`` on are 0).
    """
    return recorded_loop(lambda j, state: step(state, jax.random.fold_in(key, first + j)), state, count,
                         jnp.zeros((), jnp.result_type(float)), CHUNK)


def draw_batch(key: jax.Array, n: int, batch_size: int | None) -> jax.Array | None:
    """``batch_size`` row indices in ``0..n-1`` drawn uniformly with replacement (O(batch_size))."""
    return None if batch_size is None else jax.random.randint(key, (batch_size,), 0, n)


def progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")


def run_in_chunks(
    run_chunk: Callable[[Any, jax.Array, int, int], tuple[Any, jax.Array]],
    state: Any,
    num_steps: int,
    key: jax.Array,
    chunk: int,
    desc: str,
    progress_bar: bool = False,
    on_chunk: Callable[[Any, int], bool] | None = None,
) -> tuple[Any, np.ndarray, int]:
    """Run ``num_steps`` steps as ``run_chunk(state, key, first, count) -> (state, values)`` calls.

    ``run_chunk`` runs steps ``first .. first + count - 1`` (``count`` at most :data:`CHUNK`; see
    :func:`run_steps`) and returns their losses on the first axis of ``values`` (``(CHUNK,)``, or
    ``(CHUNK, members)`` for an ensemble; rows from ``count`` on are ignored). After every ``chunk``
    steps (and at the end) ``on_chunk(state, steps_done)`` returning True stops early.

    Returns:
      the final state, the per-step losses ``(steps_done,)`` (or ``(steps_done, members)``), and ``steps_done``.

    Raises:
      FloatingPointError: when the loss becomes NaN or infinite.
    """
    losses, done = [], 0
    bar = progress(num_steps, desc, progress_bar)
    try:
        while done < num_steps:
            length = min(CHUNK, chunk - done % chunk, num_steps - done)  # up to the next check
            state, chunk_values = run_chunk(state, key, done, length)
            done += length
            values = np.asarray(chunk_values)[:length]
            losses.append(values)
            bad = np.argwhere(~np.isfinite(values))
            if bad.size:
                step = done - length + int(bad[0][0]) + 1
                raise FloatingPointError(
                    f"the {desc} objective became {values[tuple(bad[0])]} at step {step} of {num_steps}. Remedies: a "
                    "lower learning rate (learning_rate=...), fit(..., normalize=True) for data far from unit "
                    "scale, or a tighter prior (a smaller prior scale)."
                )
            last = float(np.mean(values[-1]))
            if bar is not None:
                bar.update(length)
                bar.set_postfix(loss=f"{last:.4g}")
            checked = done % chunk == 0 or done == num_steps
            if on_chunk is not None and checked and on_chunk(state, done):
                break
    finally:
        if bar is not None:
            bar.close()
    return state, np.concatenate(losses), done


class RunLength(NamedTuple):
    """The state of the default optimiser's rate: steps taken, the run's length and the steps over which the
    rate first rises from 0 (0: none; see :func:`for_run`)."""

    count: jax.Array
    total: jax.Array
    warmup: jax.Array


def _half_cosine(peak_learning_rate: float):
    """Scale updates by ``-rate``, the rate falling from ``peak_learning_rate`` to 0 by a half cosine
    over the run's length, which the state holds (:class:`RunLength`), not the code: one compiled
    step serves runs of any length."""
    import optax

    def init(params):
        del params
        # a length of 0 until for_run sets it: a run that skipped for_run fails loudly (its first
        # update is NaN, which the loop reports) instead of stopping after one step
        return RunLength(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        count = jnp.minimum(state.count, state.total)
        # times the reciprocal: how XLA computes a division by a constant, so rates equal a fixed-length schedule's
        rate = peak_learning_rate * (0.5 * (1 + jnp.cos(jnp.pi * count * (1 / state.total))))
        # a run that starts at a fitted point: Adam's first steps have the full rate whatever the gradient
        rate = rate * jnp.where(state.warmup > 0, jnp.minimum(1.0, (count + 1) / jnp.maximum(state.warmup, 1)), 1.0)
        return jax.tree.map(lambda g: jnp.array(-1 * rate, dtype=g.dtype) * g, updates), \
            RunLength(optax.safe_increment(state.count), state.total, state.warmup)

    return optax.GradientTransformation(init, update)


@functools.lru_cache(maxsize=32)
def _decaying_adam(peak_learning_rate: float):
    """Adam whose rate falls from ``peak_learning_rate`` to 0 over the run by a half cosine: the
    run's length is set in its state by :func:`for_run`.

    One object per rate, so compiled training loops keyed on it are reused whatever the number of
    steps. A constant rate leaves the last iterate of a stochastic (or ill-conditioned)
    optimisation at a random point near the optimum; a decaying one settles there.
    """
    import optax

    return optax.with_extra_args_support(optax.chain(optax.scale_by_adam(), _half_cosine(peak_learning_rate)))


def for_run(opt_state, num_steps: int, warmup=0):
    """``opt_state`` with the run's length set to ``num_steps`` (and its rate's warm-up to ``warmup`` steps)
    wherever the default optimiser's rate (:class:`RunLength`) is in it (any other optimiser's state is
    returned unchanged)."""
    def set_total(s):
        if not isinstance(s, RunLength):
            return s
        return s._replace(total=jnp.full_like(s.total, num_steps), warmup=jnp.full_like(s.warmup, warmup))

    return jax.tree.map(set_total, opt_state, is_leaf=lambda s: isinstance(s, RunLength))


def make_optimizer(optimizer, learning_rate, default_learning_rate: float):
    """The optax transformation to use: ``optimizer``, or the default decaying Adam.

    The default peaks at ``learning_rate`` (or ``default_learning_rate``) and decays to 0
    over the run (see :func:`_decaying_adam`); its state must be given the run's length by
    :func:`for_run`.
    """
    import optax

    from bnn import _checks

    if optimizer is not None and learning_rate is not None:
        raise ValueError("give either `optimizer` or `learning_rate` (the peak of the default Adam), not both.")
    if optimizer is None:
        lr = default_learning_rate if learning_rate is None else _checks.positive_float(learning_rate, "learning_rate")
        return _decaying_adam(lr)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"`optimizer` must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    return optimizer


#: The loss has settled when its last 5 % of steps fell by less than this fraction of its total fall...
SETTLED_FRACTION = 0.01
#: ...or by less than this many standard errors (minibatch and Monte Carlo noise).
SETTLED_SE = 3.0


def loss_settled(losses: np.ndarray) -> tuple[bool | None, float]:
    """Whether an optimisation had settled: ``(settled, relative_change)``.

    Compares the mean loss over the last 5 % of steps with the 5 % before: the loss is
    still falling when that drop exceeds both ``SETTLED_FRACTION`` of the total drop since
    the first step and ``SETTLED_SE`` standard errors of the difference (so noisy minibatch or
    ELBO estimates are not mistaken for progress). ``(None, nan)`` for fewer than 40 steps.
    """
    losses = np.asarray(losses, np.float64)
    w = losses.shape[0] // 20
    if w < 2:
        return None, float("nan")
    last, prev = losses[-w:], losses[-2 * w:-w]
    drop = float(prev.mean() - last.mean())
    total = float(abs(losses[0] - last.mean()))
    relative = drop / total if total > 0 else 0.0
    se = float(np.sqrt((prev.var(ddof=1) + last.var(ddof=1)) / w))
    return not (relative > SETTLED_FRACTION and drop > SETTLED_SE * se), relative


def warn_unsettled(desc: str, relative: float, num_steps: int) -> None:
    import warnings

    warnings.warn(
        f"the {desc} loss had not settled: over the last 5 % of its {num_steps} steps it still fell by "
        f"{relative:.1%} of its total decrease. Raise num_steps, or use the default optimizer (its rate decays "
        "to zero over num_steps).",
        UserWarning,
        stacklevel=5,  # warn_unsettled < train < the method's fit < BNN.fit < the caller
    )


def chunk_length(eval_every, num_steps: int, checks_wanted: bool) -> int:
    """Steps per compiled chunk: ``eval_every``, else 1/50 of the run when something is checked or
    shown between chunks (validation, a progress bar), else the whole run in one chunk."""
    from bnn import _checks

    if eval_every is None:
        eval_every = max(1, num_steps // 50) if checks_wanted else num_steps
    return _checks.positive_int(eval_every, "eval_every")


#: ``batch_size="auto"`` (the default of MAP / MLE and the ensemble): full-batch steps up to this many
#: training rows, minibatches of :data:`AUTO_BATCH_SIZE` rows above. On the UCI tables of 7 000 to 41 000
#: rows, 80 000 steps of 250 rows reach a better optimum than 2000 full-batch steps at a fraction of their
#: arithmetic (``benchmarks/UCI.md``); on smaller tables full-batch steps are cheap.
FULL_BATCH_ROWS = 2000
AUTO_BATCH_SIZE = 250
#: ``num_steps=None``: this many full-batch steps, or :data:`MINIBATCH_STEPS` minibatch steps (each cheaper and noisier)
FULL_BATCH_STEPS = 2000
MINIBATCH_STEPS = 80_000


def check_batch_size(batch_size, n: int) -> int | None:
    """``None`` (full batch) or an int in ``1..n``; ``"auto"``: ``None`` up to :data:`FULL_BATCH_ROWS`
    rows ``n``, else :data:`AUTO_BATCH_SIZE`."""
    from bnn import _checks

    if batch_size is None:
        return None
    if isinstance(batch_size, str):
        if batch_size != "auto":
            raise ValueError(f"`batch_size` must be a positive int, None (full batch) or 'auto'; got {batch_size!r}.")
        return None if n <= FULL_BATCH_ROWS else AUTO_BATCH_SIZE
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"`batch_size` must be at most the {n} training rows; got {batch_size}.")
    return batch_size


def check_num_steps(num_steps, batch_size: int | None) -> int:
    """``num_steps`` checked; ``None``: :data:`FULL_BATCH_STEPS` full-batch or :data:`MINIBATCH_STEPS` minibatch steps."""
    from bnn import _checks

    if num_steps is None:
        return FULL_BATCH_STEPS if batch_size is None else MINIBATCH_STEPS
    return _checks.positive_int(num_steps, "num_steps")


def resolve_mesh(mesh):
    """``mesh=`` of the data-parallel methods: ``None``, ``"all"`` (every device: after
    ``jax.distributed.initialize()``, those of every process) or a one-axis ``jax.sharding.Mesh``."""
    if mesh is None:
        return None
    if isinstance(mesh, str):
        if mesh != "all":
            raise ValueError(f"`mesh` must be None, 'all' or a jax.sharding.Mesh; got {mesh!r}.")
        return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be None, 'all' or a jax.sharding.Mesh; got {type(mesh).__name__}.")
    if len(mesh.axis_names) != 1:
        raise ValueError(f"`mesh` must have one axis (the data rows are split along it); got axes {mesh.axis_names}.")
    return mesh


def shard_rows(data, mesh, n: int):
    """Place the row-indexed arrays of ``data`` on ``mesh``: rows split over its devices.

    Parameters and optimiser state stay replicated (the jitted programs receive them
    uncommitted), so XLA runs the per-row work on every device and sums the loss and
    gradients across them: data parallelism. ``n`` rows must divide evenly. With several
    processes (``jax.distributed``) every process passes the same full arrays and each places
    the rows of its own devices.
    """
    if mesh is None:
        return data
    devices = mesh.devices.size
    if n % devices:
        raise ValueError(
            f"`mesh` splits the {n} training rows over {devices} devices: the rows must divide evenly "
            f"({n} % {devices} = {n % devices}); drop {n % devices} row(s) or use a mesh of another size."
        )
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    return jax.tree.map(lambda a: jax.device_put(a, rows), data)
