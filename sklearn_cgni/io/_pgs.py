"""PGS Catalog scoring files: reading (pgscatalog-core), matching to a cohort's variants, writing.

Reading uses the Catalog's own ``pgscatalog.core`` (``ScoringFile``: the ``#`` header of format
2.0 and every row validated by its ``ScoreVariant`` model). Its errors are turned into one line
naming the file and the row.

Matching follows the rules of the PGS Catalog calculator (pgsc_calc / pgscatalog-match) for
biallelic SNPs, written here in a few lines of pandas because pgscatalog-match pins
``polars==0.20.30`` and pyarrow and works on plink2 ``--score`` inputs, not on in-memory tables:

- The harmonised columns win where a row has them: ``hm_rsID`` over ``rsID``, ``hm_chr`` /
  ``hm_pos`` over ``chr_name`` / ``chr_position``, ``hm_inferOtherAllele`` where
  ``other_allele`` is empty.
- A scoring variant is looked up by rsID among the cohort's variant IDs; failing that, by
  chromosome and position (``chr``-prefixes ignored, ``X``/``23`` kept as written).
- It matches when its effect allele is the cohort's counted allele (``+weight``), or its
  other allele (a *flip*: ``weight × (2 − dosage)``); with ``other_allele`` missing only the
  effect allele is compared. Alleles are compared on the same strand only (no reverse
  complement), as the calculator does by default.
- Strand-ambiguous variants (A/T, C/G in the cohort) are dropped unless ``keep_ambiguous``.
- A scoring file that lists one variant twice is refused, naming it.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["read_scoring_file", "read_variant_table", "match_scoring_file", "write_scoring_file",
           "COVERAGE_COLUMNS"]

#: Columns of the coverage table (one row per score).
COVERAGE_COLUMNS = ("score_id", "file", "n_variants", "matched", "flipped", "ambiguous", "missing",
                    "coverage")

_AMBIGUOUS = {frozenset("AT"), frozenset("CG")}


def _one_line(exc):
    """The first message of a pydantic ValidationError (or any error) on one line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "row"
            msg = " ".join(str(first.get("msg", "")).split())
            return f"{loc}: {msg if len(msg) < 300 else msg[:300] + ' ...'}"
        except Exception:  # pragma: no cover - defensive
            pass
    return " ".join(str(exc).split())[:300]


def read_scoring_file(path):
    """Read one PGS Catalog scoring file (format 2.0, plain or ``.gz``) with pgscatalog-core.

    Only additive weights of single variants are read (a haplotype, an APOE allele or a
    dominant/recessive weight is refused, naming the row).

    Parameters
    ----------
    path : path-like
        The scoring file.

    Returns
    -------
    weights : DataFrame
        One row per variant of the file, in its order, with columns ``rsID``, ``chr_name``,
        ``chr_position`` (Int64), ``effect_allele``, ``other_allele`` (None when absent) and
        ``effect_weight`` (float), harmonised columns applied (module docstring).
        ``weights.attrs["score_id"]`` is the header's ``pgs_id`` and
        ``weights.attrs["file"]`` the path.

    Raises
    ------
    ValueError
        One line naming the file (and the data row): an unreadable header, a row the Catalog's
        model refuses (e.g. a non-numeric weight), a file without a variant, or a variant listed
        twice.
    """
    try:
        from pgscatalog.core.lib import ScoringFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Reading PGS Catalog scoring files needs pgscatalog-core: "
                          "pip install 'sklearn-cgni[pgs]'.") from exc
    import logging

    path = Path(path)
    source = repr(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"Scoring file {source} does not exist.")
    logging.getLogger("pgscatalog.core.lib.scorefiles").setLevel(logging.ERROR)
    try:
        sf = ScoringFile(path)
    except Exception as exc:
        raise ValueError(f"Scoring file {source}: unreadable header ({_one_line(exc)}); a PGS Catalog "
                         "format 2.0 header needs at least #pgs_id, #trait_reported and #genome_build."
                         ) from None
    rows = []  # the data row that fails is len(rows) + 1
    try:
        for v in sf.variants:
            if v.is_complex or v.effect_type.value != "additive":
                kind = "complex (haplotype, HLA or APOE allele)" if v.is_complex else v.effect_type.value
                raise ValueError(f"a {kind} variant; only additive SNP weights are scored")
            rsid = v.hm_rsID or v.rsID
            chrom = v.hm_chr if v.hm_chr is not None else v.chr_name
            pos = v.hm_pos if v.hm_pos is not None else v.chr_position
            other = v.other_allele if v.other_allele is not None else v.hm_inferOtherAllele
            rows.append((rsid, None if chrom is None else str(chrom), pos, str(v.effect_allele).upper(),
                         None if other is None or "/" in str(other) else str(other).upper(),
                         float(v.effect_weight)))
    except Exception as exc:
        raise ValueError(f"Scoring file {source}, data row {len(rows) + 1} (after the column names): "
                         f"{_one_line(exc)}.") from None
    if not rows:
        raise ValueError(f"Scoring file {source} holds no variant.")
    table = pd.DataFrame(rows, columns=["rsID", "chr_name", "chr_position", "effect_allele", "other_allele",
                                        "effect_weight"])
    table["chr_position"] = table["chr_position"].astype("Int64")
    key = table["rsID"].where(table["rsID"].notna(),
                              table["chr_name"].astype(str) + ":" + table["chr_position"].astype(str))
    key = key + ":" + table["effect_allele"]
    dup = key[key.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Scoring file {source} lists variant(s) {dup[:10]} more than once; a scoring file "
                         "holds each variant once.")
    table.attrs["score_id"] = str(sf.pgs_id)
    table.attrs["file"] = os.fspath(path)
    return table


