"""UCI regression benchmark: the standard protocol of the Bayesian-neural-network literature.

    python benchmarks/uci.py                                   # every data set, fast methods, all 20 splits
    python benchmarks/uci.py --splits 0-2                      # a first pass over splits 0, 1, 2
    python benchmarks/uci.py --datasets yacht energy --methods nuts --splits 0
    python benchmarks/uci.py --report-only                     # rewrite UCI.md from the stored results
    python benchmarks/uci.py --fast --datasets yacht --splits 0    # smoke run (tiny step counts)

Protocol (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016; see the README of the data
folder, ``$BNN_UCI_DIR`` or ``shared/data/uci``): the fixed 20 train/test splits of each data
set; one hidden layer of 50 ReLU units; inputs and target standardised with the training
split's mean and std (``normalize=True``; constant input columns get std 1); Gaussian noise
whose scale is learned (``bnn.Gaussian()``, HalfNormal(1) prior in standardised units);
Normal(0, 1) priors on every weight and bias. Reported per split, in original target units:
test RMSE of the predictive mean, test log-likelihood (mean per-point log predictive density,
= −NLL), coverage and mean width of the central 90 % predictive interval, and seconds (fit and
evaluation, JIT compilation included: every split builds a fresh model).

Every method runs with the package defaults except the settings listed in ``METHODS``; no
setting depends on the data set. ``seed`` is the split index.

Results are appended, one JSON line per (data set, method, split), to
``benchmarks/uci_results.jsonl`` as soon as each split finishes, so an interrupted run resumes
where it stopped (finished splits with the same settings are skipped unless ``--rerun``) and
runs over different data sets, methods or splits merge. The Markdown report (``--out``,
default ``benchmarks/UCI.md``) is rewritten from every stored result after each split.
A warning raised during a fit (an optimiser that had not settled, NUTS divergences) is
recorded with the split, counted in the report and listed under it; an exception is recorded
as the split's error. ``--fast`` uses tiny step counts and its own results file
(``benchmarks/uci_results_fast.jsonl``); it prints the report instead of writing ``--out``
unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (machine description, report writing)

import bnn  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "uci_results.jsonl"
FAST_RESULTS = HERE / "uci_results_fast.jsonl"
REPORT = HERE / "UCI.md"

DATASETS = ("energy", "kin8nm", "naval-propulsion-plant", "power-plant", "protein-tertiary-structure", "wine-quality-red",
            "yacht")
SHORT = {
    "energy": "Energy",
    "kin8nm": "Kin8nm",
    "naval-propulsion-plant": "Naval",
    "power-plant": "Power",
    "protein-tertiary-structure": "Protein",
    "wine-quality-red": "Wine red",
    "yacht": "Yacht",
}

#: name -> (fit method, options beyond the package defaults, label)
METHODS: dict[str, tuple[str, dict, str]] = {
    "map": ("map", {}, "MAP"),
    "map-es": ("map", {"validation": 0.1}, "MAP, early stopping"),
    "ensemble": ("ensemble", {"num_members": 10}, "Ensemble (10 MAP)"),
    "ensemble-es": ("ensemble", {"num_members": 10, "validation": 0.1}, "Ensemble, early stopping"),
    "laplace": ("laplace", {"tune_prior": True}, "Laplace, tuned prior"),
    "svi-normal": ("svi", {"guide": "normal"}, "SVI mean-field"),
    "svi-lowrank": ("svi", {"guide": "lowrank"}, "SVI low-rank"),
    "nuts": ("nuts", {"num_chains": 2, "num_warmup": 300, "num_samples": 300}, "NUTS"),
    "nuts-module": ("nuts", {"num_chains": 2, "num_warmup": 300, "num_samples": 300, "init": "module"},
                    "NUTS, random starts"),
    "mclmc": ("mclmc", {}, "MCLMC (4 chains)"),
    "ensemble-tuned": ("ensemble", {"num_members": 10, "tune_prior": True}, "Ensemble, tuned prior"),
    "ensemble-anchored": ("ensemble", {"num_members": 10, "tune_prior": True, "anchored": True},
                          "Ensemble, tuned prior, anchored"),
    "mclmc-tuned": ("mclmc", {"tune_prior": True}, "MCLMC, tuned prior"),
    "nuts-tuned": ("nuts", {"tune_prior": True}, "NUTS (4 × 250/500), tuned prior"),
    "nuts-hier": ("nuts", {}, "NUTS (4 × 250/500), HalfNormal(1) scales"),
    "mclmc-hier": ("mclmc", {}, "MCLMC, HalfNormal(1) scales"),
    "laplace-layerwise": ("laplace", {"tune_prior": "layerwise"}, "Laplace, layerwise tuned prior"),
    "mclmc-layerwise": ("mclmc", {"tune_prior": "layerwise"}, "MCLMC, layerwise tuned prior"),
    "mclmc-hier-noise": ("mclmc", {"tune_prior": True}, "MCLMC, HalfNormal(1) scales, noise by the evidence"),
    "sgmcmc": ("sgmcmc", {}, "SG-MCMC (cyclical SGHMC, 4 chains)"),
    "ensemble-het": ("ensemble", {"num_members": 10}, "Ensemble, heteroscedastic noise"),
    "sgmcmc-het": ("sgmcmc", {}, "SG-MCMC, heteroscedastic noise"),
}
#: methods fitted on a model other than :func:`make_model`'s (the prior): name -> prior
PRIORS: dict[str, object] = {m: bnn.Normal(scale=bnn.HalfNormal(1.0)) for m in ("nuts-hier", "mclmc-hier", "mclmc-hier-noise")}
#: methods whose noise scale is a second network output (``bnn.Heteroscedastic``) instead of one learned scale
HETEROSCEDASTIC = ("ensemble-het", "sgmcmc-het")
#: bumped when a package default behind a method changes, so that older results count as stale
#: (2: SVI and NUTS start from MAP fits by default; NUTS 3 and nuts-module 2: target acceptance 0.95;
#: NUTS 4: target acceptance 0.98, NUTS on one flat vector in a program kept per model; MCLMC 2: the
#: preconditioner's moments about the chain's start, no zero inverse mass; hierarchical MCLMC 3 and NUTS 2: MAP
#: starts with the noise held at the evidence's scale; heteroscedastic ensemble and SG-MCMC 2: MAP fits fit the
#: mean first, ``bnn.inference.optimize.mean_first``)
REVISION: dict[str, int] = {"svi-normal": 2, "svi-lowrank": 2, "nuts": 4, "nuts-module": 2, "mclmc": 2, "mclmc-hier": 3, "nuts-hier": 2,
                             "mclmc-tuned": 2, "ensemble-het": 2, "sgmcmc-het": 2}
#: the table size above which bnn's ``batch_size="auto"`` trains on minibatches (its documented default)
FULL_BATCH_ROWS = 2000
#: The point fits (MAP / MLE, the ensemble, Laplace's and SVI's MAP fits) train by the default
#: ``batch_size="auto"``: above ``FULL_BATCH_ROWS`` training rows 80 000 minibatch steps replaced 2000
#: full-batch ones. The methods rerun since are one revision newer on those tables (on smaller tables
#: nothing changed); the others keep their results, named as made with full-batch MAP training.
AUTO_BATCH_METHODS = ("map", "ensemble", "ensemble-tuned", "laplace", "ensemble-es", "svi-normal")
FULL_BATCH_MADE = "full-batch MAP training (2000 steps) on tables above 2000 rows"
#: The ensemble's default ``validation="auto"`` holds out 10 % of the rows for early stopping on tables of
#: up to ``FULL_BATCH_ROWS`` rows: the ensemble methods without an explicit ``validation`` are one revision
#: newer there (on larger tables, with a tuned prior and for anchored members, nothing changed).
AUTO_VALIDATION_METHODS = ("ensemble",)
#: MCLMC's package defaults that changed after its first stored results, oldest first: the decoherence
#: length L (0.4 -> 4 x step size x autocorrelation time, ``L_factor``), the warm-up (2000 -> 10 000
#: steps, ``bnn.inference.mclmc.DEFAULT_WARMUP``) and the steps per kept draw (10 -> 20,
#: ``DEFAULT_THINNING``). Each made the plain and hierarchical MCLMC rows one revision newer on tables of up
#: to ``FULL_BATCH_ROWS`` rows, where they were rerun; MCLMC's rows on the large tables and the other MCLMC
#: rows keep their results, named as made at the defaults before (``MADE_AT``).
MCLMC_CHANGED_METHODS = ("mclmc", "mclmc-hier")
MCLMC_CHANGES = ("L_factor=0.4", "num_warmup=2000", "thinning=10")


def revision(method: str, n_train: int) -> int:
    """The current revision of ``method``'s results on a table of ``n_train`` training rows."""
    return (REVISION.get(method, 1) + (method in AUTO_BATCH_METHODS and n_train > FULL_BATCH_ROWS)
            + (method in AUTO_VALIDATION_METHODS and n_train <= FULL_BATCH_ROWS)
            + len(MCLMC_CHANGES) * (method in MCLMC_CHANGED_METHODS and n_train <= FULL_BATCH_ROWS))


