"""Post-analysis: sparse CCA, occlusion, genes and enrichment, figures."""

from ._genes import (
    GPROFILER_URL,
    enrichment_test,
    genes_per_component,
    gprofiler_query,
    map_snps_to_genes,
    read_gmt,
    regions_per_component,
)
from ._occlusion import OcclusionExplainer
from ._scca import SparseCCA, canonical_correlations

__all__ = [
    "GPROFILER_URL",
    "enrichment_test",
    "genes_per_component",
    "gprofiler_query",
    "map_snps_to_genes",
    "read_gmt",
    "regions_per_component",
    "OcclusionExplainer",
    "SparseCCA",
    "canonical_correlations",
]
