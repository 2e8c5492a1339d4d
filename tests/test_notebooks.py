"""Execute every notebook in ``notebooks/`` top to bottom, in fast mode (``BNN_FAST=1``).

Each notebook holds ``assert`` cells on real numbers (MAP = L2 to float precision, Neal's
width scaling, test accuracy), so running it is a test of the package, not only of the
notebook.

The kernel is always the Python running pytest (``sys.executable``), whatever kernelspecs
are installed for the user or the system: the kernel manager below looks only at
ipykernel's built-in ``python3`` spec, which ipykernel builds from ``sys.executable``.
So after ``pip install -e .[test]`` in a fresh venv, ``python -m pytest`` runs the
notebooks with that venv's interpreter, without ``ipykernel install``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_sine_regression.ipynb", "02_prior_width.ipynb", "03_hill_classification.ipynb")
CELL_TIMEOUT_S = 300


class VenvKernelManager(AsyncKernelManager):
    """A kernel manager whose only ``python3`` kernel is ``sys.executable -m ipykernel_launcher``."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        # No kernel directories: jupyter_client falls back to ipykernel's native spec,
        # whose argv starts with sys.executable (user/system kernelspecs are ignored).
        return KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)


def test_kernel_is_this_interpreter():
    km = VenvKernelManager(kernel_name="python3")
    assert km.kernel_spec.argv[0] == sys.executable
    assert km.kernel_spec.argv[1:3] == ["-m", "ipykernel_launcher"]


def test_expected_notebooks_exist():
    assert [p.name for p in NOTEBOOKS if p.name in EXPECTED] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: clear the outputs of code cells {dirty} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    # Connection files and IPython's profile go to a temporary folder, not the user's home.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    env = dict(os.environ, BNN_FAST="1", IPYTHONDIR=str(tmp_path / "ipython"))

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        kernel_manager_class=VenvKernelManager,
        resources={"metadata": {"path": str(path.parent)}},  # the notebook's folder is the cwd
    )
    start = time.perf_counter()
    client.execute(env=env)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")  # shown with -s; see also --durations

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), f"{path.name}: not every code cell ran"
    first_output = "".join(o.get("text", "") for o in code_cells[0].outputs if o.output_type == "stream")
    assert "FAST=True" in first_output, f"{path.name}: the first code cell must read BNN_FAST and print FAST=..."
