"""Simulation sub-steps of :func:`~sklearn_cgni.datasets.make_cohort`.

Private helpers: LD-block genotypes, one participant's image, focal clusters and the brain
path over them, the SNP table, the gene sets and the written tables.
"""

import json

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.stats import norm


def _fwhm_to_sigma_vox(fwhm_mm, affine):
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return fwhm_mm / np.sqrt(8 * np.log(2)) / zooms


def _simulate_genotypes(rng, n, n_snps, block_size_range, maf_range, rho_range):
    """LD-block genotypes under HWE. Returns genotypes (n, n_snps) int8, maf, block ids."""
    sizes = []
    while sum(sizes) < n_snps:
        sizes.append(int(rng.integers(block_size_range[0], block_size_range[1] + 1)))
    sizes[-1] -= sum(sizes) - n_snps
    if sizes[-1] <= 0:
        sizes.pop()
    G = np.empty((n, n_snps), dtype=np.int8)
    maf = rng.uniform(*maf_range, size=n_snps)
    blocks = np.empty(n_snps, dtype=int)
    start = 0
    for b, size in enumerate(sizes):
        rho = rng.uniform(*rho_range)
        sl = slice(start, start + size)
        thresh = norm.ppf(maf[sl])
        for _hap in range(2):
            z = np.empty((n, size))
            z[:, 0] = rng.standard_normal(n)
            innov = rng.standard_normal((n, size))
            for j in range(1, size):
                z[:, j] = rho * z[:, j - 1] + np.sqrt(1 - rho**2) * innov[:, j]
            if _hap == 0:
                G[:, sl] = z < thresh
            else:
                G[:, sl] += (z < thresh).astype(np.int8)
        blocks[sl] = b
        start += size
    return G, maf, blocks, len(sizes)


def _participant_image(seed, template, brain_mask, region_index, log_mod_regions, global_mod, age_field_mod,
                       noise_sd, sigma_vox, bad_shift, focal=None):
    """One participant's gray-matter image (float32).

    ``focal``: ``(clusters, coefficients)``, where each cluster is ``(flat voxel indices,
    profile weights)`` and ``coefficients`` the participant's log modulation at each cluster's
    peak; None (region pattern) adds nothing.
    """
    rng = np.random.default_rng(seed)
    # region-wise log modulation (index 0 = outside the atlas: no regional term)
    log_mod = log_mod_regions[region_index] + global_mod + age_field_mod
    if focal is not None:
        log_mod = np.ascontiguousarray(log_mod)  # the atlas may be Fortran-ordered: reshape must be a view
        flat = log_mod.reshape(-1)
        for (idx, w), coef in zip(*focal):
            flat[idx] += coef * w
    img = template * np.exp(log_mod)
    img = img + noise_sd * rng.standard_normal(template.shape) * brain_mask
    img = gaussian_filter(img, sigma=sigma_vox, mode="constant")
    if bad_shift is not None:
        img = np.roll(img, bad_shift, axis=(0, 1, 2))
        img = img * rng.uniform(0.5, 1.5) + 0.15 * rng.standard_normal(img.shape) * brain_mask
    return np.clip(img, 0.0, None).astype(np.float32)


