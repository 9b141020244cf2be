"""ImagingCNNClassifier: transfer of blocks from the brain-age CNN to working-memory groups."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import balanced_accuracy_score

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier

SHAPE = (24, 28, 24)
TINY = dict(channels=(4, 4, 8, 8, 8), padding=1, pool_blocks=4, device="cpu")


@pytest.fixture(scope="module")
def data():
    c = make_cohort(n_participants=80, n_snps=60, shape=SHAPE, n_bad_images=0, random_state=1)
    wm = c.phenotypes["wm_group"].to_numpy()
    keep = ~np.isnan(wm)
    X, age, y = c.images[keep], c.phenotypes["age"].to_numpy()[keep], wm[keep].astype(int)
    source = BrainAgeCNNTransformer(**TINY, max_epochs=2, random_state=0).fit(X, age)
    return X, y, source


def _block_state(module, b):
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.startswith(f"backbone.blocks.{b}.")}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_first_k_blocks_are_transferred_rest_reinitialised(data):
    X, y, source = data
    clf = ImagingCNNClassifier(source, n_transfer_blocks=2, max_epochs=0, random_state=0).fit(X, y)
    assert clf.n_transferred_blocks_ == 2
    for b in (0, 1):
        assert _same(_block_state(clf.module_, b), _block_state(source.module_, b))
    assert not _same(_block_state(clf.module_, 2), _block_state(source.module_, 2))
    assert clf.arch_["channels"] == (4, 4, 8, 8, 8)  # architecture inherited from the source


def test_frozen_transferred_blocks_stay_fixed_while_rest_trains(data):
    X, y, source = data
    clf = ImagingCNNClassifier(source, n_transfer_blocks=2, freeze_transferred=True,
                               max_epochs=2, random_state=0).fit(X, y)
    for b in (0, 1):  # weights and BatchNorm running statistics unchanged
        assert _same(_block_state(clf.module_, b), _block_state(source.module_, b))
    tuned = ImagingCNNClassifier(source, n_transfer_blocks=2, max_epochs=2,
                                 random_state=0).fit(X, y)
    assert not _same(_block_state(tuned.module_, 0), _block_state(source.module_, 0))


def test_probabilities_classes_and_balanced_accuracy(data):
    X, y, source = data
    labels = np.where(y == 1, "high", "low")
    clf = ImagingCNNClassifier(source, max_epochs=3, class_weight="balanced",
                               random_state=0).fit(X, labels)
    assert clf.classes_.tolist() == ["high", "low"]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    pred = clf.predict(X)
    assert set(pred) <= {"high", "low"}
    assert clf.score(X, labels) == pytest.approx(balanced_accuracy_score(labels, pred))
    bacc = clf.net_.history[:, "valid_bacc"]
    assert len(bacc) == clf.n_epochs_ <= clf.budget_ <= 6 and all(0.0 <= v <= 1.0 for v in bacc)
    assert clf.transform(X).shape == (len(y), clf.n_features_out_)


def test_source_as_path_or_frozen_estimator_survives_clone(data, tmp_path):
    X, y, source = data
    path = source.save_weights(tmp_path / "age.pt")
    ref = ImagingCNNClassifier(path, max_epochs=0, random_state=0).fit(X, y)
    frozen = clone(ImagingCNNClassifier(FrozenEstimator(source), max_epochs=0, random_state=0))
    np.testing.assert_allclose(frozen.fit(X, y).predict_proba(X), ref.predict_proba(X), rtol=1e-6)
    with pytest.raises(ValueError, match="FrozenEstimator"):
        clone(ImagingCNNClassifier(source, max_epochs=0)).fit(X, y)


def test_save_load_and_bad_labels(data, tmp_path):
    X, y, source = data
    clf = ImagingCNNClassifier(source, max_epochs=1, random_state=0).fit(X, y)
    path = clf.save_weights(tmp_path / "wm.pt")
    loaded = ImagingCNNClassifier.from_weights(path, X=X, device="cpu")
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    y_nan = y.astype(float)
    y_nan[4] = np.nan
    with pytest.raises(ValueError, match="index 4"):
        ImagingCNNClassifier(source, max_epochs=1).fit(X, y_nan)
    with pytest.raises(ValueError, match="two classes"):
        ImagingCNNClassifier(source, max_epochs=1).fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="n_transfer_blocks"):
        ImagingCNNClassifier(source, n_transfer_blocks=6, max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="channels"):
        ImagingCNNClassifier(source, channels=(8, 8, 8, 8, 8), max_epochs=1).fit(X, y)
    ages = np.linspace(45.0, 80.0, len(y))  # a regression target: refused, not taken as len(y) classes
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        ImagingCNNClassifier(source, max_epochs=1).fit(X, ages)
    with pytest.raises(ValueError, match=r"channels must list integers >= 1"):
        ImagingCNNClassifier(channels=(4, 0), max_epochs=1, device="cpu").fit(X, y)


def test_early_stopping_keeps_the_best_validation_epoch(data):
    X, y, source = data
    est = ImagingCNNClassifier(source, **TINY, max_epochs=12, n_iter_no_change=3, validation_fraction=0.25,
                               lr=3e-3, scoring="balanced_accuracy", random_state=0).fit(X, y)
    bacc = [h["valid_bacc"] for h in est.history_]
    assert len(est.history_) == est.n_epochs_ <= 12
    assert est.best_epoch_ == int(np.argmax(bacc)) + 1  # the first epoch of the best validation score
    if est.n_epochs_ < 12:  # stopped early: patience epochs without improvement after the best, and not before
        # the recipe's minimum (a best epoch early in the run stops at min_epochs, not 3 epochs after it)
        assert est.n_epochs_ == max(est.best_epoch_ + 3, est.min_epochs, est.warmup_epochs)
    assert all({"train_loss", "valid_loss", "valid_bacc"} <= set(h) for h in est.history_)
    by_loss = ImagingCNNClassifier(source, **TINY, max_epochs=6, n_iter_no_change=2, validation_fraction=0.25,
                                   lr=3e-3, random_state=0).fit(X, y)  # the default: validation loss
    assert by_loss.best_epoch_ == int(np.argmin([h["valid_loss"] for h in by_loss.history_])) + 1
    # a fixed budget trains every epoch and keeps the last
    fixed = ImagingCNNClassifier(source, **TINY, max_epochs=3, early_stopping=False, lr_schedule="none",
                                 random_state=0).fit(X, y)
    assert fixed.n_epochs_ == fixed.best_epoch_ == 3


def test_early_stopping_needs_a_validation_split(data):
    X, y, source = data
    with pytest.raises(ValueError, match="validation_fraction > 0"):
        ImagingCNNClassifier(source, **TINY, max_epochs=1, validation_fraction=0).fit(X, y)


def test_voxel_statistics_travel_with_the_transferred_blocks(data, tmp_path):
    X, y, _ = data
    source = BrainAgeCNNTransformer(**TINY, max_epochs=1, standardize_voxels=True, random_state=0).fit(
        X, np.linspace(45, 80, len(X)))
    assert source.module_.standardizes_input
    est = ImagingCNNClassifier(source, **TINY, max_epochs=1, standardize_voxels=True,
                               random_state=0).fit(X[:40], y[:40])
    for key in ("voxel.mean", "voxel.scale"):
        torch.testing.assert_close(est.module_.state_dict()[key], source.module_.state_dict()[key])
    # the source's statistics are those of its own training images, not the identity
    torch.testing.assert_close(source.module_.voxel_mean[0, 0], torch.as_tensor(X.mean(0)), rtol=1e-4, atol=1e-5)
    # saved and loaded with the weights: the frozen copy predicts the same
    path = est.save_weights(tmp_path / "wm.pt")
    np.testing.assert_allclose(ImagingCNNClassifier.from_weights(path, X, device="cpu").predict_proba(X),
                               est.predict_proba(X), rtol=1e-5, atol=1e-6)
    raw = ImagingCNNClassifier(None, **TINY, max_epochs=1, random_state=0).fit(X, y)
    assert not raw.module_.standardizes_input  # the default


def test_transfer_warns_when_the_blocks_would_read_another_input_scale(data):
    """A raw-image source's blocks fed z-scored voxels (the genotype scorer's old CLI setting)."""
    import warnings

    from sklearn_cgni.imaging import BrainGenotypeScorer

    X, y, source = data  # source: standardize_voxels=False
    G = np.random.default_rng(0).integers(0, 3, size=(len(X), 2)).astype(float)
    with pytest.warns(UserWarning, match=r"2 transferred block\(s\) were trained on raw images, but this network "
                                         r"standardises.*set standardize_voxels=False"):
        BrainGenotypeScorer(brain_age_model=source, n_transfer_blocks=2, standardize_voxels=True, max_epochs=1,
                            validation_fraction=0.0, device="cpu", random_state=0).fit(X, G)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matching scales: no warning
        ImagingCNNClassifier(source, n_transfer_blocks=2, max_epochs=1, random_state=0).fit(X, y)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_transform_blocks_then_last_blocks_is_transform(data, k):
    X, y, source = data
    clf = ImagingCNNClassifier(source, n_transfer_blocks=5, max_epochs=1, random_state=0).fit(X, y)
    a = clf.transform_blocks(X[:6], k)
    tail = clf.last_blocks(k)
    assert tail.n_features_out == clf.n_features_out_ and not tail.training
    with torch.no_grad():
        h = tail(torch.as_tensor(a)).numpy()
    np.testing.assert_allclose(h, clf.transform(X[:6]), atol=1e-4)  # transform runs on the folded oneDNN copy
    # a copy: training it leaves the fitted network alone
    next(tail.parameters()).data.add_(1.0)
    np.testing.assert_allclose(clf.transform(X[:6]), h, atol=1e-4)
    with pytest.raises(ValueError, match=r"n_last_blocks must be an int in \[1, 5\].*got 6"):
        clf.transform_blocks(X[:2], 6)


def test_refit_head_is_the_logistic_regression_on_the_networks_features(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, source = data
    clf = ImagingCNNClassifier(source, max_epochs=2, class_weight="balanced", random_state=0).fit(X, y)
    assert clf.refit_head == "logistic" and clf.head_C_ > 0
    H = clf.transform(X)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=clf.head_C_, class_weight="balanced",
                                                             max_iter=5000)).fit(H, y)
    # equal up to the solver's tolerance (LogisticRegressionCV warm-starts along its C path)
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], ref.predict_proba(H)[:, 1], atol=5e-3)
    kept = ImagingCNNClassifier(source, max_epochs=2, class_weight="balanced", refit_head="none",
                                random_state=0).fit(X, y)
    assert kept.head_C_ is None
    np.testing.assert_allclose(kept.transform(X), H, rtol=1e-5, atol=1e-6)  # same network, other head
    assert not np.allclose(kept.predict_proba(X), clf.predict_proba(X), atol=1e-3)
