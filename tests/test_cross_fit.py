"""CrossFitTransformer: out-of-fold transforms for the training rows, a refit for new rows."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cgni.evaluation import CrossFitTransformer

# fit_transform returns out-of-fold transforms by design, so it differs from fit().transform()
_BY_DESIGN = "fit_transform gives out-of-fold transforms by design, unlike fit().transform()"
EXPECTED_FAILED = {"check_transformer_general": _BY_DESIGN,
                   "check_transformer_data_not_an_array": _BY_DESIGN}


# the generic data includes a 1-feature case that PCA(2) refuses itself; PCA is tested below
@parametrize_with_checks([CrossFitTransformer(StandardScaler(), cv=3)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


class _MeanOfTrainingRows(TransformerMixin, BaseEstimator):
    """Outputs the mean of the rows it was fitted on: shows which rows a transform has seen."""

    def fit(self, X, y=None):
        self.mean_ = np.asarray(X, dtype=float).mean(axis=0)
        return self

    def transform(self, X):
        return np.tile(self.mean_, (len(X), 1))


def test_each_row_is_transformed_by_a_model_that_never_saw_it():
    X = np.arange(12, dtype=float).reshape(-1, 1)
    cv = KFold(3)
    Z = CrossFitTransformer(_MeanOfTrainingRows(), cv=cv).fit_transform(X)
    for train, test in cv.split(X):
        np.testing.assert_allclose(Z[test], X[train].mean())  # the other folds' mean, never its own
    cf = CrossFitTransformer(_MeanOfTrainingRows(), cv=cv).fit(X)
    np.testing.assert_allclose(cf.transform(X[:2]), X.mean())  # new rows: the refit on all rows


def test_integer_cv_is_stratified_for_labels_and_pipeline_uses_oof_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = np.r_[np.zeros(30, int), np.ones(10, int)]
    cf = CrossFitTransformer(PCA(3), cv=5)
    Z = cf.fit_transform(X, y)
    expected = np.empty_like(Z)
    for train, test in StratifiedKFold(5).split(X, y):
        expected[test] = PCA(3).fit(X[train]).transform(X[test])
    np.testing.assert_allclose(Z, expected)
    assert cf.n_splits_ == 5 and cf.n_features_in_ == 5
    np.testing.assert_allclose(cf.transform(X), PCA(3).fit(X).transform(X))
    pipe = make_pipeline(CrossFitTransformer(PCA(3), cv=5), LogisticRegression()).fit(X, y)
    np.testing.assert_allclose(pipe[-1].coef_, LogisticRegression().fit(expected, y).coef_)


def test_dataframe_input_and_feature_names():
    X = pd.DataFrame(np.random.default_rng(1).normal(size=(20, 3)), columns=["a", "b", "c"])
    cf = CrossFitTransformer(StandardScaler(), cv=4)
    cf.fit_transform(X)
    assert list(cf.get_feature_names_out()) == ["a", "b", "c"]
    assert list(cf.feature_names_in_) == ["a", "b", "c"]


def test_bad_cv_and_bad_transformer_are_refused():
    X = np.random.default_rng(2).normal(size=(20, 3))
    with pytest.raises(ValueError, match="exactly one test fold"):
        CrossFitTransformer(StandardScaler(), cv=ShuffleSplit(3, test_size=0.2, random_state=0)).fit_transform(X)
    with pytest.raises(ValueError, match="transformer"):
        CrossFitTransformer(LogisticRegression()).fit(X, np.arange(20) % 2)


def test_cgni_pipeline_of_the_cli_is_cross_fitted_when_configured():
    from sklearn_cgni.cli import ConfigError, load_config
    from sklearn_cgni.cli._protocol import TABLE1_CGNI, paper_models

    cgni = paper_models(4, cross_fit=3)[("Table 1", TABLE1_CGNI)]
    step = cgni.named_steps["contrastive"]
    assert isinstance(step, CrossFitTransformer) and step.cv.n_splits == 3
    assert type(paper_models(4)[("Table 1", TABLE1_CGNI)].named_steps["contrastive"]).__name__ == \
        "ContrastiveSNPEncoder"  # the paper: no cross-fitting
    assert load_config(preset="paper")["classifier"]["cross_fit"] == 0
    assert load_config(preset="cpu")["classifier"]["cross_fit"] == 5
    with pytest.raises(ConfigError, match="classifier.cross_fit"):
        load_config(overrides=["classifier.cross_fit=1"])
