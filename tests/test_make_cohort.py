"""make_cohort: determinism, files round-trip through the loaders, ground truth consistent with data."""

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.genetics import SNPQualityFilter
from sklearn_cgni.imaging import image_quality_control
from sklearn_cgni.io import load_cohort, read_genotypes, read_phenotypes

SHAPE = (24, 28, 24)


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(600, 240, shape=SHAPE, n_causal_snps=12, random_state=0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return make_cohort(60, 40, shape=SHAPE, n_causal_snps=4, output_dir=out, random_state=3)


def _regional_means(cohort):
    atlas = np.asarray(cohort.atlas.img.dataobj)
    flat = cohort.images.reshape(len(cohort.images), -1)
    out = {}
    for idx, name in zip(cohort.atlas.labels["index"], cohort.atlas.labels["name"]):
        out[name] = flat[:, (atlas == idx).ravel()].mean(axis=1)
    return pd.DataFrame(out, index=cohort.participant_ids)


def test_shapes_and_contract(cohort):
    n = 600
    assert cohort.images.shape == (n,) + SHAPE
    assert cohort.images.dtype == np.float32
    assert cohort.genotypes.shape == (n, 240)
    assert list(cohort.genotypes.index) == cohort.participant_ids == list(cohort.phenotypes.index)
    assert {"age", "sex", "site", "digit_span", "fluid_intelligence", "reaction_time", "wm_group"} <= set(
        cohort.phenotypes.columns
    )
    assert cohort.phenotypes["digit_span"].between(2, 12).all()
    assert cohort.affine.shape == (4, 4)
    values = cohort.genotypes.to_numpy()
    assert set(np.unique(values[~np.isnan(values)])) <= {0.0, 1.0, 2.0}
    assert 0 < np.isnan(values).mean() < 0.02
    assert len(cohort.ground_truth["causal_snps"]) == 12
    assert set(cohort.ground_truth["causal_snps"]) <= set(cohort.genotypes.columns)


def test_group_proportions_and_reference_demographics(cohort):
    ph = cohort.phenotypes
    in_group = ph["wm_group"].notna()
    assert ph.loc[~in_group, "digit_span"].between(6, 8).all()
    assert ph.loc[ph["wm_group"] == 0, "digit_span"].between(2, 5).all()
    assert ph.loc[ph["wm_group"] == 1, "digit_span"].between(9, 12).all()
    assert abs(in_group.mean() - 0.90) < 0.02
    assert abs((ph.loc[in_group, "wm_group"] == 1).mean() - 0.36) < 0.02
    age = ph.groupby("wm_group")["age"].mean()
    assert 10 < age[0.0] - age[1.0] < 17  # reference study: 13.6 years
    male = ph.groupby("wm_group")["sex"].mean()
    assert male[1.0] > male[0.0]


def test_independent_demographics_remove_the_age_gap():
    c = make_cohort(400, 30, shape=SHAPE, n_causal_snps=2, demographics="independent", random_state=1)
    age = c.phenotypes.groupby("wm_group")["age"].mean()
    assert abs(age[0.0] - age[1.0]) < 3


def test_deterministic_for_a_seed():
    a = make_cohort(20, 30, shape=SHAPE, n_causal_snps=2, random_state=5)
    b = make_cohort(20, 30, shape=SHAPE, n_causal_snps=2, random_state=5, n_jobs=2)
    c = make_cohort(20, 30, shape=SHAPE, n_causal_snps=2, random_state=6)
    np.testing.assert_array_equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.genotypes, b.genotypes)
    pd.testing.assert_frame_equal(a.phenotypes, b.phenotypes)
    assert a.ground_truth == b.ground_truth
    assert not np.array_equal(a.images, c.images)


