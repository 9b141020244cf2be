"""``regions`` stage: regional gray-matter means over the atlas (the classical rows' image features)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from ._base import register
from ._common import _caught, _load_atlas

log = logging.getLogger("sklearn_cgni.cli")


@register("regions", inputs=True, after=("data",))
def _stage_regions(run, folder):
    """Mean gray matter per atlas region of every participant whose image passed QC.

    A fixed transform, computed once and read by every later stage that needs it: the classical
    rows and the confound table (WM participants) and the brain-genotype scores' SNP screen
    (all participants with an image).
    """
    from ...imaging import RegionalMeans

    parts, _, _ = run.data()
    qc = parts[parts["image_qc_passed"].to_numpy()]
    means = RegionalMeans(_load_atlas(run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        R = means.fit_transform(qc["image"])
    _caught(caught)
    np.save(folder / "regional_means.npy", R)
    pd.Series(qc.index, name="participant_id").to_csv(folder / "participants.csv", index=False)
    pd.DataFrame({"region": means.region_names_, "n_voxels": means.region_sizes_}).to_csv(folder / "regions.csv",
                                                                                         index=False)
    log.info("regional gray-matter means: %d regions of %s, %d participants", R.shape[1], means.atlas_.name, len(R))
    return {"atlas": means.atlas_.name, "n_regions": int(R.shape[1]), "n_participants": len(R)}
