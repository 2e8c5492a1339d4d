"""The public/private line: what users, notebooks and benchmarks may rely on.

The public API is ``bnn.__all__`` plus the ``__all__`` of the public submodules
(:data:`PUBLIC_MODULES`). Every other module (``bnn.lifting``, ``bnn.inference``, ...) and
every name outside those lists is internal and may change in any release. The notebooks and
the benchmarks are written as a user would write them, so they keep to the public API; two
benchmarks measure internal programs on purpose and are listed with the reason.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

import bnn

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = ("datasets", "diagnostics", "metrics", "plot", "sbc", "sklearn")
#: scripts that time bnn's internal programs themselves, with why
MEASURE_INTERNALS = {
    "nuts_floor.py": "times the NUTS kernel's compiled program against hand-written loops",
    "svi_step.py": "checks the SVI objective term by term against a hand-written one",
}


def _public() -> dict[str, set[str]]:
    """``{"": names of bnn, module: names of bnn.module}``."""
    out = {"": set(bnn.__all__)}
    for name in PUBLIC_MODULES:
        out[name] = set(importlib.import_module(f"bnn.{name}").__all__)
    return out


def _uses(tree: ast.AST) -> set[str]:
    """Every ``bnn`` name the code reaches: ``bnn.X``, ``bnn.mod.Y``, ``from bnn[.mod] import Z``, ``import bnn.mod``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id == "bnn":
                found.add(".".join(reversed(chain)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bnn":
            base = node.module[4:]
            found.update(f"{base}.{a.name}" if base else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name[4:] for a in node.names if a.name.startswith("bnn."))
    return found


def _internal(uses: set[str], public: dict[str, set[str]]) -> list[str]:
    bad = []
    for use in sorted(uses):
        head, _, rest = use.partition(".")
        if head in PUBLIC_MODULES:
            if rest and rest.split(".")[0] not in public[head]:
                bad.append(f"bnn.{use}")
        elif head not in public[""] and not head.startswith("__"):
            bad.append(f"bnn.{use}")
    return bad


def test_every_public_name_resolves_and_is_documented():
    for module, names in _public().items():
        where = importlib.import_module(f"bnn.{module}" if module else "bnn")
        for name in names:
            value = getattr(where, name)
            if callable(value):
                assert (value.__doc__ or "").strip(), f"bnn.{module + '.' if module else ''}{name} has no docstring"


def test_internal_names_are_not_public():
    """A public module's helpers that its ``__all__`` leaves out are the ones a refactor may change."""
    assert "chi2_sf" in bnn.sbc.__all__ and "OBS_SITE" not in bnn.sbc.__all__
    assert "CRPS_CHUNK_ELEMENTS" not in bnn.metrics.__all__ and "CHAIN_METHODS" not in bnn.diagnostics.__all__
    assert _internal({"lifting.LiftedModel", "sbc.OBS_SITE", "BNN", "sbc.run.__doc__", "__version__"}, _public()) == [
        "bnn.lifting.LiftedModel", "bnn.sbc.OBS_SITE"]


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_use_the_public_api_only(path):
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    assert _internal(_uses(ast.parse(code)), _public()) == []


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_the_public_api_only(path):
    internal = _internal(_uses(ast.parse(path.read_text())), _public())
    if path.name in MEASURE_INTERNALS:
        assert internal, f"{path.name} no longer reaches internals: drop it from MEASURE_INTERNALS"
    else:
        assert internal == [], f"{path.name} uses internal names {internal}; use the public API (bnn.__all__)"
