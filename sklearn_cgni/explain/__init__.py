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
from ._association import association_table
from ._saliency import SaliencyExplainer
from ._plots import (
    plot_canonical_correlations,
    plot_training_curves,
    plot_region_effects,
    plot_snp_contributions,
    region_effect_map,
)
from ._comparison_plots import plot_association_heatmap, plot_forest, plot_paired_scatter
from ._scca import SparseCCA, canonical_correlations

__all__ = [
    "GPROFILER_URL",
    "enrichment_test",
    "genes_per_component",
    "gprofiler_query",
    "map_snps_to_genes",
    "plot_association_heatmap",
    "plot_canonical_correlations",
    "plot_forest",
    "plot_paired_scatter",
    "plot_training_curves",
    "plot_region_effects",
    "plot_snp_contributions",
    "read_gmt",
    "region_effect_map",
    "regions_per_component",
    "OcclusionExplainer",
    "SaliencyExplainer",
    "association_table",
    "SparseCCA",
    "canonical_correlations",
]
