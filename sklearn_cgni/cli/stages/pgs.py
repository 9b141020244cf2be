"""``pgs`` stage: polygenic scores from PGS Catalog scoring files (``data.pgs``) on the cohort's genotypes."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .._inputs import InputError
from ._base import register
from ._common import _caught

log = logging.getLogger("sklearn_cgni.cli")


def _pgs_files(run):
    """``data.pgs`` as paths: ``"simulated"`` is the cohort folder's ``gwas_pgs.txt.gz``."""
    files = []
    for f in run.cfg["data"]["pgs"]:
        if f == "simulated":
            path = Path(run.inputs.genotypes).parent / "gwas_pgs.txt.gz"
            if not path.is_file():
                raise InputError(f"data.pgs = \"simulated\" reads the simulated GWAS's scoring file next to the "
                                 f"genotypes, but {str(path)!r} does not exist (a cohort simulated by make_cohort "
                                 "with gwas_n=None, or not simulated at all): give the scoring file's path.")
            files.append(path)
        else:
            files.append(Path(f))
    return files


@register("pgs", config=("data.pgs", "data.pgs_keep_ambiguous", "data.pgs_min_coverage", "data.sample"), inputs=True,
          after=("data",), enabled=lambda run: bool(run.cfg["data"]["pgs"]), cost=0.5)
def _stage_pgs(run, folder):
    """``data.pgs``: each scoring file matched and scored on the data stage's participants; ``pgs_scores.csv`` and
    ``pgs_coverage.csv``. A stage of its own: adding or changing a score refits the models that read it and
    retrains no CNN."""
    from ...genetics import polygenic_scores

    d = run.cfg["data"]
    participants = run.data()[0].index
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        scores, coverage = polygenic_scores(_pgs_files(run), run.inputs.genotypes,
                                            keep_ambiguous=d["pgs_keep_ambiguous"],
                                            min_coverage=d["pgs_min_coverage"], sample=d["sample"] or None)
    _caught([w for w in caught if issubclass(w.category, UserWarning)])
    scores = scores.reindex(participants)
    scores.index.name = "participant_id"
    scores.to_csv(folder / "pgs_scores.csv")
    coverage.to_csv(folder / "pgs_coverage.csv", index=False)
    for r in coverage.to_dict("records"):
        log.info("PGS %s: %d of %d variants matched (%.1f %%): %d flipped, %d strand-ambiguous%s, %d missing",
                 r["score_id"], r["matched"], r["n_variants"], 100 * r["coverage"], r["flipped"], r["ambiguous"],
                 " (kept)" if d["pgs_keep_ambiguous"] else " (dropped)", r["missing"])
    return {"pgs": coverage["score_id"].tolist(), "pgs_coverage": coverage.to_dict("records")}
