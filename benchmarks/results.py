"""Collect the benchmark reports into one file, ``benchmarks/RESULTS.md``.

    python benchmarks/results.py

Each report is written by its own script (one run on one machine, stated in its text); this
script only gathers them, in the order below, with their headings moved one level down. Run it
after any of the scripts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402  (report writing)

#: (report, script, what it measures)
SECTIONS = [
    ("SAMPLING.md", "sampling.py", "ESS of f(x) per second: bnn NUTS and MCLMC against hand-written NumPyro and BlackJAX NUTS"),
    ("SVI_STEP.md", "svi_step.py", "minibatch SVI and MAP step cost against hand-written JAX + optax, on CPU"),
    ("GPU.md", "device.sh", "the same on a GPU, sampler step cost GPU against host CPU, first-call cost on a GPU"),
    ("COMPILE.md", "compile_times.py", "first-call (compilation) cost per method, with and without JAX's persistent cache"),
    ("SBC.md", "sbc.py", "simulation-based calibration of every inference method"),
    ("UCI.md", "uci.py", "UCI regression: test log-likelihood, RMSE, coverage and time per method, beside published results"),
    ("TINY.md", "tiny.py", "tables of 20 to 442 rows: cross-validated test log-likelihood and coverage against least squares"),
    ("CLASSIFICATION.md", "classification.py", "small-table classification: bnn's default paths against logistic regression"),
    ("SGMCMC.md", "sgmcmc_bias.py", "SG-MCMC's bias on the conjugate model by batch size and step size"),
    ("LAPLACE.md", "laplace_lowrank.py", "low-rank Laplace on a 68 353-weight network, and against the dense GGN by rank"),
    ("DEVICES.md", "devices.py", "the protein table with its rows split over 1, 2 and 4 host devices"),
]


def demote(text: str) -> str:
    """Move every Markdown heading one level down (``#`` → ``##``), outside code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(out)


def build(here: Path = HERE) -> str:
    """The text of ``RESULTS.md`` from the reports in ``here`` (a missing report is named as such)."""
    lines = [
        "# Benchmark results",
        "",
        "Collected by `python benchmarks/results.py` from the reports beside it. Each table is one run of",
        "its script on one machine, as its section states; ratios are against a baseline run in the same",
        "process.",
        "",
    ]
    lines += [f"- [{name}]({name}) (`{script}`): {what}" for name, script, what in SECTIONS]
    for name, script, _ in SECTIONS:
        path = here / name
        body = demote(path.read_text().strip()) if path.exists() else f"## {name}\n\n(not written yet: run `{script}`)"
        lines += ["", body]
    return "\n".join(lines) + "\n"


def main() -> int:
    harness.write_report(HERE / "RESULTS.md", build())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
