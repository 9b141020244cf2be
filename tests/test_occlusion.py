"""Tests for OcclusionExplainer (eq. 6 of the seed paper)."""

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils import Bunch

from sklearn_cgni.explain import OcclusionExplainer, SparseCCA
from sklearn_cgni.nn import Encoder

SHAPE = (12, 14, 12)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _atlas():
    """Six box regions (labels 11..16) and a background margin."""
    data = np.zeros(SHAPE, dtype=np.int32)
    label = 11
    for x0 in (1, 6):
        for y0 in (1, 5, 9):
            data[x0:x0 + 5, y0:y0 + 4, 1:11] = label
            label += 1
    labels = pd.DataFrame({"index": range(11, 17), "name": [f"R{i}" for i in range(6)]})
    return Bunch(img=nib.Nifti1Image(data, AFFINE), labels=labels)


class RegionMeans(torch.nn.Module):
    """f_v: the mean intensity of each atlas region (a linear 'CNN')."""

    def __init__(self, atlas):
        super().__init__()
        data = np.asarray(atlas.img.dataobj)
        masks = np.stack([(data == v).ravel() / (data == v).sum() for v in atlas.labels["index"]])
        self.register_buffer("m", torch.as_tensor(masks, dtype=torch.float32))

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.m.T


def _images(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 + 0.1 * rng.standard_normal((n, *SHAPE))).astype(np.float32)


def test_region_contributions_match_eq6_for_a_linear_model():
    atlas = _atlas()
    f_v = RegionMeans(atlas)
    e_v = torch.nn.Linear(6, 3, bias=True)
    with torch.no_grad():
        e_v.weight.copy_(torch.tensor([[0.0, 0, 0, 5.0, 0, 0.1],
                                       [0.0, -4.0, 0, 0, 0.1, 0],
                                       [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]))
    images = _images()
    cca = (np.array([[1.0, 0.0], [0.0, -0.5], [0.1, 0.1]]), np.eye(3)[:, :2])
    occ = OcclusionExplainer(cca, feature_extractor=f_v, image_encoder=e_v, atlas=atlas,
                             region_threshold=1.5, batch_size=4).fit(images)
    means = np.stack([images[:, np.asarray(atlas.img.dataobj) == v].mean(axis=1)
                      for v in atlas.labels["index"]], axis=1).mean(axis=0)
    expected = e_v.weight.detach().numpy()[[0, 1]].T * means[:, None]
    np.testing.assert_allclose(occ.region_contributions_.to_numpy(), expected, rtol=1e-4, atol=1e-6)
    assert list(occ.image_nodes_) == [0, 1]
    sig = occ.significant_regions_
    assert sig[sig.component == 1].region.tolist() == ["R3"]
    assert sig[sig.component == 2].region.tolist() == ["R1"]
    # component 1: positive weight, positive contribution -> +1; component 2: negative
    # canonical weight and negative contribution -> +1 as well
    assert sig.sign.tolist() == [1, 1]
    assert sig.label.tolist() == [14, 12]
    # one forward per region, one for the background, one unoccluded, per participant
    assert occ.n_image_forwards_ == len(images) * (6 + 2)


def test_region_occlusion_matches_a_manual_loop_for_a_cnn():
    torch.manual_seed(0)
    atlas = _atlas()
    f_v = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool3d(2), torch.nn.Flatten())
    e_v = Encoder(16, (8,), 4)
    images = _images(n=5)
    occ = OcclusionExplainer((np.eye(4)[:, :2], np.eye(4)[:, :2]), feature_extractor=f_v,
                             image_encoder=e_v, atlas=atlas, batch_size=2).fit(images)
    data = np.asarray(atlas.img.dataobj)
    x = torch.as_tensor(images).unsqueeze(1)
    with torch.no_grad():
        z = e_v(f_v(x))[:, :2]
        for r, v in enumerate(atlas.labels["index"]):
            xo = x.clone()
            xo[:, 0, torch.as_tensor(data == v)] = 0.0
            ref = (z - e_v(f_v(xo))[:, :2]).mean(0).numpy()
            np.testing.assert_allclose(occ.region_contributions_.iloc[r].to_numpy(), ref,
                                       rtol=1e-4, atol=1e-6)


