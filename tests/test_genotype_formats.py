"""Genotype formats (issue 15): BGEN v1.2 + .sample, PLINK 2 and VCF read back as the table that
was written; selection by rsID or gene decodes only those variants; every failure names its file;
reading changes nothing in the input folder."""

import gzip
import hashlib
import os
import shutil
import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.io import (
    GenotypeBlocks,
    read_genotypes,
    read_info_table,
    write_bgen,
    write_genotypes_csv,
    write_pgen,
    write_plink,
)
from sklearn_cgni.io._genotypes import impute_info

IDS = [f"10{i:02d}" for i in range(12)]
SNPS = [f"rs{100 + j}" for j in range(8)]


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    g = pd.DataFrame(rng.integers(0, 3, size=(len(IDS), len(SNPS))).astype("float32"), index=IDS, columns=SNPS)
    g.iloc[2, 3] = np.nan
    g.index.name = "participant_id"
    return g


@pytest.fixture
def snp_info():
    return pd.DataFrame({"chrom": "1", "pos": np.arange(1, len(SNPS) + 1) * 1000, "a1": "T", "a2": "C",
                         "gene": ["G1", "G1", "G2", "G2", "G3", "G3", "G3", "G4"]}, index=pd.Index(SNPS, name="snp"))


def _write_vcf(g, path, snp_info, dosage=False):
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             '##FORMAT=<ID=DS,Number=1,Type=Float,Description="Dosage">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *g.index])]
    codes = {0.0: "0/0", 1.0: "0/1", 2.0: "1/1"}
    for snp in g.columns:
        info = snp_info.loc[snp]
        cells = [f"{codes.get(float(np.round(v)), './.')}:{v:.3f}" if np.isfinite(v) else "./.:." if dosage
                 else codes.get(float(v), "./.") for v in g[snp]]
        if not dosage:
            cells = [codes.get(float(v), "./.") if np.isfinite(v) else "./." for v in g[snp]]
        lines.append("\t".join(["1", str(info["pos"]), snp, info["a2"], info["a1"], ".", "PASS", ".",
                                "GT:DS" if dosage else "GT", *cells]))
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _hashes(folder):
    return {os.fspath(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(fmt, g, folder, snp_info):
    folder.mkdir(exist_ok=True)
    if fmt == "bgen":
        return write_bgen(g, folder / "g.bgen", snp_info)
    if fmt == "bgen_no_index":
        return write_bgen(g, folder / "g.bgen", snp_info, index=False)
    if fmt == "pgen":
        return write_pgen(g, folder / "g", snp_info).with_suffix(".pgen")
    if fmt == "plink":
        return write_plink(g, folder / "g", snp_info).with_suffix(".bed")
    return _write_vcf(g, folder / ("g.vcf.gz" if fmt == "vcf.gz" else "g.vcf"), snp_info)


FORMATS = ["bgen", "bgen_no_index", "pgen", "vcf", "vcf.gz", "plink"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_the_table(fmt, table, snp_info, tmp_path):
    path = _write(fmt, table, tmp_path / "in", snp_info)
    before = _hashes(tmp_path / "in")
    got = read_genotypes(path)
    pd.testing.assert_frame_equal(got, table, check_names=False)
    # selection by rsID: only those columns, in the list's order, with a warning for the absent one
    with pytest.warns(UserWarning, match=r"1 of the 3 selected variant\(s\) are not in .*g.*\['rs999'\]"):
        sel = read_genotypes(path, snps=["rs105", "rs101", "rs999"])
    pd.testing.assert_frame_equal(sel, table[["rs105", "rs101"]], check_names=False)
    # by gene through the SNP -> gene table
    genes = snp_info.reset_index()[["snp", "gene"]]
    sel = read_genotypes(path, genes=["G2", "G4"], snp_genes=genes)
    assert sel.columns.tolist() == ["rs102", "rs103", "rs107"]
    # a list file
    (tmp_path / "snps.txt").write_text("# wanted\nrs106\nrs100 extra\n")
    assert read_genotypes(path, snps=tmp_path / "snps.txt").columns.tolist() == ["rs106", "rs100"]
    # whatever the file's variant order, the columns come by chromosome and position
    shuffled = _write(fmt, table[SNPS[::-1]], tmp_path / "rev", snp_info)
    pd.testing.assert_frame_equal(read_genotypes(shuffled), table, check_names=False)
    with pytest.raises(ValueError, match=r"None of the 1 selected variant.*rs0.*g"):
        read_genotypes(path, snps=["rs0"])
    assert _hashes(tmp_path / "in") == before  # nothing written next to the inputs (no index)


def _blocks_frame(blocks, rows=None):
    return pd.concat(list(blocks.blocks(rows=rows)), axis=1)


@pytest.mark.parametrize("fmt", [*FORMATS, "csv"])
def test_blocks_read_what_read_genotypes_reads(fmt, table, snp_info, tmp_path):
    """GenotypeBlocks: the same table as read_genotypes, a bounded number of variants per block, for
    any row subset and order, with the same selection and the same variant order."""
    if fmt == "csv":
        (tmp_path / "in").mkdir()
        path = write_genotypes_csv(table, tmp_path / "in" / "g.csv")
    else:
        path = _write(fmt, table, tmp_path / "in", snp_info)
    blocks = GenotypeBlocks(path, block_bytes=3 * 4 * len(IDS))  # three variants of every participant
    assert blocks.streamed == (fmt in ("bgen", "bgen_no_index", "pgen", "plink"))
    assert list(blocks.participants) == IDS and blocks.variants == SNPS
    assert [b.shape[1] for b in blocks.blocks()] == [3, 3, 2]
    pd.testing.assert_frame_equal(_blocks_frame(blocks), read_genotypes(path), check_names=False)
    rows = IDS[::-2]
    got = _blocks_frame(blocks, rows=rows)
    pd.testing.assert_frame_equal(got, table.loc[rows], check_names=False)
    assert all(b.dtypes.eq("float32").all() for b in blocks.blocks(rows=rows))
    with pytest.raises(KeyError, match=r"1 participant\(s\) are not in genotype file .*g.*\['nobody'\]"):
        next(blocks.blocks(rows=[IDS[0], "nobody"]))
    if fmt == "csv":
        return
    genes = snp_info.reset_index()[["snp", "gene"]]
    sel = GenotypeBlocks(path, block_bytes=4 * len(IDS), genes=["G2", "G4"], snp_genes=genes)
    pd.testing.assert_frame_equal(_blocks_frame(sel), read_genotypes(path, genes=["G2", "G4"], snp_genes=genes))
    with pytest.warns(UserWarning, match=r"1 of the 3 selected variant\(s\) are not in .*\['rs999'\]"):
        sel = GenotypeBlocks(path, snps=["rs105", "rs101", "rs999"])
    assert sel.variants == ["rs105", "rs101"]
    shuffled = _write(fmt, table[SNPS[::-1]], tmp_path / "rev", snp_info)
    assert GenotypeBlocks(shuffled).variants == SNPS  # by chromosome and position, as read_genotypes


def test_blocks_carry_the_bgen_info_and_parse_an_mfi_table_once(tmp_path, monkeypatch):
    import sklearn_cgni.io._genotypes as genotypes

    rng = np.random.default_rng(1)
    dos = pd.DataFrame(rng.uniform(0, 2, size=(40, 5)).astype("float32"), index=[str(i) for i in range(40)],
                       columns=[f"rs{j}" for j in range(5)])
    path = write_bgen(dos, tmp_path / "d.bgen", bit_depth=16)
    mfi = tmp_path / "ukb_mfi_chr1_v3.txt"
    mfi.write_text("".join(f"1:{j}_C_T\trs{j}\t{j}\tC\tT\t0.2\tT\t{0.1 * (j + 1):.1f}\n" for j in range(5)))
    whole = read_genotypes(path, allow_dosage=True, info_table=mfi)
    calls = []
    monkeypatch.setattr(genotypes, "read_info_table", lambda p: calls.append(p) or read_info_table(p))
    genotypes._cached_info_table.cache_clear()
    blocks = GenotypeBlocks(path, block_bytes=2 * 4 * 40, allow_dosage=True, info_table=mfi)
    pd.testing.assert_frame_equal(_blocks_frame(blocks), whole)
    assert blocks.info == pytest.approx(whole.attrs["info"]) and len(calls) == 1


def test_bgen_dosages_info_and_mfi_table(tmp_path):
    rng = np.random.default_rng(1)
    dos = pd.DataFrame(rng.uniform(0, 2, size=(40, 5)).astype("float32"), index=[str(i) for i in range(40)],
                       columns=[f"rs{j}" for j in range(5)])
    dos["rs4"] = np.round(dos["rs4"])  # hard calls: info 1
    path = write_bgen(dos, tmp_path / "d.bgen", bit_depth=16)
    with pytest.raises(ValueError, match=r"Genotype code .* participant '0', SNP 'rs0' in .*d\.bgen.*"
                                         r"imputed dosage.*allow_dosage=True"):
        read_genotypes(path)
    got = read_genotypes(path, allow_dosage=True)
    np.testing.assert_allclose(got.to_numpy(), dos.to_numpy(), atol=2 / (2 ** 16 - 1))
    info = got.attrs["info"]
    assert set(info) == set(dos.columns) and info["rs4"] == 1.0 and 0 <= info["rs0"] < 1
    # the same IMPUTE info formula from E[g] and E[g^2]
    d = dos["rs0"].to_numpy(float)[:, None]
    p2 = np.clip(d - 1, 0, 1)
    assert info["rs0"] == pytest.approx(impute_info(d, (d - 2 * p2) + 4 * p2)[0], abs=1e-3)
    # 8 bits (UK Biobank's depth): within 2/255 of the dosage
    got8 = read_genotypes(write_bgen(dos, tmp_path / "d8.bgen"), allow_dosage=True)
    np.testing.assert_allclose(got8.to_numpy(), dos.to_numpy(), atol=2 / 255 + 1e-6)
    # an mfi table (no header) gives the info instead
    mfi = tmp_path / "ukb_mfi_chr1_v3.txt"
    mfi.write_text("".join(f"1:{j}_C_T\trs{j}\t{j}\tC\tT\t0.2\tT\t{0.1 * (j + 1):.1f}\n" for j in range(4)))
    with pytest.warns(UserWarning, match=r"1 variant\(s\) of .*d\.bgen.* not in the info table .*\['rs4'\]"):
        got = read_genotypes(path, allow_dosage=True, info_table=mfi)
    assert got.attrs["info"]["rs2"] == pytest.approx(0.3) and got.attrs["info"]["rs4"] == 1.0
    assert read_info_table(mfi)["rs3"] == pytest.approx(0.4)
    mfi.write_text("a b c\n")
    with pytest.raises(ValueError, match=r"Info table .*ukb_mfi_chr1_v3.txt.* 3 columns"):
        read_genotypes(path, allow_dosage=True, info_table=mfi)


def test_pgen_dosages(tmp_path):
    dos = pd.DataFrame({"rs1": [0.25, 1.5, np.nan], "rs2": [0.0, 1.0, 2.0]}, index=["a", "b", "c"], dtype="float32")
    path = write_pgen(dos, tmp_path / "d")
    got = read_genotypes(path, allow_dosage=True)
    np.testing.assert_allclose(got.to_numpy(), dos.to_numpy(), atol=1 / 16384)


def test_bgen_sample_file_is_used_and_checked(table, tmp_path):
    path = write_bgen(table, tmp_path / "g.bgen")
    sample = tmp_path / "g.sample"
    lines = sample.read_text().splitlines()
    # UK Biobank names the .sample after the release, not the .bgen: give it with sample=
    other = tmp_path / "ukb_s12.sample"
    other.write_text("\n".join(lines) + "\n")
    assert read_genotypes(path, sample=other).index.tolist() == IDS
    other.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"ukb_s12\.sample.* lists 11 participant\(s\) but BGEN file .*g\.bgen.* 12"):
        read_genotypes(path, sample=other)
    other.write_text("\n".join(lines[:5] + ["9999 9999 0 NA"] + lines[6:]) + "\n")
    with pytest.raises(ValueError, match=r"Participant 4 is '9999' in sample file .*ukb_s12.sample.* '1003' in BGEN"):
        read_genotypes(path, sample=other)
    with pytest.raises(FileNotFoundError, match=r"Sample file .*nope\.sample.* of BGEN file .*g\.bgen"):
        read_genotypes(path, sample=tmp_path / "nope.sample")


def _one_participant_bgen_without_ids(path):
    from bgen import BgenWriter

    with BgenWriter(os.fspath(path), 2, samples=None, compression="zlib") as w:
        w.add_variant("v", "rs1", "1", 1, ["A", "G"], np.eye(3)[[0, 2]])
    return path


@pytest.mark.parametrize("failure", ["no_sample", "pvar", "psam", "corrupt_bgen", "truncated_bgen", "stale_index",
                                     "corrupt_pgen", "corrupt_vcf", "duplicated", "multiallelic_bgen",
                                     "multiallelic_pvar", "multiallelic_vcf", "count_mismatch_pgen"])
def test_failures_name_the_file(failure, table, snp_info, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    needles, error = ["g."], (OSError, ValueError)
    if failure == "no_sample":
        path = _one_participant_bgen_without_ids(folder / "g.bgen")
        needles, error = ["g.bgen", "g.sample", "data.sample"], FileNotFoundError
    elif failure in ("pvar", "psam", "corrupt_pgen", "multiallelic_pvar", "count_mismatch_pgen"):
        path = write_pgen(table, folder / "g", snp_info).with_suffix(".pgen")
        if failure in ("pvar", "psam"):
            (folder / f"g.{failure}").unlink()
            needles, error = [f"g.{failure}", "incomplete"], FileNotFoundError
        elif failure == "corrupt_pgen":
            path.write_bytes(b"garbage")
            needles, error = ["g.pgen", "not a .pgen"], OSError
        elif failure == "count_mismatch_pgen":
            psam = folder / "g.psam"
            psam.write_text(psam.read_text() + "extra\n")
            needles, error = ["g.pgen"], OSError
        else:
            pvar = folder / "g.pvar"
            pvar.write_text(pvar.read_text().replace("\tT\n", "\tT,A\n", 1))
            needles, error = ["g'", "rs100", "biallelic", "norm -m-"], ValueError
    elif failure in ("corrupt_bgen", "truncated_bgen", "stale_index", "duplicated", "multiallelic_bgen"):
        g = table.rename(columns={"rs101": "rs100"}) if failure == "duplicated" else table
        path = write_bgen(g, folder / "g.bgen", None if failure == "duplicated" else snp_info,
                          index=failure not in ("multiallelic_bgen", "corrupt_bgen"))
        data = path.read_bytes()
        if failure == "corrupt_bgen":
            path.write_bytes(b"\x00" * 64)
            needles, error = ["g.bgen"], OSError
        elif failure == "truncated_bgen":
            Path_bgi = folder / "g.bgen.bgi"
            Path_bgi.unlink()
            path.write_bytes(data[: len(data) // 2])
            needles, error = ["g.bgen"], OSError
        elif failure == "stale_index":
            path.write_bytes(data + b"\x00")
            needles, error = ["g.bgen.bgi", "bgenix"], ValueError
        elif failure == "duplicated":
            needles, error = ["g.bgen", "rs100", "more than once"], ValueError
        else:
            from bgen import BgenWriter

            with BgenWriter(os.fspath(path), len(IDS), samples=IDS, compression="zlib") as w:
                w.add_variant("v", "rs7", "1", 1, ["A", "G", "T"], np.tile([1.0, 0, 0, 0, 0, 0], (len(IDS), 1)))
            Path_bgi = folder / "g.bgen.bgi"
            Path_bgi.unlink()
            needles, error = ["g.bgen", "rs7", "3 alleles", "biallelic"], ValueError
    else:
        path = _write_vcf(table, folder / "g.vcf", snp_info)
        if failure == "corrupt_vcf":
            path.write_text("not a vcf\n")
            needles, error = ["g.vcf"], OSError
        else:
            path.write_text(path.read_text().replace("\tC\tT\t", "\tC\tT,G\t", 1))
            needles, error = ["g.vcf", "rs100", "biallelic"], ValueError
    before = _hashes(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as exc:
            read_genotypes(path)
        with pytest.raises(error) as exc_blocks:  # read a variant at a time: the same error
            list(GenotypeBlocks(path, block_bytes=4).blocks())
    for needle in needles:
        assert needle in str(exc.value), (needle, str(exc.value))
        assert needle in str(exc_blocks.value), (needle, str(exc_blocks.value))
    assert "\n" not in str(exc.value).strip()
    assert _hashes(folder) == before


def test_bgen_index_is_only_read(table, tmp_path):
    """The bgenix index is opened read-only: its bytes and the folder stay as they were."""
    path = write_bgen(table, tmp_path / "g.bgen")
    conn = sqlite3.connect(tmp_path / "g.bgen.bgi")
    assert conn.execute("SELECT count(*) FROM Variant").fetchone()[0] == len(SNPS)
    conn.close()
    before = _hashes(tmp_path)
    os.chmod(tmp_path, 0o500)
    try:
        assert read_genotypes(path, snps=["rs103"]).shape == (len(IDS), 1)
    finally:
        os.chmod(tmp_path, 0o700)
    assert _hashes(tmp_path) == before
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


@pytest.mark.parametrize("n", [40, 41, 42, 43])
@pytest.mark.parametrize("where", ["middle", "end"])
def test_plink_fam_with_a_line_removed_is_refused(n, where, tmp_path):
    """A .fam that lost a line: refused at n = 0, 1, 2, 3 (mod 4) whether the line came from the middle
    or the end, by the .bed size (the .fam's n crosses a multiple of 4) or by the padding bits."""
    rng = np.random.default_rng(n)
    ids = [f"p{i:03d}" for i in range(n)]
    g = pd.DataFrame(rng.integers(0, 3, size=(n, 30)).astype("float32"), index=ids,
                     columns=[f"rs{j}" for j in range(30)])
    prefix = write_plink(g, tmp_path / "g")
    fam = prefix.with_suffix(".fam")
    pd.testing.assert_frame_equal(read_genotypes(prefix), g, check_names=False)  # the intact set reads back
    lines = fam.read_text().splitlines(keepends=True)
    del lines[n // 2 if where == "middle" else -1]
    fam.write_text("".join(lines))
    before = _hashes(tmp_path)
    match = "bytes" if n % 4 == 1 else "padding bits .* non-zero .* .fam is probably shorter"
    with pytest.raises(ValueError, match=match) as exc:
        read_genotypes(prefix)
    assert str(tmp_path / "g") in str(exc.value) and "\n" not in str(exc.value)
    assert _hashes(tmp_path) == before  # no input file changes


def test_plink_bim_with_a_line_removed_is_refused(table, snp_info, tmp_path):
    prefix = write_plink(table, tmp_path / "g", snp_info)
    bim = prefix.with_suffix(".bim")
    bim.write_text("".join(bim.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"\.bed holds .* bytes, but 12 participant\(s\) .* 7 variant\(s\)"):
        read_genotypes(prefix)
