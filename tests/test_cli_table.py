"""`bnn fit` / `bnn predict` on a user's CSV table: results equal the library's, errors are one line."""

import numpy as np
import pandas as pd
import pytest

import bnn
from bnn import cli


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    n = 48
    a, b = rng.uniform(-1, 1, n), rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "b": b, "y": np.sin(3 * a) + 0.1 * b + 0.1 * rng.normal(size=n),
                          "label": (a > 0).astype(int) + (b > 1).astype(int), "note": ["x"] * n})
    frame.to_csv(folder / "data.csv", index=False)
    frame[["a", "b"]].head(7).to_csv(folder / "new.csv", index=False)
    return folder


def _run(capsys, *argv):
    code = cli.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_then_predict_equals_the_saved_fit(table, tmp_path, capsys):
    fit_dir = tmp_path / "fit"
    code, out, _ = _run(capsys, "fit", table / "data.csv", "--target", "y", "--features", "a,b", "--method", "map",
                        "--hidden", "4", "--prior", "fixed", "--cv", "3", "--out", fit_dir)
    assert code == 0 and str(fit_dir) in out
    report = (fit_dir / "report.md").read_text()
    assert (fit_dir / "fit.png").stat().st_size > 0 and "| rmse |" in report
    assert "gaussian likelihood (auto)" in report  # 48 rows: one learned noise scale
    code, _, _ = _run(capsys, "predict", fit_dir, table / "new.csv", "--out", tmp_path / "p.csv", "--level", "0.8")
    assert code == 0
    got = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["mean", "std", "epistemic_std", "aleatoric_std", "lower_0.8", "upper_0.8"]
    # the CSV holds exactly what the library predicts from the saved fit (float32 printed in full)
    fit = bnn.load(fit_dir)
    x_new = pd.read_csv(table / "new.csv").to_numpy(np.float32)
    pred = fit.predict(x_new)
    lo, hi = pred.interval(0.8)
    np.testing.assert_allclose(got["mean"], np.asarray(pred.mean)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got["std"], np.asarray(pred.std)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got["lower_0.8"], np.asarray(lo)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got["upper_0.8"], np.asarray(hi)[:, 0], rtol=1e-6)
    assert fit.normalizer is not None  # the command fits with normalize=True
    # the same fit made in Python
    x = pd.read_csv(table / "data.csv")[["a", "b"]].to_numpy(np.float32)
    y = pd.read_csv(table / "data.csv")[["y"]].to_numpy(np.float32)
    model = bnn.BNN(bnn.MLP((4, 1), activation="relu"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian())
    direct = model.fit(x, y, method="map", seed=0, normalize=True)
    np.testing.assert_allclose(np.asarray(direct.predict(x_new).mean)[:, 0], got["mean"], rtol=1e-5, atol=1e-6)
    # the held-out column is the library's 3-fold cross-validation of the same fit
    cv = bnn.cross_validate(model, x, y, method="map", folds=3, seed=0, normalize=True, tune_prior=False)
    row = next(line for line in report.splitlines() if line.startswith("| coverage of the 90 % interval"))
    assert row.split("|")[3].strip() == f"{cv['coverage']:.4g}"
    assert "held-out rows (3-fold cross-validation)" in report


@pytest.mark.extended  # the default run checks an interrupted save through the library (test_io.test_an_interrupted_save_keeps_the_previous_fit)
def test_an_interrupted_rerun_leaves_the_earlier_output(table, tmp_path, capsys, monkeypatch):
    fit_dir = tmp_path / "fit"
    argv = ["fit", table / "data.csv", "--target", "y", "--features", "a,b", "--method", "map", "--hidden", "4", "--prior", "fixed",
            "--cv", "0", "--out", fit_dir]
    assert _run(capsys, *argv)[0] == 0
    before = {p.name: p.read_bytes() for p in fit_dir.iterdir()}
    real = cli._write_fit_folder

    def killed_midway(folder, *args):
        real(folder, *args)
        (folder / "report.md").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_write_fit_folder", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        cli.main(list(map(str, argv[:-4] + ["--seed", "1"] + argv[-4:])))
    assert {p.name: p.read_bytes() for p in fit_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit"]


@pytest.mark.extended  # the default run checks classes through the CLI on a text-labelled table (test_text_classes_and_empty_cells)
def test_categorical_predictions_are_class_probabilities(table, tmp_path, capsys):
    fit_dir = tmp_path / "cls"
    code, _, err = _run(capsys, "fit", table / "data.csv", "--target", "label", "--features", "a,b", "--method", "ensemble",
                        "--likelihood", "categorical", "--hidden", "8", "--cv", "0", "--out", fit_dir)
    assert code == 0, err
    code, out, _ = _run(capsys, "predict", fit_dir, table / "new.csv")
    assert code == 0
    got = pd.read_csv(__import__("io").StringIO(out))
    assert list(got.columns) == ["prob_0", "prob_1", "prob_2", "predicted", "entropy", "mutual_information"]
    probs = got[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (got["predicted"].to_numpy() == probs.argmax(1)).all()
    assert (got["mutual_information"] >= -1e-6).all() and (got["mutual_information"] <= got["entropy"] + 1e-6).all()


def test_text_classes_and_empty_cells(tmp_path, capsys):
    """A class column of text fits with --likelihood categorical and predicts by class name; an identifier
    column is left out with --drop; rows with an empty cell are dropped on request and counted."""
    rng = np.random.default_rng(1)
    n = 60
    a, b = rng.normal(size=n), rng.normal(size=n)
    species = np.where(a > 0.5, "fox", np.where(a < -0.5, "cat", "dog"))
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "a": a, "b": b, "species": species})
    frame.loc[4, "b"] = np.nan
    frame.to_csv(tmp_path / "animals.csv", index=False)
    frame[["a", "b"]].iloc[5:12].to_csv(tmp_path / "new.csv", index=False)
    argv = ("fit", tmp_path / "animals.csv", "--target", "species", "--likelihood", "categorical", "--drop", "id",
            "--method", "map", "--hidden", "8", "--prior", "fixed", "--cv", "0", "--out", tmp_path / "fit")
    code, _, err = _run(capsys, *argv)
    assert code == 1 and "`bnn fit --drop-missing` leaves such rows out" in err
    code, _, err = _run(capsys, *argv, "--drop-missing")
    assert code == 0, err
    report = (tmp_path / "fit" / "report.md").read_text()
    assert "59 rows (1 row(s) with empty cells dropped, --drop-missing)" in report
    assert "Classes: cat, dog, fox (coded 0 to 2)" in report
    code, out, _ = _run(capsys, "predict", tmp_path / "fit", tmp_path / "new.csv")
    got = pd.read_csv(__import__("io").StringIO(out))
    assert code == 0 and list(got.columns[:4]) == ["prob_cat", "prob_dog", "prob_fox", "predicted"]
    probs = got[["prob_cat", "prob_dog", "prob_fox"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert list(got["predicted"]) == list(np.array(["cat", "dog", "fox"])[probs.argmax(1)])


@pytest.mark.extended  # a sampler's fit through the CLI; the default run checks the verdict's parts in test_diagnostics
def test_a_sampled_fit_reports_its_convergence(table, tmp_path, capsys):
    """A chain method's report carries bnn.diagnose's verdict at the training rows (function-space R-hat,
    divergences, and MCLMC's energy error), the same as the library gives for the saved fit."""
    fit_dir = tmp_path / "fit"
    code, _, err = _run(capsys, "fit", table / "data.csv", "--target", "y", "--features", "a,b", "--method", "mclmc",
                        "--hidden", "4", "--cv", "0", "--out", fit_dir)
    assert code == 0, err
    report = (fit_dir / "report.md").read_text()
    section = report.split("## Convergence (function space, at the training rows)\n\n", 1)[1].split("\n", 1)[0]
    fit = bnn.load(fit_dir)
    x = pd.read_csv(table / "data.csv")[["a", "b"]].to_numpy(np.float32)
    assert section == bnn.diagnose(fit, x).verdict and "energy error variance per dimension" in section.lower()


def test_errors_are_one_line_and_exit_nonzero(table, tmp_path, capsys):
    data = table / "data.csv"
    pd.DataFrame({"a": [1.0, 2.0, None, 4.0, 5.0, 6.0], "y": [1.0, 2.0, 3.0, None, 5.0, 6.0]}).to_csv(tmp_path / "gaps.csv", index=False)
    pd.DataFrame({"a": [1.0, 2.0], "y": [1.0, 2.0]}).to_csv(tmp_path / "short.csv", index=False)
    pd.DataFrame({"a": [1.0]}).to_csv(tmp_path / "only_a.csv", index=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    fit_dir = tmp_path / "fit"
    assert cli.main(["fit", str(data), "--target", "y", "--features", "a,b", "--method", "map", "--hidden", "4",
                     "--prior", "fixed", "--cv", "0", "--out", str(fit_dir)]) == 0
    capsys.readouterr()
    cases = [
        (("fit", tmp_path / "nope.csv", "--target", "y", "--out", tmp_path / "o"), r"'.*nope.csv' does not exist"),
        (("fit", data, "--target", "z", "--features", "a", "--out", tmp_path / "o"), r"has no column 'z'; its columns are 'a', 'b', 'y', 'label', 'note'"),
        (("fit", data, "--target", "y", "--features", "a,c", "--out", tmp_path / "o"), r"has no column 'c'"),
        (("fit", data, "--target", "y", "--out", tmp_path / "o"), r"column\(s\) 'note' hold text; .*`--drop note`"),
        (("fit", data, "--target", "y", "--drop", "zz", "--out", tmp_path / "o"), r"`--drop`: .* has no column 'zz'"),
        (("fit", data, "--target", "y", "--drop", "note", "--features", "a", "--out", tmp_path / "o"), r"either `--features`"),
        (("fit", data, "--target", "note", "--features", "a", "--out", tmp_path / "o"), r"column\(s\) 'note' hold text.*`--likelihood categorical`"),
        (("fit", tmp_path / "gaps.csv", "--target", "y", "--out", tmp_path / "o"), r"empty or non-numeric cells in column\(s\) 'a', 'y' at data row\(s\) 3, 4"),
        (("fit", tmp_path / "short.csv", "--target", "y", "--out", tmp_path / "o"), r"has 2 data row\(s\); fitting needs at least 5"),
        (("fit", data, "--target", "y", "--features", "a", "--out", blocker), r"--out '.*a_file' is a file, not a folder"),
        (("fit", data, "--target", "y", "--features", "a", "--out", blocker / "sub"), r"--out '.*sub' cannot be written"),
        (("fit", data, "--target", "y", "--features", "a", "--likelihood", "bernoulli", "--out", tmp_path / "o"), r"target 'y' must hold 0 or 1"),
        (("predict", tmp_path, data), r"was not written by `bnn fit`"),
        (("fit", data, "--target", "y", "--features", "a", "--method", "map", "--prior", "hierarchical", "--cv", "0",
          "--out", tmp_path / "o"), r"method='map' optimises the weights, and a sampled prior scale"),
        (("fit", data, "--target", "y", "--features", "a", "--cv", "1", "--out", tmp_path / "o"), r"--cv must be 0 \(off\) or between 2 and the number of rows \(48\); got 1"),
        (("predict", fit_dir, tmp_path / "only_a.csv"), r"has no column 'b'; its columns are 'a'"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 1, argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert __import__("re").search(message, err), (message, err)


def test_held_out_coverage_below_0_8_is_a_warning(tmp_path, capsys):
    """MAP with a learned noise on 30 noisy rows and 50 units, prior as given, interpolates its training rows:
    training coverage 1, held-out far below 0.8. The report shows both and warns; `auto` picks MCLMC here."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    frame = pd.DataFrame(x, columns=list("abcd")).assign(y=x[:, 0] + rng.normal(size=30))
    frame.to_csv(tmp_path / "small.csv", index=False)
    code, _, err = _run(capsys, "fit", tmp_path / "small.csv", "--target", "y", "--method", "map", "--prior", "fixed",
                        "--cv", "3", "--out", tmp_path / "f")
    report = (tmp_path / "f" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| coverage of the 90 % interval"))
    train, held = float(row.split("|")[2]), float(row.split("|")[3])
    assert code == 0 and train > 0.95 and held < 0.8, row
    assert "**Warning: held-out coverage of the 90 % interval" in report and "bnn fit: warning: held-out coverage" in err
    assert cli.auto_method(30) == "mclmc" and cli.auto_method(cli.AUTO_SAMPLER_ROWS + 1) == "ensemble"
    big = cli.AUTO_SAMPLER_ROWS + 1
    assert cli.auto_prior(30, "mclmc") == cli.auto_prior(30, "nuts") == "hierarchical"
    assert cli.auto_prior(30, "laplace") == cli.auto_prior(30, "svi") == "tuned"
    assert cli.auto_prior(big, "ensemble") == cli.auto_prior(big, "mclmc") == "fixed"
    assert cli.auto_likelihood(cli.AUTO_SAMPLER_ROWS) == "gaussian" and cli.auto_likelihood(big) == "heteroscedastic"


def test_cross_validate_pools_the_folds_of_hand_written_fits():
    """K-fold by hand (same permutation, fold k fitted with seed k): pooled per-row metrics equal the library's."""
    x, y = bnn.datasets.sine(n=30, noise=0.1, seed=1)
    y = np.asarray(y).reshape(-1)
    model = bnn.BNN(bnn.MLP((8, 1), activation="tanh"), prior=bnn.Normal(1.0), likelihood=bnn.Gaussian(scale=0.1))
    cv = bnn.cross_validate(model, x, y, method="map", folds=3, seed=0, num_steps=300)
    parts = np.array_split(np.random.default_rng(0).permutation(30), 3)
    ll, sq, inside = [], [], []
    for k, held in enumerate(parts):
        train = np.setdiff1d(np.arange(30), held)
        pred = model.fit(x[train], y[train], method="map", seed=k, num_steps=300).predict(x[held])
        ll.append(-np.asarray(bnn.metrics.nll(pred, y[held])))
        sq.append((np.asarray(pred.mean)[:, 0] - y[held]) ** 2)
        lo, hi = pred.interval(0.9)
        inside.append((np.asarray(lo)[:, 0] <= y[held]) & (y[held] <= np.asarray(hi)[:, 0]))
    assert cv["log_likelihood"] == pytest.approx(np.mean(np.concatenate(ll)), rel=1e-5)
    assert cv["rmse"] == pytest.approx(np.sqrt(np.mean(np.concatenate(sq))), rel=1e-5)
    assert cv["coverage"] == pytest.approx(np.mean(np.concatenate(inside)))
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    with pytest.raises(ValueError, match=r"`folds` must lie between 2 and the number of rows \(30\); got 31"):
        bnn.cross_validate(model, x, y, folds=31)
