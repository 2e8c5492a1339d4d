"""Maximum likelihood and MAP by optax, on the lifted model's own log density.

The objective is the model's negative log joint per data point, read off a trace of
:meth:`bnn.BNN.model`:

* ``"mle"``: ``−(1/N) Σᵢ log p(yᵢ | θ)``
* ``"map"``: ``−(1/N) [Σᵢ log p(yᵢ | θ) + log p(θ)]``

For a Gaussian likelihood with fixed σ and a Normal(0, σ_p²) prior, ``2σ²`` times the
MAP objective is ``MSE + λ‖θ‖²`` (plus a constant) with λ from
:func:`bnn.prior_scale_to_weight_decay`; so ``fit(method="map")`` with Adam equals a plain
optax loop on that loss run with Adam's ``eps`` multiplied by ``2σ²`` (Adam is otherwise
invariant to the scale of the loss).

With ``batch_size`` each step uses ``batch_size`` rows drawn uniformly with replacement
and scales their log-likelihood by ``N / batch_size``: an unbiased estimate of the
full objective. Latent sites with a constrained support (a learned noise scale) are
optimised in unconstrained space, without a Jacobian term, so the optimum is the mode
in the original parametrisation.

Steps run in compiled chunks (:func:`bnn.inference._loop.run_steps`); Python only loops over
chunks of steps (for the progress bar and validation checks).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference._loop import (
    check_batch_size,
    check_num_steps,
    chunk_length,
    draw_batch,
    for_run,
    loss_settled,
    make_optimizer,
    resolve_mesh,
    run_in_chunks,
    run_steps,
    shard_rows,
    warn_unsettled,
)
from bnn.lifting import LiftedModel, run_once
from bnn.likelihoods import NOISE_SITE, Heteroscedastic, HeteroscedasticMean

DEFAULT_LEARNING_RATE = 1e-2
#: the share of a Heteroscedastic MAP / ensemble fit's steps spent on its mean alone (:func:`mean_first`)
MEAN_FIRST = 0.5
#: the default optimiser after the first phase (:func:`after_mean_first`): its peak rate, as a share of the
#: first phase's, and the share of the steps over which its rate rises from 0
MEAN_FIRST_RATE = 0.3
MEAN_FIRST_WARMUP = 0.1


def mean_first(model: LiftedModel, num_steps: int) -> tuple[LiftedModel | None, int]:
    """``(model of the first phase, its steps)`` of a MAP / MLE / ensemble fit of ``num_steps`` steps.

    For a :class:`bnn.Heteroscedastic` likelihood the first :data:`MEAN_FIRST` of the steps fit
    the network's mean outputs under one learned noise scale and its scale outputs to that mean's
    residuals (:class:`bnn.likelihoods.HeteroscedasticMean`), and the rest fit the model itself from there:
    the objective, and so the optimum sought, is unchanged; only the start is better. Fitted jointly
    from the start, two of ten members of a Heteroscedastic ensemble on UCI naval (10 741 rows, split 3)
    settled with means 80 and 400 times worse than the others' under scales that covered for them, and
    the ensemble's test RMSE was 50 times a homoscedastic ensemble's (``benchmarks/UCI.md``). Other
    likelihoods, and runs of fewer than 2 steps: ``(None, 0)``.
    """
    if not isinstance(model.likelihood, Heteroscedastic) or num_steps < 2:
        return None, 0
    first = model.with_likelihood(HeteroscedasticMean(min_scale=model.likelihood.min_scale))
    return first, max(1, round(MEAN_FIRST * num_steps))


def after_mean_first(given, learning_rate, optimizer, first_steps: int, num_steps: int):
    """``(optimizer, warm-up steps)`` of the ``num_steps`` that follow :func:`mean_first`'s ``first_steps``.

    They start at a fitted point: the default Adam (no optimiser ``given``) then peaks at
    :data:`MEAN_FIRST_RATE` of its rate, which rises from 0 over :data:`MEAN_FIRST_WARMUP` of the steps
    (Adam's first step moves every weight by the full rate, whatever the gradient). On UCI naval (split 0),
    the full rate from the first phase's fit raised the loss from -3.1 to 12 600 per row at once and
    ended little better than it started; test log-likelihood of two MAP fits (seeds 0, 1): fitted
    jointly from the start 7.52, 6.96; mean first, then the full rate 7.70, 7.30; then this 7.85, 7.92
    (kin8nm: 1.193, 1.180; 1.200, 1.139; 1.230, 1.175). A given optimiser is used as given; without a
    first phase, ``(optimizer, 0)``.
    """
    if not first_steps:
        return optimizer, 0
    if given is None:
        rate = MEAN_FIRST_RATE * (DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate)
        optimizer = optax.with_extra_args_support(make_optimizer(None, rate, DEFAULT_LEARNING_RATE))
    return optimizer, round(MEAN_FIRST_WARMUP * num_steps)


def objective_fn(model: LiftedModel, method: str, num_features: int, n: int):
    """``loss(u, xb, yb, eb)``: the per-point negative log joint at unconstrained ``u``.

    ``xb, yb`` (and the known noise scales ``eb``, or ``None``) may be a minibatch of the
    ``n`` training rows; the likelihood is then scaled by ``n / len(xb)``.
    """
    transforms = model.transforms(num_features)
    use_prior = method == "map"

    def loss(u, xb, yb, eb=None):
        values = {k: transforms[k](v) for k, v in u.items()}
        log_prior, log_lik = model.log_joint_terms(values, xb, yb, eb)
        total = jnp.sum(log_lik) * (n / xb.shape[0])
        if use_prior:
            total = total + log_prior
        return -total / n

    return loss


def _point_program(model: LiftedModel, method: str, optimizer, batch_size: int | None, n: int, num_features: int):
    """The compiled chunk of a MAP / MLE fit (see :func:`build_chunk`)."""
    return jax.jit(build_chunk(objective_fn(model, method, num_features, n), optimizer, n, batch_size))


def start_program(model: LiftedModel, optimizer, num_features: int, members: bool = False):
    """``(initial site values, num_steps, warmup) -> (u0, optimizer state)``: the unconstrained start and the
    optimiser's state for a run of ``num_steps`` whose rate rises over the first ``warmup`` (0: none;
    :func:`bnn.inference._loop.for_run`), as one program; with ``members`` every value has a leading member
    axis and each member gets its own state."""
    transforms = model.transforms(num_features)
    init_state = jax.vmap(optimizer.init) if members else optimizer.init

    def start(init, num_steps, warmup):
        u0 = {k: transforms[k].inv(v) for k, v in init.items()}
        return u0, for_run(init_state(u0), num_steps, warmup)

    return run_once(start)


def build_chunk(loss, optimizer, n: int, batch_size: int | None):
    """``(u, opt_state, key, first, count, data) -> ((u, opt_state), losses (CHUNK,))``: ``count`` steps
    of ``optimizer`` on ``loss`` (see :func:`bnn.inference._loop.run_steps`; not jitted, so that an
    ensemble can vmap it).

    ``data`` is ``(xs, ys, es)`` with ``es`` the known noise scales or ``None``; with ``batch_size``
    a step's rows are drawn with its key.
    """

    def chunk(u, opt_state, key, first, count, data):
        def step(state, step_key):
            u, opt_state = state
            idx = draw_batch(step_key, n, batch_size)
            batch = data if idx is None else jax.tree.map(lambda a: a[idx], data)
            value, grads = jax.value_and_grad(loss)(u, *batch)
            updates, opt_state = optimizer.update(
                grads, opt_state, u, value=value, grad=grads, value_fn=lambda p: loss(p, *batch)
            )
            return (optax.apply_updates(u, updates), opt_state), value

        return run_steps(step, (u, opt_state), key, first, count)

    return chunk


def split_validation(validation, x, y, y_err, key, model: LiftedModel):
    """``(x_train, y_train, y_err_train, (x_val, y_val, y_err_val) or None)``; a fraction of the rows is
    drawn with the fit's ``key`` folded with :data:`bnn._keys.VALIDATION`."""
    if validation is None:
        return x, y, y_err, None
    if isinstance(validation, (float, np.floating)) and not isinstance(validation, bool):
        frac = float(validation)
        if not 0.0 < frac < 1.0:
            raise ValueError(f"`validation` as a fraction must lie strictly between 0 and 1; got {validation!r}.")
        n_val = int(round(frac * x.shape[0]))
        if n_val < 1 or n_val >= x.shape[0]:
            raise ValueError(
                f"`validation={validation!r}` leaves {n_val} of {x.shape[0]} rows for validation; "
                "at least one row must go to each side."
            )
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, _keys.VALIDATION), x.shape[0]))
        val, train = perm[:n_val], perm[n_val:]
        e_train, e_val = (None, None) if y_err is None else (y_err[train], y_err[val])
        return x[train], y[train], e_train, (x[val], y[val], e_val)
    if isinstance(validation, tuple) and len(validation) == (2 if y_err is None else 3):
        xv, yv = model.check_data(*validation[:2])
        if xv.shape[1] != x.shape[1]:
            raise ValueError(f"`validation` inputs must have {x.shape[1]} columns like `x`; got {xv.shape[1]}.")
        ev = None if y_err is None else model.check_errors(validation[2], yv.shape, "validation[2]")
        return x, y, y_err, (xv, yv, ev)
    expected = "(x_val, y_val)" if y_err is None else "(x_val, y_val, y_err_val) (the fit has `y_err`)"
    got = f"a tuple of {len(validation)}" if isinstance(validation, tuple) else type(validation).__name__
    raise TypeError(
        f"`validation` must be a fraction of the training rows (e.g. 0.1) or a tuple {expected}; got {got}."
    )


