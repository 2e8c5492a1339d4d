"""Fits: one :class:`Fit` type for every method.

A point fit (MLE, MAP) is a posterior with one draw, so ``predict``, ``log_likelihood``,
``to_arviz``, ``save`` and ``bnn.compare`` work the same for every method. Prediction is
in :mod:`bnn.predictive`; ArviZ export in :mod:`bnn.diagnostics`; the file format in
:mod:`bnn.io`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnn import _checks, diagnostics, io
from bnn.lifting import unflatten_params
from bnn.predictive import Normalizer, Predictions, build_log_likelihood, predictions_from_draws


@dataclasses.dataclass(frozen=True)
class Fit:
    """A fitted model: parameter draws of every latent site, and how they were obtained.

    Attributes:
      model: the :class:`bnn.BNN` that was fitted.
      method: ``"mle"``, ``"map"``, ...
      draws: ``{site: (num_draws, *shape)}`` constrained values of every latent site
        (network parameters by dotted path, then e.g. ``"noise_scale"``). Point fits
        have one draw.
      num_features: input width the model was fitted on.
      info: what the method reports (e.g. ``loss`` per step, ``wall_time`` in seconds).
      linearize_at: network parameters ``{path: array}`` around which predictions use the
        linearised network ``f(θ*) + J(θ − θ*)`` (the GLM predictive of a Laplace fit);
        ``None`` evaluates the network itself at every draw.
      normalizer: the training statistics of ``fit(..., normalize=True)`` (``None`` when the
        model was fitted on the data as given). Draws act on standardised data; every
        prediction is returned in original units.
      data: the training data ``(x, y)`` in original units (kept for ``to_arviz`` and ``diagnose``).
      y_err: the known noise scales the model was fitted with (``fit(..., y_err=σ)``), in
        original units, or ``None``. A fit with them needs ``y_err`` for new points too.
    """

    model: Any
    method: str
    draws: dict
    num_features: int
    info: dict = dataclasses.field(default_factory=dict)
    linearize_at: dict | None = None
    normalizer: Normalizer | None = None
    data: tuple | None = None
    y_err: np.ndarray | None = None

    @property
    def num_draws(self) -> int:
        return int(jax.tree.leaves(self.draws)[0].shape[0])

    @property
    def is_point(self) -> bool:
        return self.method in ("mle", "map")

    @property
    def _spec(self):
        return self.model.spec(self.num_features)

    @property
    def samples(self) -> dict:
        """Network parameter draws as a Flax pytree ``{"params": ...}`` with a leading draw axis."""
        return unflatten_params(self.draws, self._spec.paths)

    @property
    def params(self) -> dict:
        """The point estimate as Flax variables ``{"params": ...}`` (MLE / MAP fits)."""
        if not self.is_point:
            raise AttributeError(
                f"`params` is the point estimate of an MLE / MAP fit; this is a {self.method!r} fit with "
                f"{self.num_draws} draws: use `samples`."
            )
        return jax.tree.map(lambda a: a[0], self.samples)

    @property
    def likelihood_params(self) -> dict:
        """Draws of the likelihood's own latent sites, e.g. ``{"noise_scale": (num_draws,)}``."""
        return {k: v for k, v in self.draws.items() if k not in self._spec.paths}

    def predict(self, x, num_samples: int | None = None, batch_size: int | None = None,
                seed=None, y_err=None) -> Predictions:
        """Predictive distribution at ``x``.

        Args:
          x: inputs ``(n, features)`` (or ``(n,)`` for one feature), same width as in training.
          num_samples: use this many of the draws (evenly spaced); default all.
          batch_size: inputs per chunk; default keeps each block below ``CHUNK_ELEMENTS``.
          seed: if given, also draw observations ``y`` (``Predictions.y_samples``).
          y_err: for a fit with known measurement errors, the noise scales ``(n, out)`` of
            the observations to predict (0 for the noise-free function); required there,
            and an error otherwise.

        Returns:
          :class:`Predictions` with arrays of shape ``(n, out)``.
        """
        x = _checks.inputs(x, "x", num_features=self.num_features)
        draws = self.draws
        if num_samples is not None:
            num_samples = _checks.positive_int(num_samples, "num_samples")
            if num_samples > self.num_draws:
                raise ValueError(f"`num_samples` must be at most the {self.num_draws} draws of this fit; got {num_samples}.")
            idx = np.round(np.linspace(0, self.num_draws - 1, num_samples)).astype(int)
            draws = jax.tree.map(lambda a: a[idx], draws)
        y_key = None if seed is None else _checks.as_seed_key(seed)
        y_err = self._new_errors(y_err, (x.shape[0], self._spec.out))
        if self.normalizer is not None:
            x, y_err = self.normalizer.inputs(x), self.normalizer.errors(y_err)
        pred = predictions_from_draws(self.model, draws, x, batch_size=batch_size, y_key=y_key,
                                      linearize_at=self.linearize_at, y_err=y_err)
        return pred if self.normalizer is None else self.normalizer.predictions(pred)

    @property
    def num_chains(self) -> int:
        """Chains the draws come from (NUTS); other methods' draws count as one chain."""
        return int(self.info.get("num_chains", 1))

    def log_likelihood(self, x=None, y=None, y_err=None) -> np.ndarray:
        """Pointwise log-likelihood ``log p(yᵢ | xᵢ, θₛ)``, shape ``(draws, n)``, in original units.

        Defaults to the training data (and its ``y_err``). With ``normalize=True`` the
        Jacobian of the target scaling is included, so the values are densities of ``y`` as given.
        """
        x, y, y_err = self._observed(x, y, y_err)
        if self.normalizer is not None:
            x, y, y_err = self.normalizer.inputs(x), self.normalizer.targets(y), self.normalizer.errors(y_err)
        fn = self.model.program(build_log_likelihood)
        y_err = None if y_err is None else jnp.asarray(y_err)
        out = np.asarray(fn(self.draws, jnp.asarray(x), jnp.asarray(y), self.linearize_at, y_err))
        return out + (0.0 if self.normalizer is None else self.normalizer.log_jacobian())

    def _new_errors(self, y_err, shape: tuple[int, int], positive: bool = False) -> np.ndarray | None:
        """Validated noise scales for new observations of ``shape`` ``(n, out)``: required iff the fit was made with ``y_err``."""
        if self.y_err is None:
            if y_err is not None:
                raise ValueError("`y_err` is only for fits made with known measurement errors (fit(..., y_err=...)).")
            return None
        if y_err is None:
            raise ValueError(
                "this fit was made with known measurement errors `y_err`; pass `y_err` for these points "
                "too (0 to predict the noise-free function)."
            )
        return self.model.check_errors(y_err, shape, allow_zero=not positive)

    def _observed(self, x, y, y_err) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validated ``(x, y, y_err)``: the given observations, or the training ones when all are ``None``."""
        if x is None and y is None and y_err is None:
            return *self._data_or(x, y), self.y_err
        x, y = self._data_or(x, y)
        return x, y, self._new_errors(y_err, y.shape, positive=True)

    def _data_or(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(x, y)``: the given data, or the training data when both are ``None``."""
        if x is None and y is None:
            if self.data is None:
                raise ValueError("this fit holds no training data; pass `x` and `y`.")
            return self.data
        if x is None or y is None:
            raise ValueError("pass both `x` and `y`, or neither (to use the training data).")
        x, y = self.model.check_data(x, y)
        if x.shape[1] != self.num_features:
            raise ValueError(f"`x` must have {self.num_features} feature column(s); got shape {x.shape}.")
        return x, y

    def save(self, path, overwrite: bool = False):
        """Write this fit to the folder ``path`` (see :mod:`bnn.io`); ``bnn.load(path)`` reads it back."""
        return io.save(self, path, overwrite=overwrite)

    def to_arviz(self, x=None, y=None, num_prior_samples: int | None = None, seed=0, y_err=None):
        """This fit as an ArviZ DataTree (see :func:`bnn.diagnostics.to_arviz`)."""
        return diagnostics.to_arviz(self, x, y, num_prior_samples=num_prior_samples, seed=seed, y_err=y_err)

    def __repr__(self) -> str:
        wall = self.info.get("wall_time")
        timing = f", wall_time={wall:.2f}s" if wall is not None else ""
        return f"Fit(method={self.method!r}, num_draws={self.num_draws}, num_features={self.num_features}{timing})"
