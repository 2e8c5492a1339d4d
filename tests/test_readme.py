"""The README's Python quick start runs verbatim."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.extended  # a full MCLMC fit at its default settings (4 chains, 10 000 warm-up + 20 000 sampling steps)
def test_the_quick_start_runs_verbatim(capsys):
    block = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)
    pred, lower, upper = scope["pred"], scope["lower"], scope["upper"]
    assert pred.mean.shape == (200, 1) and np.all(np.asarray(lower) < np.asarray(upper))
    assert "chains" in capsys.readouterr().out  # the diagnosis's verdict was printed


def _anchors(page: Path) -> set[str]:
    """The heading ids of a Markdown page, as the code host and the site (pymdownx.slugs) make them."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.+)$", text, re.M)}


def test_readme_is_short_and_every_link_resolves():
    """The README stays a two-minute read; its links and those of the pages in docs/ reach real files
    and, where they name a section of a Markdown page, a real heading (the site's strict build checks
    the same on every page)."""
    assert len(README.read_text().splitlines()) <= 150
    for page in [README, *sorted((README.parent / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http", "#")):
                continue
            path, _, anchor = target.partition("#")
            assert (page.parent / path).exists(), (page.name, target)
            if anchor and path.endswith(".md"):
                assert anchor in _anchors(page.parent / path), (page.name, target)


def test_the_site_builds_every_page_and_report():
    """mkdocs.yml's navigation lists every page of docs/, every benchmark report and every notebook; the
    site is built from them where they are (docs/hooks.py, mkdocs-jupyter), not from copies."""
    root = README.parent
    config = (root / "mkdocs.yml").read_text()
    pages = [p.relative_to(root / "docs").as_posix() for p in (root / "docs").rglob("*.md")]
    sources = [f"benchmarks/{p.name}" for p in (root / "benchmarks").glob("*.md")]
    sources += [f"notebooks/{p.name}" for p in (root / "notebooks").glob("*.ipynb")]
    for name in pages + sources:
        assert re.search(rf"(?:- |: ){re.escape(name)}$", config, re.M), name
    assert not any((root / "docs" / s).exists() for s in sources)


def test_the_demo_and_the_site_quote_one_recommendation():
    """`bnn demo`'s report and the site's method page read the recommendation from bnn/recommendation.md."""
    from bnn.cli import RECOMMENDATION

    text = (README.parent / "bnn" / "recommendation.md").read_text()
    assert RECOMMENDATION.startswith(text) and "On this toy" in RECOMMENDATION[len(text):]
    assert '--8<-- "bnn/recommendation.md"' in (README.parent / "docs" / "methods.md").read_text()
