"""Laplace approximation around the MAP: ``p(θ | D) ≈ Normal(θ*, H⁻¹)``.

``H`` is the Hessian of the negative log joint ``−log p(y | θ) − log p(θ)`` at the MAP
θ*, over the network parameters in ``subset``:

* ``hessian="full"`` — the exact Hessian;
* ``hessian="ggn"``  — the generalised Gauss–Newton matrix ``Jᵀ Λ J + prior precision``,
  where ``J = ∂f/∂θ`` and ``Λ`` is the Fisher information of the likelihood in the
  network outputs (for Gaussian, Bernoulli and Categorical likelihoods, the Hessian of
  ``−log p(y | f)``). It is positive definite even where the MAP is not fully converged.
* ``hessian="lowrank"`` — the GGN's ``rank`` largest eigen-directions (in prior-whitened
  coordinates) and the prior precision on the rest: ``S⁻¹ (I + V Λ Vᵀ) S⁻¹`` with
  ``S = diag(prior std)`` and ``V`` ``(d, rank)`` from a randomised SVD of the GGN's square root
  that only runs the network forwards and backwards (:func:`bnn.inference.evidence.lowrank_spectrum`).
  Nothing of size ``d × d`` is formed, so it fits networks far beyond ``MAX_DIM`` parameters;
  as ``rank`` reaches the GGN's rank (at most rows × outputs, and ``d``) it is ``"ggn"`` exactly.

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

``tune_prior=True`` chooses one factor ``c`` for every prior scale (and the noise scale of
a learned Gaussian noise) by maximising the Laplace log marginal likelihood (MacKay, 1992;
Immer et al., 2021): at the MAP θ* the evidence of the GGN Laplace is

    log p(y | θ*, σ) + log p(θ* | c) + d/2 log 2π − ½ log det(G/σ² + diag(1/(c sᵢ)²))

(G the GGN at unit noise, sᵢ the prior scales). It is maximised over ``(log c, log σ)``
with θ* fixed, the MAP is refitted under the chosen values, and the two steps alternate
until ``c`` and ``σ`` change by less than 0.1 %. For a linear-Gaussian model the fixed point
is the exact type-II maximum likelihood (at θ* the MAP's gradient vanishes, so only the
explicit dependence on ``c`` and ``σ`` matters).
"""

from __future__ import annotations

import fnmatch
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from bnn import _checks, _keys
from bnn.fit import Fit
from bnn.inference.chains import FlatLayout
from bnn.inference.evidence import LAYERWISE, check_tune_prior, lowrank_spectrum, prior_stds, tune, whitened_spectrum
from bnn.inference.optimize import fit_point
from bnn.lifting import LiftedModel, run_once

HESSIANS = ("ggn", "full", "lowrank")
#: ``hessian="lowrank"``'s default number of eigen-directions
DEFAULT_RANK = 100
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


