"""BrainAgeCNNTransformer: learning the planted age effect, inputs, persistence, bad input."""

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.metrics import r2_score
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier
from sklearn_cgni.imaging._dataset import build_float16_cache

SHAPE = (24, 28, 24)
TINY = dict(channels=(4, 4, 8, 8, 8), padding=1, pool_blocks=4, device="cpu")


@pytest.fixture(scope="module")
def cohort():
    # age_effect 5x the default so that 150 training images suffice within seconds
    return make_cohort(n_participants=200, n_snps=60, shape=SHAPE, age_effect=0.02,
                       n_bad_images=0, random_state=0)


@pytest.fixture(scope="module")
def small_fit(cohort):
    X, age = cohort.images[:40], cohort.phenotypes["age"].to_numpy()[:40]
    return BrainAgeCNNTransformer(**TINY, max_epochs=2, random_state=0).fit(X, age)


def _write(images, folder, ids):
    paths = []
    for img, pid in zip(images, ids):
        p = folder / f"{pid}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img, np.float32), np.eye(4)), p)
        paths.append(str(p))
    return paths


def test_heldout_mae_far_below_mean_age_baseline(cohort):
    X, age = cohort.images, cohort.phenotypes["age"].to_numpy()
    train = np.arange(len(age)) < 150
    cnn = BrainAgeCNNTransformer(channels=(8, 8, 16, 16, 16), padding=1, pool_blocks=4,
                                 max_epochs=15, lr=3e-4, weight_decay=1e-4,
                                 validation_fraction=0, early_stopping=False, lr_schedule="none", device="cpu", random_state=0)
    cnn.fit(X[train], age[train])
    mae = np.abs(cnn.predict(X[~train]) - age[~train]).mean()
    mae_mean = np.abs(age[train].mean() - age[~train]).mean()
    print(f"held-out brain-age MAE {mae:.2f} y vs predicting the mean age {mae_mean:.2f} y")
    assert mae < 0.5 * mae_mean


def test_predict_transform_score_shapes(cohort, small_fit):
    X, age = cohort.images[40:50], cohort.phenotypes["age"].to_numpy()[40:50]
    h = small_fit.transform(X)
    assert h.shape == (10, small_fit.n_features_out_) and h.dtype == np.float32
    assert small_fit.n_features_out_ == 8  # 8 channels x 1x1x1 at 24x28x24, pool_blocks=4
    assert np.isfinite(h).all()
    pred = small_fit.predict(X)
    assert pred.shape == (10,)
    assert small_fit.score(X, age) == pytest.approx(r2_score(age, pred))
    eager = clone(small_fit).set_params(inference_backend="eager")
    eager.net_, eager.image_shape_ = small_fit.net_, small_fit.image_shape_
    eager.n_features_out_, eager.device_ = small_fit.n_features_out_, small_fit.device_
    np.testing.assert_allclose(eager.transform(X), h, rtol=1e-4, atol=1e-4)
    names = small_fit.get_feature_names_out()
    assert list(names[:2]) == ["h_v0", "h_v1"] and len(names) == 8
    # the feature extractor shares the fitted weights and is in eval mode
    fx = small_fit.feature_extractor()
    assert not fx.training
    with torch.no_grad():
        np.testing.assert_allclose(fx(torch.from_numpy(X[:3])).numpy(), h[:3], rtol=1e-4, atol=1e-4)


def test_reproducible_on_cpu(cohort):
    X, age = cohort.images[:30], cohort.phenotypes["age"].to_numpy()[:30]
    a = BrainAgeCNNTransformer(**TINY, max_epochs=2, batch_size=8, random_state=3).fit(X, age)
    b = BrainAgeCNNTransformer(**TINY, max_epochs=2, batch_size=8, random_state=3).fit(X, age)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    c = BrainAgeCNNTransformer(**TINY, max_epochs=2, batch_size=8, random_state=4).fit(X, age)
    assert not np.array_equal(a.predict(X), c.predict(X))


