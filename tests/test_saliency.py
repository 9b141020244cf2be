"""SaliencyExplainer: captum attributions per score, NIfTI maps, atlas-region summary."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils import Bunch

from sklearn_cgni.explain import SaliencyExplainer
from sklearn_cgni.imaging import BrainGenotypeScorer

SHAPE = (8, 8, 8)


def _atlas():
    lab = np.zeros(SHAPE, dtype=np.int16)
    lab[:4, :, :] = 1        # "Left"
    lab[4:, :4, :] = 2       # "RightFront"
    lab[4:, 4:, :] = 3       # "RightBack"
    return Bunch(img=nib.Nifti1Image(lab, np.eye(4)),
                 labels=pd.DataFrame({"index": [1, 2, 3], "name": ["Left", "RightFront", "RightBack"]}))


class _TwoScores(torch.nn.Module):
    """Score 0 = mean of the Left region, score 1 = 2 * mean of RightBack (linear, known)."""

    snp_names = ["rsA", "rsB"]

    def __init__(self):
        super().__init__()
        w = torch.zeros(2, *SHAPE)
        w[0, :4] = 1.0 / (4 * 8 * 8)
        w[1, 4:, 4:] = 2.0 / (4 * 4 * 8)
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return x @ self.w.reshape(2, -1).T


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0.2, 1.0, size=(6, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_maps_match_the_known_linear_model(images, method):
    model = _TwoScores()
    sal = SaliencyExplainer(model, method=method, atlas=_atlas(), n_steps=8).fit(images, affine=np.eye(4))
    w = model.w.detach().numpy()
    if method == "saliency":
        expected = np.abs(w)
    else:  # x * w for a linear model (IG from a zero baseline equals input x gradient)
        expected = np.abs(images[:, None] * w[None]).mean(axis=0)
    np.testing.assert_allclose(sal.maps_, expected, rtol=1e-4, atol=1e-7)
    top = sal.top_regions_.set_index(["score", "rank"])["region"]
    assert top[("rsA", 1)] == "Left" and top[("rsB", 1)] == "RightBack"
    assert sal.region_attributions_.loc["RightFront", "rsA"] == 0


def test_signed_maps_and_snp_subset(images):
    model = _TwoScores()
    with torch.no_grad():
        model.w[1] *= -1
    sal = SaliencyExplainer(model, method="input_x_gradient", absolute=False, snps=["rsB"],
                            atlas=_atlas()).fit(images, affine=np.eye(4))
    assert sal.maps_.shape == (1, *SHAPE) and sal.score_names_ == ["rsB"]
    assert sal.region_attributions_.loc["RightBack", "rsB"] < 0
    assert sal.top_regions_["region"].iloc[0] == "RightBack"


def test_nifti_maps_from_paths_take_the_images_affine(images, tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"s{i}.nii.gz"
        nib.save(nib.Nifti1Image(img, affine), p)
        paths.append(str(p))
    atlas = _atlas()
    atlas.img = nib.Nifti1Image(np.asarray(atlas.img.dataobj), affine)
    sal = SaliencyExplainer(_TwoScores(), atlas=atlas).fit(paths)
    np.testing.assert_allclose(sal.affine_, affine)
    written = sal.write_maps(tmp_path / "maps")
    assert len(written) == 2
    back = nib.load(written[1])
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(back.get_fdata(), sal.maps_[1], rtol=1e-6)
    with pytest.raises(ValueError, match="differs from the images' own"):
        SaliencyExplainer(_TwoScores(), atlas=atlas).fit(paths, affine=np.eye(4))


def test_array_images_without_affine_warn_and_cannot_write(images, tmp_path):
    with pytest.warns(UserWarning, match="no region summary"):
        sal = SaliencyExplainer(_TwoScores()).fit(images)
    assert sal.region_attributions_ is None
    with pytest.raises(ValueError, match="affine is unknown"):
        sal.to_nifti("rsA")


def test_scores_the_model_was_not_fitted_for(images):
    with pytest.raises(ValueError, match=r"not among the 2.*rsZ"):
        SaliencyExplainer(_TwoScores(), snps=["rsA", "rsZ"], atlas=_atlas()).fit(images, affine=np.eye(4))
    with pytest.raises(ValueError, match="out of range; the model has 2 outputs"):
        SaliencyExplainer(_TwoScores(), snps=[5], atlas=_atlas()).fit(images, affine=np.eye(4))
    with pytest.raises(TypeError, match="fitted BrainGenotypeScorer"):
        SaliencyExplainer(object()).fit(images)


def test_with_a_fitted_scorer_finds_the_planted_region():
    rng = np.random.default_rng(0)
    n = 60
    g = np.repeat([0.0, 1.0, 2.0], n // 3)
    G = np.column_stack([g, rng.integers(0, 3, n)]).astype(float)
    X = rng.normal(0.5, 0.1, size=(n, *SHAPE)).astype(np.float32)
    X[:, 4:, 4:, :] += 0.3 * g[:, None, None, None]        # SNP 0 -> RightBack
    scorer = BrainGenotypeScorer("dosage", channels=(4, 4), padding=1, pool_blocks=1,
                                 max_epochs=20, lr=3e-3, validation_fraction=0, early_stopping=False, lr_schedule="none", device="cpu",
                                 random_state=0).fit(X, G)
    sal = SaliencyExplainer(scorer, snps=["snp0"], atlas=_atlas()).fit(X[:20], affine=np.eye(4))
    assert sal.top_regions_["region"].iloc[0] == "RightBack"


def test_raw_image_scorer_saliency_is_per_voxel_sd_in_the_standardized_space():
    """For a scorer reading raw images, 'standardized' maps = raw-space gradients x each voxel's SD."""
    rng = np.random.default_rng(1)
    n = 45
    g = np.repeat([0.0, 1.0, 2.0], n // 3)
    X = rng.normal(0.5, 0.1, size=(n, *SHAPE)).astype(np.float32)
    X[:, :2] = 0.5 + 0.001 * rng.normal(size=(n, 2, *SHAPE[1:]))  # near-constant voxels (like background)
    X[:, 4:, 4:, :] += 0.3 * g[:, None, None, None]
    scorer = BrainGenotypeScorer("dosage", channels=(4, 4), padding=1, pool_blocks=1, max_epochs=5,
                                 standardize_voxels=False, validation_fraction=0, device="cpu",
                                 random_state=0).fit(X, g[:, None])
    assert not scorer.module_.standardizes_input
    raw = SaliencyExplainer(scorer, input_space="raw", absolute=False, atlas=_atlas()).fit(X[:20], affine=np.eye(4))
    per_sd = SaliencyExplainer(scorer, absolute=False, atlas=_atlas()).fit(X[:20], affine=np.eye(4))
    sd = X[:20].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(per_sd.maps_[0], raw.maps_[0] * sd, rtol=1e-4, atol=1e-9)
    # the near-constant voxels, whose raw gradients can be large, weigh little per SD
    assert np.abs(per_sd.maps_[0][:2]).max() < 0.05 * np.abs(per_sd.maps_[0]).max()


def test_saliency_peaks_and_their_distance_to_planted_centers():
    import torch

    from sklearn_cgni.explain import SaliencyExplainer

    shape = (6, 7, 6)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), 2))
    with torch.no_grad():
        net[1].weight.zero_()
        w = torch.zeros(shape)
        w[4, 2, 1] = 3.0  # score 0 reads voxel (4, 2, 1) most
        w[1, 1, 1] = 1.0
        net[1].weight[0] = w.flatten()
        net[1].weight[1, 0] = -5.0  # score 1: voxel (0, 0, 0), negative weight: the magnitude counts
    X = np.random.default_rng(0).normal(size=(5, *shape)).astype("float32")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, 0]
    def atlas(labels):
        return Bunch(img=nib.Nifti1Image(labels.astype(np.int16), affine),
                     labels=pd.DataFrame({"index": [1], "name": ["brain"]}))

    sal = SaliencyExplainer(net, atlas=atlas(np.ones(shape)), absolute=False).fit(X, affine=affine)
    peaks = sal.peaks_.set_index("score")
    assert tuple(peaks.loc["score0", ["i", "j", "k"]]) == (4, 2, 1)
    assert tuple(peaks.loc["score0", ["x", "y", "z"]]) == (-2.0, -16.0, 2.0)
    assert tuple(peaks.loc["score1", ["i", "j", "k"]]) == (0, 0, 0) and peaks.loc["score1", "value"] < 0
    d = sal.peak_distances({"score0": [[100.0, 0, 0], [-2.0, -16.0, 6.0]], "not_a_score": [[0, 0, 0]]})
    assert d["score"].tolist() == ["score0"]
    assert d.loc[0, "distance_mm"] == pytest.approx(4.0) and d.loc[0, "nearest"] == 1
    with pytest.raises(ValueError, match="3 coordinates"):
        sal.peak_distances({"score0": [[1.0, 2.0]]})
    # only voxels inside the atlas's regions count: outside it, score 0's second voxel wins
    outside = np.ones(shape)
    outside[4, 2, 1] = 0
    masked = SaliencyExplainer(net, atlas=atlas(outside)).fit(X, affine=affine).peaks_.set_index("score")
    assert tuple(masked.loc["score0", ["i", "j", "k"]]) == (1, 1, 1)
    no_affine = SaliencyExplainer(net, atlas=None)
    with pytest.warns(UserWarning, match="no region summary"):
        no_affine.fit(X)
    assert np.isnan(no_affine.peaks_["x"]).all()
    with pytest.raises(ValueError, match="affine is unknown"):
        no_affine.peak_distances({"score0": [[0, 0, 0]]})