def _brute_force_snps(e_g, X, nodes, baseline=0.0):
    Xt = torch.as_tensor(X, dtype=torch.float32)
    out = np.zeros((X.shape[1], len(nodes)))
    with torch.no_grad():
        z = e_g(Xt)[:, nodes]
        for k in range(X.shape[1]):
            xo = Xt.clone()
            xo[:, k] = baseline
            out[k] = (z - e_g(xo)[:, nodes]).mean(0).numpy()
    return out


def test_snp_contributions_match_brute_force():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.binomial(2, 0.3, (40, 25)).astype(float)
    e_g = Encoder(25, (16, 12), 6)
    cca = (np.eye(6)[:, :3], np.eye(6)[:, [4, 2, 0]])
    occ = OcclusionExplainer(cca, genetic_encoder=e_g, pair_batch_size=37).fit(genotypes=X)
    assert occ.snp_method_ == "first-layer"
    assert occ.n_snp_pairs_ == int((X != 0).sum())
    np.testing.assert_allclose(occ.snp_contributions_.to_numpy(),
                               _brute_force_snps(e_g, X, [4, 2, 0]), rtol=1e-4, atol=1e-7)
    # a non-zero baseline occludes the zero dosages too
    occ1 = OcclusionExplainer(cca, genetic_encoder=e_g, snp_baseline=1.0).fit(genotypes=X)
    np.testing.assert_allclose(occ1.snp_contributions_.to_numpy(),
                               _brute_force_snps(e_g, X, [4, 2, 0], 1.0), rtol=1e-4, atol=1e-7)


class _Standardise(torch.nn.Module):
    def forward(self, x):
        return (x - 1.0) * 2.0


def test_encoder_with_a_preprocessing_layer_falls_back_to_full_forwards():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    X = rng.binomial(2, 0.3, (30, 10)).astype(float)
    e_g = torch.nn.Sequential(_Standardise(), torch.nn.Linear(10, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3))
    with pytest.warns(UserWarning, match="occluding whole inputs"):
        occ = OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g).fit(genotypes=X)
    assert occ.snp_method_ == "full"
    np.testing.assert_allclose(occ.snp_contributions_.to_numpy(),
                               _brute_force_snps(e_g, X, [0, 1, 2]), rtol=1e-4, atol=1e-7)


def test_planted_snp_is_significant_and_named():
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.binomial(2, 0.3, (60, 30)).astype(float),
                     columns=[f"rs{i}" for i in range(30)])
    e_g = torch.nn.Linear(30, 2)
    with torch.no_grad():
        e_g.weight.copy_(torch.as_tensor(0.01 * rng.standard_normal((2, 30)), dtype=torch.float32))
        e_g.weight[0, 7] = -1.0
        e_g.weight[1, 3] = 2.0
    occ = OcclusionExplainer((np.eye(2), -np.eye(2)), genetic_encoder=e_g).fit(genotypes=X)
    sig = occ.significant_snps_
    assert sig[sig.component == 1].snp.tolist() == ["rs7"]
    assert sig[sig.component == 2].snp.tolist() == ["rs3"]
    # orientation makes the significant SNPs raise the genetic variate: sign +1
    assert sig.sign.tolist() == [1, 1]
    assert list(occ.component_orientation_) == [1.0, -1.0]
    z = occ.contributions_zscores("snp")
    assert z.loc["rs7", 1] < -3


def test_accepts_fitted_estimators_and_sparse_cca():
    torch.manual_seed(0)
    atlas = _atlas()
    rng = np.random.default_rng(0)
    zv, zg = rng.standard_normal((60, 4)), rng.standard_normal((60, 4))
    zg[:, 0] += zv[:, 1]
    scca = SparseCCA(n_components=2, alpha_x=0.01, alpha_y=0.01, random_state=0).fit(zv, zg)
    e_v, e_g = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)

    class Stage1:
        def feature_extractor(self):
            return RegionMeans(atlas)

    class Stage2:
        image_encoder_ = e_v
        genetic_encoder_ = e_g

    occ = OcclusionExplainer(scca, feature_extractor=Stage1(), image_encoder=Stage2(),
                             genetic_encoder=Stage2(), atlas=atlas)
    occ.fit(_images(4), rng.binomial(2, 0.3, (8, 5)).astype(float))
    assert occ.region_contributions_.shape == (6, 2)
    assert occ.snp_contributions_.shape == (5, 2)
    np.testing.assert_array_equal(occ.image_nodes_, scca.top_nodes()[0])


