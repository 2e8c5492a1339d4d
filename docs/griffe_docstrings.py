"""A griffe extension for the API reference: the two docstring habits of ``bnn`` that Google style lacks.

- Sphinx roles (``:class:`BNN```, ``:func:`bnn.inference.optimize.fit_point```) become code that
  links to the object where the site documents it, and stays plain code where it does not (internal
  objects).
- One ``Args:`` (or ``Attributes:``) entry may name several parameters (``x, y: training data``); it is
  read as one entry per name, so each is checked against the signature like any other (a warning's
  line number then counts the repeated lines).
- ``>>>`` lines are shown as code, not as Markdown quotes (griffe itself reads only ``Examples:``).
"""

from __future__ import annotations

import html
import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?(?P<name>[^`]+)`")
_SECTION = re.compile(r"^(?P<indent>\s*)(?:Args|Arguments|Parameters|Other Parameters|Keyword Args|Attributes):\s*$")
_EXAMPLES = re.compile(r"^(?P<indent>\s*)Examples:\s*$")  # griffe reads doctests there itself
_GROUPED = re.compile(r"^(?P<names>[\w*]+(?:\s*,\s*[\w*]+)+)(?P<rest>\s*(?:\([^)]*\))?:.*)$")


class Docstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self._walk(pkg, loader)

    def _walk(self, obj: griffe.Object, loader: griffe.GriffeLoader) -> None:
        if obj.docstring is not None:
            text = _fence_doctests(_split_grouped_parameters(obj.docstring.value))
            obj.docstring.value = _ROLE.sub(lambda m: _reference(obj, m["name"], loader), text)
        for member in obj.members.values():
            if not member.is_alias and (member.is_module or member.is_class or member.is_function):
                self._walk(member, loader)


def _reference(obj: griffe.Object, name: str, loader: griffe.GriffeLoader) -> str:
    """A code span that links to ``name`` (resolved from ``obj``'s scope) if the site documents it."""
    path = _resolve(obj, name, loader)
    code = f"<code>{html.escape(name)}</code>"
    if path is None:
        return code
    return f'<autoref optional identifier="{html.escape(path)}">{code}</autoref>'


def _resolve(obj: griffe.Object, name: str, loader: griffe.GriffeLoader) -> str | None:
    head, _, tail = name.partition(".")
    scopes = [obj] if obj.is_module or obj.is_class else []
    scopes += [p for p in (obj.parent, obj.module) if p is not None]
    for scope in scopes:
        try:
            found = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError):
            continue
        path = f"{found}.{tail}" if tail else found
        if _exists(path, loader):
            return path
    return name if _exists(name, loader) else None


def _exists(path: str, loader: griffe.GriffeLoader) -> bool:
    try:
        loader.modules_collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _split_grouped_parameters(text: str) -> str:
    """``x, y: shared description`` in an ``Args:`` section -> one entry per name, same description."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        section = _SECTION.match(line)
        if not section:
            continue
        outer = len(section["indent"])
        item = None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= outer:
                break
            if item is None and line.strip():
                item = indent
            grouped = _GROUPED.match(line.strip()) if line.strip() and indent == item else None
            if not grouped:
                out.append(line)
                i += 1
                continue
            block = [grouped["rest"]]
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > item):
                if not lines[i].strip() and (i + 1 >= len(lines) or len(lines[i + 1]) - len(lines[i + 1].lstrip()) <= item):
                    break
                block.append(lines[i])
                i += 1
            for name in re.split(r"\s*,\s*", grouped["names"]):
                out.append(" " * item + name + block[0])
                out.extend(block[1:])
    return "\n".join(out)


def _fence_doctests(text: str) -> str:
    """Doctest blocks (``>>>`` lines and their output, up to a blank line) outside ``Examples:`` sections
    -> fenced Python code."""
    out: list[str] = []
    lines = text.split("\n")
    examples = None  # the indent of the Examples section we are in
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if examples is not None and line.strip() and indent <= examples:
            examples = None
        section = _EXAMPLES.match(line)
        if section:
            examples = len(section["indent"])
        if examples is not None or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        out.append(" " * indent + "```python")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(" " * indent + "```")
    return "\n".join(out)
