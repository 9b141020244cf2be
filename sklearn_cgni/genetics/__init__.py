"""Stage 2 and SNP-level tools: quality control and the contrastive SNP encoder."""

from ._qc import SNPQualityFilter, hwe_exact_pvalues  # noqa: F401
from ._contrastive import ContrastiveSNPEncoder, StratifiedBatchSampler, matching_score  # noqa: E402,F401

__all__ = ["ContrastiveSNPEncoder", "SNPQualityFilter", "StratifiedBatchSampler", "hwe_exact_pvalues", "matching_score"]
