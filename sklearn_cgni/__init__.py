"""sklearn_cgni: scikit-learn compatible imaging genetics.

The package is organised by stage of the method:

``sklearn_cgni.io``
    Reading cohort files (NIfTI images, PLINK/CSV genotypes, phenotype CSV) and aligning
    them by participant ID.
``sklearn_cgni.datasets``
    ``make_cohort``: a simulated cohort on real anatomy with planted ground truth.
``sklearn_cgni.imaging``
    Image quality control and the 3D CNNs (stage 1; the multi-task CNN of the second paper).
``sklearn_cgni.genetics``
    SNP quality control and the contrastive SNP encoder (stage 2).
``sklearn_cgni.classification``
    The CGNI classifier (stage 3) and the paper's baselines.
``sklearn_cgni.nn``
    Plain PyTorch modules and losses, free of scikit-learn.
``sklearn_cgni.explain``
    Sparse CCA, occlusion, saliency, association and enrichment.
``sklearn_cgni.evaluation``
    Confound-aware evaluation: covariate-only baselines, covariate adjustment inside CV,
    age- and sex-matched subsets, paired tests across folds.
``sklearn_cgni.persistence``
    Saving and loading fitted estimators with skops (no pickle; untrusted types refused).
``sklearn_cgni.cli``
    The ``sklearn-cgni`` command: ``simulate``, ``run``, ``report``.

Subpackages are imported explicitly, e.g. ``from sklearn_cgni.datasets import make_cohort``,
so that importing the top level stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sklearn-cgni")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
]
