"""Deep ensembles (Lakshminarayanan et al., 2017): MAP or MLE fits from different starts, trained at once.

Each of ``num_members`` members starts from the module's own initialisers with its own key
(member ``m`` starts where ``fit(method="map", seed=keys[m])`` would) and is optimised on
the same objective as :func:`bnn.inference.optimize.fit_point`; a learned noise scale is
learned per member. All members run in one compiled program: each member's chunk of steps
is ``jax.vmap``-ed over members (:func:`bnn.inference._loop.run_steps`), so ten members cost far less
than ten fits on the small networks where latency dominates.

The result is a :class:`bnn.Fit` with one draw per member: its predictive is the uniform
mixture over members, and everything that works on draws (predict, compare, to_arviz with
members as draws, save/load, diagnose) works unchanged.

With ``validation`` each member keeps the parameters of its own best validation loss
(early stopping per member); training stops when no member has improved for ``patience``
checks. By default (``validation="auto"``) members stop early on tables of up to
:data:`bnn.inference._loop.FULL_BATCH_ROWS` rows, where a network of the default size can
interpolate the data: there, fitted to the MAP optimum, members shrink a learned noise scale and
the ensemble's intervals collapse (``benchmarks/UCI.md``, ``benchmarks/TINY.md``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference._loop import (
    FULL_BATCH_ROWS,
    check_num_steps,
    make_optimizer,
    resolve_mesh,
)
from bnn.inference.optimize import (
    DEFAULT_LEARNING_RATE,
    after_mean_first,
    build_chunk,
    mean_first,
    objective_fn,
    start_program,
    train,
    training_rows,
)
from bnn.lifting import LiftedModel, flatten_params
from bnn.likelihoods import Gaussian

OBJECTIVES = ("map", "mle")
#: ``validation="auto"``: this fraction of the rows held out for early stopping on tables of
#: :data:`AUTO_VALIDATION_MIN_ROWS` to :data:`bnn.inference._loop.FULL_BATCH_ROWS` rows, none outside.
#: Measured on the UCI tables of 277-1439 rows (20 splits) and on 20-442-row tables by
#: cross-validation: held-out log-likelihood better on every one, e.g. yacht -3.38 -> -0.88 and a
#: 32-row red-wine table -19 139 -> -1.33 (``benchmarks/UCI.md``, ``benchmarks/TINY.md``); above
#: 2000 rows (minibatch training) early stopping scored lower on kin8nm and power.
AUTO_VALIDATION = 0.1
AUTO_VALIDATION_MIN_ROWS = 10


def auto_validation(validation, rows: int, anchored: bool):
    """``validation`` as given, or for ``"auto"``: :data:`AUTO_VALIDATION` on tables of
    :data:`AUTO_VALIDATION_MIN_ROWS` to :data:`FULL_BATCH_ROWS` ``rows`` (``None`` outside, and for anchored
    members, which are meant to reach their own optimum)."""
    if not isinstance(validation, str):
        return validation
    if validation != "auto":
        raise ValueError(f"`validation` must be 'auto', None, a fraction of the rows or (x_val, y_val); got {validation!r}.")
    return AUTO_VALIDATION if AUTO_VALIDATION_MIN_ROWS <= rows <= FULL_BATCH_ROWS and not anchored else None


def _member_starts(model: LiftedModel, x: np.ndarray, y: np.ndarray, keys: jax.Array) -> dict[str, jax.Array]:
    """Starting values ``{site: (members, *shape)}``: member ``m`` = ``model.initial_values(x, y, keys[m])``."""
    one = model.initial_values(x, y, keys[0])  # checks, and the likelihood's own starting values
    first = jnp.asarray(x[:1])
    init = model._module_init(x.shape[1])
    nets = flatten_params(jax.tree.map(lambda *a: np.stack(a), *[init(k, first) for k in keys]))
    starts = {k: _checks.floats(v) for k, v in nets.items()}
    for site, value in one.items():
        if site not in starts:
            starts[site] = jnp.broadcast_to(value, (keys.shape[0],) + jnp.shape(value))
    return starts


def _prior_precisions(model: LiftedModel, num_features: int) -> dict[str, jax.Array]:
    """``{path: 1 / prior variance}`` per entry of every network parameter (zero-mean Normal / FanInNormal)."""
    spec = model.spec(num_features)
    return {path: _checks.floats(1.0 / spec.priors[path].std(shape) ** 2) for path, shape in zip(spec.paths, spec.shapes)}


def _build_members_program(model: LiftedModel, objective: str, optimizer, n: int, num_features: int,
                           batch_size: int | None, num_members: int, anchored: bool, perturbed: bool):
    """``(u, opt_state, key, first, count, data, anchors, ys) -> ((u, opt_state), losses (CHUNK, members))``, all members
    at once. ``anchors`` (``{path: (members, ...)}``) and per-member targets ``ys`` ``(members, n, out)`` are
    used by anchored members only (else ``None``)."""
    base = objective_fn(model, objective, num_features, n)
    members = jnp.arange(num_members)
    precision = _prior_precisions(model, num_features) if anchored else {}

    def member_chunk(u, opt_state, key, first, count, data, anchor, ys):
        loss = base
        if anchored:
            def loss(v, xb, yb, eb=None):
                # −log N(θ; a, s²) = −log N(θ; 0, s²) − θ·a / s² + const: the prior re-centred at the anchor
                pull = sum(jnp.sum(v[p] * anchor[p] * precision[p]) for p in anchor)
                return base(v, xb, yb, eb) - pull / n

        if perturbed:
            data = (data[0], ys, data[2])
        return build_chunk(loss, optimizer, n, batch_size)(u, opt_state, key, first, count, data)

    @jax.jit
    def run(u, opt_state, key, first, count, data, anchors, ys):
        # every member draws its own minibatches: its index folded into the run's key
        member_keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(members)
        state, losses = jax.vmap(member_chunk, in_axes=(0, 0, 0, None, None, None, 0 if anchored else None,
                                                        0 if perturbed else None))(
            u, opt_state, member_keys, first, count, data, anchors, ys)
        return state, losses.T

    return run


def _anchors(model: LiftedModel, y: np.ndarray, y_err, num_features: int, num_members: int, key):
    """Anchored members' prior draws ``{path: (members, ...)}`` and, for a Gaussian of known noise, their
    targets perturbed by that noise ``(members, n, out)`` (else ``None``)."""
    spec = model.spec(num_features)
    key_prior, key_noise = jax.random.split(key)
    draws = model.point_model().sample_prior(num_features, num_members, key_prior)
    anchors = {p: draws[p] - getattr(spec.priors[p], "loc", 0.0) for p in spec.paths}  # a_m = draw − prior mean
    likelihood = model.likelihood
    if not (isinstance(likelihood, Gaussian) and not likelihood.learned):
        return anchors, None
    scale = likelihood.scale * (jnp.ones_like(jnp.asarray(y)) if y_err is None else jnp.asarray(y_err))
    noise = jax.random.normal(key_noise, (num_members,) + y.shape, _checks.float_dtype())
    return anchors, jnp.asarray(y)[None] + scale[None] * noise


def fit_ensemble(
    model: LiftedModel,
    x,
    y,
    seed=0,
    num_members: int = 10,
    objective: str = "map",
    num_steps: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    batch_size: int | str | None = "auto",
    validation="auto",
    patience: int = 10,
    eval_every: int | None = None,
    progress_bar: bool = False,
    y_err=None,
    mesh=None,
    anchored: bool = False,
) -> Fit:
    """Fit ``num_members`` MAP (or MLE) networks from different starts in one vectorised program.

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`; ``seed`` gives the members' keys
        ``jax.random.split(key, num_members)``.
      num_members: ensemble size (default 10).
      objective: ``"map"`` (default; the prior as an L2 penalty) or ``"mle"``.
      num_steps, optimizer, learning_rate, batch_size: as in
        :func:`bnn.inference.optimize.fit_point` (the default Adam decays its rate to 0).
      validation: a fraction of the rows or ``(x_val, y_val)``: early stopping per member;
        ``None``: none, every member trained for ``num_steps``; ``"auto"`` (default): 10 % of the rows
        on tables of 10 to 2000 rows (:func:`auto_validation`), none above, with ``anchored`` or with
        ``tune_prior`` (the evidence's prior and noise scale regularise the members there).
      patience, eval_every, progress_bar, y_err: as in :func:`bnn.inference.optimize.fit_point`.
      mesh: data parallelism: ``"all"`` (every local device) or a one-axis
        ``jax.sharding.Mesh``; the training rows are split over its devices (they must divide
        evenly) and the parameters replicated. ``None`` (default): one device.
      anchored: randomised-MAP members (Pearce et al., 2020; Osband et al., 2018): member ``m``'s prior
        is re-centred at its own draw ``a_m`` from the prior, ``−log N(θ; a_m, s²)``, and, for a
        Gaussian likelihood of known noise (a fixed ``scale``, with ``y_err`` if given), it fits its
        own targets ``y + σ ε_m``. For a linear-Gaussian model the members are then exact
        independent posterior draws; for a network they keep the ensemble's spread from collapsing
        where the data say little. Needs ``objective="map"`` and zero-mean-centred priors' scales
        (Normal / FanInNormal); a learned noise is not perturbed (use ``tune_prior=True`` to fix it).

    Returns:
      a :class:`bnn.Fit` with ``num_members`` draws; ``info`` holds ``loss``
      ``(steps, members)``, ``num_members``, ``objective``, ``num_steps``, ``mean_first_steps`` (a
      :class:`bnn.Heteroscedastic` ensemble's members fit their means first, for that many of the
      ``num_steps`` asked; :func:`bnn.inference.optimize.mean_first`), ``batch_size``, ``settled`` (every
      member's loss had settled), ``validation`` (as resolved), ``wall_time`` and, with validation, ``val_loss``
      ``(checks, members)`` and ``best_step`` ``(members,)``.
    """
    objective = _checks.one_of(objective, "objective", OBJECTIVES)
    num_members = _checks.positive_int(num_members, "num_members")
    patience = _checks.positive_int(patience, "patience")
    given, optimizer = optimizer, optax.with_extra_args_support(make_optimizer(optimizer, learning_rate,
                                                                                  DEFAULT_LEARNING_RATE))

    mesh = resolve_mesh(mesh)
    start = time.perf_counter()
    if not isinstance(anchored, bool):
        raise TypeError(f"`anchored` must be True or False; got {anchored!r}.")
    validation = auto_validation(validation, np.shape(x)[0] if np.ndim(x) else 0, anchored)
    rows = training_rows(model, x, y, y_err, seed, validation, batch_size)
    num_steps = check_num_steps(num_steps, rows.batch_size)
    n, num_features, transforms = rows.n, rows.num_features, rows.transforms
    warm, first_steps = mean_first(model, num_steps)
    if warm is None:
        starts = _member_starts(model, rows.x, rows.y, jax.random.split(rows.key, num_members))
    else:  # the same members (same keys, same starts) fit their means first, on the training rows
        first = fit_ensemble(warm, rows.x, rows.y, rows.key, num_members, objective, first_steps, optimizer,
                             batch_size=rows.batch_size, validation=None, eval_every=eval_every,
                             progress_bar=progress_bar, mesh=mesh)
        starts = {path: first.draws[path] for path in model.spec(num_features).paths}
        num_steps -= first_steps
    optimizer, warmup = after_mean_first(given, learning_rate, optimizer, first_steps, num_steps)
    u0, opt_state = model.program(start_program, optimizer=optimizer, num_features=num_features, members=True)(
        starts, num_steps, warmup)
    if anchored and objective != "map":
        raise ValueError("`anchored=True` re-centres each member's prior; it needs objective='map', got 'mle'.")
    anchors, member_ys = (_anchors(model, rows.y, rows.y_err, num_features, num_members,
                                   jax.random.fold_in(rows.key, _keys.ANCHORS)) if anchored else (None, None))
    program = model.program(
        _build_members_program, objective=objective, optimizer=optimizer, n=n, num_features=num_features,
        batch_size=rows.batch_size, num_members=num_members, anchored=anchored, perturbed=member_ys is not None,
    )
    (u, _), trained = train(
        model, rows, lambda state, key, first, count, data: program(*state, key, first, count, data, anchors, member_ys),
        (u0, opt_state), rows.on(mesh), num_steps, eval_every,
        f"ensemble ({objective.upper()})", progress_bar, patience, members=True)
    draws = {k: transforms[k](v) for k, v in u.items()}
    info = {**trained, "num_members": num_members, "objective": objective, "anchored": anchored,
            "mean_first_steps": first_steps,
            "validation": validation if validation is None or isinstance(validation, float) else "given",
            "wall_time": time.perf_counter() - start}
    return Fit(model=model, method="ensemble", draws=draws, num_features=num_features, info=info, y_err=rows.y_err_given)