def fit_point(
    model: LiftedModel,
    x,
    y,
    method: str = "map",
    seed=0,
    num_steps: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    batch_size: int | str | None = "auto",
    init_params=None,
    validation=None,
    patience: int = 10,
    eval_every: int | None = None,
    progress_bar: bool = False,
    y_err=None,
    mesh=None,
) -> Fit:
    """Fit by maximum likelihood (``"mle"``) or maximum a posteriori (``"map"``).

    Args:
      model: the :class:`bnn.BNN`.
      x, y: training data (see :meth:`bnn.BNN.fit`).
      method: ``"mle"`` or ``"map"``.
      seed: int or JAX key; the start is ``model.init_params(x, seed)`` unless
        ``init_params`` is given.
      num_steps: optimiser steps; ``None`` (default): 2000 full-batch steps, or 80 000 minibatch steps.
      optimizer: any optax transformation; those that need the loss value (``optax.lbfgs``)
        receive it. Default: Adam whose rate decays from ``learning_rate`` (1e-2) to 0 over
        ``num_steps`` by a half cosine, so the last iterate settles at the optimum.
      learning_rate: peak learning rate of the default Adam (not allowed with ``optimizer``).
      batch_size: rows per step (drawn with replacement); ``None`` = full batch; ``"auto"`` (default):
        full batch up to 2000 training rows, 250 rows per step above (see
        :data:`bnn.inference._loop.FULL_BATCH_ROWS`).
      init_params: starting Flax variables ``{"params": ...}`` (or ``{path: array}``). Without them a
        :class:`bnn.Heteroscedastic` fit spends its first half of the steps on the mean (:func:`mean_first`).
      validation: a fraction of the rows to hold out, or ``(x_val, y_val)`` (``(x_val, y_val,
        y_err_val)`` when fitting with ``y_err``); then the
        validation negative log-likelihood is checked every ``eval_every`` steps, the
        best parameters are returned, and training stops after ``patience`` checks
        without improvement.
      patience: checks without improvement before stopping (with ``validation``).
      eval_every: steps between validation checks / progress updates.
      progress_bar: show a tqdm bar updated once per chunk of steps.
      y_err: known noise scales of the observations (see :meth:`bnn.BNN.fit`).
      mesh: data parallelism: ``"all"`` (every local device) or a one-axis
        ``jax.sharding.Mesh``; the training rows are split over its devices (they must divide
        evenly) and the parameters replicated. ``None`` (default): one device.

    Returns:
      a :class:`bnn.Fit` with one draw; ``info`` holds ``loss`` (per step),
      ``num_steps`` run, ``batch_size`` (rows per step, ``None`` for full batch), ``wall_time``,
      ``mean_first_steps`` (the steps of :func:`mean_first`, before ``num_steps``; 0 for other likelihoods),
      ``settled`` / ``loss_change`` (whether the loss had
      stopped falling over the last 5 % of steps, see :func:`bnn.inference._loop.loss_settled`;
      a warning says so when it had not) and, with validation, ``val_loss`` and ``best_step``.
    """
    method = _checks.one_of(method, "method", ("mle", "map"))
    patience = _checks.positive_int(patience, "patience")
    given, optimizer = optimizer, optax.with_extra_args_support(make_optimizer(optimizer, learning_rate,
                                                                                  DEFAULT_LEARNING_RATE))

    mesh = resolve_mesh(mesh)
    start = time.perf_counter()
    rows = training_rows(model, x, y, y_err, seed, validation, batch_size)
    num_steps = check_num_steps(num_steps, rows.batch_size)
    warm, first_steps = mean_first(model, num_steps) if init_params is None else (None, 0)
    if warm is not None:
        first = fit_point(warm, rows.x, rows.y, method, rows.key, first_steps, optimizer, None, rows.batch_size,
                          eval_every=eval_every, progress_bar=progress_bar, mesh=mesh)
        init_params = {path: first.draws[path][0] for path in model.spec(rows.num_features).paths}
        num_steps -= first_steps
    optimizer, warmup = after_mean_first(given, learning_rate, optimizer, first_steps, num_steps)
    init = model.initial_values(rows.x, rows.y, rows.key, init_params)
    u0, opt_state = model.program(start_program, optimizer=optimizer, num_features=rows.num_features)(
        init, num_steps, warmup)
    chunk = model.program(_point_program, method=method, optimizer=optimizer, batch_size=rows.batch_size,
                               n=rows.n, num_features=rows.num_features)
    (u, _), info = train(model, rows, lambda state, key, first, count, data: chunk(*state, key, first, count, data),
                         (u0, opt_state),
                         rows.on(mesh), num_steps, eval_every, method.upper(), progress_bar, patience)
    draws = {k: jnp.asarray(np.asarray(rows.transforms[k](v))[None]) for k, v in u.items()}  # no op compiled per shape
    info["mean_first_steps"] = first_steps
    info["wall_time"] = time.perf_counter() - start
    return Fit(model=model, method=method, draws=draws, num_features=rows.num_features, info=info, y_err=rows.y_err_given)


