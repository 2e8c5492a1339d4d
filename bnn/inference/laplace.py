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
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bnn import _checks
from bnn.fit import Fit
from bnn.inference.optimize import fit_point
from bnn.lifting import LiftedModel
from bnn.likelihoods import NOISE_SITE, Y_ERR, Gaussian
from bnn.priors import FanInNormal, Normal, Prior

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


def _whitened_spectrum(model: LiftedModel, unravel, theta_star, point, xs, ys, es, prior_std):
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
    grad_f = jax.grad(lambda f: model.likelihood.ggn_loss(f, f_star, ys, params))
    width = f_star.shape[1]
    # The output-space Hessian is block diagonal over rows, so one Hessian-vector product per
    # output column with an all-ones direction gives every row's block: (n, w, w).
    blocks = jnp.stack([jax.jvp(grad_f, (f_star,), (jnp.zeros_like(f_star).at[:, k].set(1.0),))[1]
                        for k in range(width)], axis=-1)
    w, u = jnp.linalg.eigh(0.5 * (blocks + jnp.swapaxes(blocks, -1, -2)))
    root = jnp.einsum("nij,nj,nkj->nik", u, jnp.sqrt(jnp.clip(w, 0.0, None)), u)         # Λ^½ per row
    a = jnp.einsum("nij,njd->nid", root, jac).reshape(-1, jac.shape[-1]) * prior_std[None, :]
    _, singular, vt = jnp.linalg.svd(a, full_matrices=False)
    return jnp.square(singular), vt.T, a


def _laplace(model: LiftedModel, hessian: str, unravel, num_samples: int):
    """One jitted program: the precision at θ*, draws from Normal(θ*, H⁻¹), the evidence, and a
    flag that the factorisation succeeded.

    The GGN posterior is factorised in prior-whitened coordinates: with S = diag(prior std),
    H = G + S⁻² = S⁻¹ (I + S G S) S⁻¹, and the spectrum of S G S comes from the SVD of its square
    root (:func:`_whitened_spectrum`), so H is positive definite by construction and accurate in
    float32 even when G is ill-conditioned (a small noise scale), where a Cholesky factorisation
    of the formed H fails. The exact Hessian has no such structure and is factorised by
    Cholesky (non-finite where it is not positive definite).
    """

    def run(theta_star, point, xs, ys, es, key, prior_std):
        def log_terms(theta):
            return model.log_joint_terms({**point, **unravel(theta)}, xs, ys, es)

        def neg_log_joint(theta):
            log_prior, log_lik = log_terms(theta)
            return -(log_prior + jnp.sum(log_lik))

        dim = theta_star.shape[0]
        z = jax.random.normal(key, (num_samples, dim))
        if hessian == "full":
            precision = jax.hessian(neg_log_joint)(theta_star)
            precision = 0.5 * (precision + precision.T)
            chol = jnp.linalg.cholesky(precision)
            # θ = θ* + L⁻ᵀ z has covariance L⁻ᵀ L⁻¹ = (L Lᵀ)⁻¹ = H⁻¹.
            offsets = jax.scipy.linalg.solve_triangular(chol.T, z.T, lower=False).T
            half_log_det = jnp.sum(jnp.log(jnp.diag(chol)))
            ok = jnp.all(jnp.isfinite(chol))
        else:
            eigenvalues, vectors, root = _whitened_spectrum(model, unravel, theta_star, point, xs, ys, es, prior_std)
            fisher_root = root / prior_std[None, :]                        # Λ^½ J: G = (Λ^½ J)ᵀ (Λ^½ J)
            precision = fisher_root.T @ fisher_root + jnp.diag(1.0 / jnp.square(prior_std))
            # (I + V Λ Vᵀ)^(-1/2) = I + V ((1 + Λ)^(-1/2) − 1) Vᵀ for orthonormal columns V, so
            # θ = θ* + S (I + V Λ Vᵀ)^(-1/2) z has covariance S (I + S G S)⁻¹ S = H⁻¹.
            shrink = 1.0 / jnp.sqrt(1.0 + eigenvalues) - 1.0
            offsets = prior_std[None, :] * (z + ((z @ vectors) * shrink[None, :]) @ vectors.T)
            half_log_det = 0.5 * jnp.sum(jnp.log1p(eigenvalues)) - jnp.sum(jnp.log(prior_std))
            ok = jnp.all(jnp.isfinite(eigenvalues)) & jnp.all(jnp.isfinite(vectors))
        thetas = theta_star[None, :] + offsets
        log_evidence = -neg_log_joint(theta_star) + 0.5 * dim * jnp.log(2 * jnp.pi) - half_log_det
        return precision, thetas, log_evidence, ok

    return jax.jit(run)


