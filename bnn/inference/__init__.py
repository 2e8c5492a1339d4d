"""Inference methods, one module per family: ``optimize`` (MLE, MAP), ``mcmc`` (NUTS),
``mclmc`` (BlackJAX MCLMC), ``ensemble`` (deep ensembles), ``svi`` (variational), ``laplace`` (Gaussian around the MAP)."""

from collections.abc import Callable
from functools import partial

from bnn.fit import Fit
from bnn.inference.ensemble import fit_ensemble
from bnn.inference.laplace import fit_laplace
from bnn.inference.mclmc import fit_mclmc
from bnn.inference.mcmc import fit_nuts
from bnn.inference.optimize import fit_point
from bnn.inference.svi import fit_svi

#: method name -> function(model, x, y, seed=..., **options) -> Fit
FITTERS: dict[str, Callable[..., Fit]] = {
    "mle": partial(fit_point, method="mle"),
    "map": partial(fit_point, method="map"),
    "nuts": fit_nuts,
    "svi": fit_svi,
    "laplace": fit_laplace,
    "ensemble": fit_ensemble,
    "mclmc": fit_mclmc,
}

__all__ = ["FITTERS", "fit_ensemble", "fit_laplace", "fit_mclmc", "fit_nuts", "fit_point", "fit_svi"]