def test_save_load_weights_only_and_frozen_mode(cohort, small_fit, tmp_path):
    X = cohort.images[:12]
    path = small_fit.save_weights(tmp_path / "brain_age.pt")
    state = torch.load(path, weights_only=True)  # loadable without unpickling code
    assert state["config"]["channels"] == [4, 4, 8, 8, 8]
    frozen = BrainAgeCNNTransformer.from_weights(path, device="cpu")
    # clone (as GridSearchCV does) keeps the path; fit loads, never trains
    fitted = clone(frozen).fit(X)
    assert len(fitted.net_.history) == 0
    np.testing.assert_allclose(fitted.transform(X), small_fit.transform(X), rtol=1e-6)
    np.testing.assert_allclose(fitted.predict(X), small_fit.predict(X), rtol=1e-6)
    # explicit architecture that contradicts the file is an error, not silently ignored
    with pytest.raises(ValueError, match="channels"):
        BrainAgeCNNTransformer(weights=path, frozen=True, channels=(8, 8, 8, 8, 8)).fit(X)
    with pytest.raises(ValueError, match="weights"):
        BrainAgeCNNTransformer(frozen=True).fit(X)
    with pytest.raises(ValueError, match=r"regression network|classification network"):
        ImagingCNNClassifier(weights=path, frozen=True).fit(X)
    # warm start from the weights (frozen=False) trains further
    warm = BrainAgeCNNTransformer(weights=path, max_epochs=1, budget_growth=1.0, device="cpu", random_state=0)
    warm.fit(X, cohort.phenotypes["age"].to_numpy()[:12])
    assert len(warm.net_.history) == 1


def test_paths_dataframe_workers_and_float16_cache(cohort, small_fit, tmp_path):
    ids = cohort.participant_ids[:6]
    X = cohort.images[:6]
    paths = _write(X, tmp_path, ids)
    df = pd.DataFrame({"image": paths}, index=pd.Index(ids, name="participant_id"))
    ref = small_fit.transform(X)
    np.testing.assert_allclose(small_fit.transform(df), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small_fit.transform(paths), ref, rtol=1e-5, atol=1e-6)
    workers = clone(small_fit).set_params(num_workers=1)
    workers.net_, workers.image_shape_ = small_fit.net_, small_fit.image_shape_
    workers.n_features_out_, workers.device_ = small_fit.n_features_out_, small_fit.device_
    np.testing.assert_allclose(workers.transform(df), ref, rtol=1e-5, atol=1e-6)
    cache = build_float16_cache(paths, tmp_path / "cache", ids)
    assert cache.dtype == np.float16 and cache.shape == (6, *SHAPE)
    np.testing.assert_allclose(cache, X, rtol=1e-3, atol=1e-4)
    assert build_float16_cache(paths, tmp_path / "cache", ids).filename == cache.filename
    # a fit over paths with the cache and DataFrame input; names for ColumnTransformer
    age = cohort.phenotypes["age"].to_numpy()[:6]
    est = BrainAgeCNNTransformer(**TINY, max_epochs=1, validation_fraction=0, early_stopping=False, lr_schedule="none",
                                 cache_dir=tmp_path / "cache", random_state=0).fit(df, age)
    assert list(est.feature_names_in_) == ["image"]
    ct = ColumnTransformer([("image", BrainAgeCNNTransformer.from_weights(
        small_fit.save_weights(tmp_path / "w.pt"), device="cpu"), ["image"])])
    out = ct.fit_transform(df.assign(other=1))
    assert out.shape == (6, 8)
    assert ct.get_feature_names_out()[0] == "image__h_v0"


def test_skorch_callbacks_are_used(cohort):
    from skorch.callbacks import LRScheduler

    X, age = cohort.images[:20], cohort.phenotypes["age"].to_numpy()[:20]
    est = BrainAgeCNNTransformer(**TINY, max_epochs=3, lr=1e-2, random_state=0, callbacks=[
        ("sched", LRScheduler(policy="StepLR", step_size=1, gamma=0.5))]).fit(X, age)
    assert est.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 3)
    assert "valid_loss" in est.net_.history[-1]


def test_bad_input_names_participant_or_file(cohort, small_fit, tmp_path):
    X = cohort.images[:8].copy()
    age = cohort.phenotypes["age"].to_numpy()[:8].copy()
    est = BrainAgeCNNTransformer(**TINY, max_epochs=1)
    Xn = X.copy()
    Xn[3, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="index 3"):
        est.fit(Xn, age)
    age_nan = age.copy()
    age_nan[5] = np.nan
    ids = cohort.participant_ids[:8]
    paths = _write(X, tmp_path, ids)
    df = pd.DataFrame({"image": paths}, index=ids)
    with pytest.raises(ValueError, match=ids[5]):
        est.fit(df, age_nan)
    with pytest.raises(ValueError, match="index of X and of y differ"):
        est.fit(df, pd.Series(age, index=ids[::-1]))
    missing = df.copy()
    missing.iloc[2, 0] = str(tmp_path / "nope.nii.gz")
    with pytest.raises(FileNotFoundError, match=ids[2]):
        small_fit.transform(missing)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"not a nifti at all" * 10))
    with pytest.raises(OSError, match="corrupt.nii.gz"):
        small_fit.transform([paths[0], str(corrupt)])
    with pytest.raises(ValueError, match=r"fitted on images of shape \(24, 28, 24\)"):
        small_fit.transform(np.zeros((2, 20, 28, 24), np.float32))
    wrong = _write([np.zeros((20, 28, 24))], tmp_path, ["odd"])
    with pytest.raises(ValueError, match="odd"):
        small_fit.transform([paths[0], wrong[0]])
    with pytest.raises(ValueError, match="too small"):
        BrainAgeCNNTransformer(device="cpu", max_epochs=1).fit(X, age)
    with pytest.raises(ValueError, match="exactly one column"):
        small_fit.transform(df.assign(extra=1))
    with pytest.raises(ValueError, match="shape"):
        small_fit.transform(np.zeros((3, 24, 28), np.float32))


