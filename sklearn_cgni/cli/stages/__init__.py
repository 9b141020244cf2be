"""The stages of ``sklearn-cgni run``, one module each, registered in pipeline order.

Each module registers its stage with :func:`~._base.register`: the configuration sections
it reads, whether the input files matter, and the upstream stages it reads (see
:class:`~._base.Stage`). The run plan is built from the registry by :func:`~._base.build_plan`;
a stage reading the outputs of a stage it does not declare fails (:class:`~._base.Run`).

``simulate``      the embedded default cohort (only when no input is given)
``data``          align by participant ID, WM groups, image QC, splits, SNP QC
``regions``       regional gray-matter means over the atlas (the classical rows' image features)
``pgs``           polygenic scores from PGS Catalog scoring files (``data.pgs``; only when given)
``image_cache``   the images that passed QC decoded once into a float16 memory map, read by the CNNs
``brain_age``     stage 1: 3D CNN pre-trained on brain age (training participants)
``brain_age_classical`` the classical brain-age model (regional means -> ridge) on the CNN's holdout
``finetune_f<k>`` stage 1: CNN transferred to WM and fine-tuned on fold k; h_v
``models_f<k>``   stages 2-3, the baselines and the classical rows on fold k (Tables 1 and 2)
``training_curves`` the stage-1 CNNs' training curves
``scca``          sparse CCA of (z_v, z_g) of fold 0's CGNI model (Table 3)
``occlusion``     regions and SNPs per component (eq. 6, Fig. 3)
``genes``         genes per component, regions per component, enrichment (Tables 4-5)
``scores``        brain-genotype scores (cross-fitted), IDP baseline, saliency, associations
``adjusted_cnn_f<k>`` the WM CNN fine-tuned on fold k's covariate-adjusted images (confound table)
``confounds``     covariate-only baselines, adjusted and matched scores
``recovery``      ground-truth recovery (simulated cohorts only)
"""

# imported in pipeline order: the registry's order is the run's
from . import simulate, data, regions, pgs, image_cache, brain_age, finetune, models  # noqa: F401, I001
from . import training_curves, scca, occlusion, genes, scores, adjusted_cnn, confounds, recovery  # noqa: F401, I001
from ._base import REGISTRY, PlannedStage, Run, Stage, UndeclaredStageError, build_plan, register

__all__ = ["REGISTRY", "PlannedStage", "Run", "Stage", "UndeclaredStageError", "build_plan", "register"]
