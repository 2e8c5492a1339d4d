"""Inference methods, one module per family: ``optimize`` (MLE, MAP), ``mcmc`` (NUTS),
``mclmc`` (BlackJAX MCLMC), ``sgmcmc`` (cyclical SGHMC / SGLD on minibatches), ``ensemble`` (deep
ensembles), ``svi`` (variational), ``laplace`` (Gaussian around the MAP), ``evidence`` (the prior and
noise scales by the evidence, for every method)."""

from collections.abc import Callable
from functools import partial

from bnn.fit import Fit
from bnn.inference.ensemble import fit_ensemble
from bnn.inference.evidence import tune, with_prior_tuning
from bnn.inference.laplace import fit_laplace
from bnn.inference.mclmc import fit_mclmc
from bnn.inference.mcmc import fit_nuts
from bnn.inference.optimize import fit_point
from bnn.inference.sgmcmc import fit_sgmcmc
from bnn.inference.svi import fit_svi

#: method name -> function(model, x, y, seed=..., **options) -> Fit; every method takes
#: ``tune_prior`` (Laplace its own, the others through :func:`bnn.inference.evidence.with_prior_tuning`)
FITTERS: dict[str, Callable[..., Fit]] = {
    "mle": with_prior_tuning(partial(fit_point, method="mle"), "mle"),
    "map": with_prior_tuning(partial(fit_point, method="map"), "map"),
    "nuts": with_prior_tuning(fit_nuts, "nuts"),
    "svi": with_prior_tuning(fit_svi, "svi"),
    "laplace": fit_laplace,
    "ensemble": with_prior_tuning(fit_ensemble, "ensemble"),
    "mclmc": with_prior_tuning(fit_mclmc, "mclmc"),
    "sgmcmc": with_prior_tuning(fit_sgmcmc, "sgmcmc"),
}

__all__ = ["FITTERS", "tune", "fit_ensemble", "fit_laplace", "fit_mclmc", "fit_nuts", "fit_point", "fit_sgmcmc", "fit_svi"]