class TrainingRows(NamedTuple):
    """The checked data of an optimisation (MAP / MLE, ensemble, SVI): see :func:`training_rows`."""

    x: np.ndarray
    y: np.ndarray
    y_err: np.ndarray | None        #: of the training rows
    y_err_given: np.ndarray | None  #: as the caller gave them (kept on the Fit)
    val: tuple | None               #: the validation rows ``(x, y, y_err)``, or None
    key: jax.Array
    n: int
    num_features: int
    batch_size: int | None
    transforms: dict

    def on(self, mesh) -> tuple:
        """The training rows ``(x, y, y_err)`` as device arrays, split over ``mesh`` (see :func:`shard_rows`)."""
        return shard_rows(jax.tree.map(jnp.asarray, (self.x, self.y, self.y_err)), mesh, self.n)


def training_rows(model: LiftedModel, x, y, y_err, seed, validation, batch_size) -> TrainingRows:
    """Checked data, the fit's key, the validation split (:func:`split_validation`) and the batch size."""
    x, y = model.check_data(x, y)
    given = y_err = model.check_errors(y_err, y.shape)
    key = _checks.as_seed_key(seed)
    x, y, y_err, val = split_validation(validation, x, y, y_err, key, model)
    n, num_features = x.shape
    return TrainingRows(x, y, y_err, given, val, key, n, num_features, check_batch_size(batch_size, n),
                        model.transforms(num_features))


