"""The README's Python quick start runs verbatim."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.extended  # a full MCLMC fit at its default settings (4 chains, 2000 + 10 000 steps)
def test_the_quick_start_runs_verbatim(capsys):
    block = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)
    pred, lower, upper = scope["pred"], scope["lower"], scope["upper"]
    assert pred.mean.shape == (200, 1) and np.all(np.asarray(lower) < np.asarray(upper))
    assert "chains" in capsys.readouterr().out  # the diagnosis's verdict was printed


def test_readme_is_short_and_every_link_resolves():
    """The README stays a two-minute read; its links and those of the pages in docs/ reach real files."""
    assert len(README.read_text().splitlines()) <= 150
    for page in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), (page.name, target)