def test_nifti_paths_and_atlas_resampling(tmp_path):
    atlas = _atlas()
    images = _images(3)
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"sub{i}.nii.gz"
        nib.save(nib.Nifti1Image(img, AFFINE), p)
        paths.append(str(p))
    f_v, e_v = RegionMeans(atlas), torch.nn.Linear(6, 2)
    ref = OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=e_v,
                             atlas=atlas).fit(images)
    from_files = OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=e_v,
                                    atlas=atlas).fit(paths)
    np.testing.assert_allclose(from_files.region_contributions_, ref.region_contributions_, rtol=1e-5)
    # the same atlas at 1 mm (twice the voxels per axis): resampled with a warning
    fine = np.repeat(np.repeat(np.repeat(np.asarray(atlas.img.dataobj), 2, 0), 2, 1), 2, 2)
    fine_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_affine[:3, 3] = -0.5
    fine_atlas = Bunch(img=nib.Nifti1Image(fine.astype(np.int32), fine_affine), labels=atlas.labels)
    with pytest.warns(UserWarning, match=r"atlas grid \(shape \(24, 28, 24\)\) differs"):
        res = OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=e_v,
                                 atlas=fine_atlas).fit(paths)
    np.testing.assert_array_equal(np.asarray(res.atlas_.img.dataobj), np.asarray(atlas.img.dataobj))
    np.testing.assert_allclose(res.region_contributions_, ref.region_contributions_, rtol=1e-5)
    # array images without an affine cannot be resampled
    with pytest.raises(ValueError, match=r"differs from the images' \(12, 14, 12\) and the images' affine"):
        OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=e_v,
                           atlas=fine_atlas).fit(images)
    with pytest.raises(ValueError, match="default AAL atlas must be resampled"):
        OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=e_v).fit(images)


def test_default_aal_atlas_on_the_image_grid():
    images = _images(2)
    affine = np.diag([12.0, 12.0, 12.0, 1.0])
    affine[:3, 3] = [-66, -102, -60]
    f_v = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # regions without voxels on a 12 mm grid are listed
        occ = OcclusionExplainer((np.eye(3)[:, :1], np.eye(3)[:, :1]), feature_extractor=f_v,
                                 image_encoder=torch.nn.Identity()).fit(images, affine=affine)
    assert "AAL2" in occ.atlas_.name
    assert len(occ.region_contributions_) == len(occ.atlas_.labels) > 10
    assert "Precentral_L" in occ.region_contributions_.index


def test_labels_missing_from_the_label_table():
    atlas = _atlas()
    partial = Bunch(img=atlas.img, labels=atlas.labels.iloc[:4])
    with pytest.raises(ValueError, match=r"label value\(s\) \[15, 16\] that are missing"):
        OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=RegionMeans(atlas),
                           image_encoder=torch.nn.Linear(6, 2), atlas=partial).fit(_images(2))
    with pytest.raises(ValueError, match="needs atlas_labels"):
        OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=RegionMeans(atlas),
                           image_encoder=torch.nn.Linear(6, 2), atlas=atlas.img).fit(_images(2))


def test_bad_inputs():
    e_g = torch.nn.Linear(5, 3)
    X = np.ones((4, 5))
    Xdf = pd.DataFrame(X.copy(), index=["p1", "p2", "p3", "p4"], columns=list("abcde"))
    Xdf.iloc[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"missing call\(s\) \(participant/SNP: \['p3/d'\]\)"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g).fit(genotypes=Xdf)
    with pytest.raises(TypeError, match="cca must be a fitted SparseCCA"):
        OcclusionExplainer(SparseCCA(), genetic_encoder=e_g).fit(genotypes=X)
    with pytest.raises(ValueError, match="have 3 and 2 components"):
        OcclusionExplainer((np.eye(3), np.eye(3)[:, :2]), genetic_encoder=e_g).fit(genotypes=X)
    with pytest.raises(ValueError, match="needs images, genotypes or both"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g).fit()
    with pytest.raises(ValueError, match="genetic_encoder is None"):
        OcclusionExplainer((np.eye(3), np.eye(3))).fit(genotypes=X)
    with pytest.raises(ValueError, match="feature_extractor or image_encoder is None"):
        OcclusionExplainer((np.eye(3), np.eye(3))).fit(_images(2))
    with pytest.raises(TypeError, match="genetic_encoder must be a torch.nn.Module"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder="e_g").fit(genotypes=X)
    with pytest.raises(ValueError, match=r"shape \(n, X, Y, Z\)"):
        OcclusionExplainer((np.eye(3), np.eye(3)), feature_extractor=torch.nn.Identity(),
                           image_encoder=torch.nn.Identity(), atlas=_atlas()).fit(np.ones((3, 4, 4)))
    with pytest.raises(ValueError, match="region_threshold"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g, region_threshold=-1).fit(genotypes=X)
    with pytest.raises(ValueError, match="without the region data"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g).fit(
            genotypes=X).contributions_zscores("region")