def test_causal_snps_move_their_regions_and_nulls_do_not(cohort):
    regional = _regional_means(cohort)
    geno = cohort.genotypes.fillna(cohort.genotypes.mean())
    truth = cohort.ground_truth
    causal_r = []
    for eff in truth["snp_region_effects"]:
        r = np.corrcoef(geno[eff["snp"]], regional[eff["region"]])[0, 1]
        causal_r.append(r * eff["sign"])
    causal_r = np.array(causal_r)
    # the planted direction is recovered for (almost) every SNP-region pair
    assert np.mean(causal_r > 0) >= 0.9
    assert np.median(causal_r) > 0.15
    # null SNPs in other LD blocks do not correlate with the affected regions
    causal_blocks = set(cohort.snp_info.loc[truth["causal_snps"], "ld_block"])
    nulls = [s for s in geno.columns if cohort.snp_info.loc[s, "ld_block"] not in causal_blocks]
    null_r = np.abs([np.corrcoef(geno[s], regional[r])[0, 1] for s in nulls[:60] for r in truth["affected_regions"]])
    assert np.median(null_r) < 0.05
    assert np.median(causal_r) > 4 * np.median(null_r)


def test_age_drives_gray_matter(cohort):
    total = cohort.images.reshape(len(cohort.images), -1).mean(axis=1)
    good = ~np.isin(cohort.participant_ids, cohort.ground_truth["bad_images"])
    assert np.corrcoef(cohort.phenotypes["age"][good], total[good])[0, 1] < -0.4


def test_each_modality_carries_signal_and_both_carry_more():
    # demographics independent of the group, so that age does not stand in for the brain path
    cohort = make_cohort(600, 60, shape=SHAPE, n_causal_snps=8, demographics="independent", random_state=2)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ph = cohort.phenotypes
    keep = ph["wm_group"].notna().to_numpy()
    y = ph["wm_group"].to_numpy()[keep].astype(int)
    regional = np.log(_regional_means(cohort) + 1e-3)
    # regional gray matter relative to the whole brain (removes global, sex and site factors)
    img = regional[list(cohort.ground_truth["affected_regions"])].sub(regional.mean(axis=1), axis=0)
    img = img.to_numpy()[keep]
    snps = cohort.ground_truth["causal_snps"] + list(cohort.ground_truth["direct_genetic_effects"])
    gen = cohort.genotypes[snps].fillna(1.0).to_numpy()[keep]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    def score(X):
        return cross_val_score(clf, X, y, cv=5, scoring="balanced_accuracy").mean()

    s_img, s_gen, s_both = score(img), score(gen), score(np.c_[img, gen])
    print(f"balanced accuracy: image {s_img:.3f}, genetic {s_gen:.3f}, both {s_both:.3f}")
    assert s_img > 0.55 and s_gen > 0.55
    assert s_both > max(s_img, s_gen)


def test_planted_qc_failures_are_caught(cohort):
    qc = SNPQualityFilter(info_r2=cohort.snp_info["info_r2"].to_dict())
    with pytest.warns(UserWarning, match="removed"):
        qc.fit(cohort.genotypes)
    removed = set(qc.exclusions_["snp"])
    planted = set(cohort.ground_truth["qc_fail_snps"])
    assert planted <= removed
    assert not removed & set(cohort.ground_truth["causal_snps"])
    # at most a few chance HWE/missingness failures beyond the planted ones
    assert len(removed - planted) <= 3


def test_bad_images_fail_image_qc(cohort):
    report = image_quality_control(cohort.images, cohort.participant_ids)
    assert set(report.index[~report["passed"]]) == set(cohort.ground_truth["bad_images"])


