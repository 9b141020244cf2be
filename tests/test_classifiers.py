"""Stage-3 classifier, the paper's baselines, scikit-learn conformance and the full Pipeline."""

import numpy as np
import pandas as pd
import pytest
from joblib import Memory
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cgni.classification import (
    CGNIClassifier,
    ImagingGeneticNN,
    ImagingGeneticSVM,
    SparseGeneticNN,
)
from sklearn_cgni.genetics import ContrastiveSNPEncoder

FAST = dict(lr=1e-2, max_epochs=20, device="cpu", random_state=0)
TINY_GENETIC = SparseGeneticNN(hidden_layer_sizes=(8,), lr=1e-2, max_epochs=10, device="cpu")

# Every estimator of this area that takes a 2-D array. The imaging-genetic baselines and the
# encoder need >= 2 columns (h_v and SNPs): image_features=1 makes the first column h_v.
# No expected failures: all of scikit-learn 1.9's checks pass. Notes on what made them pass:
# - one-class y is refused with a ValueError mentioning "one class" (check_fit2d_1sample,
#   check_classifiers_one_label);
# - inference runs on a float64 copy of the float32-trained module, because float32 BLAS
#   results depend on the batch a row is predicted in (check_methods_subset_invariance
#   failed at 1e-7 otherwise).
ESTIMATORS = [
    CGNIClassifier(hidden_layer_sizes=(16,), **FAST),
    SparseGeneticNN(hidden_layer_sizes=(16, 8), **FAST),
    ImagingGeneticSVM(image_features=1, genetic_encoder=TINY_GENETIC, random_state=0),
    ImagingGeneticNN(image_features=1, hidden_layer_sizes=(16,), genetic_encoder=TINY_GENETIC, **FAST),
    ContrastiveSNPEncoder(
        image_features=1, n_components=4, image_hidden=(8,), genetic_hidden=(8,), max_epochs=2,
        device="cpu", random_state=0,
    ),
    # early stopping holds out rows: the checks' small datasets must still fit
    CGNIClassifier(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                   **FAST),
]
EXPECTED_FAILED_CHECKS = {}  # none; see the comment above


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ----------------------------------------------------------------- classifiers
def _binary(n=150, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=12, n_informative=4, class_sep=2.0, random_state=seed
    )
    return X, np.where(y == 1, "high", "low")


def test_cgni_classifier_learns_and_exposes_sklearn_api():
    X, y = _binary()
    clf = CGNIClassifier(hidden_layer_sizes=(32, 16), **FAST).fit(X, y)
    assert list(clf.classes_) == ["high", "low"]
    assert clf.score(X, y) > 0.9
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    # decision_function > 0 <=> classes_[1]
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(clf.decision_function(X) > 0).astype(int)])
    assert clf.net_.batch_size == 75  # the paper's stage-3 batch size


@pytest.mark.parametrize("make", [
    lambda: CGNIClassifier(hidden_layer_sizes=(64,)),
    lambda: SparseGeneticNN(hidden_layer_sizes=(64, 16), l1=0.0, weight_decay=0.0),
    lambda: ImagingGeneticNN(image_features=4, hidden_layer_sizes=(64,), l1=0.0, genetic_encoder=TINY_GENETIC),
], ids=["CGNIClassifier", "SparseGeneticNN", "ImagingGeneticNN"])
def test_early_stopping_keeps_the_best_held_out_epoch(make):
    from torch.nn.functional import cross_entropy
    import torch

    from sklearn_cgni.utils._device import fit_seed
    from sklearn_cgni.utils._skorch import early_stopping_split

    X, y = make_classification(n_samples=200, n_features=12, n_informative=3, flip_y=0.2, random_state=1)
    clf = make().set_params(lr=3e-2, max_epochs=300, early_stopping=True, n_iter_no_change=5, device="cpu",
                            random_state=0).fit(X, y)
    curve = clf.validation_loss_curve_
    assert len(curve) == len(clf.loss_curve_) == clf.n_iter_ < 300  # stopped before the budget
    assert clf.best_epoch_ == int(np.argmin(curve)) + 1 == clf.n_iter_ - 5  # patience 5 after the best
    # the kept weights are the best epoch's: their loss on the held-out rows is the curve's minimum
    _, valid = early_stopping_split(y, 0.1, fit_seed(0), "test")
    loss = cross_entropy(torch.as_tensor(np.log(clf.predict_proba(X[valid]))), torch.as_tensor(y[valid]))
    assert float(loss) == pytest.approx(min(curve), rel=1e-4)
    # without early stopping every row trains and the last epoch is kept
    plain = make().set_params(max_epochs=4, device="cpu", random_state=0).fit(X, y)
    assert plain.validation_loss_curve_ is None and plain.best_epoch_ == plain.n_iter_ == 4


