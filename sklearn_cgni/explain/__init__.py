"""Post-analysis: sparse CCA, occlusion, genes and enrichment, figures."""

from ._occlusion import OcclusionExplainer
from ._scca import SparseCCA, canonical_correlations

__all__ = [
    "OcclusionExplainer",
    "SparseCCA",
    "canonical_correlations",
]
