"""``genes`` stage: genes per component, regions per component and gene-set enrichment (Tables 4-5)."""

from __future__ import annotations

import logging
import warnings

import pandas as pd

from ._base import register
from ._common import _gene_table

log = logging.getLogger("sklearn_cgni.cli")


@register("genes", config=("genes",), inputs=True, after=("data", "occlusion"))
def _stage_genes(run, folder):
    from ...explain import enrichment_test, genes_per_component, map_snps_to_genes, read_gmt, regions_per_component

    occ = run.path("occlusion")
    sig_snps = pd.read_csv(occ / "significant_snps.csv", dtype={"snp": str})
    sig_regions = pd.read_csv(occ / "significant_regions.csv")
    notes = []
    table = _gene_table(run)
    if len(sig_regions):
        regions_per_component(sig_regions).to_csv(folder / "table5.csv", index=False)
    if table is None and run.inputs.snp_genes:
        notes.append(f"The SNP -> gene table {run.inputs.snp_genes!r} could not be read: Table 4 and the "
                     "enrichment are skipped (see run.log).")
    elif table is None:
        notes.append("No SNP -> gene table given (--snp-genes, or a 'gene' column in --snp-info): Table 4 "
                     "and the enrichment are skipped.")
    elif len(sig_snps):
        source = run.inputs.snp_genes or run.inputs.snp_info
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # unmapped SNPs: noted and logged just below
                table4 = genes_per_component(sig_snps, table)
            table4.to_csv(folder / "table4.csv", index=False)
            unmapped = sorted({s_ for row in table4["unmapped_snps"] for s_ in row})
            if unmapped:
                notes.append(f"{len(unmapped)} significant SNP(s) are not in the SNP -> gene table {source!r} and "
                             f"have no gene in Table 4 or the enrichment: {', '.join(unmapped[:20])}"
                             + (" ..." if len(unmapped) > 20 else "") + ".")
                log.warning("%s", notes[-1])
        except (ValueError, OSError) as exc:  # an optional annotation: a gap in Table 4, never the run
            notes.append(f"Table 4 skipped: the SNP -> gene table {source!r} could not be used: {exc}")
            log.warning("%s", notes[-1])
            table4 = None
        if table4 is not None and run.inputs.gene_sets:
            try:
                _, snps, _ = run.data()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # unmapped SNPs: noted above
                    mapping = map_snps_to_genes(list(snps), table)
                genes = sorted(set(mapping.loc[mapping["snp"].isin(set(sig_snps["snp"])), "gene"].dropna()))
                background = sorted(set(mapping["gene"].dropna()))
                g = run.cfg["genes"]  # sets are restricted to the background by enrichment_test
                if not genes:
                    raise ValueError("none of the significant SNPs has a gene in the SNP -> gene table")
                res = enrichment_test(genes, read_gmt(run.inputs.gene_sets), background=background,
                                      method=g["enrichment_method"],
                                      min_set_size=g["min_set_size"])
                res.to_csv(folder / "enrichment.csv", index=False)
            except (ValueError, OSError) as exc:
                notes.append(f"Enrichment skipped: {exc}")
                log.warning("%s", notes[-1])
        elif table4 is not None:
            notes.append("No GMT gene sets given (--gene-sets): enrichment skipped.")
    else:
        notes.append("No significant SNP: Table 4 and the enrichment are empty.")
    for n in notes:
        log.info("%s", n)
    return {"notes": notes}
