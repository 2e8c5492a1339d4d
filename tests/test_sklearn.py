"""bnn.sklearn: scikit-learn's own estimator checks, and the estimators inside its tools."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from bnn.sklearn import BNNClassifier, BNNRegressor  # noqa: E402

#: small, fast settings: a MAP fit of a 16-unit network (the checks fit dozens of times)
SMALL = dict(hidden=(16,), prior="fixed", method="map", method_options={"num_steps": 300})


def _expected_failures(estimator) -> dict:
    """The checks that cannot pass, by name, with the reason."""
    return {
        # float32 arithmetic: a row's prediction may move by one unit in the last place with the other
        # rows of its batch (XLA blocks the matrix products by batch size); the check allows 1e-9
        "check_methods_sample_order_invariance": "float32 predictions differ by 1 ulp with the batch's row order",
        "check_methods_subset_invariance": "float32 predictions differ by 1 ulp with the batch's other rows",
    }


# scikit-learn's estimator checks fit on tables of many sizes, each a program of its own to compile: they run
# with -m extended. The default run checks the estimators' own contract below: the wrapped fit's predictions,
# feature names, pickling, labels and probabilities, and the estimators inside cross-validation and a grid search.
@pytest.mark.extended
@parametrize_with_checks([BNNRegressor(**SMALL)], expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# The classifier shares the regressor's fitting and input checks (above); its own behaviour (labels,
# probabilities, binary and multiclass) is checked by test_classifier_labels_and_probabilities
@pytest.mark.extended
@parametrize_with_checks([BNNClassifier(**SMALL)], expected_failed_checks=_expected_failures)
def test_scikit_learn_classifier_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(64, 3))
    y = np.sin(3 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.normal(size=64)
    return x, y


def test_regressor_predictions_are_the_fits(table):
    """predict / return_std / predict_interval are the wrapped bnn.Fit's predictive mean, std and interval."""
    import pickle

    import pandas as pd

    x, y = table
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    reg = BNNRegressor(**SMALL).fit(frame, y)
    assert list(reg.feature_names_in_) == ["a", "b", "c"] and reg.n_features_in_ == 3
    assert (reg.method_, reg.prior_, reg.likelihood_) == ("map", "fixed", "gaussian")
    pred = reg.fit_.predict(x.astype(np.float32))
    mean, std = reg.predict(frame, return_std=True)
    np.testing.assert_array_equal(mean, np.asarray(pred.mean)[:, 0])
    np.testing.assert_array_equal(std, np.asarray(pred.std)[:, 0])
    lower, upper = reg.predict_interval(frame, level=0.8)
    np.testing.assert_array_equal(lower, np.asarray(pred.interval(0.8)[0])[:, 0])
    np.testing.assert_array_equal(upper, np.asarray(pred.interval(0.8)[1])[:, 0])
    again = pickle.loads(pickle.dumps(reg))  # through bnn's save format: the same predictions
    np.testing.assert_array_equal(again.predict(frame), mean)
    resid = y - mean
    assert reg.score(frame, y) == pytest.approx(1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2), rel=1e-6)


def test_classifier_labels_and_probabilities(table):
    x, y = table
    labels = np.where(y > 0.3, "high", np.where(y < -0.3, "low", "mid"))
    clf = BNNClassifier(**SMALL).fit(x, labels)
    assert list(clf.classes_) == ["high", "low", "mid"] and clf.likelihood_ == "categorical"
    probs = clf.predict_proba(x)
    np.testing.assert_allclose(probs, np.asarray(clf.fit_.predict(x.astype(np.float32)).probs), rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(x), clf.classes_[np.argmax(probs, axis=1)])
    binary = BNNClassifier(**SMALL).fit(x, y > 0)
    assert binary.likelihood_ == "bernoulli" and binary.predict_proba(x).shape == (64, 2)
    np.testing.assert_allclose(binary.predict_proba(x).sum(axis=1), 1.0, rtol=1e-6)


def test_pipeline_cross_validation_and_grid_search(table):
    """The estimators inside scikit-learn's tools: cross_val_score's folds are the estimator's own
    fits on those rows (recomputed by hand), and GridSearchCV picks a parameter and refits."""
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = table
    folds = KFold(2)  # folds of 32 rows, as the grid search's below: the same compiled programs
    scores = cross_val_score(make_pipeline(StandardScaler(), BNNRegressor(**SMALL)), x, y, cv=folds)
    by_hand = []
    for train, test in folds.split(x):
        scaler = StandardScaler().fit(x[train])
        by_hand.append(BNNRegressor(**SMALL).fit(scaler.transform(x[train]), y[train])
                       .score(scaler.transform(x[test]), y[test]))
    np.testing.assert_allclose(scores, by_hand, rtol=1e-5)
    search = GridSearchCV(BNNRegressor(**SMALL), {"prior_scale": [0.1, 1.0]}, cv=2).fit(x, y)
    assert search.best_params_["prior_scale"] in (0.1, 1.0) and search.best_estimator_.fit_ is not None


def test_bad_estimator_parameters(table):
    x, y = table
    with pytest.raises(ValueError, match=r"`prior` must be one of 'auto', 'hierarchical', 'tuned', 'fixed'; got 'wide'"):
        BNNRegressor(prior="wide").fit(x, y)
    with pytest.raises(ValueError, match=r"`method` must be one of .*; got 'adam'"):
        BNNRegressor(method="adam").fit(x, y)
    with pytest.raises(TypeError, match=r"`method_options` must be a dict"):
        BNNRegressor(method="map", method_options=[("num_steps", 5)]).fit(x, y)
    with pytest.raises(ValueError, match=r"`likelihood` must be 'auto', 'gaussian' or 'heteroscedastic'; got 'poisson'"):
        BNNRegressor(likelihood="poisson").fit(x, y)
    with pytest.raises(ValueError, match=r"at least 2 classes; got 1 class"):
        BNNClassifier(**SMALL).fit(x, np.zeros(len(x)))