#: package defaults that have changed since a method's stored results were made, named in the report
#: (NUTS's target acceptance moved to 0.98 to avoid the rare divergences at 0.95; random starts not rerun)
MADE_AT: dict[str, str] = {"nuts-module": "target_accept_prob=0.95",
                           **{m: FULL_BATCH_MADE for m in ("map-es", "svi-lowrank")},
                           **{m: ", ".join(MCLMC_CHANGES) for m in ("mclmc-tuned", "mclmc-layerwise", "mclmc-hier-noise")},
                           "mclmc": f"{', '.join(MCLMC_CHANGES)} on the tables above {FULL_BATCH_ROWS} rows"}
#: what each method runs by default when no --methods are given (NUTS only on request: it is slow)
DEFAULT_METHODS = ("map", "map-es", "ensemble", "laplace", "svi-normal", "svi-lowrank")
#: tiny step counts of the smoke mode, on top of METHODS
FAST: dict[str, dict] = {
    "map": {"num_steps": 50},
    "map-es": {"num_steps": 50},
    "ensemble": {"num_members": 3, "num_steps": 50},
    "ensemble-es": {"num_members": 3, "num_steps": 50},
    "laplace": {"num_steps": 50, "num_samples": 50},
    "svi-normal": {"num_steps": 50, "num_samples": 50},
    "svi-lowrank": {"num_steps": 50, "num_samples": 50},
    "nuts": {"num_chains": 1, "num_warmup": 20, "num_samples": 20},
    "nuts-module": {"num_chains": 1, "num_warmup": 20, "num_samples": 20},
    "mclmc": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1},
    "ensemble-tuned": {"num_members": 3, "num_steps": 50, "tune_options": {"num_steps": 50}},
    "ensemble-anchored": {"num_members": 3, "num_steps": 50, "tune_options": {"num_steps": 50}},
    "mclmc-tuned": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1, "tune_options": {"num_steps": 50}},
    "nuts-tuned": {"num_chains": 1, "num_warmup": 20, "num_samples": 20, "tune_options": {"num_steps": 50}},
    "nuts-hier": {"num_chains": 1, "num_warmup": 20, "num_samples": 20},
    "mclmc-hier": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1},
    "laplace-layerwise": {"num_steps": 50, "num_samples": 50},
    "mclmc-layerwise": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1,
                        "tune_options": {"num_steps": 50}},
    "mclmc-hier-noise": {"num_chains": 2, "num_warmup": 300, "num_samples": 20, "thinning": 1,
                         "tune_options": {"num_steps": 50}},
    "sgmcmc": {"num_chains": 2, "num_cycles": 2, "cycle_length": 50, "draws_per_cycle": 2, "map_options": {"num_steps": 50}},
    "ensemble-het": {"num_members": 3, "num_steps": 50},
    "sgmcmc-het": {"num_chains": 2, "num_cycles": 2, "cycle_length": 50, "draws_per_cycle": 2, "map_options": {"num_steps": 50}},
}