def write_scoring_file(weights, path, *, pgs_id, trait="simulated cognitive score", genome_build="GRCh37",
                       pgs_name=None, extra_header=None):
    """Write a PGS Catalog format 2.0 scoring file (gzip-compressed when the name ends in ``.gz``).

    Parameters
    ----------
    weights : DataFrame
        Columns ``rsID``, ``chr_name``, ``chr_position``, ``effect_allele``, ``other_allele``
        and ``effect_weight``.
    path : path-like
    pgs_id, trait, genome_build, pgs_name : str
        Header fields (``#pgs_id=`` ...); no ``=`` inside a value.
    extra_header : dict, optional
        Further ``#key=value`` header lines.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> from sklearn_cgni.io import read_scoring_file, write_scoring_file
    >>> w = pd.DataFrame({"rsID": ["rs1"], "chr_name": ["1"], "chr_position": [10], "effect_allele": ["A"],
    ...                   "other_allele": ["G"], "effect_weight": [0.5]})
    >>> path = write_scoring_file(w, os.path.join(tempfile.mkdtemp(), "PGS1.txt.gz"), pgs_id="PGS1")
    >>> read_scoring_file(path).attrs["score_id"]
    'PGS1'
    """
    for name, value in (("pgs_id", pgs_id), ("pgs_name", pgs_name), ("trait", trait)):
        if value is not None and ("=" in str(value) or "\n" in str(value)):
            raise ValueError(f"write_scoring_file: {name} {value!r} may not hold '=' or a line break.")
    import gzip

    path = Path(path)
    header = [
        "###PGS CATALOG SCORING FILE - see https://www.pgscatalog.org/downloads/#dl_ftp_scoring for additional "
        "information",
        "#format_version=2.0",
        "##POLYGENIC SCORE (PGS) INFORMATION",
        f"#pgs_id={pgs_id}",
        f"#pgs_name={pgs_name or pgs_id}",
        f"#trait_reported={trait}",
        f"#genome_build={genome_build}",
        f"#variants_number={len(weights)}",
        "#weight_type=beta",
    ] + [f"#{k}={v}" for k, v in (extra_header or {}).items()]
    cols = ["rsID", "chr_name", "chr_position", "effect_allele", "other_allele", "effect_weight"]
    body = weights[cols].to_csv(sep="\t", index=False, lineterminator="\n")
    text = "\n".join(header) + "\n" + body
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as fh:
        fh.write(text)
    return path


