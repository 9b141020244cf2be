"""``data`` stage: align by participant ID, working-memory groups, image QC, splits and SNP QC."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from .._inputs import InputError, use_embedded_cohort
from .._protocol import paper_splits
from .._stages import write_json
from ._base import register
from ._common import _caught, _covariates, _genotype_blocks, _read_phenotypes

log = logging.getLogger("sklearn_cgni.cli")


def _setup(run):
    """The embedded cohort: read the files the simulate stage wrote (whether data runs or is reused)."""
    if run.inputs.embedded:
        use_embedded_cohort(run.inputs, run.out / "cohort")


@register("data", config=("data", "qc", "protocol", "run"), inputs=True, after=("simulate",), setup=_setup)
def _stage_data(run, folder):
    from ...imaging import image_quality_control
    from ...io import align_cohort, check_images, find_images, working_memory_groups

    cfg, inp = run.cfg, run.inputs
    d = cfg["data"]
    covariates = list(d["covariates"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        pheno = _read_phenotypes(run, required=("digit_span", *covariates))
        images = find_images(inp.images, list(pheno.index), id_column=d["id_column"],
                             suffix=d["image_suffix"] or None, space=d["image_space"] or None)
        geno = _genotype_blocks(run)  # participants and variants listed; genotypes read by block below
        cohort = align_cohort(images, pd.DataFrame(index=geno.participants), pheno)
    _caught([w for w in caught if issubclass(w.category, UserWarning)])
    images, pheno = cohort.images, cohort.phenotypes
    source = check_images(images, caller="sklearn-cgni run")  # every header once, errors name the participant
    shape, affine = source.shape, source.affine
    log.info("cohort: %d participants with an image, genotypes and phenotypes (%d dropped), %d SNPs, images %s",
             len(images), len(cohort.dropped), len(geno.variants), shape)

    t = cfg["qc"]
    qc = image_quality_control(source, threshold=t["image_threshold"])  # the headers already read
    qc.to_csv(folder / "image_qc.csv")
    failed = qc.index[~qc["passed"].astype(bool)].tolist()
    if failed:
        log.warning("image QC: %d image(s) correlate below %.2f with the mean image and are excluded: %s",
                    len(failed), t["image_threshold"], failed[:50])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        groups = working_memory_groups(pheno["digit_span"], low=tuple(cfg["data"]["wm_low"]),
                                       high=tuple(cfg["data"]["wm_high"]))
    n_between = len(pheno) - len(groups)
    missing_cov = pheno[covariates].isna().any(axis=1)
    if missing_cov.any():
        log.warning("%d participant(s) miss a covariate %s and are left out of the WM analysis: %s",
                    int(missing_cov.sum()), covariates, pheno.index[missing_cov].tolist()[:50])
    parts = pd.DataFrame(index=pheno.index)
    parts["image"] = images
    for c in dict.fromkeys(["age", "sex", *covariates]):
        if c in pheno:
            parts[c] = pheno[c]
    parts["image_qc_r"] = qc["correlation"].reindex(parts.index)
    parts["image_qc_passed"] = qc["passed"].reindex(parts.index).astype(bool)
    wm = groups.reindex(parts.index)
    wm[missing_cov.reindex(parts.index).to_numpy()] = np.nan
    parts["wm_group"] = wm
    in_wm = parts["wm_group"].notna() & parts["image_qc_passed"]
    y = parts.loc[in_wm, "wm_group"].astype(int).to_numpy()
    cov_frame, categorical = _covariates(run, pheno.loc[parts.index[in_wm]])  # as the models will see them
    for c in categorical:
        levels = sorted(cov_frame[c].dropna().unique())
        log.info("covariate %r is categorical: %d levels (%s), one-hot encoded with %r as reference", c,
                 len(levels), ", ".join(levels[:10]), levels[0])
    if (np.bincount(y, minlength=2) < cfg["protocol"]["folds"] + 1).any():
        raise InputError(f"Too few participants in a WM group for {cfg['protocol']['folds']}-fold CV: "
                         f"{int((y == 0).sum())} low, {int((y == 1).sum())} high.")
    p = cfg["protocol"]
    train, hold, cv = paper_splits(y, holdout=p["holdout"], folds=p["folds"], random_state=run.seed)
    wm_ids = parts.index[in_wm]
    parts["split"] = ""
    parts.loc[wm_ids[train], "split"] = "train"
    parts.loc[wm_ids[hold], "split"] = "holdout"
    parts["fold"] = -1
    for k, (_, va) in enumerate(cv):
        parts.loc[wm_ids[va], "fold"] = k
    write_json(folder / "splits.json", {"train": train, "holdout": hold,
                                        "folds": [[a.tolist(), b.tolist()] for a, b in cv]})

    info_r2 = None  # a BGEN's info (its mfi table, or computed from the probabilities) unless --snp-info has one
    if inp.snp_info:
        info = pd.read_csv(inp.snp_info, dtype={"snp": str}).set_index("snp")
        if "info_r2" in info:
            info_r2 = info["info_r2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        kept, exclusions, n_missing_kept = _snp_qc_by_block(run, geno, parts.index, wm_ids[train], info_r2, folder)
    _caught([w for w in caught if issubclass(w.category, UserWarning)])
    pd.DataFrame({"snp": kept}).to_csv(folder / "snps.csv", index=False)
    exclusions.to_csv(folder / "snp_qc.csv", index=False)
    parts.to_csv(folder / "participants.csv")
    np.save(folder / "affine.npy", affine)
    reasons = exclusions["reason"].value_counts().to_dict() if len(exclusions) else {}
    log.info("WM groups: %d low, %d high (%d between the groups or missing); train %d, holdout %d; "
             "SNP QC keeps %d of %d", int((y == 0).sum()), int((y == 1).sum()), n_between, len(train),
             len(hold), len(kept), len(geno.variants))
    return {
        "n_aligned": len(parts), "n_dropped_by_alignment": len(cohort.dropped),
        "dropped_by_alignment": cohort.dropped.head(50).to_dict("records"),
        "image_shape": list(shape), "n_image_qc_failed": len(failed), "image_qc_failed": failed,
        "n_wm": int(in_wm.sum()), "n_low": int((y == 0).sum()), "n_high": int((y == 1).sum()),
        "n_between_groups_or_missing": int(n_between), "n_train": len(train), "n_holdout": len(hold),
        "n_folds": len(cv), "n_snps": len(geno.variants), "n_snps_kept": len(kept),
        "snp_qc_removed": reasons, "snp_qc_removed_snps": exclusions["snp"].tolist(),
        "missing_calls_imputed": n_missing_kept,
        "covariates": list(cov_frame.columns), "categorical_covariates": categorical,
        "covariates_dropped": [c for c in covariates if c not in cov_frame.columns],
    }


def _snp_qc_by_block(run, blocks, ids, fit_ids, info_r2, folder):
    """SNP QC of the genotypes a block of variants at a time: ``genotypes_qc.npy`` (kept SNPs,
    missing calls imputed) and ``genotypes_raw.npy`` (kept SNPs as read), rows ``ids``.

    Each SNP's statistics and decision depend on its own column (over the ``fit_ids`` rows)
    alone, so filtering block by block decides exactly what one :class:`SNPQualityFilter` on the
    whole matrix decides; the blocks are written to memory-mapped files, so neither the genotype
    matrix nor its filtered copy is ever whole in memory. Returns the kept SNPs, the exclusions
    (``snp``, ``reason``) and the number of missing calls imputed.
    """
    from numpy.lib.format import open_memmap

    from ...genetics import SNPQualityFilter
    from ...genetics._qc import _none_kept_message, _removed_message

    t, d = run.cfg["qc"], run.cfg["data"]
    fit_rows = ids.get_indexer(fit_ids)
    n, p = len(ids), len(blocks.variants)
    tmp = {name: folder / f"_{name}.tmp.npy" for name in ("qc", "raw")}
    out = {name: open_memmap(path, mode="w+", dtype=np.float32, shape=(n, p)) for name, path in tmp.items()}
    kept, exclusions, n_missing, done = [], [], 0, 0
    for block in blocks.blocks(rows=ids):
        info = info_r2  # keyed by SNP (the block's are looked up); else a BGEN's, of this block's variants
        if info is None and blocks.info:
            info = {s: blocks.info[s] for s in block.columns}
        qc = SNPQualityFilter(min_info_r2=t["min_info_r2"], max_missing=t["max_missing"], min_maf=t["min_maf"],
                              min_hwe_p=t["min_hwe_p"], info_r2=info, allow_dosage=d["allow_dosage"])
        qc._validate_params()
        qc._fit_columns(block.iloc[fit_rows])  # the decisions; the verdict (error, warning) on all blocks below
        exclusions.append(qc.exclusions_)
        k = int(qc.support_mask_.sum())
        if k:
            values = block.to_numpy(dtype=np.float32, copy=False)
            out["qc"][:, done:done + k] = qc.transform(block)
            raw = values[:, qc.support_mask_]
            n_missing += int(np.isnan(raw).sum())
            out["raw"][:, done:done + k] = raw
            kept += list(block.columns[qc.support_mask_])
            done += k
    exclusions = (pd.concat(exclusions, ignore_index=True) if exclusions
                  else pd.DataFrame({"snp": [], "reason": []}))
    if not kept:
        raise InputError(_none_kept_message(exclusions, p))
    if len(exclusions):
        warnings.warn(_removed_message(exclusions, p), UserWarning, stacklevel=2)
    step = max(1, (64 * 1024**2) // (4 * max(1, done)))  # the kept columns, a block of rows at a time
    for name in list(out):
        src = out.pop(name)  # no other reference: deleting it closes the map
        final = folder / f"genotypes_{name}.npy"
        src.flush()
        if done == p:  # every SNP kept: the scratch file is the result
            del src
            tmp[name].replace(final)
            continue
        dst = open_memmap(final, mode="w+", dtype=np.float32, shape=(n, done))
        for r in range(0, n, step):
            dst[r:r + step] = src[r:r + step, :done]
        dst.flush()
        del dst, src
        tmp[name].unlink()
    return kept, exclusions, n_missing


