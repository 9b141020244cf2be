"""``occlusion`` stage: regions and SNPs per component by occlusion (eq. 6, Fig. 3)."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd

from ._base import register
from ._common import _caught, _figure, _load_atlas, _savefig

log = logging.getLogger("sklearn_cgni.cli")


@register("occlusion", config=("occlusion",), inputs=True,
          after=("data", "image_cache", "finetune_f0", "models_f0", "scca"), gpu=True, cost=1.4)
def _stage_occlusion(run, folder):
    import torch

    from ...explain import OcclusionExplainer, plot_region_effects, plot_snp_contributions
    from ...genetics import ContrastiveSNPEncoder
    from ...imaging import ImagingCNNClassifier

    c = run.cfg["occlusion"]
    wm, y, G, snps = run.wm()
    _, _, cv = run.splits()
    tr = cv[0][0]
    occ_idx = tr if not c["n_participants"] else tr[: c["n_participants"]]
    images = run.images(wm["image"].iloc[occ_idx])
    cnn = ImagingCNNClassifier.from_weights(os.fspath(run.path("finetune_f0") / "cnn.pt"), images[:2],
                                            device=run.device)
    enc = ContrastiveSNPEncoder.from_weights(run.path("models_f0") / "encoder.pt", device=run.device)
    w = np.load(run.path("scca") / "weights.npz")
    occ = OcclusionExplainer((w["x"], w["y"]), feature_extractor=cnn, image_encoder=enc.image_encoder_,
                             genetic_encoder=enc.genetic_encoder_, atlas=_load_atlas(run),
                             region_threshold=c["region_threshold"], snp_threshold=c["snp_threshold"],
                             batch_size=c["batch_size"])
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        occ.fit(images, pd.DataFrame(G[tr], columns=snps))
    _caught(caught)
    occ.region_contributions_.to_csv(folder / "region_contributions.csv")
    occ.snp_contributions_.to_csv(folder / "snp_contributions.csv")
    occ.significant_regions_.to_csv(folder / "significant_regions.csv", index=False)
    occ.significant_snps_.to_csv(folder / "significant_snps.csv", index=False)
    import nibabel as nib

    nib.save(occ.atlas_.img, folder / "atlas_on_grid.nii.gz")
    occ.atlas_.labels.to_csv(folder / "atlas_labels.csv", index=False)
    figures = []
    try:
        if len(occ.significant_regions_):
            fig = plot_region_effects(occ.significant_regions_, occ.atlas_,
                                      title="Significant regions across components (red +, blue -)")
            _savefig(fig, folder / "fig3_regions.png")
            figures.append(_figure(folder, "fig3_regions.png", "Fig. 3: regions by component sign",
                                   "Atlas regions whose occlusion changes the imaging canonical variate beyond "
                                   f"{c['region_threshold']} SD, coloured by the sign of their effect, averaged "
                                   "over the sparse-CCA components."))
        _savefig(plot_snp_contributions(occ.snp_contributions_, threshold=c["snp_threshold"]),
                 folder / "snp_contributions.png")
        figures.append(_figure(folder, "snp_contributions.png", "SNP contributions per component",
                               f"z-scored occlusion contributions; dashed lines at ±{c['snp_threshold']} SD."))
    except Exception as exc:
        log.warning("occlusion figures skipped: %s", exc)
    log.info("occlusion: %d significant region rows, %d significant SNP rows (%d participants' images)",
             len(occ.significant_regions_), len(occ.significant_snps_), len(occ_idx))
    return {"atlas": occ.atlas_.name, "n_regions": int(len(occ.region_contributions_)),
            "n_image_participants": len(occ_idx), "n_snp_participants": len(tr),
            "n_image_forwards": int(occ.n_image_forwards_), "figures": figures,
            "component_orientation": occ.component_orientation_}
