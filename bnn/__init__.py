"""bnn: Bayesian neural networks on JAX.

A Flax network is lifted into a NumPyro model with priors on its weights; the same
model is fitted by maximum likelihood, MAP (an L2 penalty), or posterior inference,
and sampled from its prior predictive.

>>> import bnn
>>> x, y = bnn.datasets.sine(n=40, noise=0.1, seed=0)
>>> model = bnn.BNN(bnn.MLP((10, 10, 1)), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
>>> fit = model.fit(x, y, method="map", num_steps=2000)
>>> pred = fit.predict(bnn.datasets.sine_grid())
"""

from bnn import datasets, metrics, plot
from bnn.fit import Fit, Predictions
from bnn.likelihoods import Bernoulli, Categorical, Gaussian, Heteroscedastic, Likelihood
from bnn.model import BNN
from bnn.nets import MLP, Polynomial
from bnn.priors import FanInNormal, Normal, Prior, prior_scale_to_weight_decay, weight_decay_to_prior_scale

__version__ = "0.1.0"

__all__ = [
    "BNN",
    "MLP",
    "Polynomial",
    "Prior",
    "Normal",
    "FanInNormal",
    "Likelihood",
    "Gaussian",
    "Heteroscedastic",
    "Bernoulli",
    "Categorical",
    "Fit",
    "Predictions",
    "prior_scale_to_weight_decay",
    "weight_decay_to_prior_scale",
    "datasets",
    "metrics",
    "plot",
    "__version__",
]
