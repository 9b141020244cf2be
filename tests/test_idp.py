"""IDP baseline: regional means (streamed), per-SNP ridge / logistic scores, cross-fitting."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from sklearn_cgni.imaging import IDPGenotypeScorer, RegionalMeans, cross_fit_scores, make_idp_scorer
from sklearn_cgni.imaging._genotype_scorer import per_snp_correlation

SHAPE = (6, 6, 6)


def _atlas(affine=np.eye(4)):
    lab = np.zeros(SHAPE, dtype=np.int16)
    lab[:3, :3] = 1
    lab[3:, :3] = 2
    lab[:, 3:] = 3
    return Bunch(img=nib.Nifti1Image(lab, affine),
                 labels=pd.DataFrame({"index": [1, 2, 3, 9], "name": ["A", "B", "C", "Absent"]}))


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    G = pd.DataFrame(rng.integers(0, 3, size=(n, 3)).astype(float), columns=["rs0", "rs1", "rs2"],
                     index=[f"sub-{i:03d}" for i in range(n)])
    X = rng.normal(0.5, 0.05, size=(n, *SHAPE)).astype(np.float32)
    X[:, 3:, :3] += 0.05 * G["rs0"].to_numpy()[:, None, None, None]     # rs0 -> region B
    return X, G


def test_regional_means_streamed_and_exact():
    X, _ = _data(10)
    with pytest.warns(UserWarning, match=r"no voxel.*Absent"):
        rm = RegionalMeans(_atlas()).fit(X)
    out = rm.transform(X)
    assert list(rm.region_names_) == ["A", "B", "C"] and out.shape == (10, 3)
    np.testing.assert_allclose(out[:, 1], X[:, 3:, :3].reshape(10, -1).mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        rm.transform(np.zeros((2, 5, 5, 5), np.float32))


def test_regional_means_from_paths_and_grid_errors(tmp_path):
    X, G = _data(4)
    paths = []
    for pid, img in zip(G.index, X):
        p = tmp_path / f"{pid}.nii"
        nib.save(nib.Nifti1Image(img, np.eye(4)), p)
        paths.append(str(p))
    series = pd.Series(paths, index=G.index)
    with pytest.warns(UserWarning):
        df = RegionalMeans(_atlas()).fit_transform(series)
    assert isinstance(df, pd.DataFrame) and list(df.index) == list(G.index)
    bigger = Bunch(img=nib.Nifti1Image(np.ones((7, 7, 7), np.int16), np.eye(4)),
                   labels=pd.DataFrame({"index": [1], "name": ["A"]}))
    with pytest.raises(ValueError, match="affine is unknown"):
        RegionalMeans(bigger).fit(X)
    with pytest.raises(ValueError, match="needs their affine"):
        RegionalMeans().fit(X)


@pytest.mark.parametrize("task", ["dosage", "classes"])
def test_cross_fitted_idp_scores_find_the_planted_snp(task):
    X, G = _data(150)
    with pytest.warns(UserWarning):
        scores = cross_fit_scores(make_idp_scorer(_atlas(), task), X, G, cv=5)
    r = per_snp_correlation(scores.to_numpy(), G.to_numpy())
    assert r[0] > 0.6 and np.all(np.abs(r[1:]) < 0.3), r
    assert list(scores.columns) == ["rs0", "rs1", "rs2"]


def test_missing_calls_dropped_per_snp_and_bad_snps():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    G = rng.integers(0, 3, size=(40, 2)).astype(float)
    G[:6, 1] = np.nan
    s = IDPGenotypeScorer("classes").fit(X, G)
    assert s.estimators_[1].n_features_in_ == 4 and s.transform(X).shape == (40, 2)
    G[:, 0] = 2.0
    with pytest.raises(ValueError, match=r"no variation.*snp0"):
        IDPGenotypeScorer().fit(X, G)
    with pytest.raises(ValueError, match="classes 0, 1 or 2"):
        IDPGenotypeScorer("classes").fit(X, np.full((40, 1), 0.5) + rng.integers(0, 2, (40, 1)))


@parametrize_with_checks([IDPGenotypeScorer(), IDPGenotypeScorer("classes")],
                         expected_failed_checks=lambda est: {
                             "check_fit2d_1sample": "one sample has no variation: a clear "
                                                    "error naming the SNP, by design",
                         } | ({} if est.task == "dosage" else {
                             "check_dtype_object": "draws targets 0..3; class mode accepts "
                                                   "only genotype classes 0/1/2 (clear error)",
                         }))
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance,
                                   check_set_params, check_parameters_default_constructible])
def test_regional_means_construction_checks(check):
    check("RegionalMeans", RegionalMeans())