def _laplace(model: LiftedModel, hessian: str, unravel, num_samples: int, rank: int | None = None):
    """One jitted program: the precision at θ*, draws from Normal(θ*, H⁻¹), the evidence, and a
    flag that the factorisation succeeded.

    The GGN posterior is factorised in prior-whitened coordinates: with S = diag(prior std),
    H = G + S⁻² = S⁻¹ (I + S G S) S⁻¹, and the spectrum of S G S comes from the SVD of its square
    root (:func:`_whitened_spectrum`), so H is positive definite by construction and accurate in
    float32 even when G is ill-conditioned (a small noise scale), where a Cholesky factorisation
    of the formed H fails. The exact Hessian has no such structure and is factorised by
    Cholesky (non-finite where it is not positive definite). ``"lowrank"`` takes the top ``rank``
    eigenpairs of S G S (:func:`lowrank_spectrum`) and returns no precision (``None``).
    """

    def run(theta_star, point, xs, ys, es, key, prior_std):
        def log_terms(theta):
            return model.log_joint_terms({**point, **unravel(theta)}, xs, ys, es)

        def neg_log_joint(theta):
            log_prior, log_lik = log_terms(theta)
            return -(log_prior + jnp.sum(log_lik))

        dim = theta_star.shape[0]
        z = jax.random.normal(key, (num_samples, dim), dtype=theta_star.dtype)
        spectrum = None
        if hessian == "full":
            precision = jax.hessian(neg_log_joint)(theta_star)
            precision = 0.5 * (precision + precision.T)
            chol = jnp.linalg.cholesky(precision)
            # θ = θ* + L⁻ᵀ z has covariance L⁻ᵀ L⁻¹ = (L Lᵀ)⁻¹ = H⁻¹.
            offsets = jax.scipy.linalg.solve_triangular(chol.T, z.T, lower=False).T
            half_log_det = jnp.sum(jnp.log(jnp.diag(chol)))
            ok = jnp.all(jnp.isfinite(chol))
        else:
            if hessian == "ggn":
                eigenvalues, vectors, root = whitened_spectrum(model, unravel, theta_star, point, xs, ys, es, prior_std)
                fisher_root = root / prior_std[None, :]                    # Λ^½ J: G = (Λ^½ J)ᵀ (Λ^½ J)
                precision = fisher_root.T @ fisher_root + jnp.diag(1.0 / jnp.square(prior_std))
            else:  # the top eigenpairs only: the prior alone in the other directions
                eigenvalues, vectors = lowrank_spectrum(model, unravel, theta_star, point, xs, ys, es, prior_std,
                                                        rank, jax.random.fold_in(key, 1))
                spectrum, precision = (eigenvalues, vectors), None
            # (I + V Λ Vᵀ)^(-1/2) = I + V ((1 + Λ)^(-1/2) − 1) Vᵀ for orthonormal columns V, so
            # θ = θ* + S (I + V Λ Vᵀ)^(-1/2) z has covariance S (I + S G S)⁻¹ S = H⁻¹.
            shrink = 1.0 / jnp.sqrt(1.0 + eigenvalues) - 1.0
            offsets = prior_std[None, :] * (z + ((z @ vectors) * shrink[None, :]) @ vectors.T)
            half_log_det = 0.5 * jnp.sum(jnp.log1p(eigenvalues)) - jnp.sum(jnp.log(prior_std))
            ok = jnp.all(jnp.isfinite(eigenvalues)) & jnp.all(jnp.isfinite(vectors))
        thetas = theta_star[None, :] + offsets
        log_evidence = -neg_log_joint(theta_star) + 0.5 * dim * jnp.log(2 * jnp.pi) - half_log_det
        return precision, thetas, log_evidence, ok, spectrum

    return run_once(run)  # once per fit: the GGN, its factorisation and the draws