def test_early_stopping_refuses_a_split_that_empties_a_class():
    X, y = _binary(40)
    y[:] = "low"
    y[:1] = "high"  # one participant of class "high" cannot be on both sides of the split
    with pytest.raises(ValueError, match=r"CGNIClassifier: early_stopping holds out validation_fraction=0.1 of 40"):
        CGNIClassifier(hidden_layer_sizes=(8,), early_stopping=True, **FAST).fit(X[:, :], y)


def test_class_weight_balanced_helps_the_minority_class():
    X, y = make_classification(
        n_samples=200, n_features=8, n_informative=2, weights=[0.85], class_sep=0.6, random_state=0
    )
    kw = dict(hidden_layer_sizes=(16,), lr=1e-2, max_epochs=10, device="cpu", random_state=0)
    plain = CGNIClassifier(**kw).fit(X, y)
    balanced = CGNIClassifier(class_weight="balanced", **kw).fit(X, y)
    assert np.mean(balanced.predict(X) == 1) > np.mean(plain.predict(X) == 1)
    assert ImagingGeneticSVM(image_features=4, class_weight="balanced", genetic_encoder=TINY_GENETIC).fit(X, y)


def test_default_architectures_match_the_paper():
    from sklearn_cgni.nn._mlp import (
        CGNI_CLASSIFIER_SIZES,
        GENETIC_ENCODER_SIZES,
        IMAGE_ENCODER_SIZES,
        IMAGING_GENETIC_SIZES,
        SPARSE_GENETIC_SIZES,
    )

    assert CGNIClassifier().hidden_layer_sizes == CGNI_CLASSIFIER_SIZES == (250, 200, 150)
    assert SparseGeneticNN().hidden_layer_sizes == SPARSE_GENETIC_SIZES == (800, 600, 400)
    assert ImagingGeneticNN().hidden_layer_sizes == IMAGING_GENETIC_SIZES == (500, 200)
    enc = ContrastiveSNPEncoder()
    assert tuple(enc.image_hidden) == IMAGE_ENCODER_SIZES == (250, 200, 150)
    assert tuple(enc.genetic_hidden) == GENETIC_ENCODER_SIZES == (400, 600, 400, 300, 150)
    assert (enc.n_components, enc.batch_size) == (100, 50)
    assert (enc.lambda_vg, enc.sigma_gv, enc.gamma_vv, enc.theta_gg) == (0.7, 0.3, 0.0, 0.4)


def test_sparse_genetic_nn_l1_shrinks_hidden_weights_and_gives_h_g():
    X, y = _binary()
    dense = SparseGeneticNN(hidden_layer_sizes=(32, 16), l1=0.0, weight_decay=0.0, **FAST).fit(X, y)
    sparse = SparseGeneticNN(hidden_layer_sizes=(32, 16), l1=1e-2, weight_decay=0.0, **FAST).fit(X, y)

    def hidden_l1(est):
        return sum(float(layer.weight.detach().abs().sum()) for layer in est.net_.module_.hidden)

    assert hidden_l1(sparse) < 0.5 * hidden_l1(dense)
    h_g = dense.transform(X)
    assert h_g.shape == (150, 16) and (h_g >= 0).all()  # ReLU activations of the last layer
    assert list(dense.get_feature_names_out()[:2]) == ["h_g0", "h_g1"]


class _RowCounter(TransformerMixin, BaseEstimator):
    """Genetic 'encoder' spy: records how many participants it was fitted on."""

    def fit(self, X, y=None):
        self.n_fit_rows_ = X.shape[0]
        return self

    def transform(self, X):
        return X[:, :3]


@pytest.mark.parametrize("Est", [ImagingGeneticSVM, ImagingGeneticNN])
def test_h_g_is_fitted_on_training_rows_only(Est):
    X, y = _binary(n=100)
    extra = dict(max_epochs=2, device="cpu") if Est is ImagingGeneticNN else {}
    res = cross_validate(
        Est(image_features=4, genetic_encoder=_RowCounter(), random_state=0, **extra),
        X, y, cv=4, return_estimator=True,
    )
    assert [e.genetic_encoder_.n_fit_rows_ for e in res["estimator"]] == [75] * 4


