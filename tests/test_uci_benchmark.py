"""Smoke test of the UCI benchmark (benchmarks/uci.py): one split of yacht in fast mode, and its report."""

import inspect
import math
import warnings

import pytest
from _scripts import load_script

from bnn import datasets


def _uci_yacht_available() -> bool:
    try:
        return (datasets.uci_dir() / "yacht" / "data.txt").is_file()
    except FileNotFoundError:
        return False


needs_uci = pytest.mark.skipif(
    not _uci_yacht_available(),
    reason="UCI data (yacht) not found: set $BNN_UCI_DIR or provide shared/data/uci (see bnn.datasets.uci_dir)",
)


def _benchmark():
    return load_script("benchmarks/uci.py", "uci_benchmark")


def test_parse_splits():
    uci = _benchmark()
    assert uci.parse_splits("all") == list(range(20))
    assert uci.parse_splits("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="outside"):
        uci.parse_splits("19-20")


def test_results_are_revised_only_where_the_training_default_changed():
    """The benchmark keeps its own copy of the table size above which point fits train on minibatches
    (it uses only the public API): it must be the package's, or its records would be judged stale or
    current on the wrong tables."""
    from bnn.inference._loop import FULL_BATCH_ROWS

    uci = _benchmark()
    assert uci.FULL_BATCH_ROWS == FULL_BATCH_ROWS
    from bnn.inference.ensemble import auto_validation

    assert uci.revision("map", FULL_BATCH_ROWS) + 1 == uci.revision("map", FULL_BATCH_ROWS + 1)
    assert uci.revision("nuts", FULL_BATCH_ROWS) == uci.revision("nuts", FULL_BATCH_ROWS + 1)
    # MCLMC's changed defaults were rerun on the small tables only: the large ones keep their records, and
    # each change names a value that is no longer the default
    assert uci.revision("mclmc", FULL_BATCH_ROWS) == uci.revision("mclmc", FULL_BATCH_ROWS + 1) + 3
    from bnn.inference.mclmc import fit_mclmc

    defaults = inspect.signature(fit_mclmc).parameters
    for change in uci.MCLMC_CHANGES:
        name, old = change.split("=")
        assert defaults[name].default != float(old), change
    # the ensemble's early stopping by default: the same threshold from the other side
    assert auto_validation("auto", FULL_BATCH_ROWS, False) == 0.1 and auto_validation("auto", FULL_BATCH_ROWS + 1, False) is None
    assert uci.revision("ensemble-es", FULL_BATCH_ROWS) == uci.revision("ensemble-es", 300) == 1


@needs_uci
@pytest.mark.slow  # every method on one split: 20 s
def test_one_fast_split_and_report(tmp_path):
    uci = _benchmark()
    records = [uci.run_split("yacht", method, 0, fast=True) for method in ("map", "svi-normal")]
    for rec in records:
        assert rec["error"] is None, rec["error"]
        assert rec["n_train"] == 277 and rec["n_test"] == 31
        for key in ("test_ll", "test_rmse", "test_coverage", "test_width", "train_rmse", "seconds"):
            assert math.isfinite(rec[key]), (rec["method"], key, rec[key])
        assert 0.0 <= rec["test_coverage"] <= 1.0 and rec["test_rmse"] > 0
        assert isinstance(rec["warnings"], list)
        assert rec["details"]["noise_scale"] > 0

    # a warning raised inside a fit is recorded with the split (tests run with warnings as errors)
    class Warns:
        def __init__(self, model):
            self.model = model

        def fit(self, *args, **kwargs):
            warnings.warn("the MAP loss had not settled (simulated)", UserWarning, stacklevel=2)
            return self.model.fit(*args, **kwargs)

    real = uci.make_model
    uci.make_model = lambda: Warns(real())
    try:
        warned = uci.run_split("yacht", "map", 1, fast=True)
    finally:
        uci.make_model = real
    assert warned["error"] is None and math.isfinite(warned["test_ll"])
    assert warned["warnings"] == ["UserWarning: the MAP loss had not settled (simulated)"]
    records.append(warned)

    results = tmp_path / "results.jsonl"
    for rec in records:
        uci.append_record(results, rec)
    with open(results, "a") as fh:
        fh.write('{"cut short')  # a line left by a killed run is skipped
    stored = uci.load_records(results)
    assert len(stored) == 3

    out = tmp_path / "RESULTS.md"
    text = uci.write_report(stored, out, fast=True)
    assert out.read_text() == text
    assert "| Yacht |" in text and "MAP" in text and "SVI mean-field" in text
    assert "-1.63 ± 0.02" in text  # PBP's published yacht log-likelihood beside ours
    assert uci.fmt([records[1]['test_ll']]) in text  # SVI's single split, as it is
    row = next(line for line in text.splitlines() if line.startswith("| MAP |"))
    assert row.split("|")[2].strip() == "2"  # splits 0 and 1
    assert row.split("|")[-2].strip() == "1 / 0"  # one split warned, none failed
    assert "Yacht, MAP, split 1: UserWarning: the MAP loss had not settled (simulated)" in text


@needs_uci
@pytest.mark.slow  # NUTS and MCLMC compiled once each, two splits: 25 s
def test_repeat_fits_reuse_one_model(capsys):
    repeat = load_script("benchmarks/repeat_fits.py", "repeat_fits_benchmark")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert repeat.main(["--dataset", "yacht", "--splits", "0", "1", "--fast"]) == 0
    out = capsys.readouterr().out
    assert out.count("yacht  nuts") == 2 and out.count("yacht  mclmc") == 2
    assert "| nuts |" in out and "NUTS / MCLMC time on the later splits" in out