# ---------------------------------------------------------------------------- cohort variants
def read_variant_table(path, *, count_A1=True):
    """The variants of a genotype file, without decoding any genotype.

    Parameters
    ----------
    path : path-like
        A PLINK 1 or 2 file set, a BGEN file or a VCF/BCF (as :func:`~sklearn_cgni.io.read_genotypes`).
        A CSV genotype table carries no alleles and is refused.
    count_A1 : bool, default=True
        PLINK 1: the allele :func:`~sklearn_cgni.io.read_genotypes` counts (A1 when True).

    Returns
    -------
    variants : DataFrame
        Columns ``id`` (the ID :func:`~sklearn_cgni.io.read_genotypes` names the column by),
        ``chrom``, ``pos``, ``counted`` (the allele whose dosage is read) and ``other``.
    """
    from ._genotype_files import _read_plink_text
    from ._genotypes import GENOTYPE_FORMATS, genotype_format

    path = Path(path)
    fmt = genotype_format(path)
    source = repr(os.fspath(path))
    if fmt == "csv":
        raise ValueError(f"Genotype table {source} is a CSV, which names no alleles; polygenic scores need "
                         "PLINK 1/2, BGEN or VCF genotypes, whose alleles are matched to the scoring file's.")
    if fmt == "plink":
        prefix = path.with_suffix("") if path.suffix in GENOTYPE_FORMATS["plink"] else path
        bim = prefix.with_suffix(".bim")
        if not bim.is_file():
            raise FileNotFoundError(f"PLINK file set {os.fspath(prefix)!r} has no .bim file.")
        t = pd.read_csv(bim, sep=r"\s+", header=None, dtype=str, usecols=range(6),
                        names=["chrom", "id", "cm", "pos", "a1", "a2"])
        counted, other = (t["a1"], t["a2"]) if count_A1 else (t["a2"], t["a1"])
        out = pd.DataFrame({"id": t["id"], "chrom": t["chrom"], "pos": t["pos"], "counted": counted, "other": other})
    elif fmt == "pgen":
        prefix = path.with_suffix("") if path.suffix in GENOTYPE_FORMATS["pgen"] else path
        pvar = _read_plink_text(prefix.with_suffix(".pvar"), ".pvar", ["CHROM", "ID", "CM", "POS", "ALT", "REF"])
        out = pd.DataFrame({"id": pvar["ID"], "chrom": pvar["CHROM"], "pos": pvar["POS"], "counted": pvar["ALT"],
                            "other": pvar["REF"]})
    elif fmt == "bgen":
        from bgen import BgenReader

        if not path.is_file():
            raise FileNotFoundError(f"BGEN file {source} does not exist.")
        rows = []
        try:
            reader = BgenReader(os.fspath(path), delay_parsing=False)
            for var in reader:
                rid = var.rsid if var.rsid not in ("", ".") else var.varid
                alleles = list(var.alleles)
                rows.append((rid, str(var.chrom), int(var.pos), alleles[-1] if len(alleles) == 2 else ",".join(alleles[1:]),
                             alleles[0]))
        except Exception as exc:
            raise OSError(f"Could not read BGEN file {source}: {exc}") from exc
        out = pd.DataFrame(rows, columns=["id", "chrom", "pos", "counted", "other"])
    elif fmt == "vcf":
        from cyvcf2 import VCF

        if not path.is_file():
            raise FileNotFoundError(f"VCF file {source} does not exist.")
        rows = []
        try:
            vcf = VCF(os.fspath(path))
            for rec in vcf:
                rows.append((rec.ID or f"{rec.CHROM}:{rec.POS}", str(rec.CHROM), int(rec.POS), ",".join(rec.ALT),
                             rec.REF))
            vcf.close()
        except Exception as exc:
            raise OSError(f"Could not read VCF file {source}: {exc}") from exc
        out = pd.DataFrame(rows, columns=["id", "chrom", "pos", "counted", "other"])
    else:  # pragma: no cover - genotype_format raises first
        raise ValueError(f"Unknown genotype format of {source}.")
    out["id"] = out["id"].astype(str)
    out["pos"] = pd.to_numeric(out["pos"], errors="coerce").astype("Int64")
    out["counted"] = out["counted"].astype(str).str.upper()
    out["other"] = out["other"].astype(str).str.upper()
    return out.reset_index(drop=True)


def _chrom(c):
    c = str(c)
    return c[3:] if c.lower().startswith("chr") else c