#: Alternations of "maximise the evidence at θ*" and "refit the MAP" at most, and their tolerance.
TUNE_ITERATIONS = 20
TUNE_TOLERANCE = 1e-3


def scaled_prior(prior, factor: float):
    """The prior with every scale multiplied by ``factor`` (zero-mean Normal / FanInNormal priors)."""

    def one(p: Prior) -> Prior:
        if isinstance(p, Normal) and p.loc == 0.0:
            return Normal(p.scale * factor)
        if isinstance(p, FanInNormal):
            return FanInNormal(p.scale * factor)
        raise ValueError(f"tune_prior=True needs zero-mean Normal or FanInNormal priors; got {p!r}.")

    return one(prior) if isinstance(prior, Prior) else {k: one(v) for k, v in prior.items()}


def _prior_stds(spec, selected: tuple[str, ...]) -> jax.Array:
    """Prior standard deviation of every entry of the selected parameters, in ravel order."""
    def std(path, shape):
        prior = spec.priors[path]
        return prior.std(shape) if isinstance(prior, FanInNormal) else prior.scale

    shapes = dict(zip(spec.paths, spec.shapes))
    flat, _ = ravel_pytree({p: jnp.full(shapes[p], std(p, shapes[p]), _checks.float_dtype()) for p in selected})
    return flat


def _evidence_program(model: LiftedModel, unravel, learned_noise: bool):
    """Jitted ``(θ*, point, xs, ys, es, prior_std, h0) -> (h, log evidence)``: the GGN Laplace evidence
    maximised over ``h = (log c, log σ)`` at fixed θ*, where the prior scales are ``c · prior_std``
    and ``σ`` is the noise scale (it only moves for a learned noise; ``point`` holds the σ₀ at
    which the GGN G₀ is evaluated, and G(σ) = G₀ σ₀²/σ²).

    With S = diag(prior_std), det(G/σ² + S⁻²/c²) = det(S⁻²/c²) · det(I + (c σ₀/σ)² S G₀ S), and the
    first factor cancels the normalising constants of the prior, so

        log Z = log p(y | θ*, σ) − Σᵢ θᵢ² / (2 c² sᵢ²) − ½ Σₖ log(1 + (c σ₀/σ)² λₖ)

    with λₖ the eigenvalues of S G₀ S (:func:`_whitened_spectrum`), computed once: no factorisation
    inside the optimisation, and no failure where the posterior precision is nearly singular.
    """
    optimizer = optax.lbfgs()

    def run(theta_star, point, xs, ys, es, prior_std, h0):
        params = point if es is None else {**point, Y_ERR: es}
        f_star = model.apply({**point, **unravel(theta_star)}, xs)
        eigenvalues, _, _ = _whitened_spectrum(model, unravel, theta_star, point, xs, ys, es, prior_std)
        sigma0 = point[NOISE_SITE] if learned_noise else 1.0
        ridge = jnp.sum(jnp.square(theta_star / prior_std))

        def neg_evidence(h):
            h = jnp.clip(h, -20.0, 20.0)  # keep the line search's trial points finite
            c = jnp.exp(h[0])
            if learned_noise:
                sigma = jnp.exp(h[1])
                lik_params, gain = {**params, NOISE_SITE: sigma}, jnp.square(c * sigma0 / sigma)
            else:
                lik_params, gain = params, jnp.square(c)
            log_lik = jnp.sum(model.likelihood.log_prob(f_star, ys, lik_params))
            return -(log_lik - 0.5 * ridge / jnp.square(c) - 0.5 * jnp.sum(jnp.log1p(gain * eigenvalues)))

        value_and_grad = optax.value_and_grad_from_state(neg_evidence)

        def step(carry, _):
            h, state = carry
            value, grad = value_and_grad(h, state=state)
            updates, state = optimizer.update(grad, state, h, value=value, grad=grad, value_fn=neg_evidence)
            return (optax.apply_updates(h, updates), state), value

        (h, _), _ = jax.lax.scan(step, (h0, optimizer.init(h0)), None, length=100)
        return jnp.clip(h, -20.0, 20.0), -neg_evidence(h)

    return jax.jit(run)


def _rescaled(model: LiftedModel, factor: float, likelihood) -> LiftedModel:
    """A model of the same class and network with every prior scale times ``factor`` and ``likelihood``."""
    return type(model)(model.module, prior=scaled_prior(model.prior, factor), likelihood=likelihood,
                       matmul_precision=model.matmul_precision)


