"""``recovery`` stage: ground-truth recovery (cohorts with a ground_truth.json: simulated ones)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .._stages import write_json
from ._base import register

log = logging.getLogger("sklearn_cgni.cli")


def _precision_recall(found, truth):
    found, truth = set(found), set(truth)
    hit = len(found & truth)
    return {"found": len(found), "true": len(truth), "hits": hit,
            "precision": hit / len(found) if found else None, "recall": hit / len(truth) if truth else None}


@register("recovery", inputs=True, after=("data", "occlusion", "genes", "scores"),
          enabled=lambda run: bool(run.inputs.ground_truth))
def _stage_recovery(run, folder):
    gt = json.loads(Path(run.inputs.ground_truth).read_text())
    data = run.result("data")
    _, snps, _ = run.data()
    occ = run.path("occlusion")
    sig_snps = pd.read_csv(occ / "significant_snps.csv", dtype={"snp": str})
    sig_regions = pd.read_csv(occ / "significant_regions.csv")
    causal = [s for s in gt.get("causal_snps", []) if s in set(snps)]
    out = {
        "image_qc": _precision_recall(data["image_qc_failed"], gt.get("bad_images", [])),
        "snp_qc": _precision_recall(data["snp_qc_removed_snps"], gt.get("qc_fail_snps", [])),
        "causal_snps": _precision_recall(sig_snps["snp"].unique(), causal),
        "affected_regions": _precision_recall(sig_regions["region"].unique() if len(sig_regions) else [],
                                              gt.get("affected_regions", {})),
        "n_causal_snps_planted": len(gt.get("causal_snps", [])), "n_causal_snps_after_qc": len(causal),
    }
    if run.inputs.snp_info:
        info = pd.read_csv(run.inputs.snp_info, dtype={"snp": str}).set_index("snp")
        if "ld_block" in info and len(sig_snps):
            blocks = set(info.loc[causal, "ld_block"])
            found = sig_snps["snp"].unique()
            out["causal_snps"]["ld_tolerant_precision"] = float(np.mean([info.loc[s, "ld_block"] in blocks
                                                                         for s in found]))
    if len(sig_regions):
        signs = sig_regions.groupby("region")["sign"].agg(lambda s: int(np.sign(s.sum())))
        truth = gt.get("affected_regions", {})
        agree = [int(signs[r] == truth[r]) for r in signs.index if r in truth]
        out["affected_regions"]["sign_agreement"] = f"{sum(agree)} of {len(agree)}"
    enr = run.path("genes") / "enrichment.csv"
    if enr.exists() and gt.get("planted_gene_set"):
        e = pd.read_csv(enr)
        terms = e["term"].tolist()
        planted = gt["planted_gene_set"]
        out["planted_gene_set"] = {"name": planted, "rank": terms.index(planted) + 1 if planted in terms else None,
                                   "n_sets": len(terms)}
    acc = run.path("scores") / "score_accuracy.csv" if run.reads("scores") else None
    if acc is not None and acc.exists():
        a = pd.read_csv(acc, dtype={"snp": str})
        a["causal"] = a["snp"].isin(set(gt.get("causal_snps", [])))
        out["brain_genotype_scores"] = (a.groupby(["model", "causal"])["r_held_out"].mean().reset_index()
                                        .to_dict("records"))
    write_json(folder / "recovery.json", out)
    log.info("ground truth: causal SNPs %s; regions %s", out["causal_snps"], out["affected_regions"])
    return out
