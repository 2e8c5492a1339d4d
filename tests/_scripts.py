"""A repository script (``benchmarks/*.py``, ``notebooks/run.py``) loaded as a module for its tests.

Those folders are not packages, so their scripts are imported from their file paths.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str) -> ModuleType:
    """The module of the script at ``ROOT / relative_path``, registered under ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
