"""Polygenic scores: PGS Catalog scoring files read, matched and scored (hand-computed expectations)."""

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

pytest.importorskip("pgscatalog.core")

from sklearn_cgni.genetics import PolygenicScore, polygenic_scores  # noqa: E402
from sklearn_cgni.io import write_bgen, write_pgen, write_plink  # noqa: E402
from sklearn_cgni.io._pgs import read_scoring_file, read_variant_table  # noqa: E402

# A real PGS Catalog header (PGS000001, harmonised file), as the Catalog publishes it.
CATALOG_HEADER = """###PGS CATALOG SCORING FILE - see https://www.pgscatalog.org/downloads/#dl_ftp_scoring for additional information
#format_version=2.0
##POLYGENIC SCORE (PGS) INFORMATION
#pgs_id=PGS000001
#pgs_name=PRS77_BC
#trait_reported=Breast cancer
#trait_mapped=breast carcinoma
#trait_efo=EFO_0000305
#genome_build=NR
#variants_number=5
#weight_type=NR
##SOURCE INFORMATION
#pgp_id=PGP000001
#citation=Mavaddat N et al. J Natl Cancer Inst (2015). doi:10.1093/jnci/djv036
##HARMONIZATION DETAILS
#HmPOS_build=GRCh37
#HmPOS_date=2022-07-29
#HmPOS_match_chr={"True": null, "False": null}
#HmPOS_match_pos={"True": null, "False": null}
"""

# Cohort: 4 participants, 6 variants; genotype values count a1.
SNP_INFO = pd.DataFrame({"chrom": [1, 1, 2, 2, 3, 3], "pos": [100, 200, 300, 400, 500, 600],
                         "a1": ["A", "G", "A", "C", "T", "G"], "a2": ["G", "T", "T", "A", "C", "C"]},
                        index=pd.Index(["rs1", "rs2", "rs3", "rs4", "rs5", "rs6"], name="snp"))
#                        rs3 (A/T) and rs6 (G/C) are strand-ambiguous
GENO = pd.DataFrame({"rs1": [0, 1, 2, 1], "rs2": [2, 1, 0, 0], "rs3": [1, 1, 0, 2],
                     "rs4": [0, 2, 1, 1], "rs5": [1, 0, 0, 2], "rs6": [2, 2, 1, 0]},
                    index=pd.Index(["p1", "p2", "p3", "p4"], name="participant_id")).astype("float32")


