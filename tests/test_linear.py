"""utils._linear: the package's linear models and their fast balanced-accuracy scorer."""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold

from sklearn_cgni.utils._linear import balanced_accuracy_scorer, l2_logistic_cv


class _Fixed(ClassifierMixin, BaseEstimator):
    """A fitted classifier stand-in that predicts given labels."""

    def __init__(self, pred=None):
        self.pred = pred
        self.classes_ = np.unique(pred)

    def predict(self, X):
        return np.asarray(self.pred)


@pytest.mark.parametrize("seed", range(20))
def test_scorer_gives_scikit_learns_float(seed):
    """The same float as scikit-learn's "balanced_accuracy" scorer, also with 3 classes and with predicted classes
    that are not in y (left out by both)."""
    rng = np.random.default_rng(seed)
    n_classes = 2 + seed % 2
    y = rng.integers(0, n_classes, size=int(rng.integers(5, 60)))
    pred = rng.integers(0, n_classes + (seed % 3 == 0), size=len(y))  # sometimes a class y does not have
    if seed % 4 == 0:
        y = np.array(["low", "high"])[y % 2]
        pred = np.array(["low", "high"])[pred % 2]
    X = np.zeros((len(y), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        expected = get_scorer("balanced_accuracy")(_Fixed(pred), X, y)
    assert balanced_accuracy_scorer(_Fixed(pred), X, y) == expected  # bit for bit


def test_logistic_cv_picks_the_same_model_as_with_the_named_scorer():
    """l2_logistic_cv's inner CV with the fast scorer chooses the same C and fits the same coefficients as
    LogisticRegressionCV(scoring="balanced_accuracy")."""
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8))
    y = (X[:, 0] + 0.8 * rng.normal(size=120) > 0.4).astype(int)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    fast = l2_logistic_cv(Cs=10, cv=cv, class_weight="balanced").fit(X, y)
    named = clone(fast).set_params(scoring="balanced_accuracy").fit(X, y)
    np.testing.assert_array_equal(fast.C_, named.C_)
    np.testing.assert_array_equal(fast.coef_, named.coef_)
    np.testing.assert_array_equal(fast.scores_, named.scores_)  # every C on every inner fold