def _focal_profile(centre, radius_mm, affine, shape):
    """Flat voxel indices and weights ``2**(-(d / radius)**2)`` (``d`` in mm) of a focal cluster, cut at 2 radii."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    reach = np.ceil(2 * radius_mm / zooms).astype(int)
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + reach + 1, shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
    d2 = ((((grid - centre) @ np.asarray(affine)[:3, :3].T)) ** 2).sum(axis=-1)
    keep = d2 <= (2 * radius_mm) ** 2
    idx = np.ravel_multi_index(tuple(grid[keep].T), shape)
    return idx, np.exp2(-d2[keep] / radius_mm**2)


def _brain_path_with_clusters(log_mod_regions, focal_coef, clusters, region_index, chosen):
    """Mean log modulation over the affected tissue: regions ``chosen`` (weight 1) and the clusters (profile).

    With ``chosen`` and no clusters this is the region pattern's voxel-weighted mean over the
    affected regions. A voxel's log modulation is its region's (``log_mod_regions``, genetic +
    non-genetic; index 0 = outside the atlas = 0) plus every cluster's profile times the
    participant's coefficient.
    """
    n_index = log_mod_regions.shape[1]
    flat_regions = region_index.reshape(-1)
    chosen_mask = np.isin(flat_regions, chosen + 1)
    weight = chosen_mask.astype(np.float64)  # W(x) = 1 on the chosen regions + sum of cluster profiles
    for idx, w in clusters:
        weight[idx] += w
    # sum_x W(x) L(region(x)) = L @ (W summed per region); sum_x W(x) F_c(x) per cluster c
    region_weight = np.bincount(flat_regions, weights=weight, minlength=n_index)
    overlap = np.array([(w * weight[idx]).sum() for idx, w in clusters])
    total = region_weight.sum()
    return (log_mod_regions @ region_weight + focal_coef @ overlap) / total


def _snp_table(g, n_snps, blocks, freq, info_r2):
    # the same draw as g.choice(np.arange(1_000_000, 99_999_999), ...) without building that 790-MB array
    ids = g.choice(99_999_999 - 1_000_000, size=n_snps, replace=False) + 1_000_000
    snp_ids = [f"rs{i}" for i in ids]
    n_blocks = int(blocks.max()) + 1
    chrom_of_block = np.sort(g.integers(1, 23, size=n_blocks))
    pos = np.empty(n_snps, dtype=np.int64)
    cursor = {}
    for j in range(n_snps):
        c = chrom_of_block[blocks[j]]
        cursor[c] = cursor.get(c, int(g.integers(1_000_000, 5_000_000))) + int(g.integers(200, 5_000))
        if j > 0 and blocks[j] != blocks[j - 1]:
            cursor[c] += int(g.integers(200_000, 2_000_000))
        pos[j] = cursor[c]
    bases = np.array(list("ACGT"))
    a1 = g.choice(bases, size=n_snps)
    a2 = np.array([g.choice(bases[bases != x]) for x in a1])
    genes = [f"SIM{b + 1:04d}" for b in blocks]
    info = pd.DataFrame(
        {"chrom": chrom_of_block[blocks], "pos": pos, "a1": a1, "a2": a2, "ld_block": blocks,
         "gene": genes, "ensembl_id": [f"ENSGSIM{b + 1:08d}" for b in blocks],
         "info_r2": np.round(info_r2, 4), "simulated_maf": np.round(np.minimum(freq, 1 - freq), 4)},
        index=pd.Index(snp_ids, name="snp"),
    )
    return snp_ids, info


def _gene_sets(g, snp_info, causal):
    genes = sorted(snp_info["gene"].unique())
    causal_genes = sorted({snp_info["gene"].iloc[s] for s in causal})
    sets = {}
    n_sets = max(5, len(genes) // 8)
    for k in range(n_sets):
        size = int(min(len(genes), g.integers(10, 40)))
        sets[f"SIM_SET_{k + 1:03d}"] = sorted(g.choice(genes, size=size, replace=False).tolist())
    planted = "SIM_PLANTED_CAUSAL_PATHWAY"
    others = [x for x in genes if x not in causal_genes]
    filler = g.choice(others, size=min(len(others), len(causal_genes)), replace=False).tolist() if others else []
    sets[planted] = sorted(set(causal_genes) | set(filler))
    return sets, planted


def _simulated_gwas(rng, G, coef, gwas_n, snp_info, exclude, flip_fraction=0.3, missing_fraction=0.05,
                    no_rsid_fraction=0.1):
    """What a GWAS consortium publishes: per-SNP marginal estimates with a ``gwas_n``-person study's error.

    ``coef`` is each SNP's per-allele effect on the standardised cognitive trait (direct path
    and, for the brain-acting SNPs, through the brain). The marginal effect that an ideal GWAS
    estimates is ``β_j = Σ_s coef_s Cov(g_j, g_s) / Var(g_j)`` (LD taken from the simulated
    genotypes ``G``, 0/1/2 counts of ``a1``, no missing calls); the published estimate adds
    ``N(0, se_j²)`` with ``se_j² = (1 − β_j² Var g_j) / (gwas_n Var g_j)``, the sampling error of a
    least-squares estimate on ``gwas_n`` independent people. Every SNP except the ``exclude``
    ones (planted QC failures, which a consortium's QC removes) is listed, as in a genome-wide
    score without clumping; ``missing_fraction`` of them are left out, ``flip_fraction`` are
    reported for the other allele (``a2``, with the sign of the weight changed) and
    ``no_rsid_fraction`` carry only chromosome and position. As many variants as were left out
    are added that the cohort does not have (null effects, other positions), as a published
    file lists variants a cohort's genotyping lacks.
    """
    Gc = G - G.mean(axis=0)
    var = Gc.var(axis=0)
    cov = (Gc.T @ (Gc @ coef)) / len(G)
    ok = var > 0
    beta = np.where(ok, cov / np.where(ok, var, 1.0), 0.0)
    se = np.where(ok, np.sqrt(np.clip(1 - beta**2 * var, 1e-6, None) / (gwas_n * np.where(ok, var, 1.0))), np.inf)
    estimate = beta + se * rng.standard_normal(len(beta))
    keep = ok & ~np.isin(np.arange(len(beta)), exclude) & (rng.random(len(beta)) >= missing_fraction)
    flip = rng.random(len(beta)) < flip_fraction
    no_rsid = rng.random(len(beta)) < no_rsid_fraction
    ea = np.where(flip, snp_info["a2"], snp_info["a1"])
    oa = np.where(flip, snp_info["a1"], snp_info["a2"])
    table = pd.DataFrame({
        "rsID": np.where(no_rsid, "", snp_info.index.to_numpy()), "chr_name": snp_info["chrom"].astype(str).to_numpy(),
        "chr_position": snp_info["pos"].to_numpy(), "effect_allele": ea, "other_allele": oa,
        "effect_weight": np.round(np.where(flip, -estimate, estimate), 8)})
    # variants the discovery study had but the cohort's genotyping lacks: as many as were left out
    n_extra = int(round(missing_fraction * len(beta)))
    taken = set(snp_info.index)
    extra_ids = [f"rs{i}" for i in rng.choice(199_999_999 - 100_000_000, size=n_extra, replace=False) + 100_000_000
                 if f"rs{i}" not in taken]
    bases = np.array(list("ACGT"))
    ea_extra = rng.choice(bases, size=len(extra_ids))
    extra = pd.DataFrame({
        "rsID": extra_ids, "chr_name": rng.integers(1, 23, size=len(extra_ids)).astype(str),
        "chr_position": rng.integers(100_000_000, 200_000_000, size=len(extra_ids)), "effect_allele": ea_extra,
        "other_allele": [rng.choice(bases[bases != a]) for a in ea_extra],
        "effect_weight": np.round(rng.standard_normal(len(extra_ids)) / np.sqrt(gwas_n * 0.4), 8)})
    table = pd.concat([table[keep], extra], ignore_index=True)
    return table, pd.Series(beta, index=snp_info.index)


def _write_tables(out, result, phenotypes, sex):
    from ..io._tables import write_genotypes_csv, write_plink

    write_plink(result.genotypes, out / "genotypes", snp_info=result.snp_info, sex=sex)
    write_genotypes_csv(result.genotypes, out / "genotypes.csv")
    phenotypes.to_csv(out / "phenotypes.csv")
    result.snp_info.to_csv(out / "snp_info.csv")
    result.latent.to_csv(out / "latent.csv")
    result.snp_info[["gene", "ensembl_id"]].to_csv(out / "snp_genes.csv")
    with open(out / "gene_sets.gmt", "w") as fh:
        for name, genes in result.gene_sets.items():
            fh.write("\t".join([name, "simulated gene set"] + list(genes)) + "\n")
    nib.save(result.atlas.img, out / "atlas.nii.gz")
    result.atlas.labels.to_csv(out / "atlas_labels.csv", index=False)
    (out / "ground_truth.json").write_text(json.dumps(result.ground_truth, indent=2))
    if result.get("gwas") is not None:
        from ..io._pgs import write_scoring_file

        n = result.ground_truth["gwas"]["gwas_n"]
        write_scoring_file(result.gwas, out / "gwas_pgs.txt.gz", pgs_id=f"sim_gwas_{n}",
                           pgs_name=f"simulated discovery GWAS of {n} people", trait="simulated cognitive score")
