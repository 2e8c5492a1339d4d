"""The benchmark scripts' own logic: results.py collects every report into RESULTS.md; step_cost.py counts steps;
nuts_floor.py times its loops."""

import numpy as np
import pytest
from _scripts import ROOT, load_script


def _results():
    return load_script("benchmarks/results.py", "bench_results")


def test_demote_moves_headings_down_outside_code_blocks():
    text = "# A\n\nbody # not a heading\n```\n# a comment in code\n```\n## B"
    assert _results().demote(text) == "## A\n\nbody # not a heading\n```\n# a comment in code\n```\n### B"


def test_build_collects_every_report_in_order_and_names_missing_ones(tmp_path):
    results = _results()
    names = [name for name, _, _ in results.SECTIONS]
    for i, name in enumerate(names[:-1]):
        (tmp_path / name).write_text(f"# Report {i}\n\n| a |\n|---|\n| {i} |\n")
    text = results.build(tmp_path)
    positions = [text.index(f"## Report {i}\n") for i in range(len(names) - 1)]
    assert positions == sorted(positions)
    assert "\n# Report" not in text
    assert f"## {names[-1]}\n\n(not written yet: run `{results.SECTIONS[-1][1]}`)" in text


def test_committed_results_file_is_current():
    """RESULTS.md equals what results.py builds from the committed reports (rerun it after a benchmark)."""
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == _results().build()


def test_step_cost_counts_the_longest_tree_of_each_draw():
    """Vectorised NUTS chains wait for each other: a draw costs its largest tree; MCLMC draws × thinning."""
    from types import SimpleNamespace

    step_cost = load_script("benchmarks/step_cost.py", "step_cost_benchmark")
    nuts = SimpleNamespace(info={"sample_stats": {"num_steps": np.array([[3, 7, 1], [5, 2, 1]])}})
    assert step_cost.leapfrog_steps(nuts, "nuts") == 5 + 7 + 1
    mclmc = SimpleNamespace(info={"num_samples": 4, "thinning": 10})
    assert step_cost.leapfrog_steps(mclmc, "mclmc") == 40


@pytest.mark.slow
def test_nuts_floor_cost_part_times_its_three_loops():
    """``nuts_floor.py``'s cost part runs the bare leapfrog loop, the lean tree loop and bnn's NUTS."""
    floor = load_script("benchmarks/nuts_floor.py", "bench_nuts_floor")
    ms = floor.part_cost(0)
    assert set(ms) == {"leapfrog", "lean", "nuts"}
    assert all(np.isfinite(v) and v > 0 for v in ms.values()), ms
