"""Tests for SNP -> gene mapping, Tables 4-5, GMT enrichment and the g:Profiler query."""

import pandas as pd
import pytest
from scipy.stats import hypergeom

from sklearn_cgni.explain import (
    enrichment_test,
    genes_per_component,
    gprofiler_query,
    map_snps_to_genes,
    read_gmt,
    regions_per_component,
)

TABLE = pd.DataFrame({
    "SNP": ["rs1", "rs2", "rs2", "rs3", "rs4"],
    "gene_symbol": ["ADAM10", "LRRK2", "RAB6A", "BIN1", "FIS1"],
    "ensembl_id": ["ENSG00000137845", "ENSG00000188906", "ENSG00000175582", "ENSG00000136717",
                   "ENSG00000214253"],
})


def test_map_snps_to_genes_keeps_order_and_lists_missing_snps():
    with pytest.warns(UserWarning, match=r"2 SNP\(s\) are not in the gene table.*\['rs9', 'rs8'\]"):
        out = map_snps_to_genes(["rs2", "rs9", "rs1", "rs8"], TABLE)
    assert out["snp"].tolist() == ["rs2", "rs2", "rs1"]
    assert out["gene"].tolist() == ["LRRK2", "RAB6A", "ADAM10"]
    assert out["ensembl_id"].iloc[2] == "ENSG00000137845"
    assert out.attrs["unmapped"] == ["rs9", "rs8"]


def test_map_from_file_index_and_ensembl_only(tmp_path):
    path = tmp_path / "eqtl.tsv"
    TABLE.rename(columns={"SNP": "rsid"}).to_csv(path, sep="\t", index=False)
    assert map_snps_to_genes(["rs3"], path)["gene"].tolist() == ["BIN1"]
    indexed = TABLE.set_index("SNP")[["ensembl_id"]]
    out = map_snps_to_genes(["rs4"], indexed)
    assert out["gene"].tolist() == ["ENSG00000214253"]
    with pytest.raises(ValueError, match="needs a gene column"):
        map_snps_to_genes(["rs1"], TABLE[["SNP"]])
    with pytest.raises(ValueError, match="no column 'chrom'"):
        map_snps_to_genes(["rs1"], TABLE, snp_column="chrom")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        map_snps_to_genes(["rs1"], tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="needs a SNP column"):
        map_snps_to_genes(["rs1"], TABLE.rename(columns={"SNP": "marker"}))


def test_tables_4_and_5():
    sig_snps = pd.DataFrame({
        "component": [1, 1, 1, 2],
        "snp": ["rs3", "rs2", "rs7", "rs1"],
        "contribution": [0.1, -0.5, 0.2, 0.3],
        "sign": [1, -1, 1, 1],
    })
    with pytest.warns(UserWarning, match="rs7"):
        t4 = genes_per_component(sig_snps, TABLE)
    assert t4["component"].tolist() == [1, 2]
    assert t4["genes"].iloc[0] == "LRRK2, RAB6A, BIN1"  # ordered by |contribution|
    assert t4["unmapped_snps"].iloc[0] == ["rs7"]
    assert t4["n_snps"].tolist() == [3, 1]

    sig_regions = pd.DataFrame({"component": [1, 1, 2], "region": ["Caudate_L", "Cuneus_R", "Vermis_3"],
                                "sign": [-1, 1, 1]})
    t5 = regions_per_component(sig_regions)
    assert t5["regions"].iloc[0] == "Left Caudate (-), Right Cuneus (+)"
    assert t5["decreased"].iloc[0] == ["Left Caudate"]
    assert t5["regions"].iloc[1] == "Vermis 3 (+)"
    assert regions_per_component(sig_regions, pretty_names=False)["increased"].iloc[0] == ["Cuneus_R"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sign'\]"):
        regions_per_component(sig_regions.drop(columns="sign"))


def _gmt(tmp_path, text):
    path = tmp_path / "sets.gmt"
    path.write_text(text)
    return path


def test_read_gmt_and_enrichment(tmp_path):
    path = _gmt(tmp_path, "# comment\nGO:1\tsynapse\tA\tB\tC\tD\n\nGO:2\tdendrite\tE\tF\tG\tH\tI\tJ\n"
                          "GO:3\tother\tK\tL\n")
    sets = read_gmt(path)
    assert list(sets) == ["GO:1", "GO:2", "GO:3"]
    assert sets["GO:1"]["genes"] == frozenset("ABCD")
    background = list("ABCDEFGHIJKLMNOPQRST")
    res = enrichment_test(["A", "B", "C", "E"], sets, background=background, method="bonferroni")
    assert res["term"].tolist()[0] == "GO:1"
    top = res.iloc[0]
    assert top["n_overlap"] == 3 and top["overlap"] == ["A", "B", "C"]
    p = hypergeom.sf(2, 20, 4, 4)
    assert top["p_value"] == pytest.approx(p)
    assert top["p_adjusted"] == pytest.approx(min(1.0, 3 * p))
    assert res.set_index("term").loc["GO:3", "p_value"] == 1.0
    # path input, default background = union of sets and query
    res2 = enrichment_test(["A", "B"], path)
    assert res2["n_background"].iloc[0] == 12
    with pytest.raises(ValueError, match=r"query gene\(s\) \['Z'\] are not in the background"):
        enrichment_test(["A", "Z"], sets, background=background)
    with pytest.warns(UserWarning, match="no gene set passed"):
        assert enrichment_test(["A"], sets, min_set_size=50).empty


@pytest.mark.parametrize("text, line", [
    ("GO:1\tok\tA\tB\nbroken line without tabs\n", 2),
    ("GO:1\tno genes\t\t\n", 1),
    ("GO:1\td\tA\n\n\tno name\tB\n", 3),
    ("GO:1\td\tA\nGO:1\td\tB\n", 2),
])
def test_gmt_that_does_not_parse_names_the_line(tmp_path, text, line):
    with pytest.raises(ValueError, match=rf"line {line}:"):
        read_gmt(_gmt(tmp_path, text))


def test_empty_or_missing_gmt(tmp_path):
    with pytest.raises(ValueError, match="holds no gene set"):
        read_gmt(_gmt(tmp_path, "# only a comment\n"))
    with pytest.raises(FileNotFoundError):
        read_gmt(tmp_path / "missing.gmt")


def test_gprofiler_fails_clearly_without_network():
    # this machine has no internet: the default endpoint cannot be resolved
    with pytest.raises(ConnectionError, match="g:Profiler could not be reached.*enrichment_test"):
        gprofiler_query(["ADAM10", "LRRK2"], timeout=2)
    # a refused connection (closed local port) gives the same message
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        gprofiler_query(["ADAM10"], url="http://127.0.0.1:9/", timeout=2)
    with pytest.raises(ValueError, match="empty"):
        gprofiler_query([])