@pytest.mark.parametrize("center", [(2.5, 3.0, 2.0), (3.3, 2.6, 2.8)])
def test_saliency_peak_centroid_is_sub_voxel(center):
    import torch

    from sklearn_cgni.explain import SaliencyExplainer

    shape = (6, 7, 6)
    d2 = sum((g - c) ** 2 for g, c in zip(np.indices(shape), center))
    w = np.exp(-d2 / (2 * 1.2**2))  # a smooth bump centred between voxels
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), 1))
    with torch.no_grad():
        net[1].weight[0] = torch.as_tensor(w.ravel(), dtype=torch.float32)
    X = np.random.default_rng(0).normal(size=(3, *shape)).astype("float32")
    affine = np.diag([8.0, 8.0, 8.0, 1.0])  # 8 mm voxels, as at 24x28x24
    lab = Bunch(img=nib.Nifti1Image(np.ones(shape, np.int16), affine), labels=pd.DataFrame({"index": [1], "name": ["b"]}))
    truth = {"score0": [list(affine[:3, :3] @ np.asarray(center))]}
    err = {p: SaliencyExplainer(net, atlas=lab, peak=p).fit(X, affine=affine).peak_distances(truth)
           .loc[0, "distance_mm"] for p in ("voxel", "centroid")}
    assert err["centroid"] < 2.0 < err["voxel"]  # within a quarter voxel, where the voxel centre is 4+ mm off


