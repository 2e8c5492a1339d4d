"""bnn: Bayesian neural networks on JAX.

A Flax network is lifted into a NumPyro model with priors on its weights; the same
model is fitted by maximum likelihood, MAP (an L2 penalty), or posterior inference,
and sampled from its prior predictive.

>>> import bnn
>>> x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
>>> model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
>>> fit = model.fit(x, y, method="map", num_steps=2000)
>>> pred = fit.predict(bnn.datasets.sine_grid())

The public API is this module's ``__all__`` and the ``__all__`` of the submodules
``bnn.datasets``, ``bnn.diagnostics``, ``bnn.metrics``, ``bnn.plot`` and ``bnn.sbc``, and
``bnn.sklearn`` (scikit-learn estimators; imported on its own, as scikit-learn is optional).
Everything else (``bnn.lifting``, ``bnn.inference``, ``bnn.io``, names outside those lists)
is internal and may change in any release.
"""

import numpyro as _numpyro

# arviz_base registers numpyro through lazy_loader. If numpyro's submodules are then
# imported before the lazy module itself has loaded, numpyro.distributions ends up
# without its `distribution` attribute and numpyro.factor fails inside NUTS. Touching
# an attribute loads the module first, so `import arviz; import bnn` works too.
_numpyro.__version__  # noqa: B018

from bnn import datasets, diagnostics, metrics, plot, sbc  # noqa: E402
from bnn._heap import limit_heap_growth  # noqa: E402
from bnn._version import __version__  # noqa: E402
from bnn.compare import compare, cross_validate  # noqa: E402
from bnn.diagnostics import Diagnostics, diagnose, to_arviz  # noqa: E402
from bnn.fit import Fit  # noqa: E402
from bnn.likelihoods import Bernoulli, Categorical, Gaussian, Heteroscedastic, Likelihood  # noqa: E402
from bnn.model import BNN, load  # noqa: E402
from bnn.nets import MLP, Polynomial  # noqa: E402
from bnn.predictive import Normalizer, Predictions  # noqa: E402
from bnn.priors import FanInNormal, HalfNormal, Normal, Prior, prior_scale_to_weight_decay, weight_decay_to_prior_scale  # noqa: E402

__all__ = [
    "BNN",
    "MLP",
    "Polynomial",
    "Prior",
    "Normal",
    "FanInNormal",
    "HalfNormal",
    "Likelihood",
    "Gaussian",
    "Heteroscedastic",
    "Bernoulli",
    "Categorical",
    "Fit",
    "Predictions",
    "Normalizer",
    "compare",
    "cross_validate",
    "diagnose",
    "Diagnostics",
    "to_arviz",
    "load",
    "prior_scale_to_weight_decay",
    "weight_decay_to_prior_scale",
    "limit_heap_growth",
    "datasets",
    "diagnostics",
    "metrics",
    "plot",
    "sbc",
    "__version__",
]
