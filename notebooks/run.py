"""Execute the notebooks top to bottom and (by default) store them with their outputs.

    python notebooks/run.py                  # every notebook, full settings, outputs written in place
    python notebooks/run.py 04 05            # notebooks whose names start with these prefixes
    python notebooks/run.py --fast --check   # the tests' fast settings (BNN_FAST=1), nothing written

The kernel is the Python running this script (``sys.executable -m ipykernel_launcher``),
whatever kernelspecs the user has installed, so a fresh virtual environment works without
``ipykernel install``. Each notebook runs in its own folder (its relative paths work). The run
time of each notebook is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 1800


class VenvKernelManager(AsyncKernelManager):
    """A kernel manager whose only ``python3`` kernel is ``sys.executable -m ipykernel_launcher``."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        # No kernel directories: jupyter_client falls back to ipykernel's native spec,
        # whose argv starts with sys.executable (user/system kernelspecs are ignored).
        return KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)


def execute(path: Path, fast: bool, scratch: Path, timeout: int = CELL_TIMEOUT_S) -> tuple[nbformat.NotebookNode, float]:
    """Run the notebook at ``path`` in a fresh kernel; returns it with its outputs and the seconds taken.

    ``fast`` sets ``BNN_FAST=1`` for the kernel. Jupyter's connection files and IPython's
    profile go to ``scratch`` (a temporary folder), not the user's home.
    """
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, BNN_FAST="1" if fast else "0", IPYTHONDIR=str(scratch / "ipython"),
               JUPYTER_RUNTIME_DIR=str(scratch / "runtime"))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        kernel_manager_class=VenvKernelManager,
        resources={"metadata": {"path": str(path.parent)}},  # the notebook's folder is the cwd
    )
    saved = os.environ.get("JUPYTER_RUNTIME_DIR")
    os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]   # read by the kernel manager itself
    try:
        start = time.perf_counter()
        client.execute(env=env)
        return nb, time.perf_counter() - start
    finally:
        if saved is None:
            del os.environ["JUPYTER_RUNTIME_DIR"]
        else:
            os.environ["JUPYTER_RUNTIME_DIR"] = saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose names start with these")
    parser.add_argument("--fast", action="store_true", help="small settings (BNN_FAST=1), as the tests use")
    parser.add_argument("--check", action="store_true", help="run only; do not write the outputs back")
    args = parser.parse_args(argv)
    chosen = [p for p in NOTEBOOKS if not args.prefixes or any(p.name.startswith(s) for s in args.prefixes)]
    if not chosen:
        print(f"no notebook matches {args.prefixes}", file=sys.stderr)
        return 1
    if args.fast and not args.check:
        print("--fast without --check would store fast outputs; the stored notebooks use full settings.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        for path in chosen:
            nb, seconds = execute(path, args.fast, Path(scratch))
            if not args.check:
                nbformat.write(nb, path)
            print(f"{path.name}: {seconds:.0f} s ({'fast' if args.fast else 'full'} settings)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
