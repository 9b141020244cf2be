"""Subpackage (filled in by its estimators)."""
from ._contrastive import ContrastiveSNPEncoder, StratifiedBatchSampler  # noqa: E402,F401