def train(model: LiftedModel, rows: TrainingRows, step, state0, data, num_steps: int, eval_every, desc: str,
          progress_bar: bool, patience: int = 10, members: bool = False, key=None) -> tuple[Any, dict]:
    """The optimisation loop of MAP / MLE, the ensemble and SVI.

    ``step(state, key, first, count, data) -> (state, losses)`` is a compiled chunk of steps
    (:func:`bnn.inference._loop.run_steps`), run by :func:`bnn.inference._loop.run_in_chunks`; ``data`` the training rows as
    :meth:`TrainingRows.on` places them. With validation rows, early stopping
    (:class:`BestOnValidation`, ``members`` as there) reads the parameters as ``state[0]``.
    ``key`` (default: the rows' key folded with :data:`bnn._keys.STEPS`) gives each step its key.

    Returns the final state (with early stopping, ``state[0]`` the best parameters on
    validation) and the ``Fit.info`` entries of every optimisation: ``loss`` (per step;
    ``(steps, members)`` for an ensemble), ``num_steps`` run, ``num_train``, ``settled`` /
    ``loss_change`` (see :func:`bnn.inference._loop.loss_settled`; for an ensemble, whether
    every member settled and the worst member's change) and, with early stopping,
    ``val_loss`` and ``best_step``. Without early stopping an unsettled loss is warned about.
    """
    stopper = None if rows.val is None else BestOnValidation(model, rows.num_features, rows.val, state0[0], patience,
                                                             members)
    eval_every = chunk_length(eval_every, num_steps, rows.val is not None or progress_bar)
    key = jax.random.fold_in(rows.key, _keys.STEPS) if key is None else key
    state, losses, done = run_in_chunks(lambda state, *steps: step(state, *steps, data), state0, num_steps, key,
                                        eval_every, desc, progress_bar, None if stopper is None else stopper.update)
    settled, change = _judge(losses)
    info = {"loss": losses, "num_steps": done, "num_train": rows.n, "batch_size": rows.batch_size, "settled": settled,
            "loss_change": change}
    if stopper is not None:
        state = (stopper.best_u, *state[1:])
        info.update(val_loss=np.asarray(stopper.history), best_step=stopper.best_step if members else
                    int(stopper.best_step))
    elif settled is False:  # early stopping judges by validation loss instead
        warn_unsettled(desc, change, done)
    return state, info