def test_files_round_trip(written):
    c = written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_cohort(c.output_dir)
    assert loaded.participant_ids == c.participant_ids
    assert loaded.shape == SHAPE
    np.testing.assert_allclose(loaded.affine, c.affine)
    pd.testing.assert_frame_equal(loaded.genotypes, c.genotypes, check_dtype=False)
    csv = read_genotypes(f"{c.output_dir}/genotypes.csv")
    pd.testing.assert_frame_equal(csv, c.genotypes, check_dtype=False)
    ph = read_phenotypes(f"{c.output_dir}/phenotypes.csv")
    pd.testing.assert_frame_equal(ph, c.phenotypes.drop(columns="wm_group"), check_dtype=False)
    assert loaded.y.index.tolist() == c.phenotypes.index[c.phenotypes["wm_group"].notna()].tolist()
    np.testing.assert_array_equal(loaded.y.to_numpy(), c.phenotypes["wm_group"].dropna().to_numpy())
    assert loaded.ground_truth == json.loads(json.dumps(c.ground_truth))
    img = nib.load(c.images[7])
    assert img.shape == SHAPE and img.get_data_dtype() == np.float32
    assert loaded.images.iloc[7] == c.images[7]
    # snp table, gene sets and atlas are written
    assert (loaded.snp_info.index == c.genotypes.columns).all()
    gmt = open(f"{c.output_dir}/gene_sets.gmt").read().splitlines()
    assert any(line.startswith(c.ground_truth["planted_gene_set"] + "\t") for line in gmt)
    atlas = nib.load(f"{c.output_dir}/atlas.nii.gz")
    assert atlas.shape == SHAPE


def test_user_atlas(tmp_path):
    data = np.zeros(SHAPE, dtype=np.int16)
    data[4:12, 4:14, 6:18] = 1
    data[12:20, 14:24, 6:18] = 7
    from sklearn_cgni.io import load_gray_matter_template

    affine = load_gray_matter_template(SHAPE).affine
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "atlas.nii.gz")
    labels = pd.DataFrame({"index": [1, 7], "name": ["A", "B"]})
    c = make_cohort(20, 20, shape=SHAPE, n_causal_snps=2, atlas_img=tmp_path / "atlas.nii.gz",
                    atlas_labels=labels, affected_regions=["B"], random_state=0)
    assert set(c.ground_truth["affected_regions"]) == {"B"}
    assert all(e["region"] == "B" for e in c.ground_truth["snp_region_effects"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_participants": 5}, "at least 10"),
        ({"n_causal_snps": 25}, "n_causal_snps"),
        ({"brain_weight": 0.9, "genetic_weight": 0.5}, "must be < 1"),
        ({"demographics": "matched"}, "demographics"),
        ({"affected_regions": ["Not_A_Region"]}, "Not_A_Region"),
        ({"shape": (128, 141, 128), "n_participants": 5000}, "output_dir"),
    ],
)
def test_bad_parameters(kwargs, match):
    params = dict(n_participants=20, n_snps=30, shape=SHAPE, n_causal_snps=2, random_state=0)
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_cohort(**params)


def test_qc_failures_are_planted_even_when_every_block_holds_a_causal_snp():
    # 200 SNPs in ~20 LD blocks with 30 planted causal/direct SNPs: no block is free
    c = make_cohort(40, 200, shape=SHAPE, random_state=0)
    planted = c.ground_truth["qc_fail_snps"]
    assert len(planted) == 4
    assert not set(planted) & set(c.ground_truth["causal_snps"])
    assert not set(planted) & set(c.ground_truth["direct_genetic_effects"])


# ---------------------------------------------------------------------- effect patterns
# Recorded on commit 9316818, before effect_pattern existed: make_cohort(40, 50, shape=(24, 28, 24),
# random_state=0). The default ("region") must keep producing exactly this cohort.
_REGION_REFERENCE = {
    "image_values": [0.12342309, 0.13488697, 0.11708502],  # images[[0, 7, 19], 12, 14, 12]
    "image_sums": [1931.3203125, 1849.20996094, 1744.97167969, 1861.79968262],  # images[:4].sum per image
    "latent_first": [0.8299846728572866, -1.2280046269163103, -0.2915429052174106],
    # sum over participants of (position + 1) x latent, per column: the standardized latent
    # is compared numerically (its CSV text changed in the last digits between library releases)
    "latent_weighted_sums": [-98.17580506187905, 30.016675931402702, -150.07134205331886],
    "sha256_16": {"images": "18a3695ee66557af", "genotypes": "c0da35ff7e65c2f4",
                  "phenotypes": "702bd6886b9ffb88", "effects": "7aadd4854811705f"},
}


