"""Stage 2 and SNP-level tools: quality control, polygenic scores and the contrastive SNP encoder."""

from ._qc import SNPQualityFilter, hwe_exact_pvalues  # noqa: F401
from ._pgs import PolygenicScore, polygenic_scores  # noqa: F401
from ._contrastive import ContrastiveSNPEncoder, StratifiedBatchSampler, matching_score  # noqa: E402,F401

__all__ = ["ContrastiveSNPEncoder", "PolygenicScore", "polygenic_scores", "SNPQualityFilter", "StratifiedBatchSampler", "hwe_exact_pvalues", "matching_score"]
