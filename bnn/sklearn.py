"""scikit-learn estimators: :class:`BNNRegressor` and :class:`BNNClassifier`.

They wrap :class:`bnn.BNN` and :meth:`bnn.BNN.fit` in scikit-learn's conventions (``fit`` /
``predict`` / ``score``, ``get_params`` / ``set_params``, pipelines, cross-validation, grid
search), so a tabular workflow can use a Bayesian network where it used any other estimator.
scikit-learn is an optional dependency: ``pip install "bnn[sklearn]"``.

>>> from bnn.sklearn import BNNRegressor
>>> reg = BNNRegressor(method="map", method_options={"num_steps": 500}).fit(X, y)
>>> mean, std = reg.predict(X_new, return_std=True)
>>> lower, upper = reg.predict_interval(X_new, level=0.9)

The defaults are ``bnn fit``'s (:mod:`bnn.cli`): ``method="auto"`` samples a hierarchical prior
with MCLMC on tables of up to 2000 rows and fits a deep ensemble above; ``prior="auto"`` and,
for the regressor, ``likelihood="auto"`` follow the table's size the same way (see docs/methods.md).
Inputs and targets are standardised (``normalize=True``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('bnn.sklearn needs scikit-learn: pip install "bnn[sklearn]" (or scikit-learn>=1.6).') from err

__all__ = ["BNNRegressor", "BNNClassifier"]

class _BNNEstimator(BaseEstimator):
    """The parameters and the fit shared by both estimators (see :class:`BNNRegressor`)."""

    def __init__(self, hidden=(50,), activation="relu", prior="auto", prior_scale=1.0, method="auto",
                 method_options=None, normalize=True, seed=0):
        self.hidden = hidden
        self.activation = activation
        self.prior = prior
        self.prior_scale = prior_scale
        self.method = method
        self.method_options = method_options
        self.normalize = normalize
        self.seed = seed

    def _fit(self, x: np.ndarray, y: np.ndarray, likelihood: str):
        from bnn import cli

        if self.prior not in cli.PRIORS:
            raise ValueError(f"`prior` must be one of {', '.join(map(repr, cli.PRIORS))}; got {self.prior!r}.")
        if self.method not in cli.FIT_METHODS:
            raise ValueError(f"`method` must be one of {', '.join(map(repr, cli.FIT_METHODS))}; got {self.method!r}.")
        if self.method_options is not None and not isinstance(self.method_options, dict):
            raise TypeError(f"`method_options` must be a dict of the method's options or None; "
                            f"got {type(self.method_options).__name__}.")
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        rows = x.shape[0]
        self.method_ = cli.auto_method(rows) if self.method == "auto" else self.method
        self.prior_ = cli.auto_prior(rows, self.method_) if self.prior == "auto" else self.prior
        self.likelihood_ = likelihood
        self.model_ = cli.model_for(likelihood, hidden, self.activation, self.prior_scale, self.prior_, y)
        options = {"normalize": self.normalize, "tune_prior": self.prior_ == "tuned", **(self.method_options or {})}
        self.fit_ = self.model_.fit(x, y, method=self.method_, seed=self.seed, **options)
        return self

    def _predictions(self, x):
        check_is_fitted(self, "fit_")
        x = validate_data(self, x, reset=False, dtype=np.float32)
        return self.fit_.predict(x)

    # A bnn.Fit holds a Flax module with closures, which pickle cannot store: the fitted state
    # travels as the files of bnn's own save format (no pickled code) and is read back by bnn.load.
    def __getstate__(self):
        state = dict(self.__dict__)
        if "fit_" in state:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "fit"
                state.pop("fit_").save(path)
                state["_saved_fit"] = {f.name: f.read_bytes() for f in path.iterdir()}
            state.pop("model_")
        return state

    def __setstate__(self, state):
        saved = state.pop("_saved_fit", None)
        self.__dict__.update(state)
        if saved is not None:
            import bnn

            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "fit"
                path.mkdir()
                for name, data in saved.items():
                    (path / name).write_bytes(data)
                self.fit_ = bnn.load(path)
            self.model_ = self.fit_.model


class BNNRegressor(RegressorMixin, _BNNEstimator):
    """A Bayesian neural network for regression, as a scikit-learn estimator.

    Parameters:
      hidden: hidden layer widths of the MLP (default ``(50,)``).
      activation: the hidden layers' activation (``"relu"``, ``"tanh"``, ...).
      prior: ``"auto"`` (default), ``"hierarchical"`` (prior scales sampled with the weights;
        samplers only), ``"tuned"`` (chosen by the evidence, ``tune_prior=True``) or ``"fixed"``.
      prior_scale: the Normal prior's std (the hyperprior's scale for ``"hierarchical"``).
      method: ``"auto"`` or a :meth:`bnn.BNN.fit` method (``"map"``, ``"ensemble"``, ``"laplace"``,
        ``"svi"``, ``"nuts"``, ``"mclmc"``, ``"sgmcmc"``).
      method_options: that method's options, e.g. ``{"num_steps": 500}``.
      likelihood: ``"auto"`` (default: ``"gaussian"`` up to 2000 rows, ``"heteroscedastic"`` above),
        ``"gaussian"`` (one learned noise scale) or ``"heteroscedastic"`` (a noise scale per row).
      normalize: standardise inputs and targets with the training data (default True).
      seed: the fit's seed.

    Attributes (after ``fit``): ``fit_`` (the :class:`bnn.Fit`), ``model_`` (the :class:`bnn.BNN`),
    ``method_``, ``prior_``, ``likelihood_`` (what ``"auto"`` chose), ``n_features_in_`` and
    ``feature_names_in_`` (for a DataFrame with string column names).
    """

    def __init__(self, hidden=(50,), activation="relu", prior="auto", prior_scale=1.0, method="auto",
                 method_options=None, likelihood="auto", normalize=True, seed=0):
        super().__init__(hidden=hidden, activation=activation, prior=prior, prior_scale=prior_scale, method=method,
                         method_options=method_options, normalize=normalize, seed=seed)
        self.likelihood = likelihood

    def fit(self, X, y):
        """Fit to ``X`` ``(n, features)`` and a numeric target ``y`` ``(n,)``."""
        from bnn import cli

        x, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        if self.likelihood not in ("auto", "gaussian", "heteroscedastic"):
            raise ValueError(f"`likelihood` must be 'auto', 'gaussian' or 'heteroscedastic'; got {self.likelihood!r}.")
        likelihood = cli.auto_likelihood(x.shape[0]) if self.likelihood == "auto" else self.likelihood
        return self._fit(x, np.asarray(y, np.float32).reshape(-1, 1), likelihood)

    def predict(self, X, return_std: bool = False):
        """The predictive mean ``(n,)``; with ``return_std``, also the predictive std ``(n,)`` (noise and
        posterior spread together, as ``GaussianProcessRegressor.predict(X, return_std=True)``)."""
        pred = self._predictions(X)
        mean = np.asarray(pred.mean)[:, 0]
        return (mean, np.asarray(pred.std)[:, 0]) if return_std else mean

    def predict_interval(self, X, level: float = 0.9):
        """The central predictive interval of probability ``level``: ``(lower, upper)``, each ``(n,)``."""
        lower, upper = self._predictions(X).interval(level)
        return np.asarray(lower)[:, 0], np.asarray(upper)[:, 0]


class BNNClassifier(ClassifierMixin, _BNNEstimator):
    """A Bayesian neural network for classification, as a scikit-learn estimator.

    Two classes use a Bernoulli likelihood (one output), more a Categorical one; the class labels
    may be any values (``classes_`` holds them, sorted). Parameters as for :class:`BNNRegressor`
    (no ``likelihood``).
    """

    def fit(self, X, y):
        """Fit to ``X`` ``(n, features)`` and class labels ``y`` ``(n,)``."""
        x, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"a classifier needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r}).")
        likelihood = "bernoulli" if len(self.classes_) == 2 else "categorical"
        return self._fit(x, codes.astype(np.int32), likelihood)

    def predict_proba(self, X):
        """Predictive class probabilities ``(n, classes)``, in the order of ``classes_``."""
        probs = np.asarray(self._predictions(X).probs, np.float64)
        if self.likelihood_ == "bernoulli":
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return probs

    def predict(self, X):
        """The most probable class of each row ``(n,)``."""
        probs = self.predict_proba(X)
        return self.classes_[np.argmax(probs, axis=1)]