LEVEL = 0.9
#: training rows on which the training RMSE / log-likelihood are evaluated (a fixed random subset)
TRAIN_EVAL_ROWS = 1000

#: Published results (1 hidden layer of 50 units, mean ± standard error over 20 splits): test
#: RMSE and log-likelihood. VI (Graves 2011), PBP (Hernández-Lobato & Adams 2015) and MC-dropout:
#: Gal & Ghahramani 2016, Table 1. Deep ensembles (5 networks, adversarial training):
#: Lakshminarayanan et al. 2017, Table 1 (RMSE without standard error here). Protein (5 splits; no VI
#: result in that table): the same two tables, as restated in shared/data/uci/README.md.
REFERENCES: dict[str, dict[str, tuple]] = {
    "VI (Graves 2011)": {
        "energy": ((2.65, 0.08), (-2.39, 0.03)),
        "kin8nm": ((0.10, 0.00), (0.90, 0.01)),
        "naval-propulsion-plant": ((0.01, 0.00), (3.73, 0.12)),
        "power-plant": ((4.33, 0.04), (-2.89, 0.01)),
        "wine-quality-red": ((0.65, 0.01), (-0.98, 0.01)),
        "yacht": ((6.89, 0.67), (-3.43, 0.16)),
    },
    "PBP": {
        "protein-tertiary-structure": ((4.73, 0.01), (-2.97, 0.00)),
        "energy": ((1.80, 0.05), (-2.04, 0.02)),
        "kin8nm": ((0.10, 0.00), (0.90, 0.01)),
        "naval-propulsion-plant": ((0.01, 0.00), (3.73, 0.01)),
        "power-plant": ((4.12, 0.03), (-2.84, 0.01)),
        "wine-quality-red": ((0.64, 0.01), (-0.97, 0.01)),
        "yacht": ((1.02, 0.05), (-1.63, 0.02)),
    },
    "MC-dropout": {
        "protein-tertiary-structure": ((4.36, 0.04), (-2.89, 0.01)),
        "energy": ((1.66, 0.04), (-1.99, 0.02)),
        "kin8nm": ((0.10, 0.00), (0.95, 0.01)),
        "naval-propulsion-plant": ((0.01, 0.00), (3.80, 0.01)),
        "power-plant": ((4.02, 0.04), (-2.80, 0.01)),
        "wine-quality-red": ((0.62, 0.01), (-0.93, 0.01)),
        "yacht": ((1.11, 0.09), (-1.55, 0.03)),
    },
    "Deep ensembles (5)": {
        "protein-tertiary-structure": ((4.71, 0.06), (-2.83, 0.02)),
        "energy": ((2.09, None), (-1.38, 0.22)),
        "kin8nm": ((0.09, None), (1.20, 0.02)),
        "naval-propulsion-plant": ((0.00, None), (5.63, 0.05)),
        "power-plant": ((4.11, None), (-2.79, 0.04)),
        "wine-quality-red": ((0.64, None), (-0.94, 0.12)),
        "yacht": ((1.58, None), (-1.18, 0.21)),
    },
}