@pytest.mark.parametrize("Est", [BrainAgeCNNTransformer, ImagingCNNClassifier])
def test_construction_checks(Est):
    name = Est.__name__
    check_no_attributes_set_in_init(name, Est())
    check_get_params_invariance(name, Est())
    check_set_params(name, Est())
    check_parameters_default_constructible(name, Est())


def test_early_stopping_on_validation_mae_and_lr_schedule(cohort):
    X, age = cohort.images[:120], cohort.phenotypes["age"].to_numpy()[:120]
    est = BrainAgeCNNTransformer(**TINY, max_epochs=8, n_iter_no_change=2, min_epochs=3, warmup_epochs=2,
                                 max_restarts=0, random_state=0).fit(X, age)
    mae = [h["valid_mae"] for h in est.history_]
    assert est.best_epoch_ == int(np.argmin(mae)) + 1 and est.n_epochs_ <= est.budget_ <= 16
    assert est.stop_reason_ in ("early_stopping", "budget")
    assert all(m > 0 for m in mae)  # in years, on the validation split
    # the recipe on the validation MAE: warm-up over 2 epochs, then halving after
    # n_iter_no_change // 2 = 1 epoch without improvement, from min_epochs on: replay it
    lr, best, bad, expected = 1e-3, np.inf, 0, []
    for epoch, m in enumerate(mae, start=1):
        expected.append(lr * min(1.0, epoch / 2))
        if m < best:
            best, bad = m, 0
        else:
            bad += 1
        if epoch >= 3 and bad >= 1:
            lr, bad = max(lr / 2, 1e-3 / 16), 0
    assert [h["lr"] for h in est.history_] == pytest.approx(expected)


def test_restart_from_a_fresh_initialisation_when_stalled(cohort):
    X, age = cohort.images[:40], cohort.phenotypes["age"].to_numpy()[:40]
    common = dict(**TINY, max_epochs=4, min_epochs=2, warmup_epochs=0, budget_growth=1.0, random_state=0)
    # a learning rate that cannot move the weights: the validation MAE stays at the mean predictor's
    stuck = BrainAgeCNNTransformer(**common, lr=1e-12, max_restarts=1).fit(X, age)
    assert stuck.n_restarts_ == 1  # the first run stopped at min_epochs; the last one runs its budget
    assert stuck.n_epochs_ == 4 and stuck.stop_reason_ == "budget"
    none = BrainAgeCNNTransformer(**common, lr=1e-12, max_restarts=0).fit(X, age)
    assert none.n_restarts_ == 0 and none.n_epochs_ == 4
    # the restart starts from other initial weights (a seed derived from random_state)
    assert not np.allclose(stuck.transform(X[:4]), none.transform(X[:4]))


def test_pool_blocks_auto_keeps_a_spatial_last_block(cohort, tmp_path):
    X, age = cohort.images[:30], cohort.phenotypes["age"].to_numpy()[:30]
    assert X.shape[1:] == (24, 28, 24)
    est = BrainAgeCNNTransformer(channels=(4, 4, 8, 8), padding=1, pool_blocks="auto", max_epochs=1,
                                 device="cpu", random_state=0).fit(X, age)
    # four pools would leave 1x1x1; three leave 3x3x3, so h_v is the flattened 8 x 3 x 3 x 3 block
    assert est.arch_["pool_blocks"] == 3 and est.n_features_out_ == 8 * 27
    path = est.save_weights(tmp_path / "auto.pt")
    frozen = BrainAgeCNNTransformer(weights=path, frozen=True, pool_blocks="auto").fit(X[:4])
    np.testing.assert_allclose(frozen.transform(X[:4]), est.transform(X[:4]), rtol=1e-6)
    with pytest.raises(ValueError, match="too small"):
        BrainAgeCNNTransformer(channels=(4,) * 6, padding=0, pool_blocks="auto", max_epochs=1,
                               device="cpu").fit(X[:4, :10, :10, :10], age[:4])
