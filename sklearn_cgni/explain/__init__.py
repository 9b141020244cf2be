"""Post-analysis: sparse CCA, occlusion, genes and enrichment, figures."""

from ._scca import SparseCCA, canonical_correlations

__all__ = [
    "SparseCCA",
    "canonical_correlations",
]