# ---------------------------------------------------------------------------------------------
# settings


def method_options(method: str, fast: bool = False) -> tuple[str, dict]:
    """``(fit method, options)`` of a benchmark method."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}.")
    kind, options, _ = METHODS[method]
    options = dict(options)
    if fast:
        options.update(FAST[method])
    return kind, options


def make_model(method: str | None = None) -> bnn.BNN:
    """The protocol's network: one hidden layer of 50 ReLU units, Normal(0, 1) priors (or the method's own
    prior, :data:`PRIORS`), learned noise (one scale, or a second output for :data:`HETEROSCEDASTIC`)."""
    likelihood = bnn.Heteroscedastic() if method in HETEROSCEDASTIC else bnn.Gaussian()
    return bnn.BNN(bnn.MLP((50, likelihood.width(1)), activation="relu"), prior=PRIORS.get(method, bnn.Normal(1.0)),
                   likelihood=likelihood)


def parse_splits(text: str, n_splits: int = 20) -> list[int]:
    """``"all"``, ``"3"``, ``"0-4"`` or ``"0,2,5-7"`` -> sorted split indices."""
    if text.strip() == "all":
        return list(range(n_splits))
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+", part):
            out.add(int(part))
        elif m := re.fullmatch(r"(\d+)-(\d+)", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"split range {part!r} runs backwards.")
            out.update(range(lo, hi + 1))
        else:
            raise ValueError(f"`--splits` must be 'all', 'K', 'A-B' or a comma list of those; got {text!r}.")
    bad = [s for s in out if not 0 <= s < n_splits]
    if bad:
        raise ValueError(f"splits {sorted(bad)} are outside 0..{n_splits - 1}.")
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# one split


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate(fit: bnn.Fit, x: np.ndarray, y: np.ndarray) -> dict:
    """The fit's predictions at ``x`` judged against ``y``, in original units: RMSE of the predictive mean,
    mean log predictive density (``ll`` = −NLL), coverage and mean width of the central :data:`LEVEL` interval."""
    pred = fit.predict(x)
    lo, hi = pred.interval(LEVEL)
    return {
        "rmse": float(np.mean(bnn.metrics.rmse(pred.mean, y))),
        "ll": -float(np.mean(bnn.metrics.nll(pred, y))),
        "coverage": float(np.mean(bnn.metrics.coverage(pred, y, LEVEL))),
        "width": float(np.mean(np.asarray(hi) - np.asarray(lo))),
    }


def _fit_details(method: str, fit: bnn.Fit, data) -> dict:
    """What each method reports about its own fit (convergence, tuned scales, sampler statistics)."""
    info = fit.info
    out: dict = {}
    if "noise_scale" in fit.draws and fit.normalizer is not None:
        # learned noise scale in original target units (mean over draws)
        scale = float(np.asarray(fit.normalizer.y_scale).ravel()[0])
        out["noise_scale"] = float(np.mean(np.asarray(fit.draws["noise_scale"]))) * scale
    for key in ("settled", "loss_change", "num_steps", "best_step", "prior_scale_factor", "tune_iterations",
                "log_evidence", "num_divergences"):
        if key in info and info[key] is not None:
            value = info[key]
            out[key] = value.tolist() if isinstance(value, np.ndarray) else (
                bool(value) if isinstance(value, (bool, np.bool_)) else
                {k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(value))
    if method == "laplace" and "map" in info:
        out["map_settled"] = info["map"].info.get("settled")
    if "loss" in info:
        loss = np.asarray(info["loss"])
        out["final_loss"] = float(np.mean(loss[-1]))
    if "noise_scale" in info and fit.normalizer is not None:
        out["tuned_noise_scale"] = float(info["noise_scale"]) * float(np.asarray(fit.normalizer.y_scale).ravel()[0])
    if fit.method == "sgmcmc":
        diag = bnn.diagnose(fit, data.x_test)
        out["function_rhat_max"] = _finite(np.nanmax(diag.function_rhat))
    if fit.method == "mclmc":
        out["step_size"] = np.asarray(info["step_size"]).tolist()
        out["L"] = np.asarray(info["L"]).tolist()
        out["energy_var"] = np.asarray(info["energy_var"]).tolist()
        diag = bnn.diagnose(fit, data.x_test)
        out["function_rhat_max"] = _finite(np.nanmax(diag.function_rhat))
    if fit.method == "nuts":
        stats = info["sample_stats"]
        out["mean_leapfrog_steps"] = float(np.mean(stats["num_steps"]))
        out["max_leapfrog_steps"] = int(np.max(stats["num_steps"]))
        out["mean_accept_prob"] = float(np.mean(stats["accept_prob"]))
        if fit.num_chains > 1:
            diag = bnn.diagnose(fit, data.x_test)
            out["function_rhat_max"] = _finite(np.nanmax(diag.function_rhat))
            out["function_ess_bulk_min"] = _finite(np.nanmin(diag.function_ess_bulk))
            out["diagnosis"] = diag.verdict
    return out


def run_split(dataset: str, method: str, split: int, fast: bool = False, data_dir=None) -> dict:
    """Fit one method on one split and evaluate it; return the record (never raises for a failed fit).

    Warnings raised while fitting and evaluating are caught and listed in ``record["warnings"]``;
    an exception becomes ``record["error"]`` with NaN metrics.
    """
    kind, options = method_options(method, fast)
    data = bnn.datasets.uci(dataset, split, data_dir=data_dir)
    record: dict = {
        "dataset": dataset,
        "method": method,
        "split": int(split),
        "fast": bool(fast),
        "fit_method": kind,
        "options": options,
        "revision": revision(method, data.x_train.shape[0]),
        "n_train": int(data.x_train.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "error": None,
    }
    rng = np.random.default_rng(split)
    rows = np.sort(rng.choice(data.x_train.shape[0], min(TRAIN_EVAL_ROWS, data.x_train.shape[0]), replace=False))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = make_model(method)
            fit = model.fit(data.x_train, data.y_train, method=kind, seed=split, normalize=True, **options)
            record["fit_s"] = time.perf_counter() - start
            test = evaluate(fit, data.x_test, data.y_test)
            train = evaluate(fit, data.x_train[rows], data.y_train[rows])
            record.update({f"test_{k}": v for k, v in test.items()})
            record.update({"train_rmse": train["rmse"], "train_ll": train["ll"]})
            record["details"] = _fit_details(method, fit, data)
        except Exception as err:  # a failed fit is a result too: record it and go on
            record["error"] = f"{type(err).__name__}: {err}"
    record["seconds"] = time.perf_counter() - start
    messages = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in messages:
            messages.append(text)
    record["warnings"] = messages
    return record


# ---------------------------------------------------------------------------------------------
# storage


def append_record(path: Path, record: dict) -> None:
    """Append one record as a JSON line (flushed at once, so an interrupted run loses nothing finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_records(path: Path) -> list[dict]:
    """Every stored record, the latest one per (data set, method, split, mode, settings)."""
    if not path.is_file():
        return []
    latest: dict[tuple, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
            latest[_key(rec)] = rec
    return list(latest.values())


def _key(rec: dict) -> tuple:
    return (rec["dataset"], rec["method"], rec["split"], rec["fast"], json.dumps(rec["options"], sort_keys=True),
            rec.get("revision", 1))


def _current(records: list[dict], fast: bool) -> tuple[list[dict], int]:
    """Records made with the current settings of their method (and mode); the count of stale ones."""
    keep = []
    for rec in records:
        if rec["fast"] != fast or rec["method"] not in METHODS:
            continue
        current = rec.get("revision", 1) == revision(rec["method"], rec["n_train"])
        if current and rec["options"] == method_options(rec["method"], fast)[1]:
            keep.append(rec)
    stale = sum(1 for r in records if r["fast"] == fast) - len(keep)
    return keep, stale


# ---------------------------------------------------------------------------------------------
# report


def _decimals(value: float, se: float | None) -> int:
    ref = se if se is not None and se > 0 else abs(value)
    if not math.isfinite(ref) or ref == 0:
        return 2
    return int(min(6, max(2, 1 - math.floor(math.log10(ref)))))


def fmt(values: list[float], decimals: int | None = None) -> str:
    """``mean ± se`` of finite values (se = std / √n, n > 1); ``—`` when there are none."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "—"
    mean = float(arr.mean())
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    d = _decimals(mean, se) if decimals is None else decimals
    return f"{mean:.{d}f}" if se is None else f"{mean:.{d}f} ± {se:.{d}f}"


def _ref(value: tuple) -> str:
    mean, se = value
    return f"{mean:.2f}" if se is None else f"{mean:.2f} ± {se:.2f}"


def _method_order(methods) -> list[str]:
    return [m for m in METHODS if m in methods]


def report(records: list[dict], fast: bool = False) -> str:
    """The Markdown report over all current records."""
    recs, stale = _current(records, fast)
    here = harness.machine(devices=False)
    lines = [
        "# UCI regression benchmark" + (" (smoke mode: tiny step counts, numbers meaningless)" if fast else ""),
        "",
        "Written by `python benchmarks/uci.py` from every result stored in "
        f"`benchmarks/{(FAST_RESULTS if fast else RESULTS).name}`; rerun it (or `--report-only`) to refresh.",
        "",
        f"Report written: {here['date']}. Machine (lscpu): {here['cpu']}, {here['cpus']} CPUs.",
    ]
    runs = sorted({(m["cpu"], m["cores_used"], m["xla_flags"], m["jax_backend"]) for m in
                   (r.get("machine") for r in recs) if m})
    for cpu, cores, flags, backend in runs:
        lines.append(f"Results computed on: {cpu}, {cores} core(s) allowed, JAX backend {backend}"
                     + (f", `XLA_FLAGS={flags}`" if flags else "") + ".")
    if recs:
        dates = sorted(r["date"] for r in recs)
        lines.append(f"Splits run between {dates[0]} and {dates[-1]}. Each run is pinned to one core, but runs "
                     "were made side by side with other work on the machine's other core: seconds per split are "
                     "indicative (shared memory bandwidth and caches), not clean timings.")
    lines += [
        "",
        "Protocol: the fixed PBP / MC-dropout train/test splits; one hidden layer of 50 ReLU units; inputs and target "
        "standardised with the training split (`normalize=True`); learned Gaussian noise (`bnn.Gaussian()`); "
        "Normal(0, 1) priors on all weights; seed = split index. Test LL is the mean per-point log predictive "
        "density (= −NLL) and RMSE the error of the predictive mean, both in original target units; coverage and "
        f"width are those of the central {round(100 * LEVEL)} % predictive interval. Entries are mean ± standard "
        "error over the `n` splits run (the published rows: 20 splits). s/split: seconds per split on the cores "
        "stated, fit and evaluation, JIT compilation included. σ: learned noise scale in target units "
        "(mean over draws). Published rows: VI, PBP and MC-dropout from Gal & Ghahramani (2016, Table 1), deep "
        "ensembles (5 networks, adversarial training) from Lakshminarayanan et al. (2017, Table 1) as quoted in the "
        "data folder's README, which marks the latter as not re-checked against the paper. Settings beyond the "
        "package defaults (the same for every data set):",
        "",
    ]
    for name, (kind, _options, label) in METHODS.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in method_options(name, fast)[1].items())
        made_at = f" (stored results made at the then default `{MADE_AT[name]}`)" if name in MADE_AT else ""
        prior = f" on a model with `prior={PRIORS[name]!r}`" if name in PRIORS else ""
        if name in HETEROSCEDASTIC:
            prior = " on a model with `likelihood=bnn.Heteroscedastic()` (`MLP((50, 2))`: mean and noise scale)"
        lines.append(f"- {label} (`{name}`): `fit(method={kind!r}{', ' + opts if opts else ''})`{prior}{made_at}")
    if stale:
        lines += ["", f"({stale} stored records made with other settings are left out.)"]

    by: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        by.setdefault((r["dataset"], r["method"]), []).append(r)
    datasets = [d for d in DATASETS if any(k[0] == d for k in by)] + sorted({k[0] for k in by} - set(DATASETS))
    methods = _method_order({k[1] for k in by})

    def ok(rs):
        return [r for r in rs if r.get("error") is None]

    # summary: test log-likelihood
    lines += ["", "## Test log-likelihood (higher is better)", ""]
    head = ["data set"] + [METHODS[m][2] for m in methods] + ["PBP", "MC-dropout", "Deep ens. (5)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in datasets:
        row = [SHORT.get(d, d)]
        for m in methods:
            row.append(_cell(by.get((d, m), []), "test_ll"))
        row += [_ref(REFERENCES[k][d][1]) if d in REFERENCES[k] else "" for k in ("PBP", "MC-dropout", "Deep ensembles (5)")]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Test RMSE (original units, lower is better)", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in datasets:
        row = [SHORT.get(d, d)]
        for m in methods:
            row.append(_cell(by.get((d, m), []), "test_rmse"))
        row += [_ref(REFERENCES[k][d][0]) if d in REFERENCES[k] else "" for k in ("PBP", "MC-dropout", "Deep ensembles (5)")]
        lines.append("| " + " | ".join(row) + " |")

    notes: list[str] = []
    lines += ["", "## Per data set", ""]
    for d in datasets:
        any_rec = next(r for k, rs in by.items() if k[0] == d for r in rs)
        lines += [f"### {SHORT.get(d, d)} (`{d}`: {any_rec['n_train']} train / {any_rec['n_test']} test rows)", ""]
        cols = ["method", "n", "test LL", "RMSE", f"{round(100 * LEVEL)} % coverage", f"{round(100 * LEVEL)} % width",
                "train RMSE", "σ", "s/split", "warned / failed"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for m in methods:
            rs = by.get((d, m), [])
            if not rs:
                continue
            good = ok(rs)
            warned = sum(1 for r in rs if r["warnings"])
            failed = len(rs) - len(good)
            lines.append("| " + " | ".join([
                METHODS[m][2],
                str(len(good)),
                fmt([r["test_ll"] for r in good]),
                fmt([r["test_rmse"] for r in good]),
                fmt([r["test_coverage"] for r in good], 2),
                fmt([r["test_width"] for r in good]),
                fmt([r["train_rmse"] for r in good]),
                fmt([r.get("details", {}).get("noise_scale", math.nan) for r in good]),
                fmt([r["seconds"] for r in rs], 1),
                f"{warned} / {failed}",
            ]) + " |")
            for r in sorted(rs, key=lambda r: r["split"]):
                for w in r["warnings"]:
                    notes.append(f"{SHORT.get(d, d)}, {METHODS[m][2]}, split {r['split']}: {w}")
                if r.get("error"):
                    notes.append(f"{SHORT.get(d, d)}, {METHODS[m][2]}, split {r['split']}: FAILED {r['error']}")
        for k, refs in REFERENCES.items():
            if d in refs:
                rmse, ll = refs[d]
                lines.append(f"| {k} (published) | {5 if d == 'protein-tertiary-structure' else 20} | {_ref(ll)} | {_ref(rmse)} |  |  |  |  |  |  |")
        extra = _extras(d, by)
        if extra:
            lines += [""] + extra
        lines.append("")

    lines += ["## Warnings and failures", ""]
    lines += [f"- {n}" for n in _dedupe(notes)] if notes else ["None."]
    lines.append("")
    return "\n".join(lines)


def _cell(rs: list[dict], key: str) -> str:
    """``mean ± se (n=K)`` over the splits that ran, with the number that failed."""
    if not rs:
        return ""
    good = [r for r in rs if r.get("error") is None]
    failed = len(rs) - len(good)
    text = f"{fmt([r[key] for r in good])} (n={len(good)}" if good else "— (n=0"
    return text + (f"; {failed} failed)" if failed else ")")


def _factor(value) -> str:
    """A tuned prior scale factor, or a layerwise one's factors (sorted paths) in brackets."""
    return f"{value:.3g}" if not isinstance(value, dict) else "(" + " ".join(f"{v:.2g}" for _, v in sorted(value.items())) + ")"


def _dedupe(notes: list[str]) -> list[str]:
    """Collapse identical messages over splits: 'split 0, 1, 2: message'."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for n in notes:
        m = re.match(r"(.*?), split (\d+): (.*)", n, re.S)
        if not m:
            grouped.setdefault((n, ""), [])
            continue
        text = re.sub(r"\d+\.\d+%|\b\d+ of \d+\b", "…", m.group(3))  # group messages that differ only in numbers
        grouped.setdefault((m.group(1), text), []).append(m.group(2) + ": " + m.group(3))
    out = []
    for (where, _text), items in grouped.items():
        if not items:
            out.append(where)
        elif len(items) == 1:
            out.append(f"{where}, split {items[0]}")
        else:
            splits = ", ".join(i.split(":", 1)[0] for i in items)
            out.append(f"{where}, splits {splits}: {items[0].split(': ', 1)[1]} (first of {len(items)})")
    return out


def _extras(dataset: str, by: dict) -> list[str]:
    """One line per method with the fit's own diagnostics (averaged over splits)."""
    out = []
    for m in _method_order({k[1] for k in by if k[0] == dataset}):
        rs = [r for r in by[(dataset, m)] if r.get("error") is None]
        det = [r.get("details", {}) for r in rs]
        if not det:
            continue
        parts = []
        if m in ("map", "ensemble", "svi-normal", "svi-lowrank"):
            settled = [x.get("settled") for x in det if x.get("settled") is not None]
            if settled:
                parts.append(f"loss settled in {sum(settled)}/{len(settled)} splits")
        if m == "map-es":
            steps = rs[0]["options"].get("num_steps", 2000)
            parts.append("best step " + ", ".join(str(int(x["best_step"])) for x in det if "best_step" in x)
                         + f" of at most {steps} (validation loss every {max(1, steps // 50)} steps, patience 10)")
        if m in ("laplace", "ensemble-tuned", "ensemble-anchored", "mclmc-tuned", "nuts-tuned", "laplace-layerwise",
                 "mclmc-layerwise"):
            parts.append("prior scale factor " + ", ".join(_factor(x["prior_scale_factor"]) for x in det
                                                           if "prior_scale_factor" in x))
            parts.append("tuning rounds " + ", ".join(str(int(x["tune_iterations"])) for x in det if "tune_iterations" in x)
                         + (" (at most 20: made before the cap of 10)" if m == 'laplace' else " (at most 10)"))
            noise = [x["tuned_noise_scale"] for x in det if "tuned_noise_scale" in x]
            if noise:
                parts.append("noise scale " + ", ".join(f"{v:.3g}" for v in noise) + " (original units)")
        if m in ("nuts", "nuts-module", "nuts-tuned", "nuts-hier", "sgmcmc"):
            parts.append("divergences " + ", ".join(str(int(x.get("num_divergences", 0))) for x in det))
            if m != "sgmcmc":
                parts.append("mean leapfrog steps " + ", ".join(f"{x['mean_leapfrog_steps']:.0f}" for x in det))
            rh = [x.get("function_rhat_max") for x in det if x.get("function_rhat_max") is not None]
            if rh:
                parts.append("worst function-space R-hat on the test inputs " + ", ".join(f"{v:.3f}" for v in rh))
        if m in ("mclmc", "mclmc-tuned", "mclmc-hier", "mclmc-hier-noise"):
            parts.append("energy-error variance per dimension (target 5e-4), worst chain " + ", ".join(
                f"{max(x['energy_var']):.1e}" for x in det if "energy_var" in x))
            rh = [x.get("function_rhat_max") for x in det if x.get("function_rhat_max") is not None]
            if rh:
                parts.append("worst function-space R-hat on the test inputs " + ", ".join(f"{v:.3f}" for v in rh))
        if parts:
            out.append(f"- {METHODS[m][2]}: " + "; ".join(parts) + ".")
    return out


def write_report(records: list[dict], path: Path | None, fast: bool = False) -> str:
    """The report over ``records``, written to ``path`` unless it is None."""
    text = report(records, fast)
    if path is not None:
        harness.write_report(path, text)
    return text


# ---------------------------------------------------------------------------------------------
# command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["all"], help=f"data sets or 'all' ({', '.join(DATASETS)})")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"methods or 'all' ({', '.join(METHODS)}); default: all but nuts")
    parser.add_argument("--splits", default="all", help="'all', 'K', 'A-B' or a comma list (default all 20)")
    parser.add_argument("--out", type=Path, default=None, help=f"Markdown report (default {REPORT.relative_to(HERE.parent)})")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"JSON-lines results file (default {RESULTS.relative_to(HERE.parent)}; "
                             f"--fast: {FAST_RESULTS.relative_to(HERE.parent)})")
    parser.add_argument("--fast", action="store_true", help="smoke mode: tiny step counts")
    parser.add_argument("--rerun", action="store_true", help="refit splits that are already stored")
    parser.add_argument("--retry-failed", action="store_true", help="refit splits whose stored result is an error")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the stored results")
    parser.add_argument("--data-dir", default=None, help="folder of the UCI data sets (default: $BNN_UCI_DIR, shared/data/uci)")
    args = parser.parse_args(argv)
    # full-batch chains on the large tables: without it glibc's heap grows with every step (protein: killed at 20 GB)
    bnn.limit_heap_growth()

    results = args.results or (FAST_RESULTS if args.fast else RESULTS)
    out = args.out if args.out is not None else (None if args.fast else REPORT)
    datasets = list(DATASETS) if args.datasets == ["all"] else args.datasets
    methods = list(METHODS) if args.methods == ["all"] else args.methods
    for m in methods:
        method_options(m)  # unknown names fail before any work
    splits = parse_splits(args.splits)
    available = [] if args.report_only else bnn.datasets.uci_names(args.data_dir)
    missing = [d for d in datasets if d not in available]
    if missing and not args.report_only:
        parser.error(f"data set(s) {missing} not found in {bnn.datasets.uci_dir(args.data_dir)}; available: {available}")

    if not args.report_only:
        info = harness.machine()
        done = {(r["dataset"], r["method"], r["split"]) for r in _current(load_records(results), args.fast)[0]
                if not (args.retry_failed and r["error"])}
        for split in splits:
            for d in datasets:
                for m in methods:
                    if (d, m, split) in done and not args.rerun:
                        continue
                    rec = run_split(d, m, split, fast=args.fast, data_dir=args.data_dir)
                    rec["machine"] = info
                    append_record(results, rec)
                    status = (f"FAILED {rec['error']}" if rec["error"] else
                              f"LL {rec['test_ll']:8.3f}  RMSE {rec['test_rmse']:.4g}  cov90 {rec['test_coverage']:.2f}")
                    warn = f"  [{len(rec['warnings'])} warning(s)]" if rec["warnings"] else ""
                    print(f"{d:24s} {m:12s} split {split:2d}  {status}  {rec['seconds']:7.1f} s{warn}", flush=True)
                    write_report(load_records(results), out, args.fast)
    text = write_report(load_records(results), out, args.fast)
    if out is None:
        print(text)
    else:
        print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
