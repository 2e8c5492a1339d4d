"""Laplace approximation around the MAP: ``p(θ | D) ≈ Normal(θ*, H⁻¹)``.

``H`` is the Hessian of the negative log joint ``−log p(y | θ) − log p(θ)`` at the MAP
θ*, over the network parameters in ``subset``:

* ``hessian="full"`` — the exact Hessian;
* ``hessian="ggn"``  — the generalised Gauss–Newton matrix ``Jᵀ Λ J + prior precision``,
  where ``J = ∂f/∂θ`` and ``Λ`` is the Fisher information of the likelihood in the
  network outputs (for Gaussian, Bernoulli and Categorical likelihoods, the Hessian of
  ``−log p(y | f)``). It is positive definite even where the MAP is not fully converged.

``subset="all"`` uses every network parameter (a dense ``d × d`` matrix: for small
nets); ``"last_layer"`` only the last layer (the top-level module with the highest
number, e.g. ``Dense_2`` of an ``MLP`` with three layers), the others staying at the
MAP; or a list of glob patterns of parameter paths. The likelihood's own latent
sites (a learned noise scale) stay at their MAP value.

Predictions (``predictive=``) use by default the network linearised around the MAP,
``f(x, θ*) + J(x)(θ − θ*)`` (``"glm"``), the model the GGN posterior is exact for;
``"nn"`` evaluates the network itself at each draw, which is known to underfit badly
when the Laplace covariance is taken over all weights (Immer et al., 2021).

For a network that is linear in its parameters with a Gaussian likelihood, both
Hessians are exact and the Laplace posterior is the exact posterior.
"""

from __future__ import annotations

import fnmatch
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bnn import _checks
from bnn.fit import Fit
from bnn.inference.optimize import fit_point
from bnn.lifting import LiftedModel
from bnn.likelihoods import Y_ERR

HESSIANS = ("ggn", "full")
PREDICTIVES = ("glm", "nn")
MAX_DIM = 10_000


def select_paths(paths: tuple[str, ...], subset) -> tuple[str, ...]:
    """The parameter paths in ``subset`` (``"all"``, ``"last_layer"`` or glob patterns)."""
    if subset == "all":
        return tuple(paths)
    if subset == "last_layer":
        tops = {p.split(".")[0] for p in paths}
        numbered = {t: int(m.group(1)) for t in tops if (m := re.search(r"_(\d+)$", t))}
        if not numbered or len(tops) < 2:
            raise ValueError(
                f"subset='last_layer' needs numbered top-level layers (Dense_0, Dense_1, ...); the parameters are "
                f"{list(paths)}. Pass a list of path patterns instead, e.g. subset=['Dense_3.*']."
            )
        last = max(numbered, key=lambda t: numbered[t])
        return tuple(p for p in paths if p.split(".")[0] == last)
    if isinstance(subset, (list, tuple)) and subset and all(isinstance(s, str) for s in subset):
        unmatched = [s for s in subset if not fnmatch.filter(paths, s)]
        if unmatched:
            raise ValueError(f"`subset` pattern(s) {unmatched} match no parameter. Valid paths: {list(paths)}.")
        return tuple(p for p in paths if any(fnmatch.fnmatchcase(p, s) for s in subset))
    raise ValueError(f"`subset` must be 'all', 'last_layer' or a list of path patterns; got {subset!r}.")


def _laplace(model: LiftedModel, hessian: str, unravel, num_samples: int):
    """One jitted program: the precision at θ*, its Cholesky factor, draws, and the evidence."""

    def run(theta_star, point, xs, ys, es, key):
        def log_terms(theta):
            return model.log_joint_terms({**point, **unravel(theta)}, xs, ys, es)

        def neg_log_joint(theta):
            log_prior, log_lik = log_terms(theta)
            return -(log_prior + jnp.sum(log_lik))

        if hessian == "full":
            precision = jax.hessian(neg_log_joint)(theta_star)
        else:
            f_star, jvp = jax.linearize(lambda t: model.apply({**point, **unravel(t)}, xs), theta_star)

            def neg_log_lik_linearised(theta):
                params = point if es is None else {**point, Y_ERR: es}
                return model.likelihood.ggn_loss(f_star + jvp(theta - theta_star), f_star, ys, params)

            precision = jax.hessian(neg_log_lik_linearised)(theta_star) + jax.hessian(lambda t: -log_terms(t)[0])(theta_star)
        precision = 0.5 * (precision + precision.T)
        chol = jnp.linalg.cholesky(precision)
        z = jax.random.normal(key, (num_samples, theta_star.shape[0]))
        # θ = θ* + L⁻ᵀ z has covariance L⁻ᵀ L⁻¹ = (L Lᵀ)⁻¹ = H⁻¹.
        thetas = theta_star[None, :] + jax.scipy.linalg.solve_triangular(chol.T, z.T, lower=False).T
        dim = theta_star.shape[0]
        log_evidence = -neg_log_joint(theta_star) + 0.5 * dim * jnp.log(2 * jnp.pi) - jnp.sum(jnp.log(jnp.diag(chol)))
        return precision, chol, thetas, log_evidence

    return jax.jit(run)