def _tune(model: LiftedModel, x, y, y_err, seed, selected, map_options):
    """Alternate evidence maximisation at the MAP and MAP refits; return the tuned model, its MAP fit and info."""
    likelihood = model.likelihood
    learned_noise = isinstance(likelihood, Gaussian) and likelihood.learned
    factor, sigma = 1.0, None
    map_fit = fit_point(model, x, y, method="map", seed=seed, y_err=y_err, **map_options)
    if learned_noise:
        sigma = float(map_fit.draws[NOISE_SITE][0])
    xs, ys, es = jax.tree.map(jnp.asarray, (x, y, y_err))
    base_stds = _prior_stds(model.spec(x.shape[1]), selected)  # every scale is linear in the factor
    history = []
    for _ in range(TUNE_ITERATIONS):
        point = {k: v[0] for k, v in map_fit.draws.items()}
        if learned_noise:
            point[NOISE_SITE] = _checks.floats(sigma)
        theta_star, unravel = ravel_pytree({p: point[p] for p in selected})
        program = model.compiled(("evidence", selected, x.shape[1], learned_noise),
                                 lambda u=unravel: _evidence_program(model, u, learned_noise))
        # h = (log of the factor on the current prior scales, log σ)
        h0 = _checks.floats([0.0, 0.0 if sigma is None else np.log(sigma)])
        h, evidence = program(theta_star, point, xs, ys, es, factor * base_stds, h0)
        if not bool(jnp.all(jnp.isfinite(h))):
            warnings.warn(
                "maximising the Laplace evidence gave a non-finite prior or noise scale; keeping the last finite "
                f"values (prior scale factor {factor:.4g}).",
                UserWarning,
                stacklevel=4,
            )
            break
        step_c = float(jnp.exp(h[0]))
        step_s = float(jnp.exp(h[1])) / sigma if sigma is not None else 1.0
        factor *= step_c
        if learned_noise:
            sigma = float(jnp.exp(h[1]))
        history.append((factor, sigma, float(evidence)))
        refit_likelihood = (Gaussian(scale=sigma, noise_prior_scale=likelihood.noise_prior_scale)
                            if isinstance(likelihood, Gaussian) and sigma is not None else likelihood)
        refit_model = _rescaled(model, factor, refit_likelihood)
        init = {k: v for k, v in point.items() if k != NOISE_SITE}
        with warnings.catch_warnings():
            # a warm start from the last optimum falls little in total, so "not settled" means little here
            warnings.filterwarnings("ignore", message=".*loss had not settled", category=UserWarning)
            map_fit = fit_point(refit_model, x, y, method="map", seed=seed, y_err=y_err, init_params=init, **map_options)
        if abs(np.log(step_c)) < TUNE_TOLERANCE and abs(np.log(step_s)) < TUNE_TOLERANCE:
            break
    tuned = _rescaled(model, factor, likelihood)
    draws = dict(map_fit.draws)
    if learned_noise:
        draws[NOISE_SITE] = _checks.floats([sigma])
    map_fit = Fit(model=tuned, method="map", draws=draws, num_features=map_fit.num_features, info=map_fit.info,
                  y_err=map_fit.y_err)
    info = {"prior_scale_factor": factor, "tune_iterations": len(history),
            "tune_history": np.asarray([(c, np.nan if s is None else s, e) for c, s, e in history])}
    if isinstance(model.prior, (Normal, FanInNormal)):
        info["prior_scale"] = factor * model.prior.scale
    if learned_noise:
        info["noise_scale"] = sigma
    return tuned, map_fit, info


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
    tune_prior: bool = False,
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
      tune_prior: choose a factor for every prior scale (and a learned noise scale) by
        maximising the Laplace evidence (see the module docs); the fit's ``model`` then
        carries the tuned prior, and ``info`` reports ``prior_scale_factor``, ``prior_scale``
        (for a single prior), ``noise_scale`` (learned noise) and ``tune_history``.
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
    if not isinstance(tune_prior, bool):
        raise TypeError(f"`tune_prior` must be True or False; got {tune_prior!r}.")
    start = time.perf_counter()
    x, y = model.check_data(x, y)
    y_err = model.check_errors(y_err, y.shape)
    selected = select_paths(model.spec(x.shape[1]).paths, subset)
    tuned: dict = {}
    if tune_prior:
        if map_fit is not None:
            raise ValueError("`tune_prior=True` refits the MAP under the tuned prior; it cannot take `map_fit`.")
        model, map_fit, tuned = _tune(model, x, y, y_err, seed, selected, map_options)
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
    prior_std = _prior_stds(spec, selected)
    precision, thetas, log_evidence, ok = program(theta_star, point, xs, ys, es, key, prior_std)
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
        "precision": np.asarray(precision),
        "mean": np.asarray(theta_star),
        "log_evidence": float(log_evidence),
        "wall_time": time.perf_counter() - start,
        "num_train": x.shape[0],
        **tuned,
    }
    center = {p: point[p] for p in spec.paths} if predictive == "glm" else None
    return Fit(model=model, method="laplace", draws=draws, num_features=x.shape[1], info=info, linearize_at=center,
               y_err=y_err)
