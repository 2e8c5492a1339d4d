"""The `bnn demo` command writes a report with figures and a metrics table."""

import subprocess
import sys

import pandas as pd

from bnn import cli


def test_demo_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--fast", "--out", str(out)]) == 0
    for name in ("prior_functions.png", "predictive.png", "loss.png", "metrics.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "metrics.csv", index_col="fit")
    assert list(table.index) == ["MLE", "MAP", "Laplace", "Ensemble", "SVI", "NUTS"]
    assert table[["rmse", "nll", "crps", "coverage_90", "wall_time"]].notna().all().all()
    assert (table["rmse"] < 0.5).all()
    report = (out / "report.md").read_text()
    assert "| NUTS |" in report and "## NUTS diagnostics" in report and "## Which method to use when" in report
    assert "| fit | rmse | nll |" in capsys.readouterr().out


def test_console_entry_point():
    done = subprocess.run([sys.executable, "-m", "bnn.cli", "--version"], capture_output=True, text=True, check=True)
    import bnn

    assert done.stdout.strip() == bnn.__version__
