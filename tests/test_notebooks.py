"""The notebooks: stored with their outputs (full settings), and executed here in fast mode.

Each notebook holds ``assert`` cells on real numbers (MAP = L2 to float precision, Neal's
width scaling, epistemic growth outside the data, posterior vs known weights), so running it
is a test of the package, not only of the notebook. Outputs are not compared with the stored
ones (they come from the full settings), but a committed notebook without outputs fails.
``python notebooks/run.py`` regenerates them all.

The kernel is always the Python running pytest (``sys.executable``), whatever kernelspecs
are installed for the user or the system (see ``notebooks/run.py``). So after
``pip install -e .[test]`` in a fresh venv, ``python -m pytest`` runs the notebooks with that
venv's interpreter, without ``ipykernel install``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from _scripts import load_script

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = (
    "01_sine_regression.ipynb",
    "02_prior_width.ipynb",
    "03_hill_classification.ipynb",
    "04_map_vs_posterior.ipynb",
    "05_uci_regression.ipynb",
    "06_classification_and_minibatches.ipynb",
)
#: The budget per notebook in fast mode, with room for a slower CI machine.
FAST_BUDGET_S = 240


run = load_script("notebooks/run.py", "notebook_runner")


def test_kernel_is_this_interpreter():
    km = run.VenvKernelManager(kernel_name="python3")
    assert km.kernel_spec.argv[0] == sys.executable
    assert km.kernel_spec.argv[1:3] == ["-m", "ipykernel_launcher"]


def test_expected_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


def test_runner_refuses_to_store_fast_outputs(capsys):
    assert run.main(["--fast", "01"]) == 1
    assert "full settings" in capsys.readouterr().err


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: store it as run top to bottom in one kernel (python notebooks/run.py); execution counts {counts}"
    )
    errors = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs)]
    assert not errors, f"{path.name}: code cells {errors} stored with errors"
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 1, f"{path.name}: stored without figures"
    first = "".join(o.get("text", "") for o in code[0].outputs if o.output_type == "stream")
    assert "FAST=False" in first, f"{path.name}: stored outputs must come from the full settings"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb, seconds = run.execute(path, fast=True, scratch=tmp_path)
    print(f"{path.name}: {seconds:.1f} s")  # shown with -s; see also --durations

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), f"{path.name}: not every code cell ran"
    first_output = "".join(o.get("text", "") for o in code_cells[0].outputs if o.output_type == "stream")
    assert "FAST=True" in first_output, f"{path.name}: the first code cell must read BNN_FAST and print FAST=..."
    assert seconds < FAST_BUDGET_S, f"{path.name}: {seconds:.0f} s in fast mode"
