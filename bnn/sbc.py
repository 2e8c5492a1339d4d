"""Simulation-based calibration (SBC; Talts et al. 2018) of a BNN's posterior methods.

If ``θ_r`` is drawn from the prior, ``y_r`` from the model given ``θ_r``, and ``L`` draws
``θ_r^(1..L)`` are taken from the exact posterior ``p(θ | y_r)``, then the rank of any
scalar quantity ``q(θ_r)`` among ``q(θ_r^(l))`` is uniform on ``0..L``. Over ``R``
replications, ranks that are not uniform show that the posterior draws are wrong (or
that the simulator and the model disagree).

The steps, each a function here:

* :func:`simulate` — ``R`` data sets from the model's own generative process
  (``model.model`` with ``y=None``) at fixed inputs;
* :func:`nuts` — the package's NUTS (the kernel of ``fit(method="nuts")``, run by its chain
  driver) for every replication in **one** vectorised program: replications and their chains
  are the rows of one batch, each with its own data; thinned to ``L`` draws each;
* :func:`quantities` — scalar quantities of a parameter draw: every weight (optionally
  in a canonical form, see below) and the network outputs at test inputs;
* :func:`ranks` — the rank of the truth among the draws, per replication and quantity;
* :func:`uniformity` — χ² tests of the rank histograms and an ECDF test with
  simultaneous bands, Bonferroni-corrected over all quantities.

:func:`run` chains them: for NUTS (the default) with all replications in one program, for
any other method of ``model.fit`` (``run(..., method="laplace")``) with one ``model.fit`` per
replication, so the check covers the code users run.

Weight-space symmetry. Permuting the hidden units of a layer, or (for an odd activation
such as tanh) flipping the signs of one unit's incoming and outgoing weights, leaves the
network's function unchanged, so the posterior has many exact copies of every mode and a
chain stays in one copy. A draw's raw weights are then not a draw of the full posterior's
weights, and their ranks need not be uniform even for an exact sampler of each copy
(chains started from a symmetric distribution such as the prior land in every copy equally
often, which keeps single draws right but makes the draws of one chain dependent).
:func:`canonicalize` maps every weight vector to one representative of its symmetry
class (per hidden layer: signs such that each bias is ≥ 0, then units ordered by bias);
ranks of canonical weights, and of function values, are valid for such samplers.

Example:
  >>> model = bnn.BNN(bnn.MLP((3, 1), activation="tanh"), prior=bnn.Normal(1.0),
  ...                 likelihood=bnn.Gaussian(scale=0.3))
  >>> x = jnp.linspace(-1, 1, 15)[:, None]
  >>> result = bnn.sbc.run(model, x, x_test=jnp.array([[-1.5], [0.0], [1.5]]), num_replications=100)
  >>> test = bnn.sbc.uniformity(result.ranks, result.num_draws, num_bins=10, alpha=1e-3)
  >>> test.passed, test.min_p_bonferroni
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn import _checks

__all__ = [
    "run",
    "SBC",
    "simulate",
    "Simulations",
    "nuts",
    "Posterior",
    "canonicalize",
    "quantities",
    "ranks",
    "chi2_test",
    "chi2_sf",
    "ecdf_test",
    "ecdf_band",
    "uniformity",
    "Uniformity",
]

if TYPE_CHECKING:
    from bnn.model import BNN

OBS_SITE = "y"
_DENSE = re.compile(r"^Dense_(\d+)\.(kernel|bias)$")
_ODD_ACTIVATIONS = ("tanh", "identity")
def _key(seed) -> jax.Array:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jax.random.PRNGKey(int(seed))
    if isinstance(seed, jax.Array):
        return seed
    raise TypeError(f"`seed` must be an int or a jax.random key; got {type(seed).__name__}.")


def _as_inputs(x, name: str = "x") -> jax.Array:
    x = jnp.asarray(x, jnp.result_type(float))
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, features) or (n,); got shape {x.shape}.")
    return x


# --- simulation ------------------------------------------------------------------------


class Simulations(NamedTuple):
    """Data sets drawn from the model's prior predictive at fixed inputs.

    Attributes:
      x: inputs ``(n, features)``, shared by all replications.
      params: the true parameters, ``{site: (R, *shape)}`` for every latent site.
      y: the simulated targets ``(R, n, out)`` (``(R, n)`` for class labels).
    """

    x: jax.Array
    params: dict[str, jax.Array]
    y: jax.Array


def simulate(model: BNN, x, num_replications: int, seed=0) -> Simulations:
    """Draw ``R = num_replications`` pairs ``(θ_r, y_r)`` from ``model.model(x, y=None)``.

    Args:
      model: the :class:`bnn.BNN` whose prior and likelihood generate the data.
      x: inputs ``(n, features)`` or ``(n,)``.
      num_replications: ``R``.
      seed: int or JAX key.

    Returns:
      :class:`Simulations` with ``params`` ``{site: (R, *shape)}`` and ``y`` ``(R, n, out)``.
    """
    x = _as_inputs(x)
    sites = tuple(model.latent_sites(int(x.shape[1])))
    draws = model.program(_simulation_program, num_replications=int(num_replications), sites=sites)(_key(seed), x)
    return Simulations(x=x, params={s: draws[s] for s in sites}, y=draws[OBS_SITE])


def _simulation_program(model: BNN, num_replications: int, sites: tuple[str, ...]):
    from numpyro.infer import Predictive

    return jax.jit(Predictive(model.model, num_samples=num_replications, return_sites=[*sites, OBS_SITE]))


# --- the package's NUTS over replications ------------------------------------------------


class Posterior(NamedTuple):
    """Posterior draws for ``R`` replications.

    Attributes:
      draws: ``{site: (R, L, *shape)}`` (constrained values), ``L`` draws per replication
        (chain-major when several chains are pooled).
      num_divergences: ``(R,)`` divergent transitions after warm-up, all chains.
      mean_tree_steps: ``(R,)`` mean number of leapfrog steps per NUTS transition after warm-up.
      wall_time: seconds, compilation included.
    """

    draws: dict[str, jax.Array]
    num_divergences: np.ndarray
    mean_tree_steps: np.ndarray
    wall_time: float


def nuts(
    model: BNN,
    x,
    y,
    num_draws: int = 99,
    num_chains: int = 1,
    num_warmup: int = 250,
    thinning: int = 5,
    seed=0,
    init="prior",
    map_options: dict | None = None,
    **kernel_options,
) -> Posterior:
    """The package's NUTS (:func:`bnn.inference.mcmc.fit_nuts`'s kernel, through the chain driver of
    :mod:`bnn.inference.chains`) on ``model.model(x, y_r)`` for every replication ``r``, as one
    vectorised program: every chain of every replication is one row of the batch, with its own data.

    Each chain starts from ``init`` as in ``fit(method="nuts")``
    (:func:`bnn.inference.chains.chain_starts` per replication: ``"prior"``, its own prior draw;
    ``"map"``, a MAP fit to its replication's data, fit's default, at the cost of one MAP fit per
    chain and replication; ``"module"``), adapts over ``num_warmup`` iterations, then keeps every
    ``thinning``-th of ``ceil(num_draws / num_chains) · thinning`` iterations; the chains of a
    replication are pooled and cut to ``num_draws``. Under ``jax.vmap`` a NUTS iteration lasts as
    long as the longest trajectory in the batch, so the cost grows with the hardest replication.

    Args:
      model: a :class:`bnn.BNN`.
      x: inputs ``(n, features)`` shared by all replications.
      y: targets ``(R, n, out)`` (or ``(R, n)``), e.g. ``simulate(...).y``.
      num_draws: ``L``, posterior draws kept per replication (ranks lie in ``0..L``).
      num_chains: chains per replication.
      num_warmup: warm-up (adaptation) iterations per chain (``fit``'s default: 250).
      thinning: iterations per kept draw (for roughly independent draws).
      seed: int or JAX key.
      init: ``"prior"``, ``"map"`` or ``"module"`` (see above).
      map_options: options of the MAP fits of ``init="map"``.
      **kernel_options: ``target_accept_prob``, ``max_tree_depth``, ``dense_mass``; the defaults
        are ``fit(method="nuts")``'s.

    Returns:
      :class:`Posterior` with ``draws`` ``{site: (R, L, *shape)}``.
    """
    from bnn.inference import chains, mcmc

    start = time.perf_counter()
    x = _as_inputs(x)
    y = jnp.asarray(y)
    if y.ndim < 2 or y.shape[1] != x.shape[0]:
        raise ValueError(f"`y` must have shape (R, n, ...) with n = {x.shape[0]} rows of `x`; got shape {y.shape}.")
    if y.ndim == 2:
        y = y[..., None]
    num_replications, num_draws, num_chains = int(y.shape[0]), int(num_draws), int(num_chains)
    if num_draws < 1 or num_chains < 1 or thinning < 1 or num_warmup < 0:
        raise ValueError("`num_draws`, `num_chains` and `thinning` must be >= 1 and `num_warmup` >= 0.")
    unknown = set(kernel_options) - {"target_accept_prob", "max_tree_depth", "dense_mass"}
    if unknown:
        raise TypeError(f"unknown NUTS option(s) {sorted(unknown)}; expected target_accept_prob, max_tree_depth, dense_mass.")
    settings = {"num_warmup": int(num_warmup), **mcmc.KERNEL_DEFAULTS,
                **{k: type(mcmc.KERNEL_DEFAULTS[k])(v) for k, v in kernel_options.items()}}
    init = _checks.one_of(init, "init", chains.CHAIN_INITS)
    num_kept = -(-num_draws // num_chains)
    key_init, key_run = jax.random.split(_key(seed))
    size = num_replications * num_chains
    ys = jnp.repeat(y, num_chains, axis=0)  # chain c of replication r is row r * num_chains + c
    keys = jax.random.split(key_init, num_replications)
    values = jax.tree.map(lambda *v: jnp.concatenate(v), *[
        chains.chain_starts(model, x, y[r], keys[r], init, num_chains, dict(map_options or {}))
        for r in range(num_replications)])
    starts, unravel = chains.flat_starts(model, values, int(x.shape[1]))
    total = int(num_warmup) + num_kept * int(thinning)
    flat, stats = chains.sample(model, mcmc._nuts_kernel, settings, unravel, starts, jax.random.split(key_run, size),
                                (x, ys, None), "vectorized", total, batched_data=True)
    kept = slice(int(num_warmup) + int(thinning) - 1, None, int(thinning))
    samples = jax.vmap(unravel)(jnp.asarray(flat[:, kept].reshape((-1,) + flat.shape[2:])))
    values = chains.constrained_draws(model, samples, int(x.shape[1]))
    draws = {k: v.reshape((num_replications, num_chains * num_kept) + v.shape[1:])[:, :num_draws]
             for k, v in values.items()}
    after = slice(int(num_warmup), None)
    div = stats["diverging"][:, after].sum(axis=1).reshape(num_replications, num_chains)
    steps = stats["num_steps"][:, after].sum(axis=1).reshape(num_replications, num_chains)
    return Posterior(
        draws=jax.block_until_ready(draws),
        num_divergences=div.sum(axis=1),
        mean_tree_steps=steps.sum(axis=1) / (num_chains * num_kept * int(thinning)),
        wall_time=time.perf_counter() - start,
    )


# --- quantities and ranks --------------------------------------------------------------


def _dense_layers(paths) -> int:
    """Number of ``Dense_i`` layers among ``paths``; they must be ``Dense_0 .. Dense_K`` with kernel and bias."""
    found: dict[int, set] = {}
    for p in paths:
        if m := _DENSE.match(p):
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not found or sorted(found) != list(range(len(found))) or any(v != {"kernel", "bias"} for v in found.values()):
        raise ValueError(
            f"canonical weights need the layers Dense_0 .. Dense_K, each with a kernel and a bias; got {sorted(paths)}. "
            "Pass canonical=False to rank the raw weights."
        )
    return len(found)


def canonicalize(params: Mapping[str, jax.Array], flip_signs: bool) -> dict[str, jax.Array]:
    """One representative of each weight vector's symmetry class, for an MLP of ``Dense_i`` layers.

    For each hidden layer in turn: if ``flip_signs`` (odd activations, e.g. tanh), a unit
    whose bias is negative has its incoming kernel column, bias and outgoing kernel row
    negated; then the units are sorted by bias (ascending), permuting the same slices.
    The network's function is unchanged.

    Args:
      params: ``{"Dense_i.kernel": (*batch, in, out), "Dense_i.bias": (*batch, out), ...}``
        with any leading batch axes, as in :class:`bnn.MLP`; other sites (e.g.
        ``noise_scale``) pass through.
      flip_signs: whether the sign symmetry holds (odd activation).

    Returns:
      the canonical parameters, same keys and shapes.
    """
    num_layers = _dense_layers(params)
    out = dict(params)
    for layer in range(num_layers - 1):
        kin, b, kout = f"Dense_{layer}.kernel", f"Dense_{layer}.bias", f"Dense_{layer + 1}.kernel"
        w, bias, v = jnp.asarray(out[kin]), jnp.asarray(out[b]), jnp.asarray(out[kout])
        if flip_signs:
            s = jnp.where(bias < 0, -1.0, 1.0).astype(bias.dtype)
            w, bias, v = w * s[..., None, :], bias * s, v * s[..., :, None]
        order = jnp.argsort(bias, axis=-1)
        out[kin] = jnp.take_along_axis(w, order[..., None, :], axis=-1)
        out[b] = jnp.take_along_axis(bias, order, axis=-1)
        out[kout] = jnp.take_along_axis(v, order[..., :, None], axis=-2)
    return out


def _is_odd(module) -> bool:
    activation = getattr(module, "activation", None)
    return activation in _ODD_ACTIVATIONS or activation is jnp.tanh


def _index_name(index: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i) for i in index) + "]" if index else ""


def quantities(model: BNN, params: Mapping[str, jax.Array], x_test=None, f_test=None, batch_ndim: int = 1,
               canonical: bool = True, flip_signs: bool | None = None) -> dict[str, jax.Array]:
    """Scalar quantities of parameter draws: each weight and the function at test inputs.

    Args:
      model: the :class:`bnn.BNN` the parameters belong to.
      params: ``{site: (*batch, *shape)}`` for every latent site (e.g. ``(R,)`` truths or
        ``(R, L)`` draws; ``batch_ndim`` leading axes).
      x_test: inputs ``(m, features)`` at which to rank the network outputs, or ``None``.
      f_test: outputs ``(*batch, m, width)`` to use instead of evaluating the network at
        ``x_test`` (e.g. a method's own predictive, such as Laplace's linearised network).
      batch_ndim: number of leading batch axes in ``params``.
      canonical: rank canonical weights (:func:`canonicalize`) instead of raw ones.
      flip_signs: sign symmetry for :func:`canonicalize`; default: the module's
        ``activation`` is odd (``"tanh"``).

    Returns:
      ``{name: (*batch,)}``, e.g. ``"Dense_0.kernel[0,2]"``, ``"noise_scale"``, ``"f(+1.50)"``
      (one feature, one output) or ``"f(x*_3)[0]"``.
    """
    out: dict[str, jax.Array] = {}
    params = {k: jnp.asarray(v) for k, v in params.items()}
    batch = next(iter(params.values())).shape[:batch_ndim]
    if x_test is not None:
        x_test = _as_inputs(x_test, "x_test")
        if f_test is None:
            flat = {k: v.reshape((-1,) + v.shape[batch_ndim:]) for k, v in params.items()}
            f_test = jax.vmap(lambda p: model.apply(p, x_test))(flat)
        f_test = jnp.asarray(f_test).reshape(batch + tuple(jnp.shape(f_test)[-2:]))
        one = x_test.shape[1] == 1 and f_test.shape[-1] == 1
        for i in range(x_test.shape[0]):
            for k in range(f_test.shape[-1]):
                name = f"f({float(x_test[i, 0]):+.2f})" if one else f"f(x*_{i})[{k}]"
                out[name] = f_test[..., i, k]
    if canonical:
        from bnn.nets import MLP

        if not isinstance(model.module, MLP):
            raise ValueError(
                f"canonical weights are defined for bnn.MLP networks; got {type(model.module).__name__}. "
                "Pass canonical=False to rank the raw weights."
            )
        params = canonicalize(params, _is_odd(model.module) if flip_signs is None else flip_signs)
    for site in sorted(params):
        value = params[site]
        for index in np.ndindex(value.shape[batch_ndim:]):
            out[f"{site}{_index_name(index)}"] = value[(Ellipsis, *index)]
    return out


def ranks(truth: Mapping[str, jax.Array], draws: Mapping[str, jax.Array]) -> tuple[tuple[str, ...], np.ndarray]:
    """Rank of each true value among its posterior draws.

    Args:
      truth: ``{name: (R,)}``, e.g. ``quantities(model, sims.params, x_test)``.
      draws: ``{name: (R, L)}``, the same names, e.g. ``quantities(model, post.draws, x_test, batch_ndim=2)``.

    Returns:
      ``(names, ranks)`` with ``ranks`` ``(R, K)`` integers in ``0..L``: the number of draws
      strictly below the truth (ties have probability zero for continuous quantities).
    """
    names = tuple(truth)
    if set(names) != set(draws):
        raise ValueError(f"`truth` and `draws` must have the same quantities; got {sorted(names)} and {sorted(draws)}.")
    out = np.stack([np.sum(np.asarray(draws[n]) < np.asarray(truth[n])[:, None], axis=1) for n in names], axis=1)
    return names, out


# --- uniformity tests ------------------------------------------------------------------


def chi2_test(ranks: np.ndarray, num_draws: int, num_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson χ² test of uniform ranks, one per quantity.

    Ranks ``0..L`` are grouped into ``num_bins`` bins of ``(L + 1) / num_bins`` consecutive
    values (``L + 1`` must be a multiple of ``num_bins``, so each bin has probability
    ``1 / num_bins`` under uniformity); the statistic has ``num_bins − 1`` degrees of
    freedom. Keep the expected count ``R / num_bins`` at 5 or more.

    Args:
      ranks: ``(R, K)`` integers in ``0..num_draws``.
      num_draws: ``L``.
      num_bins: ``B``.

    Returns:
      ``(counts (K, B), statistic (K,), p_value (K,))``.
    """
    ranks = np.asarray(ranks)
    num_values = int(num_draws) + 1
    if num_values % num_bins:
        raise ValueError(f"`num_bins` ({num_bins}) must divide num_draws + 1 ({num_values}).")
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(f"ranks must lie in 0..{num_draws}; got {ranks.min()}..{ranks.max()}.")
    bins = ranks // (num_values // num_bins)
    counts = np.stack([np.bincount(bins[:, k], minlength=num_bins) for k in range(ranks.shape[1])])
    expected = ranks.shape[0] / num_bins
    statistic = np.sum((counts - expected) ** 2, axis=1) / expected
    p_value = np.array([chi2_sf(c, num_bins - 1) for c in statistic])
    return counts, statistic, p_value


def chi2_sf(statistic: float, df: int) -> float:
    """``P(X ≥ statistic)`` for ``X ~ χ²(df)``, an integer ``df ≥ 1``, in float64.

    The regularised upper incomplete gamma function ``Q(df/2, statistic/2)`` in closed form:
    a finite sum for even ``df``; ``erfc`` plus a finite sum for odd ``df``. Terms are summed
    in log space, so p-values far below float32's range (1e-40 and less) stay accurate.
    """
    h = float(statistic) / 2.0
    if h <= 0.0:
        return 1.0
    if df % 2 == 0:
        logs = [i * math.log(h) - math.lgamma(i + 1.0) - h for i in range(df // 2)]
        head = 0.0
    else:
        logs = [(i - 0.5) * math.log(h) - math.lgamma(i + 0.5) - h for i in range(1, (df + 1) // 2)]
        head = math.erfc(math.sqrt(h))
    if not logs:
        return min(1.0, head)
    top = max(logs)
    return min(1.0, head + math.exp(top) * sum(math.exp(v - top) for v in logs))


def _binomial_tails(num_replications: int, num_draws: int) -> np.ndarray:
    """Two-sided binomial tail probabilities ``(L, R + 1)`` of the ECDF counts under uniformity.

    Entry ``[j, c]`` is ``min(1, 2 min(P(X ≤ c), P(X ≥ c)))`` for
    ``X ~ Binomial(R, (j + 1) / (L + 1))``, the number of ranks ``≤ j``.
    """
    r = int(num_replications)
    k = np.arange(r + 1)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(r - k[:-1]) - np.log(k[1:]))])
    z = (np.arange(num_draws) + 1.0) / (num_draws + 1.0)
    log_pmf = log_choose[None, :] + k[None, :] * np.log(z)[:, None] + (r - k)[None, :] * np.log1p(-z)[:, None]
    pmf = np.exp(log_pmf)
    cdf = np.cumsum(pmf, axis=1)
    sf = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # P(X >= c)
    return np.minimum(1.0, 2.0 * np.minimum(cdf, sf))


def _ecdf_counts(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    """``(K, L)``: the number of ranks ``≤ j`` for ``j = 0..L−1``, per quantity (columns of ``ranks``)."""
    hist = np.stack([np.bincount(ranks[:, k], minlength=num_draws + 1) for k in range(ranks.shape[1])])
    return np.cumsum(hist, axis=1)[:, :num_draws]


def _ecdf_statistic(counts: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Smallest pointwise two-sided tail probability of each ECDF, ``(..., L) -> (...)``."""
    return tails[np.arange(tails.shape[0]), counts].min(axis=-1)


def _ecdf_null(num_replications: int, num_draws: int, num_sims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ECDF statistic of ``num_sims`` sets of ``R`` uniform ranks, and the tail table."""
    tails = _binomial_tails(num_replications, num_draws)
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, num_sims, 20_000):
        size = min(20_000, num_sims - start)
        hist = rng.multinomial(num_replications, np.full(num_draws + 1, 1.0 / (num_draws + 1)), size=size)
        stats.append(_ecdf_statistic(np.cumsum(hist, axis=1)[:, :num_draws], tails))
    return np.concatenate(stats), tails


def ecdf_test(ranks: np.ndarray, num_draws: int, num_sims: int = 100_000, seed: int = 0) -> np.ndarray:
    """ECDF test of uniform ranks (simultaneous-band test, after Säilynoja et al. 2022).

    The statistic is the smallest, over ``j = 0..L−1``, two-sided binomial tail probability
    of the number of ranks ``≤ j``; its null distribution is simulated from ``num_sims``
    sets of ``R`` uniform ranks. The p-value ``(1 + #{T_sim ≤ T}) / (num_sims + 1)`` is
    exact in expectation and at least ``1 / (num_sims + 1)``.

    Args:
      ranks: ``(R, K)`` integers in ``0..num_draws``.
      num_draws: ``L``.
      num_sims: simulated null sets.
      seed: NumPy seed of the simulation.

    Returns:
      p-values ``(K,)``.
    """
    ranks = np.asarray(ranks)
    null, tails = _ecdf_null(ranks.shape[0], num_draws, num_sims, seed)
    observed = _ecdf_statistic(_ecdf_counts(ranks, num_draws), tails)
    null = np.sort(null)
    return (1.0 + np.searchsorted(null, observed, side="right")) / (num_sims + 1.0)


def ecdf_band(num_replications: int, num_draws: int, alpha: float = 0.05, num_sims: int = 100_000,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simultaneous ``1 − alpha`` band of the rank ECDF under uniformity.

    Returns:
      ``(z, lower, upper)``, each ``(L,)``: the points ``z_j = (j + 1) / (L + 1)`` and the
      band for the ECDF (fraction of ranks ``≤ j``); an ECDF of uniform ranks leaves the
      band anywhere with probability about ``alpha``. Plot ``ECDF − z`` against ``z``
      with ``lower − z`` and ``upper − z`` for the usual ECDF-difference view.
    """
    null, tails = _ecdf_null(num_replications, num_draws, num_sims, seed)
    gamma = np.quantile(null, alpha, method="lower")  # inside the band <=> statistic > gamma
    inside = tails > gamma
    c = np.arange(num_replications + 1)
    lower = np.where(inside, c, num_replications + 1).min(axis=1)
    upper = np.where(inside, c, -1).max(axis=1)
    z = (np.arange(num_draws) + 1.0) / (num_draws + 1.0)
    return z, lower / num_replications, upper / num_replications


class Uniformity(NamedTuple):
    """Uniformity tests of SBC ranks.

    Attributes:
      names: the ``K`` quantities.
      counts: ``(K, B)`` rank histogram.
      chi2: ``(K,)`` χ² statistics with ``B − 1`` degrees of freedom.
      p_chi2: ``(K,)`` χ² p-values.
      p_ecdf: ``(K,)`` ECDF-test p-values (NaN when not computed).
      p_bonferroni: ``(K,)`` ``min(1, m · min(p_chi2, p_ecdf))`` with ``m`` the number of
        tests run (``K`` or ``2K``): the family-wise error rate over all quantities is at most
        ``alpha`` when every one of them is compared with ``alpha``.
      alpha: family-wise false-alarm probability.
      passed: ``True`` when no corrected p-value is below ``alpha``.
    """

    names: tuple[str, ...]
    counts: np.ndarray
    chi2: np.ndarray
    p_chi2: np.ndarray
    p_ecdf: np.ndarray
    p_bonferroni: np.ndarray
    alpha: float
    passed: bool

    @property
    def min_p_bonferroni(self) -> float:
        """The smallest Bonferroni-corrected p-value."""
        return float(self.p_bonferroni.min())

    @property
    def worst(self) -> str:
        """The quantity with the smallest corrected p-value."""
        return self.names[int(np.argmin(self.p_bonferroni))]


def uniformity(ranks: np.ndarray, num_draws: int, num_bins: int, names=None, alpha: float = 1e-3,
               ecdf_sims: int = 0, seed: int = 0) -> Uniformity:
    """Test SBC ranks for uniformity, Bonferroni-corrected over quantities (and tests).

    Args:
      ranks: ``(R, K)`` integers in ``0..num_draws``.
      num_draws: ``L``.
      num_bins: χ² bins ``B`` (must divide ``L + 1``; keep ``R / B ≥ 5``).
      names: the ``K`` quantity names (default ``q0, q1, ...``).
      alpha: family-wise false-alarm probability.
      ecdf_sims: if positive, also run :func:`ecdf_test` with this many null simulations.
      seed: seed of the ECDF null simulation.

    Returns:
      :class:`Uniformity`.
    """
    ranks = np.asarray(ranks)
    names = tuple(names) if names is not None else tuple(f"q{k}" for k in range(ranks.shape[1]))
    counts, chi2, p_chi2 = chi2_test(ranks, num_draws, num_bins)
    p_ecdf = ecdf_test(ranks, num_draws, ecdf_sims, seed) if ecdf_sims else np.full(len(names), np.nan)
    num_tests = len(names) * (2 if ecdf_sims else 1)
    p_min = np.fmin(p_chi2, p_ecdf)
    p_bonferroni = np.minimum(1.0, num_tests * p_min)
    return Uniformity(names, counts, chi2, p_chi2, p_ecdf, p_bonferroni, float(alpha),
                      bool(np.all(p_bonferroni > alpha)))


# --- the whole run for NUTS ------------------------------------------------------------


class SBC(NamedTuple):
    """Ranks of one SBC run.

    Attributes:
      names: the ``K`` quantities.
      ranks: ``(R, K)`` integers in ``0..num_draws``.
      num_draws: ``L``.
      simulations: the :class:`Simulations` (true parameters and data).
      posterior: the :class:`Posterior` (draws and sampler diagnostics).
    """

    names: tuple[str, ...]
    ranks: np.ndarray
    num_draws: int
    simulations: Simulations
    posterior: Posterior


def run(model: BNN, x, x_test=None, num_replications: int = 100, num_draws: int = 99, seed=0,
        simulator: BNN | None = None, canonical: bool = True, method: str = "nuts",
        simulations: Simulations | None = None, **options) -> SBC:
    """Simulation-based calibration of ``method`` on ``model``: simulate, fit, rank.

    Args:
      model: the :class:`bnn.BNN` whose posterior is sampled.
      x: inputs ``(n, features)`` of every simulated data set.
      x_test: inputs ``(m, features)`` where function values are ranked too, or ``None``.
      num_replications: ``R``.
      num_draws: ``L``.
      seed: int or JAX key (one key for the simulations, one for the fits).
      simulator: the model that generates the data (default ``model``). A simulator that
        differs from ``model`` (e.g. another noise scale) makes a negative control: the
        ranks should then fail the uniformity test.
      canonical: rank canonical weights (see :func:`quantities`).
      simulations: data sets already simulated (:func:`simulate`) to use instead of simulating
        (``x``, ``num_replications`` and ``simulator`` must then agree with them), so several
        methods can be checked on the same data.
      method: ``"nuts"`` (default): the package's NUTS over all replications in one program
        (:func:`nuts`; ``options`` are its options). Any other method of ``model.fit``
        (``"laplace"``, ``"svi"``, ``"mclmc"``, ...): ``model.fit`` once per replication with
        ``options``, ``num_samples`` set so that each fit gives ``L`` draws (``L / num_chains``
        per chain), and the function values ranked as the fit predicts them (Laplace's
        linearised predictive by default).
      **options: as above.

    Returns:
      :class:`SBC`; test it with :func:`uniformity`.
    """
    key_sim, key_fit = jax.random.split(_key(seed))
    if simulations is None:
        sims = simulate(simulator if simulator is not None else model, x, num_replications, key_sim)
    elif simulations.y.shape[0] != num_replications or simulations.x.shape != _as_inputs(x).shape:
        raise ValueError(f"`simulations` hold {simulations.y.shape[0]} data sets at inputs of shape "
                         f"{tuple(simulations.x.shape)}; expected num_replications={num_replications} and x of shape "
                         f"{tuple(_as_inputs(x).shape)}.")
    else:
        sims = simulations
    truth = quantities(model, sims.params, x_test, canonical=canonical)
    if method == "nuts":
        post = nuts(model, sims.x, sims.y, num_draws=num_draws, seed=key_fit, **options)
        f_test = None
    else:
        post, f_test = _fit_each(model, sims, x_test, method, int(num_draws), key_fit, options)
    draws = quantities(model, post.draws, x_test, f_test=f_test, batch_ndim=2, canonical=canonical)
    names, r = ranks(truth, draws)
    return SBC(names=names, ranks=r, num_draws=int(num_draws), simulations=sims, posterior=post)


def _fit_each(model: BNN, sims: Simulations, x_test, method: str, num_draws: int, key, options: dict):
    """``model.fit`` per replication: the :class:`Posterior` and the function values ``(R, L, m, out)`` at ``x_test``."""
    start = time.perf_counter()
    num_chains = int(options.get("num_chains", 1)) if method in ("nuts", "mclmc", "sgmcmc") else 1
    if num_draws % num_chains:
        raise ValueError(f"`num_draws` ({num_draws}) must be a multiple of num_chains ({num_chains}).")
    per_chain = num_draws // num_chains
    if method == "sgmcmc":  # its draws per chain are cycles x draws per cycle
        per_cycle = int(options.get("draws_per_cycle", 1))
        if per_chain % per_cycle:
            raise ValueError(f"draws per chain ({per_chain}) must be a multiple of draws_per_cycle ({per_cycle}).")
        count = {"num_cycles": per_chain // per_cycle, "draws_per_cycle": per_cycle}
    else:
        count = {"num_samples": per_chain}
    options = {k: v for k, v in options.items() if k != "draws_per_cycle"}
    draws, f_test = [], []
    for r in range(sims.y.shape[0]):
        fit = model.fit(sims.x, sims.y[r], method=method, seed=jax.random.fold_in(key, r), **count, **options)
        draws.append(fit.draws)
        if x_test is not None:
            f_test.append(fit.predict(_as_inputs(x_test, "x_test")).samples)
    stacked = {k: jnp.stack([d[k] for d in draws]) for k in draws[0]}
    num_replications = int(sims.y.shape[0])
    post = Posterior(draws=stacked, num_divergences=np.zeros(num_replications, int),
                     mean_tree_steps=np.full(num_replications, np.nan), wall_time=time.perf_counter() - start)
    return post, None if x_test is None else jnp.stack(f_test)
