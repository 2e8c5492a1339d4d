"""SG-MCMC's bias on a conjugate model: posterior mean and sd against the closed form, by batch size and step size.

    python benchmarks/sgmcmc_bias.py            # writes benchmarks/SGMCMC.md (a few minutes)

Linear regression with a bias, 3 inputs, known noise 0.3 and Normal(0, 0.5) priors on 5 000 rows
(``bnn.MLP((1,))``, the conjugate oracle of the tests): ``fit(method="sgmcmc")`` with 4 chains,
8 cycles of 2000 steps and 40 draws per cycle, at several batch sizes (``None``: full batch) and
peak step sizes, SGHMC and SGLD. For every coordinate: the error of the posterior mean in posterior
sds and the ratio of the sampled sd to the exact one; the worst coordinate is reported, and the
Monte Carlo standard error of the sd ratio from the chains' ESS (``1 / sqrt(2 ESS)``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from numpyro.diagnostics import effective_sample_size

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

import bnn  # noqa: E402

NOISE, PRIOR, ROWS = 0.3, 0.5, 5000
SETTINGS = [("sghmc", b, s) for b in (50, 250, None) for s in (0.05, 0.2, 0.5)] + [
    ("sgld", b, s) for b in (250, None) for s in (0.05,)]


def data(rows: int = ROWS, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.7 + NOISE * rng.normal(size=(rows, 1))).astype(np.float32)
    return x, y


def exact(x, y):
    design = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)
    precision = design.T @ design / NOISE**2 + np.eye(design.shape[1]) / PRIOR**2
    cov = np.linalg.inv(precision)
    return cov @ design.T @ np.asarray(y, np.float64)[:, 0] / NOISE**2, np.sqrt(np.diag(cov))


def run(sampler: str, batch_size, step_size: float, x, y, mean, sd) -> dict:
    model = bnn.BNN(bnn.MLP((1,)), prior=bnn.Normal(PRIOR), likelihood=bnn.Gaussian(scale=NOISE))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = model.fit(x, y, method="sgmcmc", sampler=sampler, batch_size=batch_size, step_size=step_size,
                        num_chains=4, num_cycles=8, draws_per_cycle=40)
    seconds = time.perf_counter() - start
    draws = np.concatenate([np.asarray(fit.draws["Dense_0.kernel"])[:, :, 0], np.asarray(fit.draws["Dense_0.bias"])], axis=1)
    ess = np.asarray(effective_sample_size(draws.reshape(4, -1, draws.shape[1]).astype(np.float64)))
    ratio = draws.std(0) / sd
    worst = int(np.argmax(np.abs(ratio - 1)))
    return {"sampler": sampler, "batch_size": batch_size, "step_size": step_size,
            "mean_error": float(np.max(np.abs(draws.mean(0) - mean) / sd)), "sd_ratio": float(ratio[worst]),
            "sd_mcse": float(1 / np.sqrt(2 * ess[worst])), "min_ess": float(ess.min()),
            "divergences": int(fit.info["num_divergences"]), "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "SGMCMC.md"))
    args = parser.parse_args(argv)
    x, y = data()
    mean, sd = exact(x, y)
    rows = []
    for sampler, batch, step in SETTINGS:
        r = run(sampler, batch, step, x, y, mean, sd)
        print(r, flush=True)
        rows.append(r)
    lines = [
        "# SG-MCMC on a conjugate model: bias by batch size and step size", "",
        f"`python benchmarks/sgmcmc_bias.py` on {harness.machine_line(harness.machine())}.", "",
        __doc__.split("\n\n")[2].replace("\n", " "), "",
        "| sampler | batch size | peak step size | worst mean error (posterior sds) | worst sd ratio (± MCSE) | min ESS | divergences | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['batch_size'] or 'all ' + str(ROWS)} | {r['step_size']} | {r['mean_error']:.2f} | "
                     f"{r['sd_ratio']:.3f} ± {r['sd_mcse']:.3f} | {r['min_ess']:.0f} | {r['divergences']} | {r['seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        harness.write_report(Path(args.out), text, keep_from="## Notes")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