@pytest.mark.parametrize("check_name", ["check_no_attributes_set_in_init", "check_get_params_invariance",
                                        "check_set_params", "check_parameters_default_constructible"])
def test_construction_checks(check_name):
    from sklearn.utils import estimator_checks

    est = OcclusionExplainer((np.eye(2), np.eye(2)), genetic_encoder=torch.nn.Linear(3, 2))
    getattr(estimator_checks, check_name)("OcclusionExplainer", est)


def test_genotype_columns_must_match_the_encoder():
    e_g = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="does it expect 4 SNPs"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=e_g).fit(genotypes=np.ones((4, 4)))
    with pytest.raises(ValueError, match="select node 5"):
        OcclusionExplainer((np.eye(6), np.eye(6)), genetic_encoder=e_g).fit(genotypes=np.ones((4, 5)))

    class Stage2:
        genetic_encoder_ = e_g
        feature_names_in_ = np.array(["h0", "a", "b", "c", "d", "e"])
        genetic_indices_ = np.arange(1, 6)

    X = pd.DataFrame(np.ones((4, 5)), columns=list("abcdx"))
    with pytest.raises(ValueError, match=r"genotype columns differ.*missing here: \['e'\]"):
        OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=Stage2()).fit(genotypes=X)
    ok = OcclusionExplainer((np.eye(3), np.eye(3)), genetic_encoder=Stage2()).fit(
        genotypes=X.rename(columns={"x": "e"}))
    assert list(ok.snp_contributions_.index) == list("abcde")


def test_image_shape_the_cnn_cannot_take():
    atlas = _atlas()
    f_v = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(99, 2))
    with pytest.raises(ValueError, match=r"failed on an image of shape \(12, 14, 12\)"):
        OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=f_v, image_encoder=torch.nn.Identity(),
                           atlas=atlas).fit(_images(2))


def test_variate_target_explains_the_whole_canonical_variate():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    X = rng.binomial(2, 0.3, (40, 12)).astype(float)
    e_g = Encoder(12, (10,), 5)
    wx = rng.standard_normal((5, 2))
    wy = rng.standard_normal((5, 2))
    occ = OcclusionExplainer((wx, wy), genetic_encoder=e_g, target="variate").fit(genotypes=X)
    full = _brute_force_snps(e_g, X, list(range(5)))  # every node
    np.testing.assert_allclose(occ.snp_variate_contributions_.to_numpy(), full @ wy, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(occ.snp_contributions_.to_numpy(), full[:, occ.genetic_nodes_],
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(occ.contributions_zscores("snp").to_numpy().mean(axis=0), 0, atol=1e-9)

    # regions, through a linear f_v and e_v, with SparseCCA's standardisation of z_v
    atlas = _atlas()
    e_v = torch.nn.Linear(6, 4)
    images = _images(6)

    class Scaled:
        x_weights_ = rng.standard_normal((4, 2))
        y_weights_ = rng.standard_normal((4, 2))
        x_std_ = np.array([1.0, 2.0, 0.5, 4.0])
        y_std_ = np.ones(4)

    occ = OcclusionExplainer(Scaled(), feature_extractor=RegionMeans(atlas), image_encoder=e_v,
                             atlas=atlas, target="variate").fit(images)
    data = np.asarray(atlas.img.dataobj)
    means = np.stack([images[:, data == v].mean(axis=1) for v in atlas.labels["index"]], axis=1).mean(0)
    per_node = e_v.weight.detach().numpy().T * means[:, None]  # (regions, nodes)
    expected = per_node @ (Scaled.x_weights_ / Scaled.x_std_[:, None])
    np.testing.assert_allclose(occ.region_variate_contributions_.to_numpy(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        OcclusionExplainer(Scaled(), genetic_encoder=e_g, target="nodes").fit(genotypes=X)