def _sha(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("explicit", [False, True])
def test_region_pattern_is_unchanged(explicit):
    kw = {"effect_pattern": "region"} if explicit else {}
    c = make_cohort(40, 50, shape=SHAPE, random_state=0, **kw)
    ref = _REGION_REFERENCE
    np.testing.assert_allclose(c.images[[0, 7, 19], 12, 14, 12], ref["image_values"], rtol=1e-6)
    np.testing.assert_allclose(c.images.reshape(40, -1).sum(axis=1)[:4], ref["image_sums"], rtol=1e-6)
    np.testing.assert_allclose(c.latent.iloc[0].to_numpy(), ref["latent_first"], rtol=1e-12)
    weights = np.arange(1, len(c.latent) + 1)[:, None]
    np.testing.assert_allclose((c.latent.to_numpy() * weights).sum(axis=0), ref["latent_weighted_sums"], rtol=1e-10)
    got = {"images": _sha(np.ascontiguousarray(c.images).tobytes()),
           "genotypes": _sha(np.ascontiguousarray(c.genotypes.to_numpy()).tobytes()),
           "phenotypes": _sha(c.phenotypes.to_csv().encode()),
           "effects": _sha(json.dumps(c.ground_truth["snp_region_effects"]).encode())}
    assert got == ref["sha256_16"]
    assert c.ground_truth["effect_pattern"] == "region" and c.ground_truth["focal_effects"] == []


_QUIET = dict(noise_sd=0.0, regional_sd=0.0, global_sd=0.0, age_effect=0.0, sex_effect=0.0, site_effect=0.0,
              n_bad_images=0)


@pytest.fixture(scope="module")
def focal():
    # only the genetic effects vary between images: the genotype's slope on log gray matter is the planted map
    return make_cohort(200, 40, shape=SHAPE, n_causal_snps=4, effect_pattern="focal", snp_effect=0.3,
                       random_state=0, **_QUIET)


def _slope_map(cohort, snp):
    X = np.log(np.maximum(cohort.images.reshape(len(cohort.images), -1), 1e-3))
    g = cohort.genotypes[snp].fillna(cohort.genotypes[snp].mean()).to_numpy()
    g = g - g.mean()
    return ((X - X.mean(axis=0)) * g[:, None]).sum(axis=0) / (g ** 2).sum()


def _mni_grid(cohort):
    grid = np.indices(cohort.images.shape[1:]).reshape(3, -1).T
    return grid @ cohort.affine[:3, :3].T + cohort.affine[:3, 3]


def test_focal_clusters_are_where_ground_truth_says(focal):
    gt = focal.ground_truth
    assert gt["effect_pattern"] == "focal" and gt["snp_region_effects"] == [] and gt["affected_regions"] == {}
    effects = gt["focal_effects"]
    assert {e["snp"] for e in effects} == set(gt["causal_snps"])
    mni = _mni_grid(focal)
    for e in effects:
        # voxel and MNI centres agree through the affine; radius and sign as documented
        np.testing.assert_allclose((focal.affine @ np.r_[e["center_voxel"], 1])[:3], e["center_mni"], atol=0.02)
        assert e["radius_mm"] == 12.0 and e["sign"] == np.sign(e["effect"])
        slope = _slope_map(focal, e["snp"])
        d = np.linalg.norm(mni - np.asarray(e["center_mni"]), axis=1)
        others = [o for o in effects if o["snp"] == e["snp"] and o is not e]
        if any(np.linalg.norm(np.subtract(o["center_mni"], e["center_mni"])) < 4 * e["radius_mm"] for o in others):
            continue  # two overlapping clusters of one SNP: their sum is not this cluster's profile
        at_centre = slope[np.argmin(d)]
        assert np.sign(at_centre) == e["sign"]
        assert abs(at_centre) > 0.5 * abs(e["effect"])
        # the peak of the SNP's map around the cluster lies within one voxel diagonal of the centre
        near = d < 2 * e["radius_mm"]
        peak = np.argmax(np.where(near, np.abs(slope), 0))
        assert d[peak] < 15.0


def test_focal_clusters_are_not_atlas_aligned(focal):
    """A cluster covers a part of several regions: gray matter of one region changes unevenly."""
    atlas = np.asarray(focal.atlas.img.dataobj).ravel()
    mni = _mni_grid(focal)
    spans = []
    for e in focal.ground_truth["focal_effects"]:
        d = np.linalg.norm(mni - np.asarray(e["center_mni"]), axis=1)
        labels = set(atlas[d <= e["radius_mm"]].tolist()) - {0}
        spans.append(len(labels))
        # within the region at the centre, the effect fades away from the cluster
        if e["region_at_center"] != "outside atlas":
            slope = _slope_map(focal, e["snp"])
            idx = focal.atlas.labels.set_index("name").loc[e["region_at_center"], "index"]
            in_region = atlas == idx
            assert np.abs(slope[in_region & (d > 3 * e["radius_mm"])]).max(initial=0) < \
                0.5 * np.abs(slope[in_region & (d <= e["radius_mm"])]).max()
    assert max(spans) >= 2


def test_mixed_is_deterministic_and_keeps_the_genotypes():
    kw = dict(n_participants=40, n_snps=50, shape=SHAPE, n_causal_snps=6, random_state=5)
    region = make_cohort(**kw)
    a = make_cohort(effect_pattern="mixed", **kw)
    b = make_cohort(effect_pattern="mixed", **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.ground_truth == b.ground_truth
    pd.testing.assert_frame_equal(a.genotypes, region.genotypes)
    pd.testing.assert_series_equal(a.phenotypes["site"], region.phenotypes["site"])  # age, sex follow the trait
    focal_snps = {e["snp"] for e in a.ground_truth["focal_effects"]}
    region_snps = {e["snp"] for e in a.ground_truth["snp_region_effects"]}
    assert focal_snps and region_snps and not focal_snps & region_snps
    assert focal_snps | region_snps == set(a.ground_truth["causal_snps"])
    assert not np.array_equal(a.images, region.images)


def test_focal_brain_path_follows_the_clusters(focal):
    """The brain path is the mean log modulation over the clusters: genotypes of causal SNPs predict it."""
    gt = focal.ground_truth
    G = focal.genotypes[gt["causal_snps"]].fillna(focal.genotypes[gt["causal_snps"]].mean()).to_numpy()
    bp = focal.latent["brain_path"].to_numpy()
    fit = np.linalg.lstsq(np.c_[np.ones(len(G)), G], bp, rcond=None)
    resid = bp - np.c_[np.ones(len(G)), G] @ fit[0]
    assert 1 - resid.var() / bp.var() > 0.99  # no non-genetic variation in this cohort: all of it is genetic
    # every causal SNP contributes with the sign of its (summed) cluster effects
    for snp, coef in zip(gt["causal_snps"], fit[0][1:]):
        total = sum(e["effect"] for e in gt["focal_effects"] if e["snp"] == snp)
        assert np.sign(coef) == np.sign(total)


def test_focal_ground_truth_is_written(tmp_path):
    c = make_cohort(20, 30, shape=SHAPE, n_causal_snps=2, effect_pattern="focal", output_dir=tmp_path,
                    random_state=1)
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    assert gt["effect_pattern"] == "focal" and gt["parameters"]["focal_radius"] == 12.0
    assert gt["focal_effects"] == json.loads(json.dumps(c.ground_truth["focal_effects"]))
    assert {"center_voxel", "center_mni", "radius_mm", "sign", "effect"} <= set(gt["focal_effects"][0])


@pytest.mark.parametrize("kwargs, match", [({"effect_pattern": "blob"}, "effect_pattern"),
                                           ({"effect_pattern": "focal", "focal_radius": 0}, "focal_radius")])
def test_bad_effect_pattern(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_cohort(20, 30, shape=SHAPE, n_causal_snps=2, random_state=0, **kwargs)