@pytest.mark.parametrize("Est", [CGNIClassifier, SparseGeneticNN])
def test_classifier_bad_input(Est):
    X, y = _binary(n=40)
    with pytest.raises(ValueError, match="only one class"):
        Est(**FAST).fit(X, np.zeros(40))
    clf = Est(hidden_layer_sizes=(8,), **{**FAST, "max_epochs": 1})
    with pytest.warns(UserWarning, match="batch_size=75 is larger than the 40"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="12 features"):
        clf.predict(X[:, :5])
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Est(**FAST).fit(X_nan, y)


# ----------------------------------------------------------------- the method as one Pipeline
class _CountingStage1(TransformerMixin, BaseEstimator):
    """Stand-in for the CNN feature step that appends a line to a log file at every fit."""

    def __init__(self, log_path=None):
        self.log_path = log_path

    def fit(self, X, y=None):
        with open(self.log_path, "a") as fh:
            fh.write("fit\n")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2.0

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"f{i}" for i in range(self.n_features_in_)], dtype=object)


def _cohort_frame(n=120, seed=0):
    rng = np.random.default_rng(seed)
    snps = rng.binomial(2, 0.3, size=(n, 20)).astype(float)
    img = rng.normal(size=(n, 6)) + snps[:, :6]
    y = (img[:, 0] + snps[:, 1] + rng.normal(size=n) > 1).astype(int)
    df = pd.DataFrame(
        np.hstack([img, snps]), columns=[f"img{i}" for i in range(6)] + [f"rs{i}" for i in range(20)]
    )
    return df, y


def test_pipeline_grid_search_over_loss_weights_reuses_cached_stage1(tmp_path):
    df, y = _cohort_frame()
    log = tmp_path / "stage1_fits.log"
    features = ColumnTransformer(
        [
            ("image", _CountingStage1(log_path=str(log)), [f"img{i}" for i in range(6)]),
            ("snp", "passthrough", [f"rs{i}" for i in range(20)]),
        ]
    ).set_output(transform="pandas")
    pipe = Pipeline(
        [
            ("features", features),
            (
                "contrastive",
                ContrastiveSNPEncoder(  # default image_features="image__" = ColumnTransformer's prefix
                    n_components=4, image_hidden=(8,), genetic_hidden=(8,), max_epochs=2,
                    device="cpu", random_state=0,
                ),
            ),
            ("classifier", CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=2, device="cpu", random_state=0)),
        ],
        memory=Memory(tmp_path / "cache", verbose=0),
    )
    grid = {
        "contrastive__lambda_vg": [0.7, 1.0],
        "contrastive__theta_gg": [0.0, 0.4],
        "contrastive__temperature": [0.1, 0.5],
    }
    search = GridSearchCV(pipe, grid, cv=3, scoring="balanced_accuracy").fit(df, y)
    assert len(search.cv_results_["params"]) == 8
    # 8 candidates x 3 folds + refit = 25 pipeline fits, but stage 1 ran once per distinct
    # training set (3 folds + the full data for the refit): the rest came from the cache.
    assert log.read_text().count("fit") == 4
    assert 0 <= search.best_score_ <= 1
    proba = search.predict_proba(df)
    assert proba.shape == (120, 2)
    names = search.best_estimator_[:-1].get_feature_names_out()
    assert list(names[:4]) == ["z_g0", "z_g1", "z_g2", "z_g3"] and names[4] == "image__f0"


@pytest.mark.parametrize("Estimator", [CGNIClassifier, SparseGeneticNN, ImagingGeneticNN])
@pytest.mark.parametrize("sizes", [(0,), (-3,), (8, 2.5)])
def test_layer_widths_must_be_positive_integers(Estimator, sizes):
    X, y = make_classification(n_samples=40, n_features=10, random_state=0)
    with pytest.raises(ValueError, match=rf"{Estimator.__name__}: hidden_layer_sizes must list integers >= 1"):
        Estimator(hidden_layer_sizes=sizes, max_epochs=1).fit(X, y)


def test_sparse_genetic_nn_needs_a_hidden_layer_but_cgni_classifier_does_not():
    X, y = make_classification(n_samples=40, n_features=10, random_state=0)
    with pytest.raises(ValueError, match="hidden_layer_sizes must list at least one layer"):
        SparseGeneticNN(hidden_layer_sizes=(), max_epochs=1).fit(X, y)
    assert CGNIClassifier(hidden_layer_sizes=(), max_epochs=1, batch_size=40).fit(X, y).predict(X).shape == (40,)