def match_scoring_file(weights, variants, *, keep_ambiguous=False, source=None):
    """Match one scoring file's variants to a cohort's variants (rules in the module docstring).

    Parameters
    ----------
    weights : DataFrame
        As returned by :func:`read_scoring_file`.
    variants : DataFrame
        As returned by :func:`read_variant_table` (``id``, ``chrom``, ``pos``, ``counted``,
        ``other``).
    keep_ambiguous : bool, default=False
        Keep strand-ambiguous (A/T, C/G) variants, assumed on the same strand.

    Returns
    -------
    matched : DataFrame
        One row per matched variant: ``id`` (cohort variant ID), ``weight``, ``flipped``
        (bool). The score is ``Σ weight × d`` with ``d`` the dosage of the effect allele:
        the counted allele's dosage, or 2 minus it for a flipped variant.
    coverage : dict
        ``n_variants``, ``matched``, ``flipped``, ``ambiguous`` (dropped, or kept with
        ``keep_ambiguous``), ``missing`` (not in the cohort, or alleles that do not agree) and
        ``coverage`` (matched / n_variants).
    """
    source = source or weights.attrs.get("file", "scoring file")
    ids = variants["id"].astype(str)
    by_id = pd.Series(np.arange(len(variants)), index=ids)
    by_id = by_id[~by_id.index.duplicated(keep=False)]
    locus = variants["chrom"].map(_chrom) + ":" + variants["pos"].astype(str)
    by_pos = pd.Series(np.arange(len(variants)), index=locus.to_numpy())
    by_pos = by_pos[~by_pos.index.duplicated(keep=False)]  # multi-allelic sites split: position alone cannot say
    counted = variants["counted"].to_numpy()
    other = variants["other"].to_numpy()
    out, n_flip, n_amb, n_miss = [], 0, 0, 0
    used = set()
    for row in weights.itertuples(index=False):
        j = by_id.get(row.rsID) if isinstance(row.rsID, str) else None
        if j is None and row.chr_name is not None and pd.notna(row.chr_position):
            j = by_pos.get(f"{_chrom(row.chr_name)}:{int(row.chr_position)}")
        if j is None:
            n_miss += 1
            continue
        ea, oa = row.effect_allele, row.other_allele
        if ea == counted[j] and (oa is None or oa == other[j]):
            flipped = False
        elif ea == other[j] and (oa is None or oa == counted[j]):
            flipped = True
        else:
            n_miss += 1
            continue
        if frozenset((counted[j], other[j])) in _AMBIGUOUS:
            n_amb += 1
            if not keep_ambiguous:
                continue
        vid = ids.iloc[j]
        if vid in used:
            raise ValueError(f"Scoring file {source!r}: two of its rows match cohort variant {vid!r}; a scoring "
                             "file holds each variant once.")
        used.add(vid)
        n_flip += flipped
        out.append((vid, float(row.effect_weight), flipped))
    matched = pd.DataFrame(out, columns=["id", "weight", "flipped"])
    n = len(weights)
    coverage = {"n_variants": n, "matched": len(matched), "flipped": int(n_flip), "ambiguous": int(n_amb),
                "missing": int(n_miss), "coverage": len(matched) / n if n else 0.0}
    return matched, coverage


def check_coverage(coverage, score_id, source, min_coverage=0.75):
    """Refuse a score with no matched variant; warn below ``min_coverage``."""
    if coverage["matched"] == 0:
        raise ValueError(f"Scoring file {source!r} ({score_id}): none of its {coverage['n_variants']} variants "
                         f"matches the cohort ({coverage['missing']} missing, {coverage['ambiguous']} strand-"
                         "ambiguous dropped); check the genome build, the variant IDs and the alleles.")
    if coverage["coverage"] < min_coverage:
        warnings.warn(f"Scoring file {source!r} ({score_id}): {coverage['matched']} of "
                      f"{coverage['n_variants']} variants matched ({coverage['coverage']:.1%} < "
                      f"{min_coverage:.0%}): {coverage['flipped']} flipped, {coverage['ambiguous']} "
                      f"strand-ambiguous, {coverage['missing']} missing.", UserWarning, stacklevel=3)
