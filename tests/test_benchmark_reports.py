"""The benchmark scripts' own logic: results.py collects every report into RESULTS.md; step_cost.py counts steps;
nuts_floor.py times its loops; harness.py holds the timers, the machine description, the report writer and the
hand-written NumPyro reference model that the scripts share."""

import os

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


# ---------------------------------------------------------------------------------------------
# benchmarks/harness.py: what every benchmark script shares


def _harness():
    return load_script("benchmarks/harness.py", "bench_harness")


def test_median_seconds_is_the_median_of_the_timed_calls_after_the_warm_up():
    """Oracle: calls that sleep known lengths. ``time.sleep`` never returns early, so each call takes
    at least its length; the median of 0.01, 0.2 and 0.03 s is 0.03 s, well below the mean (0.08 s)
    and the warm-up's 0.3 s, which is not timed."""
    import time

    harness = _harness()
    lengths = iter([0.3, 0.01, 0.2, 0.03])
    calls = []

    def sleep(tag):
        calls.append(tag)
        time.sleep(next(lengths))

    median = harness.median_seconds(sleep, "arg", repeats=3)
    assert calls == ["arg"] * 4  # one warm-up call and three timed ones, given the arguments
    assert 0.03 <= median < 0.08, median
    value, seconds = harness.timed(lambda: time.sleep(0.02) or 7)
    assert value == 7 and seconds >= 0.02


def test_machine_keeps_the_keys_the_uci_report_reads(monkeypatch):
    harness = _harness()
    info = harness.machine()
    for key in ("cpu", "cpus", "cores_used", "affinity", "xla_flags", "jax_backend", "versions", "date"):
        assert key in info, key
    assert set(info["versions"]) >= {"bnn", "jax", "numpyro", "python"}
    assert info["cores_used"] >= 1 and len(info["affinity"].split(",")) == info["cores_used"]
    line = harness.machine_line(info)
    assert info["cpu"] in line and f"JAX {info['versions']['jax']}" in line
    # without lscpu: the model name from /proc/cpuinfo (or the platform), the count from os.cpu_count()
    monkeypatch.setattr(harness, "_lscpu", dict)
    bare = harness.machine(devices=False)
    assert bare["cpu"] and bare["cpus"] == str(os.cpu_count()) and bare["jax_backend"] is None


def test_write_report_keeps_the_hand_written_sections_from_the_heading_on(tmp_path):
    harness = _harness()
    path = tmp_path / "REPORT.md"
    assert harness.write_report(path, "# New\n\ntable", keep_from="## ") == "# New\n\ntable"  # no file yet
    path.write_text("# Old\n\nold table\n\n## Notes\n\nby hand\n\n## More\n\nx\n")
    harness.write_report(path, "# New\n\nnew table\n", keep_from="## ")
    assert path.read_text() == "# New\n\nnew table\n\n## Notes\n\nby hand\n\n## More\n\nx\n"
    harness.write_report(path, "# Newer", keep_from="## More")
    assert path.read_text() == "# Newer\n\n## More\n\nx\n"
    harness.write_report(path, "# Newest\n", keep_from="## Missing")
    assert path.read_text() == "# Newest\n"
    harness.write_report(tmp_path / "sub" / "R.md", "text")  # the folder is made
    assert (tmp_path / "sub" / "R.md").read_text() == "text"


@pytest.mark.parametrize("activation, noise", [("tanh", 0.3), ("relu", None)])
def test_reference_model_log_joint_is_the_sum_of_its_normal_log_densities(activation, noise):
    """Oracle: the log joint written out with scipy's densities in float64 at the same values."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density
    from scipy import stats

    harness = _harness()
    rng = np.random.default_rng(0)
    widths, prior_scale = (4, 3, 2), 0.7
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    values = {}
    for i, (kernel_shape, bias_shape) in enumerate(harness.layer_shapes(3, widths)):
        values[f"Dense_{i}.kernel"] = rng.normal(size=kernel_shape).astype(np.float32)
        values[f"Dense_{i}.bias"] = rng.normal(size=bias_shape).astype(np.float32)
    if noise is None:
        values["noise_scale"] = np.float32(0.4)
    model = harness.mlp_model(widths, activation, prior_scale=prior_scale, noise=noise)
    got = jax.jit(lambda v: log_density(model, (jnp.asarray(x), jnp.asarray(y)), {}, v)[0])(  # one program, not one per op
        {k: jnp.asarray(v) for k, v in values.items()})

    h = x.astype(np.float64)
    expected = 0.0
    for i in range(len(widths)):
        w, b = (values[f"Dense_{i}.{name}"].astype(np.float64) for name in ("kernel", "bias"))
        expected += stats.norm.logpdf(w, 0.0, prior_scale).sum() + stats.norm.logpdf(b, 0.0, prior_scale).sum()
        h = h @ w + b
        if i < len(widths) - 1:
            h = np.tanh(h) if activation == "tanh" else np.maximum(h, 0.0)
    sigma = noise if noise is not None else float(values["noise_scale"])
    if noise is None:
        expected += stats.halfnorm.logpdf(sigma, scale=1.0)
    expected += stats.norm.logpdf(y, h, sigma).sum()
    np.testing.assert_allclose(float(got), expected, rtol=1e-4)
