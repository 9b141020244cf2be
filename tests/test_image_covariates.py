"""ImageCovariateRegressor: voxel-wise covariate adjustment of NIfTI images, fitted on training rows only."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from sklearn_cgni.evaluation import CovariateRegressor, ImageCovariateRegressor, evaluate_confounds

SHAPE = (6, 7, 5)


def _write(folder, images, ids):
    paths = []
    for pid, img in zip(ids, images):
        p = folder / f"{pid}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """60 images: intensity = base + age slope map + site offsets + noise."""
    rng = np.random.default_rng(0)
    n = 60
    ids = [f"sub-{i:03d}" for i in range(n)]
    age = rng.uniform(40, 70, n)
    sex = rng.integers(0, 2, n)
    site = rng.choice(["A", "B", "C"], n)
    slope = rng.normal(-0.01, 0.005, SHAPE)
    offset = {"A": 0.0, "B": 0.05, "C": -0.03}
    base = rng.uniform(0.3, 0.8, SHAPE)
    images = np.stack([base + slope * a + 0.02 * s + offset[t] + 0.01 * rng.standard_normal(SHAPE)
                       for a, s, t in zip(age, sex, site)])
    paths = _write(tmp_path_factory.mktemp("imgs"), images, ids)
    X = pd.DataFrame({"image": paths, "age": age, "sex": sex, "site": site}, index=ids)
    return X, images, slope


def test_matches_covariate_regressor_on_flattened_voxels(cohort):
    X, images, _ = cohort
    train, test = np.arange(40), np.arange(40, 60)
    adj = ImageCovariateRegressor(["age", "sex", "site"], categorical=["site"]).fit(X.iloc[train])
    flat = pd.DataFrame(images.reshape(len(images), -1), index=X.index).add_prefix("v")
    flat[["age", "sex", "site"]] = X[["age", "sex", "site"]]
    ref = CovariateRegressor(["age", "sex", "site"], categorical=["site"]).fit(flat.iloc[train])
    assert adj.design_names_ == ref.design_names_ == ["age", "sex", "site=B", "site=C"]
    np.testing.assert_allclose(adj.coef_.reshape(4, -1), ref.coef_.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(adj.intercept_.ravel(), ref.intercept_, rtol=1e-4, atol=1e-5)
    for rows in (train, test):
        out = adj.transform(X.iloc[rows])
        assert out.shape == (len(rows),) + SHAPE and out.dtype == np.float32
        np.testing.assert_allclose(out.reshape(len(rows), -1), ref.transform(flat.iloc[rows]), atol=1e-5)
    np.testing.assert_allclose(adj.fit_transform(X.iloc[train]), adj.transform(X.iloc[train]), atol=1e-6)


def test_removes_the_planted_age_effect_and_keeps_the_scale(cohort):
    X, images, slope = cohort
    adj = ImageCovariateRegressor(["age", "sex", "site"]).fit(X)
    age_map = adj.coef_[adj.design_names_.index("age")]
    assert np.corrcoef(age_map.ravel(), slope.ravel())[0, 1] > 0.95
    out = adj.transform(X)
    r_before = [abs(np.corrcoef(images[(slice(None),) + v], X["age"])[0, 1]) for v in np.ndindex(SHAPE)]
    r_after = [abs(np.corrcoef(out[(slice(None),) + v], X["age"])[0, 1]) for v in np.ndindex(SHAPE)]
    assert np.median(r_before) > 0.5 and max(r_after) < 1e-3
    np.testing.assert_allclose(out.mean(axis=0), images.mean(axis=0), atol=1e-5)  # residual + training mean
    np.testing.assert_allclose(adj.mean_image_, images.mean(axis=0), atol=1e-5)


def test_transform_applies_training_coefficients_and_learns_nothing(cohort):
    X, images, _ = cohort
    X = X.drop(columns="site")
    train, test = np.arange(40), np.arange(40, 60)
    a = ImageCovariateRegressor(["age", "sex"]).fit(X.iloc[train])
    coef, mean = a.coef_.copy(), a.covariate_mean_.copy()
    # transforming the test rows (with scrambled covariates) must not change what was learned
    X2 = X.copy()
    X2.iloc[test, X2.columns.get_loc("age")] = np.random.default_rng(1).permutation(X2["age"].iloc[test].to_numpy())
    out = a.transform(X2.iloc[test])
    np.testing.assert_array_equal(a.coef_, coef)
    np.testing.assert_array_equal(a.covariate_mean_, mean)
    # each output uses only that participant's image and covariates, with the training coefficients
    for j, i in enumerate(test):
        expected = images[i] - sum(c * (X2.iloc[i][n] - m) for c, n, m in zip(coef, a.design_names_, mean))
        np.testing.assert_allclose(out[j], expected, atol=1e-5)
    # and the training coefficients differ from those of a fit that includes the test rows
    assert not np.allclose(ImageCovariateRegressor(["age", "sex"]).fit(X).coef_, coef)


def test_memory_map_output(cohort, tmp_path):
    X = cohort[0][["image", "age"]]
    mem = ImageCovariateRegressor(["age"]).fit(X).transform(X)
    mm = ImageCovariateRegressor(["age"], output_dir=tmp_path / "res", n_jobs=2).fit(X).transform(X)
    assert isinstance(mm, np.memmap)
    files = list((tmp_path / "res").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), mem)


def test_clear_errors(cohort, tmp_path):
    X, images, _ = cohort
    with pytest.raises(ValueError, match="must be a DataFrame"):
        ImageCovariateRegressor([0]).fit(X.to_numpy())
    with pytest.raises(ValueError, match="name the one holding the NIfTI paths"):
        ImageCovariateRegressor(["age"]).fit(X)  # sex and site are not covariates here: 3 other columns
    with pytest.raises(ValueError, match="image_column 'img'"):
        ImageCovariateRegressor(["age", "sex", "site"], image_column="img").fit(X)
    with pytest.raises(ValueError, match="'agee'.*Did you mean 'age'"):
        ImageCovariateRegressor(["agee"]).fit(X[["image", "age"]])
    bad = X[["image", "age"]].copy()
    bad.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="'age' is NaN.*sub-003"):
        ImageCovariateRegressor(["age"]).fit(bad)
    odd = X[["image", "age"]].copy()
    odd.iloc[5, 0] = _write(tmp_path, [np.zeros((6, 7, 6))], ["odd"])[0]
    with pytest.raises(ValueError, match="sub-005.*odd.nii.gz"):
        ImageCovariateRegressor(["age"]).fit(odd)
    missing = X[["image", "age"]].copy()
    missing.iloc[7, 0] = str(tmp_path / "gone.nii.gz")
    fitted = ImageCovariateRegressor(["age"]).fit(X[["image", "age"]].iloc[:5])
    with pytest.raises(FileNotFoundError, match="sub-007.*gone.nii.gz"):
        fitted.transform(missing)
    assert not hasattr(fitted, "get_feature_names_out")  # images have no feature names
    assert clone(fitted).get_params()["covariates"] == ["age"]


def test_in_a_pipeline_before_the_imaging_cnn_inside_evaluate_confounds(cohort):
    from sklearn_cgni.imaging import ImagingCNNClassifier

    X, _, _ = cohort
    y = (X["age"] < X["age"].median()).astype(int).to_numpy()  # a label that is all age
    cnn = ImagingCNNClassifier(channels=(2, 4), padding=1, pool_blocks=2, global_pool="avg", max_epochs=1,
                               batch_size=10, validation_fraction=0.0, early_stopping=False, lr_schedule="none", device="cpu", random_state=0)
    raw = Pipeline([("cnn", cnn)])
    adjusted = Pipeline([("adjust", ImageCovariateRegressor(["age", "sex"])), ("cnn", clone(cnn))])
    res = evaluate_confounds({"CNN": raw}, X[["image"]], y, X[["age", "sex"]], cv=StratifiedKFold(2),
                             adjust={"CNN": adjusted}, match=False, n_permutations=10, random_state=0)
    row = res.summary.set_index("model").loc["CNN"]
    assert np.isfinite(row[["raw_mean", "adjusted_mean", "gain_mean"]].astype(float)).all()
    assert res.summary.set_index("model").loc["covariates: age", "raw_mean"] > 0.9


def test_adjusted_image_scores_fit_each_fold_on_its_training_images(cohort, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import FunctionTransformer

    from sklearn_cgni.evaluation import adjusted_image_scores

    X, _, _ = cohort
    X = X[["image", "age", "site"]]
    y = (X["age"].to_numpy() > 55).astype(int)  # age alone: adjusted images lose it
    model = Pipeline([("flat", FunctionTransformer(lambda a: np.asarray(a).reshape(len(a), -1))),
                      ("logistic", LogisticRegression(max_iter=500))])
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    made = []
    scores, adjusters, models = adjusted_image_scores(lambda k: made.append(k) or clone(model), X, y,
                                                      covariates=["age", "site"], categorical=["site"], cv=folds,
                                                      scratch_dir=tmp_path, max_memory=0, return_adjusters=True,
                                                      return_models=True)
    assert made == [0, 1, 2] and scores.shape == (3,) and list(tmp_path.iterdir()) == []  # memory maps removed
    for (train, test), score, adj, fold_model in zip(folds, scores, adjusters, models):
        ref = ImageCovariateRegressor(["age", "site"], categorical=["site"]).fit(X.iloc[train])
        np.testing.assert_allclose(adj.coef_, ref.coef_, atol=1e-6)
        fitted = clone(model).fit(ref.transform(X.iloc[train]), y[train])
        # the returned model is the one fitted on that fold's adjusted training images
        np.testing.assert_allclose(fold_model.named_steps["logistic"].coef_, fitted.named_steps["logistic"].coef_,
                                   rtol=1e-5, atol=1e-7)
        assert score == pytest.approx(balanced_accuracy_score(y[test], fitted.predict(ref.transform(X.iloc[test]))))
    images = np.stack([nib.load(p).get_fdata() for p in X["image"]])
    raw = [balanced_accuracy_score(y[te], clone(model).fit(images[tr], y[tr]).predict(images[te])) for tr, te in folds]
    assert scores.mean() < np.mean(raw)
    with pytest.raises(ValueError, match="one image column"):
        adjusted_image_scores(model, X.assign(other=1), y, covariates=["age"], cv=folds)


def test_image_source_minus_subtracts_each_images_combination_of_maps_when_read():
    from sklearn_cgni.io import check_images

    rng = np.random.default_rng(1)
    images = rng.standard_normal((5,) + SHAPE).astype(np.float32)
    maps = rng.standard_normal((2,) + SHAPE).astype(np.float32)
    weights = rng.standard_normal((5, 2)).astype(np.float32)
    source = check_images(images)
    adjusted = source.minus(maps, weights)
    expected = images - np.einsum("nk,kxyz->nxyz", weights, maps)
    np.testing.assert_allclose(np.stack([adjusted.load(i) for i in range(5)]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(source.load(2), images[2])  # the source itself is unchanged
    sub = adjusted.subset([4, 1])  # a subset keeps each image's own weights
    np.testing.assert_allclose(sub.load(0), expected[4], rtol=1e-5, atol=1e-5)
    assert sub.participant_ids == ["index 4", "index 1"]
    twice = adjusted.minus(maps[:1], np.ones((5, 1)))  # a second adjustment adds to the first
    np.testing.assert_allclose(twice.load(3), expected[3] - maps[0], rtol=1e-5, atol=1e-5)
    backed = check_images(images).minus(maps, weights).backed_by(images[::-1].copy(), rows=[4, 3, 2, 1, 0])
    np.testing.assert_allclose(backed.load(1), expected[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"maps must have shape \(k, 6, 7, 5\)"):
        source.minus(maps[:, :2], weights)
    with pytest.raises(ValueError, match=r"weights must have shape \(5, 2\)"):
        source.minus(maps, weights[:3])
    with pytest.raises(ValueError, match="finite"):
        source.minus(maps, np.full((5, 2), np.nan))


def test_lazy_output_reads_the_same_adjusted_images_from_a_given_source(cohort, tmp_path):
    from sklearn_cgni.io import check_images

    X, images, _ = cohort
    X = X[["image", "age", "site"]]
    train, test = np.arange(40), np.arange(40, 60)
    eager = ImageCovariateRegressor(["age", "site"], categorical=["site"]).fit(X.iloc[train])
    # the same images as a float32 array source with the files' paths (as the run's cache, without float16)
    decoded = np.stack([img for _, img in check_images(X["image"]).iter_arrays()])
    source = check_images(X["image"]).backed_by(decoded)
    lazy = ImageCovariateRegressor(["age", "site"], categorical=["site"], lazy=True)
    out = lazy.fit_transform(X.iloc[train], images=source.subset(train))
    np.testing.assert_array_equal(lazy.coef_, eager.coef_)
    assert type(out).__name__ == "ImageSource" and len(out) == 40 and out.paths == list(X["image"].iloc[train])
    for rows in (train, test):
        got = lazy.transform(X.iloc[rows], images=source.subset(rows))
        np.testing.assert_array_equal(np.stack([img for _, img in got.iter_arrays()]),
                                      eager.transform(X.iloc[rows]))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="images row 0 is participant 'sub-040'.*sub-000.nii.gz"):
        lazy.transform(X.iloc[train], images=source.subset(test[:1].tolist() + train[1:].tolist()))
    with pytest.raises(ValueError, match="images holds 20 images but X has 40 rows"):
        lazy.transform(X.iloc[train], images=source.subset(test))
    with pytest.raises(ValueError, match="output_dir=.* must then be None"):
        ImageCovariateRegressor(["age"], lazy=True, output_dir=tmp_path).fit(X[["image", "age"]])


def test_adjusted_image_scores_lazy_from_a_source_equal_the_materialized_scores(cohort, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    from sklearn_cgni.evaluation import adjusted_image_scores
    from sklearn_cgni.io import check_images

    X, _, _ = cohort
    X = X[["image", "age", "site"]]
    y = (X["age"].to_numpy() > 55).astype(int)

    def flat(a):  # an array, or an ImageSource read one image at a time
        a = np.stack([img for _, img in a.iter_arrays()]) if hasattr(a, "iter_arrays") else np.asarray(a)
        return a.reshape(len(a), -1)

    model = Pipeline([("flat", FunctionTransformer(flat)), ("logistic", LogisticRegression(max_iter=500))])
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    eager = adjusted_image_scores(model, X, y, covariates=["age", "site"], categorical=["site"], cv=folds)
    decoded = np.stack([img for _, img in check_images(X["image"]).iter_arrays()])
    lazy = adjusted_image_scores(model, X, y, covariates=["age", "site"], categorical=["site"], cv=folds,
                                 images=check_images(X["image"]).backed_by(decoded), lazy=True,
                                 scratch_dir=tmp_path, max_memory=0)
    np.testing.assert_array_equal(lazy, eager)
    assert list(tmp_path.iterdir()) == []  # nothing written, whatever max_memory says
    with pytest.raises(ValueError, match="images row 0"):
        adjusted_image_scores(model, X, y, covariates=["age", "site"], cv=folds,
                              images=check_images(X["image"].iloc[::-1]))
