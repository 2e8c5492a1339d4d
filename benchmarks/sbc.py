"""Simulation-based calibration (Talts et al. 2018) of NUTS, mean-field SVI, full-rank SVI, Laplace and MCLMC.

    python benchmarks/sbc.py                              # every method, about 3 minutes on 2 CPU cores
    python benchmarks/sbc.py --methods nuts nuts-control laplace   # or in parts: NUTS about 40 s each
    python benchmarks/sbc.py --methods svi-normal         # R calls of model.fit(method="svi"): about 10 s
    python benchmarks/sbc.py --methods mclmc              # R calls of model.fit(method="mclmc"): about 30 s
    python benchmarks/sbc.py --report-only                # redraw the report from the stored ranks

Model: a tanh network with one hidden layer of 3 units and one input (10 weights), Normal(0, 1)
priors, N = 15 inputs evenly spread on [-1, 1], known Gaussian noise σ = 0.3 (the prior's
functions vary by about ±1.5 there, so the data are informative but the posterior is not
razor-sharp). R data sets are drawn from the prior predictive, shared by all methods; every
method gives L posterior draws per data set; the truth's rank among them is computed for the
network at 5 test inputs (x = ±1.5 lie beyond the data) and for the 10 weights in canonical
form (hidden units sign-normalised and sorted by bias; see ``bnn.sbc``).

Uniformity: a χ² test over B bins and an ECDF (simultaneous band) test per quantity,
Bonferroni-corrected over all 2K tests at a family-wise false-alarm probability of 1e-3.

NUTS runs as one vectorised program over replications (``bnn.sbc.nuts``: the kernel of
``fit(method="nuts")`` at its defaults, target acceptance 0.98, tree depth 10, diagonal mass
matrix, 250 warm-up iterations, each chain from a MAP fit to its data set, run by the same chain
driver with the replications as a batch of data sets); SVI, Laplace and MCLMC call the public ``model.fit`` once per replication with
their defaults. Extra rows: NUTS on raw weights (no canonical form), a negative control (data
simulated with noise 2σ, posterior computed with σ) and Laplace with the network itself as its
predictive instead of the default linearised one.

Each run merges its ranks into ``benchmarks/sbc_ranks.npz`` and rewrites ``benchmarks/SBC.md``
and ``benchmarks/sbc.png`` from every method stored there (same settings required).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (machine description, report writing)

import bnn  # noqa: E402
from bnn import sbc  # noqa: E402

HERE = Path(__file__).resolve().parent
SIGMA = 0.3
X = np.linspace(-1.0, 1.0, 15, dtype=np.float32)[:, None]
X_TEST = np.array([[-1.5], [-0.5], [0.25], [1.0], [1.5]], np.float32)
ALPHA = 1e-3
METHODS = {
    "nuts": "NUTS",
    "nuts-raw": "NUTS, raw weights",
    "nuts-control": "NUTS, data noise 2σ (negative control)",
    "svi-normal": "SVI mean-field (guide='normal')",
    "svi-fullrank": "SVI full-rank (guide='fullrank')",
    "laplace": "Laplace (GGN, linearised predictive)",
    "laplace-nn": "Laplace (GGN, network predictive)",
    "mclmc": "MCLMC (3 chains × 33 draws)",
    "sgmcmc": "SG-MCMC (3 chains × 33 cycles)",
}
#: What each stored method needs to run (nuts-raw comes with nuts, laplace-nn with laplace).
RUNS = ("nuts", "nuts-control", "svi-normal", "svi-fullrank", "laplace", "mclmc", "sgmcmc")
FIGURE_METHODS = ("nuts", "nuts-control", "svi-normal", "svi-fullrank", "laplace", "mclmc", "sgmcmc")
FIGURE_QUANTITIES = ("f(-1.50)", "f(+0.25)", "Dense_1.bias[0]", "Dense_1.kernel[2,0]")


def make_model(sigma=SIGMA):
    return bnn.BNN(bnn.MLP((3, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=sigma))


def nuts_ranks(model, sims, num_draws, seed):
    """Ranks of canonical and raw weights and of f(X_TEST) under vectorised NUTS."""
    post = sbc.nuts(model, sims.x, sims.y, num_draws=num_draws, thinning=5, seed=seed, init="map")
    out = {}
    for canonical in (True, False):
        truth = sbc.quantities(model, sims.params, X_TEST, canonical=canonical)
        draws = sbc.quantities(model, post.draws, X_TEST, batch_ndim=2, canonical=canonical)
        out[canonical] = sbc.ranks(truth, draws)
    note = (f"{int(post.num_divergences.sum())} divergences in {len(sims.y) * num_draws * 5} transitions; "
            f"{post.mean_tree_steps.mean():.0f} leapfrog steps per transition")
    return out, post.wall_time, note


def fit_loop_ranks(model, sims, num_draws, seed, method, **options):
    """Ranks from ``bnn.sbc.run(method=...)``: ``model.fit`` once per replication, function values as the fit
    predicts them; and, from the same draws, the network evaluated at each weight draw."""
    result = sbc.run(model, sims.x, X_TEST, num_replications=len(sims.y), num_draws=num_draws, seed=seed,
                     method=method, simulations=sims, **options)
    truth = sbc.quantities(model, sims.params, X_TEST)
    network = sbc.ranks(truth, sbc.quantities(model, result.posterior.draws, X_TEST, batch_ndim=2))
    return (result.names, result.ranks), network, result.posterior.wall_time


def run_methods(methods, num_replications, num_draws, seed):
    model = make_model()
    sims = sbc.simulate(model, X, num_replications, seed)
    results = {}
    start = time.perf_counter()
    for method in methods:
        print(f"running {method} ...", flush=True)
        if method == "nuts":
            out, seconds, note = nuts_ranks(model, sims, num_draws, seed + 1)
            results["nuts"] = (*out[True], seconds, note)
            results["nuts-raw"] = (*out[False], seconds, "the same draws; weights as sampled")
        elif method == "nuts-control":
            wrong = sbc.simulate(make_model(2 * SIGMA), X, num_replications, seed + 2)
            out, seconds, note = nuts_ranks(model, wrong, num_draws, seed + 3)
            results["nuts-control"] = (*out[True], seconds, "other data sets, noise 2σ; " + note)
        elif method.startswith("svi"):
            own, _, seconds = fit_loop_ranks(model, sims, num_draws, seed + 4, "svi", guide=method.split("-")[1])
            results[method] = (*own, seconds, "model.fit per replication, default 5000 steps")
        elif method == "laplace":
            own, network, seconds = fit_loop_ranks(model, sims, num_draws, seed + 5, "laplace")
            results["laplace"] = (*own, seconds, "model.fit per replication (MAP + GGN)")
            results["laplace-nn"] = (*network, seconds, "the same draws; f = network at each weight draw")
        elif method == "mclmc":
            own, _, seconds = fit_loop_ranks(model, sims, num_draws, seed + 6, "mclmc", num_chains=3)
            results["mclmc"] = (*own, seconds, "model.fit per replication: 3 chains from MAP fits, default warm-up "
                                "and thinning, 33 draws each")
        elif method == "sgmcmc":
            own, _, seconds = fit_loop_ranks(model, sims, num_draws, seed + 7, "sgmcmc", num_chains=3)
            results["sgmcmc"] = (*own, seconds, "model.fit per replication: 3 chains from MAP fits, 33 cycles of the "
                                 "default 2000 full-batch SGHMC steps, the last step of each cycle kept")
        print(f"  done, {time.perf_counter() - start:.0f} s since start", flush=True)
    return results


def save(path, results, settings):
    stored = dict(np.load(path, allow_pickle=False)) if path.exists() else {}
    if stored and any(int(stored[f"settings.{k}"]) != v for k, v in settings.items()):
        stored = {}  # other settings: start over
    for method, (names, ranks, seconds, note) in results.items():
        stored[f"{method}.names"] = np.array(names)
        stored[f"{method}.ranks"] = ranks.astype(np.int16)
        stored[f"{method}.seconds"] = np.float64(seconds)
        stored[f"{method}.note"] = np.array(note)
        stored[f"{method}.date"] = np.array(datetime.datetime.now().isoformat(timespec="seconds"))
    for k, v in settings.items():
        stored[f"settings.{k}"] = np.int64(v)
    np.savez(path, **stored)
    return stored


def load_methods(stored):
    out = {}
    for method in METHODS:
        if f"{method}.ranks" in stored:
            out[method] = dict(names=tuple(str(n) for n in stored[f"{method}.names"]), ranks=stored[f"{method}.ranks"],
                               seconds=float(stored[f"{method}.seconds"]), note=str(stored[f"{method}.note"]),
                               date=str(stored[f"{method}.date"]))
    return out


def write_report(methods, settings, ecdf_sims):
    R, L, B = settings["replications"], settings["draws"], settings["bins"]
    tests = {}
    for method, m in methods.items():
        tests[method] = sbc.uniformity(m["ranks"], L, B, names=m["names"], alpha=ALPHA, ecdf_sims=ecdf_sims, seed=1)
    info = harness.machine()
    lines = [
        "# Simulation-based calibration",
        "",
        "Written by `python benchmarks/sbc.py` (see its docstring for the set-up). "
        f"Report date (`date`): {info['date']}; methods run between {min(m['date'] for m in methods.values())} and "
        f"{max(m['date'] for m in methods.values())}. Machine: {harness.machine_line(info)} (shared with other work, "
        "so times are indicative).",
        "",
        f"Network: `MLP((3, 1), 'tanh')`, one input, Normal(0, 1) priors, σ = {SIGMA} known, N = 15 inputs on "
        f"[-1, 1]. R = {R} data sets from the prior predictive (the same for every method), L = {L} posterior "
        f"draws each (ranks 0..{L}), K = 15 quantities: f at x* = -1.5, -0.5, 0.25, 1.0, 1.5 and the 10 "
        "weights in canonical form. Per quantity a χ² test over "
        f"B = {B} bins ({R // B} expected per bin, {B - 1} degrees of freedom) and an ECDF simultaneous-band test "
        f"({ecdf_sims} null simulations); **min p** is the smallest Bonferroni-corrected p-value over the 2K = 30 "
        f"tests, and a method **passes** when it exceeds {ALPHA} (family-wise false-alarm probability ≤ {ALPHA}). "
        "Time: wall-clock seconds for all R fits on this machine (NUTS: one vectorised program, compilation "
        "included; SVI/Laplace: R calls of `model.fit`).",
        "",
        "| method | R | L | K | min p (Bonferroni) | worst quantity | max χ² | quantities flagged | result | time (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in methods.items():
        t = tests[method]
        flagged = int(np.sum(t.p_bonferroni <= ALPHA))
        lines.append(
            f"| {METHODS[method]} | {m['ranks'].shape[0]} | {L} | {len(t.names)} | {t.min_p_bonferroni:.2g} | "
            f"`{t.worst}` | {t.chi2.max():.1f} | {flagged} | {'pass' if t.passed else '**fail**'} | "
            f"{m['seconds']:.0f} | {m['note']} |"
        )
    names = next(iter(methods.values()))["names"]
    lines += [
        "",
        "Bonferroni-corrected p-value per quantity (min over the χ² and ECDF tests, times 30; ≤ 1e-3 flags "
        "the quantity). Rank shape: ∩ = truth too often central (posterior too wide), ∪ = truth too often in "
        "the tails (posterior too narrow), / or \\\\ = shifted.",
        "",
        "| quantity | " + " | ".join(METHODS[m] for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for k, name in enumerate(names):
        cells = []
        for method in methods:
            t = tests[method]
            cells.append(f"{t.p_bonferroni[k]:.2g} {_shape(t.counts[k])}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![ECDF differences of the ranks](sbc.png)",
        "",
        "The ranks behind these tables are stored in `benchmarks/sbc_ranks.npz`; "
        "`python benchmarks/sbc.py --report-only` redraws this page and the figure from them.",
        "",
    ]
    harness.write_report(HERE / "SBC.md", "\n".join(lines))
    return tests


def _shape(counts):
    """A one-character summary of a rank histogram: ∩, ∪, /, \\ or · (flat)."""
    counts = np.asarray(counts, float)
    b = len(counts)
    expected = counts.sum() / b
    edge = (counts[0] + counts[-1]) / 2 - expected
    centre = counts[b // 4: b - b // 4].mean() - expected
    slope = np.polyfit(np.arange(b), counts, 1)[0] * b
    scale = 3 * np.sqrt(expected)
    if max(abs(edge), abs(centre), abs(slope) / 2) < scale:
        return "·"
    if abs(slope) / 2 > max(abs(edge), abs(centre)):
        return "/" if slope > 0 else "\\\\"
    return "∪" if edge > centre else "∩"


def write_figure(methods, tests, settings, ecdf_sims):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R, L = settings["replications"], settings["draws"]
    shown = [m for m in FIGURE_METHODS if m in methods]
    z, lo95, hi95 = sbc.ecdf_band(R, L, alpha=0.05, num_sims=ecdf_sims, seed=2)
    _, lo_b, hi_b = sbc.ecdf_band(R, L, alpha=ALPHA / 30, num_sims=ecdf_sims, seed=3)
    fig, axes = plt.subplots(len(shown), len(FIGURE_QUANTITIES), figsize=(3.4 * len(FIGURE_QUANTITIES), 2.3 * len(shown)),
                             sharex=True, sharey="row", squeeze=False)
    for i, method in enumerate(shown):
        names, ranks, t = methods[method]["names"], methods[method]["ranks"], tests[method]
        for j, quantity in enumerate(FIGURE_QUANTITIES):
            ax = axes[i, j]
            k = names.index(quantity)
            ecdf = np.array([(ranks[:, k] <= r).mean() for r in range(L)])
            ax.fill_between(z, lo_b - z, hi_b - z, step="mid", color="0.88", label=f"band, 1 − {ALPHA:g}/30")
            ax.fill_between(z, lo95 - z, hi95 - z, step="mid", color="0.72", label="band, 95%")
            ax.step(z, ecdf - z, where="mid", color="C3" if t.p_bonferroni[k] <= ALPHA else "C0", lw=1.3)
            ax.axhline(0, color="k", lw=0.5)
            ax.text(0.03, 0.95, f"p_bonf = {t.p_bonferroni[k]:.2g}", transform=ax.transAxes, va="top", fontsize=8)
            if i == 0:
                ax.set_title(quantity, fontsize=10)
            if j == 0:
                ax.set_ylabel(METHODS[method].split(" (")[0].replace(", data", ",\ndata"), fontsize=9)
            if i == len(shown) - 1:
                ax.set_xlabel("rank / (L + 1)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"SBC: ECDF of ranks minus uniform (R = {R}, L = {L}); red = flagged at family-wise {ALPHA:g}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(HERE / "sbc.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--draws", type=int, default=99)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--ecdf-sims", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks-file", type=Path, default=HERE / "sbc_ranks.npz")
    parser.add_argument("--report-only", action="store_true", help="rewrite SBC.md and sbc.png from the ranks file")
    args = parser.parse_args()
    if args.report_only:
        stored = dict(np.load(args.ranks_file, allow_pickle=False))
        settings = {k.split(".", 1)[1]: int(v) for k, v in stored.items() if k.startswith("settings.")}
    else:
        settings = {"replications": args.replications, "draws": args.draws, "bins": args.bins, "seed": args.seed}
        results = run_methods(args.methods, args.replications, args.draws, args.seed)
        stored = save(args.ranks_file, results, settings)
    methods = load_methods(stored)
    tests = write_report(methods, settings, args.ecdf_sims)
    write_figure(methods, tests, settings, args.ecdf_sims)
    for method, t in tests.items():
        print(f"{METHODS[method]:45s} min p_bonf {t.min_p_bonferroni:9.2g}  {'pass' if t.passed else 'FAIL'}  "
              f"({methods[method]['seconds']:.0f} s)")
    print(f"wrote {HERE / 'SBC.md'} and {HERE / 'sbc.png'}")


if __name__ == "__main__":
    main()
