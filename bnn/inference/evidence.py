"""Priors (and noise) from the data: the prior scale chosen by the evidence, for every method.

``fit(..., tune_prior=True)`` chooses one factor ``c`` for every prior scale (and, for a learned
Gaussian noise, the noise scale ``σ``) by type-II maximum likelihood under the GGN Laplace
approximation (MacKay, 1992; Immer et al., 2021). At the MAP θ* the log evidence is

    log p(y | θ*, σ) + log p(θ* | c) + d/2 log 2π − ½ log det(G/σ² + diag(1/(c sᵢ)²))

(G the GGN at unit noise, sᵢ the prior scales). The tuning alternates two cheap steps:

1. maximise that evidence over ``(log c, log σ)`` with θ* fixed: the spectrum of the GGN is
   computed once per round from the SVD of its square root, and L-BFGS runs on two numbers;
2. refit the MAP under the new ``c`` and ``σ``, warm-started at the last θ*: a compiled loop in
   which ``c`` and ``σ`` are arguments, so every round reuses one program.

until ``c`` and ``σ`` change by less than :data:`TUNE_TOLERANCE` (relative), or the evidence has not
risen for :data:`TUNE_PATIENCE` rounds (then the round of the highest evidence is kept). For a
linear-Gaussian model the fixed point is the exact type-II maximum likelihood: at θ* the MAP's
gradient vanishes, so only the explicit dependence on ``c`` and ``σ`` matters.

:func:`tune` returns the tuned model: the prior scaled by ``c`` and, for a learned noise, a
Gaussian whose scale is fixed at the chosen σ (empirical Bayes). Every method then runs on it;
``laplace`` keeps the noise site at σ instead (its evidence is reported for that model).
Fixing σ is what keeps the samplers' chains and the ensemble's members from interpolating small
tables with a vanishing noise scale.

``tune_prior="layerwise"`` chooses one factor per parameter array instead (a layer's kernel and
bias each their own; laplace-torch's layerwise prior precision), by the same alternation: the
evidence's determinant is then a k × k one over the spectrum (:func:`_evidence_program`).

A hierarchical prior (``bnn.Normal(scale=bnn.HalfNormal(s))``) with ``tune_prior`` keeps its
sampled scales and takes only the noise scale from the evidence: :func:`tune` runs on the point
model (each hyperprior's scale ``s`` as a fixed prior scale) and the sampler then runs on the
hierarchical model with σ fixed at the chosen value (:func:`_noise_from_evidence`).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bnn import _checks
from bnn.fit import Fit
from bnn.inference._loop import FULL_BATCH_STEPS, for_run, make_optimizer
from bnn.inference.chains import FlatLayout
from bnn.inference.optimize import DEFAULT_LEARNING_RATE, fit_point
from bnn.lifting import LiftedModel
from bnn.likelihoods import NOISE_SITE, Y_ERR, Gaussian
from bnn.priors import FanInNormal, Normal, Prior, is_hierarchical

#: Rounds of "maximise the evidence at θ*, refit the MAP" at most, and the relative change of the
#: prior and noise scales below which the tuning stops. A linear model reaches the exact maximiser
#: to 1e-6 in 4-5 rounds at this tolerance; on UCI wine a network's scales move by 1-2 % a round from
#: the fifth round on, each round costing a GGN spectrum (0.3 s there), so ten rounds at most.
TUNE_ITERATIONS = 10
TUNE_TOLERANCE = 1e-2
#: Rounds without a higher evidence after which the tuning stops and keeps its best round. For a
#: linear-Gaussian model every round raises the evidence until the fixed point; for a network the
#: alternation can drift past its best (UCI yacht: c falls from 0.34 to 0.30 over 20 rounds while the
#: evidence falls from 90 to 70), and it stops after a few rounds instead of running all 20.
TUNE_PATIENCE = 2
#: Layerwise tuning: the evidence's maximisation at θ* stops when no component of its gradient with
#: respect to (log c₁, …, log c_G, log σ) exceeds this (nats per unit of log scale; 100 iterations at most).
LAYERWISE_GRADIENT_TOLERANCE = 1e-3
#: The warm-started refits of the default Adam: this fraction of the first MAP fit's steps (at least
#: :data:`MIN_REFIT_STEPS`), at this fraction of its peak learning rate.
REFIT_FRACTION = 0.25
MIN_REFIT_STEPS = 100
REFIT_RATE_FRACTION = 0.1


def _fisher_root(model: LiftedModel, f_star, ys, params):
    """``Λ^½`` per row ``(n, w, w)``: the square root of each row's output-space Fisher block of the
    likelihood at the network outputs ``f_star`` ``(n, w)``."""
    grad_f = jax.grad(lambda f: model.likelihood.ggn_loss(f, f_star, ys, params))
    width = f_star.shape[1]
    # The output-space Hessian is block diagonal over rows, so one Hessian-vector product per
    # output column with an all-ones direction gives every row's block: (n, w, w).
    blocks = jnp.stack([jax.jvp(grad_f, (f_star,), (jnp.zeros_like(f_star).at[:, k].set(1.0),))[1]
                        for k in range(width)], axis=-1)
    w, u = jnp.linalg.eigh(0.5 * (blocks + jnp.swapaxes(blocks, -1, -2)))
    return jnp.einsum("nij,nj,nkj->nik", u, jnp.sqrt(jnp.clip(w, 0.0, None)), u)


def whitened_spectrum(model: LiftedModel, unravel, theta_star, point, xs, ys, es, prior_std):
    """Eigenvalues ``λ`` ``(k,)`` and eigenvectors ``V`` ``(d, k)`` of ``S G S`` (S = diag(prior_std),
    G the GGN), with ``k = min(n · outputs, d)`` (the other eigenvalues of ``S G S`` are 0), and
    the square root ``A = Λ^½ J S`` ``(n · outputs, d)`` itself.

    Computed from the square root ``A = Λ^½ J S`` (``G = Jᵀ Λ J``, Λ the per-row output-space
    Fisher blocks of the likelihood) by a singular value decomposition, ``S G S = Aᵀ A``, never
    by forming G: in float32 an eigendecomposition of a formed ``S G S`` carries an absolute
    error of about ε·λ_max in every eigenvalue (on a UCI network ε·λ_max reaches 5, which
    swamps the weakly determined directions whose eigenvalues are below 10), while the SVD's
    error in ``λ = s²`` is about ε·s_max·s, of the order of ε²·λ_max for the small ones.
    """
    params = point if es is None else {**point, Y_ERR: es}
    f_star = model.apply({**point, **unravel(theta_star)}, xs)                        # (n, w)
    jac = jax.jacfwd(lambda t: model.apply({**point, **unravel(t)}, xs))(theta_star)  # (n, w, d)
    root = _fisher_root(model, f_star, ys, params)
    a = jnp.einsum("nij,njd->nid", root, jac).reshape(-1, jac.shape[-1]) * prior_std[None, :]
    _, singular, vt = jnp.linalg.svd(a, full_matrices=False)
    return jnp.square(singular), vt.T, a


#: ``hessian="lowrank"``: extra random directions of the range finder beyond the rank, its power
#: (subspace) iterations, and how many directions one pass over the rows carries at a time (memory:
#: rows × hidden units × this many activations).
LOWRANK_OVERSAMPLE = 10
LOWRANK_POWER_ITERATIONS = 2
LOWRANK_CHUNK = 16


def lowrank_spectrum(model: LiftedModel, unravel, theta_star, point, xs, ys, es, prior_std, rank: int, key):
    """The ``rank`` largest eigenvalues ``λ`` ``(k,)`` and their eigenvectors ``V`` ``(d, k)`` of
    ``S G S``, without forming G or its square root (``k = min(rank, n · outputs, d)``).

    A randomised SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1) of
    ``A = Λ^½ J S`` touches A only through products: ``A v`` is a Jacobian-vector product of
    the network at θ* (a forward pass), ``Aᵀ u`` a vector-Jacobian product (a backward pass),
    :data:`LOWRANK_CHUNK` directions at a time. A Gaussian test matrix of ``rank`` +
    :data:`LOWRANK_OVERSAMPLE` columns, :data:`LOWRANK_POWER_ITERATIONS` subspace iterations
    (each re-orthonormalised), then the exact SVD of the small ``B = Qᵀ A``. The λ are those of
    ``S G S`` compressed onto the found subspace, so each is at most the exact one (Cauchy
    interlacing); where the subspace holds the whole row space of A (``rank + oversample ≥
    n · outputs`` or ``≥ d``) they are the exact nonzero spectrum. Memory: O((n · outputs + d) ·
    (rank + oversample)).
    """
    params = point if es is None else {**point, Y_ERR: es}
    dim = theta_star.shape[0]

    def net(t, x):
        return model.apply({**point, **unravel(t)}, x)

    f_star, jvp = jax.linearize(lambda t: net(t, xs), theta_star)
    vjp = jax.linear_transpose(jvp, theta_star)   # the same linearisation, transposed: no second forward pass
    root = _fisher_root(model, f_star, ys, params)                                     # (n, w, w)
    rows = f_star.shape[0] * f_star.shape[1]

    def times_a(v):   # (d,) -> (n·w,)
        return jnp.einsum("nij,nj->ni", root, jvp(prior_std * v)).reshape(-1)

    def times_at(u):  # (n·w,) -> (d,)
        return prior_std * vjp(jnp.einsum("nji,nj->ni", root, u.reshape(f_star.shape)))[0]

    def columns(fn, m):  # fn applied to each column of m: (p, l) -> (q, l)
        return jax.lax.map(fn, m.T, batch_size=LOWRANK_CHUNK).T

    width = min(rank + LOWRANK_OVERSAMPLE, dim)
    omega = jax.random.normal(key, (dim, width), dtype=theta_star.dtype)
    q, _ = jnp.linalg.qr(columns(times_a, omega))                                      # (n·w, l')
    for _ in range(LOWRANK_POWER_ITERATIONS):
        z, _ = jnp.linalg.qr(columns(times_at, q))                                     # (d, l')
        q, _ = jnp.linalg.qr(columns(times_a, z))
    b = columns(times_at, q).T                                                         # Qᵀ A: (l', d)
    _, singular, vt = jnp.linalg.svd(b, full_matrices=False)
    keep = min(rank, rows, dim)
    return jnp.square(singular[:keep]), vt[:keep].T


def scaled_prior(prior, factor: float):
    """The prior with every scale multiplied by ``factor`` (zero-mean Normal / FanInNormal priors)."""

    def one(p: Prior) -> Prior:
        if isinstance(p, Normal) and p.hierarchical:
            raise ValueError(
                f"the evidence tuning chooses fixed prior scales; {p!r} samples its scale (a hyperprior). "
                "model.fit(..., tune_prior=True) with such a prior takes only the noise scale from the evidence."
            )
        if isinstance(p, Normal) and p.loc == 0.0:
            return Normal(p.scale * factor)
        if isinstance(p, FanInNormal):
            return FanInNormal(p.scale * factor)
        raise ValueError(f"tune_prior=True needs zero-mean Normal or FanInNormal priors; got {p!r}.")

    return one(prior) if isinstance(prior, Prior) else {k: one(v) for k, v in prior.items()}


def prior_stds(spec, selected: tuple[str, ...]) -> jax.Array:
    """Prior standard deviation of every entry of the selected parameters, in ravel order."""
    shapes = dict(zip(spec.paths, spec.shapes))
    flat, _ = ravel_pytree({p: jnp.full(shapes[p], spec.priors[p].std(shapes[p]), _checks.float_dtype()) for p in selected})
    return flat


def _evidence_program(model: LiftedModel, unravel, learned_noise: bool, groups: tuple[int, ...] | None = None):
    """Jitted ``(θ*, point, xs, ys, es, prior_std, h0) -> (h, log evidence)``: the GGN Laplace evidence
    maximised over ``h = (log c, log σ)`` at fixed θ*, where the prior scales are ``c · prior_std``
    and ``σ`` is the noise scale (it only moves for a learned noise; ``point`` holds the σ₀ at
    which the GGN G₀ is evaluated, and G(σ) = G₀ σ₀²/σ²).

    ``groups`` (layerwise tuning): the sizes of consecutive blocks of θ (one per parameter array,
    in ravel order), each with a factor of its own, ``h = (log c₁, …, log c_G, log σ)``; see below.

    With S = diag(prior_std), det(G/σ² + S⁻²/c²) = det(S⁻²/c²) · det(I + (c σ₀/σ)² S G₀ S), and the
    first factor cancels the normalising constants of the prior, so

        log Z = log p(y | θ*, σ) − Σᵢ θᵢ² / (2 c² sᵢ²) − ½ Σₖ log(1 + (c σ₀/σ)² λₖ)

    with λₖ the eigenvalues of S G₀ S (:func:`whitened_spectrum`), computed once: no factorisation
    inside the optimisation, and no failure where the posterior precision is nearly singular.

    With a factor per block, C = diag(c_g(i)) and S G₀ S = V Λ Vᵀ (k = rank columns), Sylvester's
    identity gives det(I + (σ₀/σ)² C S G₀ S C) = det(I_k + (σ₀/σ)² Λ^½ (Σ_g c_g² V_gᵀ V_g) Λ^½), a
    k × k determinant whose Gram matrices V_gᵀ V_g are formed once. It is factorised by Cholesky
    at each evaluation; its diagonal dominates (Σ_g V_gᵀ V_g = I), so the factorisation is
    accurate in each eigenvalue's own scale (a graded matrix), and for equal factors it is the
    diagonal I + (cσ₀/σ)² Λ of the single-factor formula.
    """
    optimizer = optax.lbfgs()
    bounds = None if groups is None else np.cumsum((0, *groups))

    def run(theta_star, point, xs, ys, es, prior_std, h0):
        params = point if es is None else {**point, Y_ERR: es}
        f_star = model.apply({**point, **unravel(theta_star)}, xs)
        eigenvalues, vectors, _ = whitened_spectrum(model, unravel, theta_star, point, xs, ys, es, prior_std)
        sigma0 = point[NOISE_SITE] if learned_noise else 1.0
        if groups is None:
            ridge = jnp.sum(jnp.square(theta_star / prior_std))
        else:  # per block: its whitened ridge (G,) and the Gram matrix of its rows of V (G, k, k)
            blocks = list(zip(bounds[:-1], bounds[1:]))
            whitened = jnp.square(theta_star / prior_std)
            ridge = jnp.stack([jnp.sum(whitened[a:b]) for a, b in blocks])
            grams = jnp.stack([vectors[a:b].T @ vectors[a:b] for a, b in blocks])
            root = jnp.sqrt(eigenvalues)

        def neg_evidence(h):
            h = jnp.clip(h, -20.0, 20.0)  # keep the line search's trial points finite
            num_c = 1 if groups is None else len(groups)
            c = jnp.exp(h[0]) if groups is None else jnp.exp(h[:num_c])
            sigma, lik_params = 1.0, params  # a fixed noise: G is at its own scale (σ₀ = σ = 1 here)
            if learned_noise:
                sigma = jnp.exp(h[num_c])
                lik_params = {**params, NOISE_SITE: sigma}
            log_lik = jnp.sum(model.likelihood.log_prob(f_star, ys, lik_params))
            if groups is None:
                log_det = jnp.sum(jnp.log1p(jnp.square(c * sigma0 / sigma) * eigenvalues))
            else:
                weights = jnp.square(sigma0 / sigma) * root[:, None] * root[None, :]
                inner = jnp.einsum("g,gkl->kl", jnp.square(c), grams) * weights
                chol = jnp.linalg.cholesky(jnp.eye(root.shape[0], dtype=root.dtype) + inner)
                log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
            return -(log_lik - jnp.sum(0.5 * ridge / jnp.square(c)) - 0.5 * log_det)

        value_and_grad = optax.value_and_grad_from_state(neg_evidence)

        def step(carry, _):
            h, state = carry
            value, grad = value_and_grad(h, state=state)
            updates, state = optimizer.update(grad, state, h, value=value, grad=grad, value_fn=neg_evidence)
            return (optax.apply_updates(h, updates), state), value

        state0 = for_run(optimizer.init(h0), 100)
        if groups is None:  # each evaluation costs O(k): a fixed 100 iterations
            (h, _), _ = jax.lax.scan(step, (h0, state0), None, length=100)
        else:  # each costs a k × k Cholesky factorisation: stop once the gradient has vanished
            def going(carry):
                h, state, i = carry
                grad = optax.tree_utils.tree_get(state, "grad")
                return (i < 100) & ((i == 0) | (jnp.max(jnp.abs(grad)) > LAYERWISE_GRADIENT_TOLERANCE))

            h, _, _ = jax.lax.while_loop(going, lambda c: (*step(c[:2], None)[0], c[2] + 1), (h0, state0, 0))
        return jnp.clip(h, -20.0, 20.0), -neg_evidence(h)

    return jax.jit(run)


def _rescaled(model: LiftedModel, factor: float | dict[str, float], likelihood, spec=None) -> LiftedModel:
    """A model of the same class and network with ``likelihood`` and every prior scale times ``factor``,
    or, for a dict ``{path: factor}`` (layerwise; ``spec`` gives each path's prior), a prior dict with
    one scaled prior per parameter path."""
    if isinstance(factor, dict):
        prior = {glob.escape(p): scaled_prior(spec.priors[p], c) for p, c in factor.items()}  # keys match only their path
    else:
        prior = scaled_prior(model.prior, factor)
    return type(model)(model.module, prior=prior, likelihood=likelihood, matmul_precision=model.matmul_precision)



def _refit_program(model: LiftedModel, unravel, optimizer, num_steps: int, learned_noise: bool):
    """Jitted ``(θ, inv_var, σ, xs, ys, es) -> θ``: ``num_steps`` of ``optimizer`` on the MAP objective
    ``[−Σ log p(y | θ, σ) + ½ Σ inv_var · θ²] / N`` from θ (a flat vector of every network parameter).

    ``inv_var`` (the prior precision of each entry, ``1 / (c sᵢ)²``) and σ are arguments, so every
    round of the tuning runs the same compiled program.
    """

    def run(theta, inv_var, sigma, xs, ys, es):
        params = {} if es is None else {Y_ERR: es}
        if learned_noise:
            params[NOISE_SITE] = sigma
        n = xs.shape[0]

        def loss(t):
            f = model.apply(unravel(t), xs)
            return (-jnp.sum(model.likelihood.log_prob(f, ys, params)) + 0.5 * jnp.sum(inv_var * jnp.square(t))) / n

        def step(carry, _):
            t, state = carry
            value, grad = jax.value_and_grad(loss)(t)
            updates, state = optimizer.update(grad, state, t, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(t, updates), state), None

        (theta, _), _ = jax.lax.scan(step, (theta, for_run(optimizer.init(theta), num_steps)), None, length=num_steps)
        return theta

    return jax.jit(run)


class Tuned(NamedTuple):
    """The result of :func:`tune`.

    Attributes:
      model: the model under the tuned prior, with the learned noise fixed at the tuned σ.
      laplace_model: the model under the tuned prior with the likelihood as given (Laplace's).
      map_fit: the last MAP fit (of ``laplace_model``; its noise site, if any, holds σ).
      info: ``prior_scale_factor``, ``prior_scale`` (a single prior), ``noise_scale`` (learned
        noise), ``log_evidence`` (at the tuned values), ``tune_iterations``, ``tune_history``
        (``(rounds, 3)``: factor, σ or NaN, evidence) and ``tune_time`` (seconds). Layerwise:
        ``prior_scale_factor`` and ``prior_scale`` are dicts ``{path: value}`` and each row of
        ``tune_history`` holds the factors in sorted path order, then σ and the evidence.
    """

    model: LiftedModel
    laplace_model: LiftedModel
    map_fit: Fit
    info: dict


def tune(model: LiftedModel, x, y, y_err=None, seed=0, selected: tuple[str, ...] | None = None,
         map_options: dict | None = None, layerwise: bool = False) -> Tuned:
    """Choose the prior scale factor (and a learned noise scale) by the Laplace evidence.

    Args:
      model: a model whose priors are zero-mean :class:`bnn.Normal` / :class:`bnn.FanInNormal`.
      x, y, y_err: checked training data (as the methods receive them).
      seed: seed of the first MAP fit (the module's initialisers).
      selected: the parameter paths the evidence's curvature covers (default every one).
      map_options: options of the first MAP fit (:func:`bnn.inference.optimize.fit_point`);
        the refits use the same ``optimizer`` if one is given, else the default Adam over
        :data:`REFIT_FRACTION` of the steps at :data:`REFIT_RATE_FRACTION` of the rate.
      layerwise: one factor per parameter array (``"Dense_0.kernel"``, ``"Dense_0.bias"``, ...)
        instead of one for all; needs every parameter ``selected``.
    """
    start = time.perf_counter()
    scaled_prior(model.prior, 1.0)  # refuses priors that cannot be scaled, before any fitting
    map_options = dict(map_options or {})
    likelihood = model.likelihood
    learned_noise = isinstance(likelihood, Gaussian) and likelihood.learned
    spec = model.spec(x.shape[1])
    selected = spec.paths if selected is None else tuple(selected)
    if layerwise and set(selected) != set(spec.paths):
        raise ValueError("layerwise prior tuning needs the curvature of every parameter array (subset='all'); "
                         f"got the subset {list(selected)}.")
    # the factors' blocks in ravel order (jax orders a dict's keys): one per parameter array, or one for all
    shapes = dict(zip(spec.paths, spec.shapes))
    paths = tuple(sorted(spec.paths)) if layerwise else ("*",)
    sizes = tuple(int(np.prod(shapes[p])) for p in paths) if layerwise else None
    # A learned noise starts at the spread of the targets (with known errors y_err: at the factor 1 on
    # them), fixed for the first MAP fit: learned jointly with the weights it can shrink towards 0 on a
    # small table (the network interpolating the rows), and the evidence at such a MAP keeps the tiny σ.
    sigma0 = 1.0 if y_err is not None else max(float(np.std(y)), 1e-3)
    first = _rescaled(model, 1.0, dataclasses.replace(likelihood, scale=sigma0)) if learned_noise else model
    map_fit = fit_point(first, x, y, method="map", seed=seed, y_err=y_err, **map_options)
    # the refits below run on every row: as long as a full-batch MAP fit, whatever batches the first fit drew
    num_steps = map_options.get("num_steps")
    if num_steps is None:
        num_steps = (map_fit.info["num_steps"] + map_fit.info["mean_first_steps"] if map_fit.info["batch_size"] is None
                     else FULL_BATCH_STEPS)
    num_steps = int(num_steps)
    if map_options.get("optimizer") is not None:
        refit_optimizer, refit_steps = map_options["optimizer"], num_steps
    else:
        rate = map_options.get("learning_rate") or DEFAULT_LEARNING_RATE
        refit_steps = max(int(REFIT_FRACTION * num_steps), MIN_REFIT_STEPS)
        refit_optimizer = make_optimizer(None, REFIT_RATE_FRACTION * rate, DEFAULT_LEARNING_RATE)
    refit_optimizer = optax.with_extra_args_support(refit_optimizer)
    point = {k: v[0] for k, v in map_fit.draws.items()}
    sigma = first.likelihood.scale if learned_noise else None
    xs, ys, es = jax.tree.map(jnp.asarray, (x, y, y_err))
    base_stds = prior_stds(spec, selected)   # every scale is linear in the factor
    all_stds = prior_stds(spec, spec.paths)
    theta_all, unravel_all = FlatLayout.ravel({p: point[p] for p in spec.paths})
    evidence_program = model.program(_evidence_program, unravel=FlatLayout.of({p: point[p] for p in selected}),
                                     learned_noise=learned_noise, groups=sizes)
    expand = (lambda f: f) if sizes is None else (lambda f: jnp.repeat(_checks.floats(f), np.asarray(sizes),
                                                                        total_repeat_length=sum(sizes)))
    refit = model.program(_refit_program, unravel=unravel_all,
                          optimizer=refit_optimizer, num_steps=refit_steps, learned_noise=learned_noise)
    factor, history, evidence = (1.0 if sizes is None else np.ones(len(paths))), [], np.nan
    best, since = None, 0
    for _ in range(TUNE_ITERATIONS):
        values = {**unravel_all(theta_all), **({NOISE_SITE: _checks.floats(sigma)} if learned_noise else {})}
        theta_star, _ = ravel_pytree({p: values[p] for p in selected})
        # h = (log of the factor on the current prior scales, log σ)
        h0 = _checks.floats([0.0] * len(paths) + [0.0 if sigma is None else np.log(sigma)])
        h, evidence = evidence_program(theta_star, values, xs, ys, es, expand(factor) * base_stds, h0)
        if not bool(jnp.all(jnp.isfinite(h))):
            warnings.warn(
                "maximising the Laplace evidence gave a non-finite prior or noise scale; keeping the last finite "
                f"values (prior scale factor {np.round(factor, 4)}).",
                UserWarning,
                stacklevel=4,
            )
            break
        step_c = float(jnp.exp(h[0])) if sizes is None else np.exp(np.asarray(h[:-1], np.float64))
        step_s = float(jnp.exp(h[-1])) / sigma if sigma is not None else 1.0
        factor = factor * step_c
        if learned_noise:
            sigma = float(jnp.exp(h[-1]))
        history.append((*np.atleast_1d(factor), np.nan if sigma is None else sigma, float(evidence)))
        inv_var = 1.0 / jnp.square(expand(factor) * all_stds)
        theta_all = refit(theta_all, inv_var, _checks.floats(1.0 if sigma is None else sigma), xs, ys, es)
        if best is None or float(evidence) > best[0]:
            best, since = (float(evidence), factor, sigma, theta_all), 0
        else:
            since += 1
        if np.max(np.abs(np.log(step_c))) < TUNE_TOLERANCE and abs(np.log(step_s)) < TUNE_TOLERANCE:
            break
        if since >= TUNE_PATIENCE:  # a network's evidence need not have a reachable fixed point: keep the best
            break
    if best is not None:
        evidence, factor, sigma, theta_all = best
    if sizes is not None:
        factor = {p: float(c) for p, c in zip(paths, factor)}
    draws = {p: v[None] for p, v in unravel_all(theta_all).items()}
    if learned_noise:
        draws[NOISE_SITE] = _checks.floats([sigma])
    laplace_model = _rescaled(model, factor, likelihood, spec)
    fixed = dataclasses.replace(likelihood, scale=sigma) if learned_noise else likelihood
    map_fit = Fit(model=laplace_model, method="map", draws=draws, num_features=x.shape[1], info=map_fit.info,
                  y_err=map_fit.y_err)
    info = {"prior_scale_factor": factor, "tune_iterations": len(history), "tune_history": np.asarray(history),
            "log_evidence": float(evidence)}
    if sizes is not None:
        info["prior_scale"] = {p: c * spec.priors[p].scale for p, c in factor.items()}
    elif isinstance(model.prior, (Normal, FanInNormal)):
        info["prior_scale"] = factor * model.prior.scale
    if learned_noise:
        info["noise_scale"] = sigma
    info["tune_time"] = time.perf_counter() - start
    return Tuned(model=_rescaled(model, factor, fixed, spec), laplace_model=laplace_model, map_fit=map_fit, info=info)


#: ``tune_prior=LAYERWISE``: a factor per parameter array (a layer's kernel and bias each have their own)
LAYERWISE = "layerwise"


def check_tune_prior(tune_prior) -> bool | str:
    """``tune_prior`` checked: ``False``, ``True`` (one factor) or ``"layerwise"``."""
    if isinstance(tune_prior, bool) or tune_prior == LAYERWISE:
        return tune_prior
    raise TypeError(f"`tune_prior` must be True, False or {LAYERWISE!r}; got {tune_prior!r}.")


def with_prior_tuning(fitter, name: str):
    """``fitter`` (a method's ``fit_*(model, x, y, seed=..., y_err=..., **options)``) with the options
    ``tune_prior`` (run :func:`tune` first and fit the tuned model) and ``tune_options`` (the
    MAP options of the tuning). The fit's ``info`` gains :class:`Tuned`'s ``info`` (for a
    hierarchical prior without the ``prior_scale`` keys: its scales are in the draws)."""

    @functools.wraps(fitter)
    def fit(model, x, y, seed=0, y_err=None, tune_prior: bool | str = False, tune_options: dict | None = None,
            **options):
        tune_prior = check_tune_prior(tune_prior)
        if tune_options is not None and not isinstance(tune_options, dict):
            raise TypeError(f"`tune_options` must be a dict of MAP options (e.g. {{'num_steps': 1000}}); got {tune_options!r}.")
        if not tune_prior:
            if tune_options is not None:
                raise ValueError("`tune_options` apply with tune_prior=True only.")
            return fitter(model, x, y, seed=seed, y_err=y_err, **options)
        if name == "mle":
            raise ValueError("tune_prior=True chooses the prior's scale; method='mle' has no prior. Use method='map'.")
        x, y = model.check_data(x, y)
        y_err = model.check_errors(y_err, y.shape)
        if is_hierarchical(model.prior):
            return _noise_from_evidence(fitter, model, x, y, seed, y_err, tune_prior, tune_options, **options)
        tuned = tune(model, x, y, y_err, seed, map_options=tune_options, layerwise=tune_prior == LAYERWISE)
        if name == "ensemble" and _is_auto(options.get("validation", "auto")):
            # the evidence's prior and fixed noise scale keep members from over-fitting; early stopping on
            # top under-fits them at that noise (yacht, 15 splits: -1.76 against -1.07 without)
            options["validation"] = None
        result = fitter(tuned.model, x, y, seed=seed, y_err=y_err, **options)
        return dataclasses.replace(result, info={**result.info, **tuned.info,
                                                 "wall_time": result.info.get("wall_time", 0.0) + tuned.info["tune_time"]})

    return fit


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def _noise_from_evidence(fitter, model, x, y, seed, y_err, tune_prior, tune_options, **options):
    """A hierarchical prior with ``tune_prior``: the noise scale σ by the evidence of the point model
    (each hyperprior's scale as a fixed prior scale, tuned as :func:`tune` does), the weights' scales
    sampled as the hyperprior says; the fit runs on the hierarchical model with σ fixed."""
    likelihood = model.likelihood
    if not (isinstance(likelihood, Gaussian) and likelihood.learned):
        raise ValueError(
            "with a hierarchical prior, tune_prior chooses only the noise scale of a learned Gaussian noise "
            f"(the weights' scales are sampled); the likelihood is {likelihood!r}. Drop tune_prior, or use a "
            "fixed-scale prior.")
    tuned = tune(model.point_model(), x, y, y_err, seed, map_options=tune_options, layerwise=tune_prior == LAYERWISE)
    sigma = tuned.info["noise_scale"]
    result = fitter(model.with_likelihood(dataclasses.replace(likelihood, scale=sigma)), x, y, seed=seed, y_err=y_err,
                    **options)
    info = {k: v for k, v in tuned.info.items() if not k.startswith("prior_scale")}
    return dataclasses.replace(result, info={**result.info, **info,
                                             "wall_time": result.info.get("wall_time", 0.0) + info["tune_time"]})


def start_noise_scale(model: LiftedModel, x, y, key, map_options: dict | None = None, y_err=None) -> float | None:
    """The noise scale at which the MAP starts of a hierarchical model with a learned Gaussian noise
    hold it fixed: the Laplace evidence's choice for the point model (:func:`tune`).
    ``None`` (the noise learned with the weights) for any other model.

    Learned jointly with the weights under a fixed prior scale, the noise scale of a MAP fit shrinks
    towards 0 on a small table (the network interpolates its rows), and chains started there stay
    over-confident: in cross-validation on a 100-row table (`benchmarks/TINY.md`) such starts scored
    −16.8 nats per held-out row, starts at the evidence's noise scale −1.3. Only the starts change;
    the sampled posterior is the model's.
    """
    if not (model.hierarchical and isinstance(model.likelihood, Gaussian) and model.likelihood.learned):
        return None
    options = {k: v for k, v in (map_options or {}).items() if k != "y_err"}
    return float(tune(model.point_model(), x, y, y_err, seed=key, map_options=options).info["noise_scale"])