def fit_laplace(
    model: LiftedModel,
    x,
    y,
    seed=0,
    hessian: str = "ggn",
    rank: int | None = None,
    subset="all",
    num_samples: int = 1000,
    predictive: str = "glm",
    map_fit: Fit | None = None,
    tune_prior: bool | str = False,
    tune_options: dict | None = None,
    y_err=None,
    **map_options,
) -> Fit:
    """Laplace approximation around a MAP fit.

    Args:
      model, x, y, seed: as in :meth:`bnn.BNN.fit`.
      hessian: ``"ggn"`` (default), ``"full"`` or ``"lowrank"`` (see the module docs).
      rank: ``hessian="lowrank"`` only: how many of the GGN's eigen-directions to keep
        (default :data:`DEFAULT_RANK`, at most the number of parameters).
      subset: ``"all"``, ``"last_layer"`` or a list of parameter path patterns.
      num_samples: posterior draws to take from the Gaussian.
      predictive: ``"glm"`` (linearised network, default) or ``"nn"``.
      map_fit: an existing MAP :class:`bnn.Fit` of this model on these data (else one is run).
      tune_prior: choose a factor for every prior scale (and a learned noise scale) by
        maximising the Laplace evidence (see the module docs); the fit's ``model`` then
        carries the tuned prior, and ``info`` reports ``prior_scale_factor``, ``prior_scale``
        (for a single prior), ``noise_scale`` (learned noise) and ``tune_history``.
        ``"layerwise"``: one factor per parameter array (laplace-torch's layerwise prior
        precision), reported as dicts ``{path: value}``; needs ``subset="all"``.
      tune_options: MAP options of the tuning only (as for every method; ``map_options`` apply to
        the tuning too).
      y_err: known noise scales of the observations (see :meth:`bnn.BNN.fit`).
      **map_options: options of that MAP fit (``num_steps``, ``optimizer``, ...).

    Returns:
      a :class:`bnn.Fit` with ``num_samples`` draws; ``info`` holds ``map`` (the MAP fit),
      ``subset`` (paths), ``precision`` (H, ``(d, d)``; ``"lowrank"``: ``eigenvalues`` ``(k,)`` and
      ``eigenvectors`` ``(d, k)`` of ``S G S`` instead, S = diag(prior std)), ``log_evidence`` (the
      Laplace estimate of ``log p(y)``; with ``"lowrank"`` from the kept eigenvalues only, an upper
      bound of the ``"ggn"`` one) and ``wall_time``.
    """
    hessian = _checks.one_of(hessian, "hessian", HESSIANS)
    if hessian == "lowrank":
        rank = DEFAULT_RANK if rank is None else _checks.positive_int(rank, "rank")
    elif rank is not None:
        raise ValueError(f"`rank` applies to hessian='lowrank' only; got rank={rank!r} with hessian={hessian!r}.")
    predictive = _checks.one_of(predictive, "predictive", PREDICTIVES)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    tune_prior = check_tune_prior(tune_prior)
    if tune_prior and hessian == "lowrank":
        raise ValueError(
            "tune_prior needs the GGN's whole spectrum, and hessian='lowrank' keeps its largest eigenvalues only: "
            "an evidence without the rest favours a wider prior and a smaller noise scale. Tune the prior with "
            "hessian='ggn' on a smaller network or a subset (e.g. subset='last_layer'), or fix the prior scale.")
    if tune_options is not None and not tune_prior:
        raise ValueError("`tune_options` apply with tune_prior=True only.")
    start = time.perf_counter()
    x, y = model.check_data(x, y)
    y_err = model.check_errors(y_err, y.shape)
    selected = select_paths(model.spec(x.shape[1]).paths, subset)
    tuned: dict = {}
    if tune_prior:
        if map_fit is not None:
            raise ValueError("`tune_prior=True` refits the MAP under the tuned prior; it cannot take `map_fit`.")
        result = tune(model, x, y, y_err, seed, selected, {**map_options, **(tune_options or {})},
                      layerwise=tune_prior == LAYERWISE)
        model, map_fit, tuned = result.laplace_model, result.map_fit, result.info
    elif map_fit is None:
        map_fit = fit_point(model, x, y, method="map", seed=seed, y_err=y_err, **map_options)
    elif map_options:
        raise ValueError(f"MAP options {sorted(map_options)} cannot be combined with `map_fit`.")
    elif not isinstance(map_fit, Fit) or map_fit.method != "map" or map_fit.model is not model:
        raise ValueError("`map_fit` must be a MAP Fit of this same model (model.fit(x, y, method='map')).")
    if (map_fit.y_err is None) != (y_err is None):
        raise ValueError("`map_fit` and this Laplace fit must both use `y_err`, or neither.")
    spec = model.spec(x.shape[1])
    point = {k: v[0] for k, v in map_fit.draws.items()}
    theta_star, unravel = FlatLayout.ravel({p: point[p] for p in selected})
    dim = theta_star.shape[0]
    if dim > MAX_DIM and hessian != "lowrank":
        raise ValueError(
            f"the Laplace precision would be {dim} × {dim}; use hessian='lowrank', subset='last_layer' or a smaller "
            f"list of paths (at most {MAX_DIM} parameters)."
        )
    if hessian == "lowrank":
        rank = min(rank, dim)
    xs, ys, es = jax.tree.map(jnp.asarray, (x, y, y_err))
    key = jax.random.fold_in(_checks.as_seed_key(seed), _keys.LAPLACE)
    program = model.program(_laplace, hessian=hessian, unravel=unravel, num_samples=num_samples, rank=rank)
    prior_std = prior_stds(spec, selected)
    precision, thetas, log_evidence, ok, spectrum = program(theta_star, point, xs, ys, es, key, prior_std)
    if not bool(ok):
        hint = ("use hessian='ggn', run the MAP longer (num_steps=...), or pick a smaller subset"
                if hessian == "full" else
                "its eigendecomposition did not converge (non-finite values at the MAP?): check the MAP fit, "
                "or run under jax.enable_x64(True)")
        raise np.linalg.LinAlgError(f"the {hessian!r} Hessian at the MAP could not be factorised: {hint}.")
    sampled = jax.vmap(unravel)(thetas)
    draws = {k: sampled[k] if k in sampled else jnp.broadcast_to(v, (num_samples,) + v.shape) for k, v in point.items()}
    info = {
        "map": map_fit,
        "hessian": hessian,
        "predictive": predictive,
        "subset": selected,
        **({"precision": np.asarray(precision)} if spectrum is None else
           {"rank": rank, "eigenvalues": np.asarray(spectrum[0]), "eigenvectors": np.asarray(spectrum[1])}),
        "mean": np.asarray(theta_star),
        "log_evidence": float(log_evidence),
        "wall_time": time.perf_counter() - start,
        "num_train": x.shape[0],
        **tuned,
    }
    center = {p: point[p] for p in spec.paths} if predictive == "glm" else None
    return Fit(model=model, method="laplace", draws=draws, num_features=x.shape[1], info=info, linearize_at=center,
               y_err=y_err)