def fit_laplace(
    model: LiftedModel,
    x,
    y,
    seed=0,
    hessian: str = "ggn",
    subset="all",
    num_samples: int = 1000,
    predictive: str = "glm",
    map_fit: Fit | None = None,
    y_err=None,
    **map_options,
) -> Fit:
    """Laplace approximation around a MAP fit.

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      hessian: ``"ggn"`` (default) or ``"full"``.
      subset: ``"all"``, ``"last_layer"`` or a list of parameter path patterns.
      num_samples: posterior draws to take from the Gaussian.
      predictive: ``"glm"`` (linearised network, default) or ``"nn"``.
      map_fit: an existing MAP :class:`bnn.Fit` of this model on these data (else one is run).
      y_err: known noise scales of the observations (see :meth:`bnn.BNN.fit`).
      **map_options: options of that MAP fit (``num_steps``, ``optimizer``, ...).

    Returns:
      a :class:`bnn.Fit` with ``num_samples`` draws; ``info`` holds ``map`` (the MAP fit),
      ``subset`` (paths), ``precision`` (H, ``(d, d)``), ``log_evidence`` (the Laplace
      estimate of ``log p(y)``) and ``wall_time``.
    """
    hessian = _checks.one_of(hessian, "hessian", HESSIANS)
    predictive = _checks.one_of(predictive, "predictive", PREDICTIVES)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    start = time.perf_counter()
    if map_fit is None:
        map_fit = fit_point(model, x, y, method="map", seed=seed, y_err=y_err, **map_options)
    elif map_options:
        raise ValueError(f"MAP options {sorted(map_options)} cannot be combined with `map_fit`.")
    elif not isinstance(map_fit, Fit) or map_fit.method != "map" or map_fit.model is not model:
        raise ValueError("`map_fit` must be a MAP Fit of this same model (model.fit(x, y, method='map')).")
    x, y = model.check_data(x, y)
    y_err = model.check_errors(y_err, y.shape)
    if (map_fit.y_err is None) != (y_err is None):
        raise ValueError("`map_fit` and this Laplace fit must both use `y_err`, or neither.")
    spec = model.spec(x.shape[1])
    selected = select_paths(spec.paths, subset)
    point = {k: v[0] for k, v in map_fit.draws.items()}
    theta_star, unravel = ravel_pytree({p: point[p] for p in selected})
    dim = theta_star.shape[0]
    if dim > MAX_DIM:
        raise ValueError(
            f"the Laplace precision would be {dim} × {dim}; use subset='last_layer' or a smaller list of paths "
            f"(at most {MAX_DIM} parameters)."
        )
    xs, ys, es = jax.tree.map(jnp.asarray, (x, y, y_err))
    key = jax.random.fold_in(_checks.as_seed_key(seed), 5)
    program = model.compiled(("laplace", hessian, selected, num_samples, x.shape[1]),
                             lambda: _laplace(model, hessian, unravel, num_samples))
    precision, chol, thetas, log_evidence = program(theta_star, point, xs, ys, es, key)
    if not bool(jnp.all(jnp.isfinite(chol))):
        raise np.linalg.LinAlgError(
            f"the {hessian!r} Hessian at the MAP is not positive definite; use hessian='ggn', run the MAP longer "
            "(num_steps=...), or pick a smaller subset."
        )
    sampled = jax.vmap(unravel)(thetas)
    draws = {k: sampled[k] if k in sampled else jnp.broadcast_to(v, (num_samples,) + v.shape) for k, v in point.items()}
    info = {
        "map": map_fit,
        "hessian": hessian,
        "predictive": predictive,
        "subset": selected,
        "precision": np.asarray(precision),
        "mean": np.asarray(theta_star),
        "log_evidence": float(log_evidence),
        "wall_time": time.perf_counter() - start,
        "num_train": x.shape[0],
    }
    center = {p: point[p] for p in spec.paths} if predictive == "glm" else None
    return Fit(model=model, method="laplace", draws=draws, num_features=x.shape[1], info=info, linearize_at=center,
               y_err=y_err)