def test_smoothing_fwhm_finds_a_smooth_effect_past_an_isolated_spike():
    import torch
    from nilearn.image import smooth_img

    from sklearn_cgni.explain import SaliencyExplainer

    shape, center, spike = (10, 11, 10), (3.0, 4.0, 3.0), (7, 8, 7)
    d2 = sum((g - c) ** 2 for g, c in zip(np.indices(shape), center))
    w = np.exp(-d2 / (2 * 1.2**2))  # the effect: a smooth cluster
    w[spike] = 1.5  # a single speckle, larger than the cluster's peak
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), 1))
    with torch.no_grad():
        net[1].weight[0] = torch.as_tensor(w.ravel(), dtype=torch.float32)
    X = np.random.default_rng(0).normal(size=(3, *shape)).astype("float32")
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    lab = Bunch(img=nib.Nifti1Image(np.ones(shape, np.int16), affine), labels=pd.DataFrame({"index": [1], "name": ["b"]}))
    truth = {"score0": [list(affine[:3, :3] @ np.asarray(center))]}
    raw = SaliencyExplainer(net, atlas=lab, absolute=False).fit(X, affine=affine)
    smooth = SaliencyExplainer(net, atlas=lab, absolute=False, smoothing_fwhm=16.0).fit(X, affine=affine)
    assert raw.peak_distances(truth).loc[0, "distance_mm"] > 30  # the spike wins unsmoothed
    assert smooth.peak_distances(truth).loc[0, "distance_mm"] < 4
    # the maps are nilearn's smoothing of the unsmoothed mean maps
    expected = smooth_img(nib.Nifti1Image(raw.maps_[0].astype(np.float64), affine), 16.0).get_fdata()
    np.testing.assert_allclose(smooth.maps_[0], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="smoothing_fwhm is in mm and needs the images' affine"):
        SaliencyExplainer(net, smoothing_fwhm=16.0).fit(X)
    with pytest.raises(ValueError, match="smoothing_fwhm"):
        SaliencyExplainer(net, smoothing_fwhm=-1.0).fit(X, affine=affine)
