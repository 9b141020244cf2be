"""Stage 1 and image-level tools: gray-matter QC and the 3D CNNs."""

from ._qc import image_quality_control
from ._brain_age import BrainAgeCNNTransformer
from ._dataset import ImageDataset, build_float16_cache, make_loader
from ._transfer import ImagingCNNClassifier

__all__ = [
    "BrainAgeCNNTransformer",
    "ImageDataset",
    "ImagingCNNClassifier",
    "build_float16_cache",
    "make_loader",
    "image_quality_control",
]

from ._genotype_scorer import BrainGenotypeScorer, cross_fit_scores  # noqa: E402

__all__ += ["BrainGenotypeScorer", "cross_fit_scores"]
from ._idp import IDPGenotypeScorer, RegionalMeans, make_idp_scorer  # noqa: E402

__all__ += ["IDPGenotypeScorer", "RegionalMeans", "make_idp_scorer"]
from ._snp_screen import screen_snps  # noqa: E402

__all__ += ["screen_snps"]
