"""``simulate`` stage: the embedded default cohort, simulated when no input is given."""

from __future__ import annotations

import logging
import os

from ._base import register

log = logging.getLogger("sklearn_cgni.cli")


@register("simulate", config=("cohort", "run"), inputs=True, enabled=lambda run: run.inputs.embedded)
def _stage_simulate(run, folder):
    from ...datasets import make_cohort

    c = run.cfg["cohort"]
    target = run.out / "cohort"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    log.info("simulating the embedded default cohort: %d participants, %d SNPs, images %s, %s SNP effects",
             c["n_participants"], c["n_snps"], tuple(c["shape"]), c["effect_pattern"])
    make_cohort(c["n_participants"], c["n_snps"], shape=tuple(c["shape"]), demographics=c["demographics"],
                effect_pattern=c["effect_pattern"], output_dir=target, random_state=run.seed)
    return {"folder": os.fspath(target), **c}