def _judge(losses: np.ndarray) -> tuple[bool | None, float]:
    """:func:`bnn.inference._loop.loss_settled` of one loss trace, or of every member's ``(steps, members)``."""
    if losses.ndim == 1:
        return loss_settled(losses)
    judged = [loss_settled(losses[:, m]) for m in range(losses.shape[1])]
    if any(ok is None for ok, _ in judged):
        return None, float("nan")
    return all(ok for ok, _ in judged), max(change for _, change in judged)


def map_start(model: LiftedModel, x, y, key, map_options: dict | None = None, y_err=None,
              noise_scale: float | None = None) -> tuple[dict, Fit]:
    """A MAP fit from the module's initialisers with ``key``, as starting values ``{site: array}``.

    The start of ``init="map"`` in NUTS (one per chain) and SVI (the guide's means):
    ``map_options`` are :func:`fit_point` options (e.g. ``{"num_steps": 4000}``). With
    ``noise_scale`` (a learned Gaussian noise; see :func:`bnn.inference.evidence.start_noise_scale`) the MAP holds the
    noise scale fixed there and the noise site starts there. Returns the constrained values of
    every latent site and the MAP :class:`bnn.Fit` itself.
    """
    options = dict(map_options or {})
    if y_err is not None:
        options["y_err"] = y_err
    point = model.point_model()
    if noise_scale is not None:
        point = point.with_likelihood(dataclasses.replace(model.likelihood, scale=noise_scale))
    fit = fit_point(point, x, y, method="map", seed=key, **options)
    values = {s: np.asarray(v)[0] for s, v in fit.draws.items()}  # on the host: no op compiled per shape
    if noise_scale is not None:
        values[NOISE_SITE] = _checks.floats(noise_scale)
    if model.hierarchical:  # sampled scales start at the RMS of their weights at the MAP
        values.update(model.scale_values(values, fit.num_features))
    return values, fit