def _scoring(path, rows, pgs_id="PGS000001", header=None, gz=False):
    head = header if header is not None else f"#format_version=2.0\n#pgs_id={pgs_id}\n#pgs_name={pgs_id}\n" \
        "#trait_reported=test trait\n#genome_build=GRCh37\n"
    cols = "rsID\tchr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\n"
    text = head + cols + "".join("\t".join(str(x) for x in r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("pgs")
    write_plink(GENO, d / "geno", snp_info=SNP_INFO)
    return d


# rs1: by rsID, effect A = counted, w 0.5          -> 0.5 * rs1
# (no ID) chr1:200: by position, effect T = other -> flipped, -1.0 * (2 - rs2)
# rs3: A/T, ambiguous -> dropped
# rs4: effect C = counted, other A, w 2.0         -> 2.0 * rs4
# rs99: missing
# rs5: effect G matches neither allele (T/C)      -> missing
ROWS = [("rs1", 1, 100, "A", "G", 0.5), ("", 1, 200, "T", "G", -1.0), ("rs3", 2, 300, "A", "T", 3.0),
        ("rs4", 2, 400, "C", "A", 2.0), ("rs99", 9, 999, "A", "C", 1.0), ("rs5", 3, 500, "G", "A", 1.0)]


def _expected():
    g = GENO.astype(float)
    return 0.5 * g["rs1"] - 1.0 * (2 - g["rs2"]) + 2.0 * g["rs4"]


def test_rsid_position_flip_ambiguous_missing(cohort, tmp_path):
    path = _scoring(tmp_path / "s.txt", ROWS)
    with pytest.warns(UserWarning, match=r"3 of 6 variants matched \(50.0% < 75%\): 1 flipped, 1 strand-ambiguous, 2 missing"):
        scores, cov = polygenic_scores(path, cohort / "geno.bed")
    np.testing.assert_allclose(scores["PGS000001"], _expected())
    assert list(scores.index) == ["p1", "p2", "p3", "p4"]
    assert cov.loc[0, ["n_variants", "matched", "flipped", "ambiguous", "missing"]].tolist() == [6, 3, 1, 1, 2]


def test_keep_ambiguous(cohort, tmp_path):
    path = _scoring(tmp_path / "s.txt", ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, cov = polygenic_scores(path, cohort / "geno", keep_ambiguous=True)
    np.testing.assert_allclose(scores["PGS000001"], _expected() + 3.0 * GENO["rs3"])
    assert cov.loc[0, "matched"] == 4


def test_several_scores_and_catalog_gz(cohort, tmp_path):
    a = _scoring(tmp_path / "a.txt", ROWS[:2] + ROWS[3:4])
    # a harmonised .txt.gz with the Catalog's header: hm_chr/hm_pos win, rsID empty
    text = CATALOG_HEADER + "rsID\tchr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\thm_source\t" \
        "hm_rsID\thm_chr\thm_pos\thm_inferOtherAllele\n" \
        "rs6\t3\t9999\tC\tG\t0.25\tENSEMBL\trs6\t3\t600\t\n" \
        "\t3\t12345\tC\tT\t1.5\tliftover\t\t3\t500\t\n"
    b = tmp_path / "PGS000001_hmPOS_GRCh37.txt.gz"
    with gzip.open(b, "wt") as fh:
        fh.write(text)
    a = _scoring(a, ROWS[:2] + ROWS[3:4], pgs_id="PGS000002")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full coverage: no warning
        with pytest.raises(UserWarning):  # rs6 (G/C) is ambiguous: 1 of 2 matched
            polygenic_scores([a, b], cohort / "geno")
    with pytest.warns(UserWarning, match="PGS000001"):
        scores, cov = polygenic_scores([a, b], cohort / "geno")
    assert list(scores.columns) == ["PGS000002", "PGS000001"]
    g = GENO.astype(float)
    np.testing.assert_allclose(scores["PGS000002"], 0.5 * g["rs1"] - (2 - g["rs2"]) + 2.0 * g["rs4"])
    # chr3:500 has T (counted) / C: effect C is the other allele -> 1.5 * (2 - rs5)
    np.testing.assert_allclose(scores["PGS000001"], 1.5 * (2 - g["rs5"]))
    assert cov["matched"].tolist() == [3, 1] and cov["ambiguous"].tolist() == [0, 1]


@pytest.mark.parametrize("fmt", ["pgen", "bgen", "vcf"])
def test_other_formats_same_scores(cohort, tmp_path, fmt):
    path = _scoring(tmp_path / "s.txt", ROWS)
    if fmt == "pgen":
        geno = write_pgen(GENO, tmp_path / "g", snp_info=SNP_INFO) or tmp_path / "g.pgen"
    elif fmt == "bgen":
        geno = write_bgen(GENO, tmp_path / "g.bgen", snp_info=SNP_INFO)
    else:
        lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(GENO.index)]
        code = {0: "0/0", 1: "0/1", 2: "1/1"}
        for snp, r in SNP_INFO.iterrows():
            calls = [code[int(v)] for v in GENO[snp]]
            lines.append(f"{r.chrom}\t{r.pos}\t{snp}\t{r.a2}\t{r.a1}\t.\tPASS\t.\tGT\t" + "\t".join(calls))
        geno = tmp_path / "g.vcf"
        geno.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="3 of 6"):
        scores, _ = polygenic_scores(path, geno)
    np.testing.assert_allclose(scores["PGS000001"].to_numpy(), _expected().to_numpy(), atol=1e-6)


def test_estimator_in_pipeline(cohort, tmp_path):
    path = _scoring(tmp_path / "s.txt", ROWS)
    est = PolygenicScore(path, variants=cohort / "geno.bed", min_coverage=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = est.fit_transform(GENO)
    np.testing.assert_allclose(out["PGS000001"], _expected())
    assert est.coverage_.loc[0, "flipped"] == 1 and list(est.get_feature_names_out()) == ["PGS000001"]
    # a missing call counts as the mean dosage of the fit data
    g = GENO.copy()
    g.loc["p1", "rs4"] = np.nan
    assert est.transform(g).loc["p1", "PGS000001"] == pytest.approx(_expected()["p1"] + 2.0 * GENO["rs4"].mean())
    pipe = make_pipeline(PolygenicScore(path, variants=cohort / "geno.bed", min_coverage=0.0), StandardScaler())
    assert pipe.fit_transform(GENO).shape == (4, 1)


def test_errors_one_line(cohort, tmp_path):
    bad_weight = _scoring(tmp_path / "w.txt", ROWS[:1] + [("rs4", 2, 400, "C", "A", "abc")])
    with pytest.raises(ValueError, match=r"w.txt', data row 2 \(after the column names\): effect_weight"):
        read_scoring_file(bad_weight)
    first = _scoring(tmp_path / "f.txt", [("rs4", 2, 400, "C", "A", "abc")])
    with pytest.raises(ValueError, match=r"f.txt', data row 1 "):
        read_scoring_file(first)
    haplotype = tmp_path / "hap.txt"
    haplotype.write_text("#pgs_id=hap\n#trait_reported=x\n#genome_build=GRCh37\nrsID\tchr_name\tchr_position\t"
                         "effect_allele\teffect_weight\tis_dominant\nrs1\t1\t100\tA\t0.1\tFalse\n"
                         "rs2\t1\t200\tG\t0.2\tTrue\n")
    with pytest.raises(ValueError, match=r"hap.txt', data row 2 .*only additive"):
        read_scoring_file(haplotype)
    bad_header = tmp_path / "h.txt"
    bad_header.write_text("rsID\teffect_allele\teffect_weight\nrs1\tA\t1\n")
    with pytest.raises(ValueError, match=r"h.txt'.*unreadable header"):
        read_scoring_file(bad_header)
    dup = _scoring(tmp_path / "d.txt", ROWS[:1] + ROWS[:1])
    with pytest.raises(ValueError, match=r"variant\(s\) \['rs1:A'\] more than once"):
        read_scoring_file(dup)
    none = _scoring(tmp_path / "n.txt", [("rs99", 9, 999, "A", "C", 1.0)])
    with pytest.raises(ValueError, match=r"n.txt'.*none of its 1 variants matches"):
        polygenic_scores(none, cohort / "geno")
    for exc in (bad_weight, bad_header, dup):
        with pytest.raises(ValueError) as info:
            read_scoring_file(exc)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="CSV, which names no alleles"):
        read_variant_table(tmp_path / "g.csv")


# ---------------------------------------------------------------- estimator checks
_CHECK_VARIANTS = pd.DataFrame({"id": [f"x{i}" for i in range(50)] + [f"col_{i}" for i in range(50)],
                                "chrom": "1", "pos": np.arange(100) + 1, "counted": "A", "other": "C"})


def _check_estimator():
    """The checks' estimator. Its scoring file has a fixed path: the path is in the test IDs, which the
    pytest-xdist workers must collect identically (each writes the same bytes, then renames atomically)."""
    import os
    import tempfile
    from pathlib import Path

    d = Path(tempfile.gettempdir()) / "sklearn_cgni_test_pgs_checks"
    d.mkdir(exist_ok=True)
    rows = [("x0", 1, 1, "A", "C", 0.5), ("col_0", 1, 51, "C", "A", 2.0)]
    tmp = _scoring(d / f"check.txt.{os.getpid()}", rows)
    os.replace(tmp, d / "check.txt")
    return PolygenicScore(d / "check.txt", variants=_CHECK_VARIANTS, min_coverage=0.0)


@parametrize_with_checks([_check_estimator()])
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def test_make_cohort_publishes_a_gwas(tmp_path):
    """make_cohort(gwas_n=...) writes a scoring file that reads, matches and carries the planted direct path;
    the rest of the cohort does not depend on gwas_n."""
    from sklearn_cgni.datasets import make_cohort

    kw = dict(shape=(12, 14, 12), n_causal_snps=6, random_state=0, n_jobs=1)
    c = make_cohort(200, 120, gwas_n=1_000_000, output_dir=tmp_path, **kw)
    none = make_cohort(200, 120, gwas_n=None, **kw)
    assert none.gwas is None and "gwas" not in none.ground_truth or none.ground_truth["gwas"] is None
    pd.testing.assert_frame_equal(none.latent, c.latent)
    table = read_scoring_file(tmp_path / "gwas_pgs.txt.gz")
    assert table.attrs["score_id"] == "sim_gwas_1000000" and len(table) == len(c.gwas)
    assert (table["rsID"].isna()).any()  # position-only rows
    with pytest.warns(UserWarning, match="strand-ambiguous"):
        scores, cov = polygenic_scores(tmp_path / "gwas_pgs.txt.gz", tmp_path / "genotypes.bed")
    r = cov.iloc[0]
    assert r["flipped"] > 0 and r["missing"] > 0 and r["matched"] + r["ambiguous"] + r["missing"] == r["n_variants"]
    assert np.corrcoef(scores.iloc[:, 0], c.latent.loc[scores.index, "genetic_path"])[0, 1] > 0.4
