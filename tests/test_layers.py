"""The package's imports point down its layers, so the architecture reads off the imports.

Every ``import`` of a ``bnn`` module inside ``bnn/`` — at module level or inside a
function, but not under ``if TYPE_CHECKING:`` (annotations only) — must name a module of
the same or a lower layer, and the import graph must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bnn"

#: Bottom to top. A module may import modules of its own layer or any layer below.
LAYERS: list[set[str]] = [
    {"_checks", "_version", "_programs", "_keys", "_heap"},  # input validation; the version; the program cache; key salts;
                                                             # glibc's heap setting
    {"priors", "likelihoods", "nets", "datasets", "tables"},  # the model's parts; embedded data; CSV tables
    {"lifting", "nnx_bridge"},                     # Flax module -> NumPyro model; NNX modules as linen
    {"predictive", "metrics"},                     # predictive distributions from draws; scores
    {"diagnostics", "io"},                         # ArviZ export, convergence; the file format
    {"fit"},                                       # Fit: one result type for every method
    {"inference._loop", "inference.optimize", "inference.chains"},  # optimisation driver; MLE / MAP; chain driver
    {"inference.mcmc", "inference.mclmc", "inference.sgmcmc", "inference.svi", "inference.laplace", "inference.ensemble",
     "inference.evidence"},                        # the methods; evidence tuning of any method's prior
    {"inference"},                                 # the method table
    {"model"},                                     # BNN: fit, prior_predictive; load
    {"compare", "plot", "sbc"},                    # tools over fits
    {"cli", "", "sklearn"},                        # the command line; bnn/__init__.py (re-exports only); estimators
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"bnn.{name} is in no layer of tests/test_layers.py: add it where it belongs.")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _bnn_imports(tree: ast.AST) -> set[str]:
    """``bnn`` modules imported anywhere in ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name[4:] for a in node.names if a.name.startswith("bnn."))
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "bnn" or node.module.startswith("bnn.")):
            base = node.module[4:]
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if (PACKAGE / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (PACKAGE / Path(*sub.split("."))).is_dir() else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        _module_name(path): _bnn_imports(ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_import_points_down_or_sideways():
    upward = []
    for module, imports in _graph().items():
        for target in imports:
            if _layer(target) > _layer(module):
                upward.append(f"bnn.{module or '__init__'} imports bnn.{target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(f"bnn.{m}" for m in path + [nxt]))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            walk(module, [module])


def test_the_layer_table_is_complete():
    assert set(_graph()) <= set().union(*LAYERS), set(_graph()) - set().union(*LAYERS)