def _val_loss_program(model: LiftedModel, num_features: int, members: bool):
    """``(u, x_val, y_val, y_err_val) -> mean negative log-likelihood`` of the validation rows at the
    unconstrained parameters ``u`` (per member, ``(members,)``, with ``members``): one program per model
    and shapes, which every fit of an equal model reuses (the rows are arguments, not constants)."""
    transforms = model.transforms(num_features)

    def val_loss(u, x, y, y_err):
        values = {k: transforms[k](v) for k, v in u.items()}
        return -jnp.mean(model.log_joint_terms(values, x, y, y_err)[1])

    return jax.jit(jax.vmap(val_loss, in_axes=(0, None, None, None)) if members else val_loss)


@jax.jit
def _pick_members(pick: jax.Array, new: dict, old: dict) -> dict:
    """Each member's parameters from ``new`` where ``pick`` ``(members,)`` is True, else from ``old``
    (one program per set of shapes, not one op per array)."""
    return jax.tree.map(lambda a, b: jnp.where(pick.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


class BestOnValidation:
    """Early stopping: keep the parameters at the lowest validation loss, stop after ``patience``
    checks without improvement. With ``members=True`` the parameters carry a leading member axis
    (an ensemble) and each member keeps its own best; the run stops when every member has stopped
    improving. ``update`` is the ``on_chunk`` callback of :func:`bnn.inference._loop.run_in_chunks`.
    """

    def __init__(self, model: LiftedModel, num_features: int, val, u0, patience: int, members: bool):
        val_data = jax.tree.map(jnp.asarray, val)
        program = model.program(_val_loss_program, num_features=num_features, members=members)
        self._loss = lambda u: program(u, *val_data)
        self._members = members
        shape = (jax.tree.leaves(u0)[0].shape[0],) if members else ()
        self.best_u = u0
        self.best_loss = np.full(shape, np.inf)
        self.best_step = np.zeros(shape, dtype=int)
        self.since = np.zeros(shape, dtype=int)
        self.patience = patience
        self.history: list[np.ndarray] = []

    def update(self, state, done: int) -> bool:
        """Record the validation loss(es) after ``done`` steps; True when every member has stopped improving."""
        current = np.asarray(self._loss(state[0]))
        self.history.append(current)
        improved = current < self.best_loss
        if self._members:
            self.best_u = _pick_members(jnp.asarray(improved), state[0], self.best_u)
        elif improved:
            self.best_u = state[0]
        self.best_loss = np.where(improved, current, self.best_loss)
        self.best_step = np.where(improved, done, self.best_step)
        self.since = np.where(improved, 0, self.since + 1)
        return bool(np.all(self.since >= self.patience))
