"""BrainGenotypeScorer: multi-task CNN on images -> SNPs, masking, cross-fitting, bad input."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklearn_cgni.imaging import BrainAgeCNNTransformer, BrainGenotypeScorer, cross_fit_scores
from sklearn_cgni.imaging._genotype_scorer import _MaskedMultiSNPLoss, per_snp_correlation

SHAPE = (12, 14, 12)
TINY = dict(channels=(4, 8), padding=1, pool_blocks=2, device="cpu", validation_fraction=0, early_stopping=False,
            lr_schedule="none")


def _data(n=48, n_snps=4, seed=0):
    """SNP 0 adds gray matter to one corner block (a planted, learnable effect)."""
    rng = np.random.default_rng(seed)
    G = rng.integers(0, 3, size=(n, n_snps)).astype(float)
    G[:, 0] = np.repeat([0.0, 1.0, 2.0], n // 3 + 1)[:n]
    rng.shuffle(G[:, 0])
    X = rng.normal(0.0, 0.3, size=(n, *SHAPE)).astype(np.float32)
    X[:, 1:6, 1:6, 1:6] += G[:, 0, None, None, None]
    ids = [f"sub-{i:03d}" for i in range(n)]
    return X, pd.DataFrame(G, index=ids, columns=[f"rs{j}" for j in range(n_snps)])


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("task", ["classes", "dosage"])
def test_learns_planted_snp_and_shapes(data, task):
    X, G = data
    s = BrainGenotypeScorer(task, **TINY, max_epochs=15, lr=3e-3, random_state=0).fit(X[:36], G[:36])
    scores = s.transform(X[36:])
    assert scores.shape == (12, 4)
    assert list(s.get_feature_names_out()) == list(G.columns)
    r = per_snp_correlation(scores, G.to_numpy()[36:])
    assert r[0] > 0.8, r           # the planted SNP is predicted on held-out images
    if task == "classes":
        proba = s.predict_proba(X[36:])
        assert proba.shape == (12, 4, 3)
        np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
        np.testing.assert_allclose(scores, proba @ [0, 1, 2], atol=1e-6)
        assert set(np.unique(s.predict(X[36:]))) <= {0.0, 1.0, 2.0}
    else:
        with pytest.raises(AttributeError, match="task='classes'"):
            s.predict_proba(X[:2])


def test_missing_calls_are_masked_out_of_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 3)
    y = torch.randint(0, 3, (5, 3))
    y_missing = y.clone()
    y_missing[0, 1] = -100
    keep = torch.ones(5, 3, dtype=bool)
    keep[0, 1] = False
    expected = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(_MaskedMultiSNPLoss("classes")(logits, y_missing), expected)
    pred, target = torch.randn(5, 3), torch.randn(5, 3)
    target_nan = target.clone()
    target_nan[2, 0] = float("nan")
    keep = ~torch.isnan(target_nan)
    got = _MaskedMultiSNPLoss("dosage")(pred, target_nan)
    assert torch.allclose(got, ((pred - target)[keep] ** 2).mean())


def test_fit_with_nan_calls_and_counts_them(data):
    X, G = data
    G = G.copy()
    G.iloc[:5, 1] = np.nan
    s = BrainGenotypeScorer(**TINY, max_epochs=1, random_state=0).fit(X, G)
    assert s.n_missing_ == 5
    assert s.class_counts_[1].sum() == len(G) - 5
    assert np.isfinite(s.net_.history[-1, "train_loss"])


def test_dosage_mode_accepts_imputed_dosages_classes_mode_refuses(data):
    X, G = data
    Gd = G.copy()
    Gd.iloc[0, 2] = 0.37
    BrainGenotypeScorer("dosage", **TINY, max_epochs=1, random_state=0).fit(X, Gd)
    with pytest.raises(ValueError, match=r"sub-000.*0.37.*rs2.*task='dosage'"):
        BrainGenotypeScorer("classes", **TINY, max_epochs=1).fit(X, Gd)


def test_snp_without_variation_is_an_error_naming_it(data):
    X, G = data
    G = G.copy()
    G["rs_flat"] = 1.0
    G.iloc[3, -1] = np.nan                      # monomorphic among observed calls
    with pytest.raises(ValueError, match=r"no variation.*rs_flat"):
        BrainGenotypeScorer(**TINY, max_epochs=1).fit(X, G)
    G2 = G.drop(columns="rs_flat")
    G2["rs_empty"] = np.nan
    with pytest.raises(ValueError, match=r"no observed call.*rs_empty"):
        BrainGenotypeScorer(**TINY, max_epochs=1).fit(X, G2)


def test_more_snps_than_the_head_was_fitted_for(data, tmp_path):
    X, G = data
    s = BrainGenotypeScorer(**TINY, max_epochs=1, random_state=0).fit(X, G)
    assert s.transform(X[:3], snps=["rs2", "rs0"]).shape == (3, 2)
    np.testing.assert_allclose(s.transform(X[:3], snps=[2]), s.transform(X[:3])[:, [2]])
    with pytest.raises(ValueError, match=r"not among the 4 SNPs the head was fitted for.*rs9"):
        s.transform(X[:3], snps=["rs0", "rs9"])
    with pytest.raises(ValueError, match="fitted for 4 SNPs"):
        s.transform(X[:3], snps=[7])
    path = s.save_weights(tmp_path / "scorer.pt")
    G_more = G.assign(rs4=G["rs1"], rs5=G["rs2"])
    with pytest.raises(ValueError, match=r"head for 4 SNPs but G has 6"):
        BrainGenotypeScorer(**TINY, weights=path, max_epochs=1).fit(X, G_more)
    # frozen reload gives identical scores
    frozen = BrainGenotypeScorer(weights=path, frozen=True, device="cpu").fit(X[:3])
    np.testing.assert_allclose(frozen.transform(X[:3]), s.transform(X[:3]), atol=1e-6)
    assert list(frozen.snp_names_) == list(G.columns)


def test_bad_shapes_and_lengths(data):
    X, G = data
    with pytest.raises(ValueError, match="48 images but genotypes for 47"):
        BrainGenotypeScorer(**TINY, max_epochs=1).fit(X, G.iloc[:47])
    with pytest.raises(ValueError, match="genotypes G"):
        BrainGenotypeScorer(**TINY, max_epochs=1).fit(X, None)
    s = BrainGenotypeScorer(**TINY, max_epochs=1, random_state=0).fit(X, G)
    with pytest.raises(ValueError, match="shape"):
        s.transform(np.zeros((2, 10, 10, 10), np.float32))


def test_initialised_from_brain_age_model(data, tmp_path):
    X, G = data
    age = np.random.default_rng(1).uniform(45, 80, len(X))
    src = BrainAgeCNNTransformer(**TINY, max_epochs=1, random_state=0).fit(X, age)
    s = BrainGenotypeScorer(brain_age_model=FrozenEstimator(src), freeze_transferred=True,
                            max_epochs=1, device="cpu", validation_fraction=0,
                            random_state=0).fit(X, G)
    assert s.n_transferred_blocks_ == 2 and s.arch_["channels"] == (4, 8)
    for k, v in src.module_.backbone.state_dict().items():
        torch.testing.assert_close(s.module_.backbone.state_dict()[k], v)
    # path source, one block; clone of a plain fitted model raises a clear error
    path = src.save_weights(tmp_path / "age.pt")
    s1 = BrainGenotypeScorer(brain_age_model=path, n_transfer_blocks=1, max_epochs=1,
                             device="cpu", validation_fraction=0).fit(X, G)
    assert s1.n_transferred_blocks_ == 1
    with pytest.raises(ValueError, match="not fitted"):
        clone(BrainGenotypeScorer(brain_age_model=src, max_epochs=1)).fit(X, G)


def test_cross_fit_scores_are_held_out(data):
    X, G = data
    est = BrainGenotypeScorer("dosage", **TINY, max_epochs=8, lr=3e-3, random_state=0)
    scores, models = cross_fit_scores(est, X, G, cv=3, return_estimators=True)
    assert scores.shape == G.shape and list(scores.index) == list(G.index)
    assert not scores.isna().any().any()
    r = per_snp_correlation(scores.to_numpy(), G.to_numpy())
    assert r[0] > 0.7, r
    # each participant's score equals its own fold's model on it, not a model trained on it
    from sklearn.model_selection import KFold

    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    train0, test0 = folds[0]
    np.testing.assert_allclose(scores.to_numpy()[test0], models[0].transform(X[test0]), atol=1e-5)
    with pytest.raises(ValueError, match="exactly once"):
        from sklearn.model_selection import ShuffleSplit

        cross_fit_scores(est, X, G, cv=ShuffleSplit(2, test_size=0.2, random_state=0))


def test_paths_input(data, tmp_path):
    X, G = data
    paths = []
    for i in range(12):
        p = tmp_path / f"{G.index[i]}.nii.gz"
        nib.save(nib.Nifti1Image(X[i], np.eye(4)), p)
        paths.append(str(p))
    series = pd.Series(paths, index=G.index[:12])
    s = BrainGenotypeScorer(**TINY, max_epochs=1, random_state=0).fit(series, G.iloc[:12])
    np.testing.assert_allclose(s.transform(series), s.transform(X[:12]), atol=1e-5)


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance,
                                   check_set_params, check_parameters_default_constructible])
def test_construction_checks(check):
    check("BrainGenotypeScorer", BrainGenotypeScorer())


def test_cross_fit_refuses_snp_monomorphic_in_a_training_fold(data):
    X, G = data
    G = G.copy()
    G["rs_rare"] = 0.0
    G.iloc[0, -1] = 1.0                          # one carrier: flat in the folds without it
    with pytest.raises(ValueError, match=r"rs_rare.*no variation in the training participants of fold"):
        cross_fit_scores(BrainGenotypeScorer(**TINY, max_epochs=1), X, G, cv=3)


def test_weights_saved_with_another_configuration_are_refused(data, tmp_path):
    X, G = data
    path = BrainGenotypeScorer(**TINY, max_epochs=1, random_state=0).fit(X, G).save_weights(
        tmp_path / "w.pt")
    with pytest.raises(ValueError, match="saved with standardize_voxels=True"):
        BrainGenotypeScorer(weights=path, frozen=True, standardize_voxels=False, device="cpu").fit(X)
    with pytest.raises(ValueError, match="saved with task='classes'"):
        BrainGenotypeScorer("dosage", **TINY, weights=path, max_epochs=1).fit(X, G)


@pytest.mark.parametrize("backend", ["auto", "eager", "mkldnn"])
def test_transform_keeps_the_voxel_standardisation_in_every_inference_backend(data, backend):
    """Gray matter is not centred: every backend must z-score voxels as the training forward did."""
    import torch

    if backend == "mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN not available")
    X, G = data
    anatomy = np.linspace(0.2, 0.8, X[0].size, dtype=np.float32).reshape(SHAPE)  # a voxel-dependent mean
    X = anatomy + 0.1 * X
    s = BrainGenotypeScorer("dosage", **TINY, max_epochs=15, lr=3e-3, inference_backend=backend,
                            random_state=0).fit(X[:36], G[:36])
    assert s.recalibrate_bn  # running statistics re-estimated with the final weights (the default)
    with torch.no_grad():
        eager = s.module_.eval()(torch.from_numpy(X[36:])).numpy() * s.y_scale_ + s.y_mean_
    np.testing.assert_allclose(s.transform(X[36:]), eager, rtol=1e-4, atol=1e-5)
    assert per_snp_correlation(s.transform(X[36:]), G.to_numpy()[36:])[0] > 0.8


@pytest.mark.parametrize("task", ["classes", "dosage"])
def test_validation_r_is_the_mean_per_snp_correlation_and_nan_safe(task):
    est = BrainGenotypeScorer(task)
    rng = np.random.default_rng(0)
    G = rng.integers(0, 3, size=(30, 3)).astype(float)
    G[:, 2] = 1.0                           # constant on this split: left out, not NaN
    G[0, 0] = np.nan                        # a missing call: left out of SNP 0's correlation
    scores = G + rng.normal(0, 1, size=G.shape)
    if task == "classes":
        y_true = np.where(np.isnan(G), -100, G).astype(np.int64)
        # logits whose softmax-expected dosage is known
        p2 = np.clip(scores / 2, 0.01, 0.99)
        logits = np.log(np.stack([1 - p2, np.full_like(p2, 1e-6), p2], axis=-1))
        expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) @ [0.0, 1.0, 2.0]
        got = est._validation_r(y_true, logits)
    else:
        y_true, expected = G.astype(np.float32), scores
        got = est._validation_r(y_true, scores.astype(np.float32))
    want = per_snp_correlation(expected, G)[:2]
    assert np.isfinite(want).all()
    assert got == pytest.approx(want.mean(), abs=1e-5)
    flat_pred = np.zeros((5, 2, 3) if task == "classes" else (5, 2), dtype=np.float32)
    assert est._validation_r(np.ones((5, 2), dtype=np.int64), flat_pred) == 0.0  # nothing to correlate


def test_early_stopping_on_validation_r_keeps_the_best_epoch(data):
    X, G = data
    tiny = {**TINY, "validation_fraction": 0.25, "early_stopping": True, "lr_schedule": "plateau"}
    s = BrainGenotypeScorer("dosage", **tiny, max_epochs=12, n_iter_no_change=3, lr=3e-3, random_state=0).fit(X, G)
    r = [h["valid_r"] for h in s.history_]
    assert len(r) == s.n_epochs_ <= s.budget_ <= 24 and all(-1 <= v <= 1 for v in r)
    assert s.best_epoch_ == int(np.argmax(r)) + 1
    assert max(r) > 0.1  # SNP 0 of 4 is learnable: its validation r lifts the mean
    assert s.net_.history[-1]["epoch"] == s.n_epochs_


def test_cross_fit_select_chooses_snps_per_fold_on_training_rows_only(data):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    class RidgeScorer(Ridge):
        def fit(self, X, G):
            return super().fit(X, np.nan_to_num(np.asarray(G, dtype=float)))

        def transform(self, X):
            return self.predict(X)

    X, G = data
    flat = X.reshape(len(X), -1)
    seen = []

    def select(train):
        seen.append(np.asarray(train))
        return ["rs0", "rs1"] if len(seen) == 1 else ["rs0", "rs3"]

    est = RidgeScorer(1.0)
    scores = cross_fit_scores(est, flat, G, cv=3, select=select)
    assert list(scores.columns) == ["rs0", "rs1", "rs3"]
    folds = list(KFold(3, shuffle=True, random_state=0).split(flat))
    for (train, test), got in zip(folds, seen):
        np.testing.assert_array_equal(train, got)   # select saw the fold's training rows only
    test0, rest = folds[0][1], np.concatenate([folds[1][1], folds[2][1]])
    assert scores["rs0"].notna().all()
    assert scores["rs1"].iloc[test0].notna().all() and scores["rs1"].iloc[rest].isna().all()
    assert scores["rs3"].iloc[test0].isna().all() and scores["rs3"].iloc[rest].notna().all()
    with pytest.raises(ValueError, match="not both"):
        cross_fit_scores(est, flat, G, cv=3, select=select, snps=["rs0"])
    with pytest.raises(ValueError, match="not columns of G"):
        cross_fit_scores(est, flat, G, cv=3, select=lambda tr: ["rs9"])
