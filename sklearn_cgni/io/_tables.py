"""Genotype (PLINK .bed / CSV) and phenotype (CSV) readers and writers.

Genotypes are returned as a participant × SNP :class:`pandas.DataFrame` of float32 minor-allele
counts (0, 1, 2) with ``NaN`` for missing calls, indexed by participant ID (str).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["read_genotypes", "read_phenotypes", "write_genotypes_csv", "write_plink", "check_genotypes"]

DEFAULT_NA_VALUES = ("", "NA", "NaN", "nan", ".", "-9")


def _plink_prefix(path):
    path = Path(path)
    if path.suffix in (".bed", ".bim", ".fam"):
        return path.with_suffix("")
    return path


def _check_unique_ids(index, source):
    dup = index[index.duplicated()].unique().tolist()
    if dup:
        shown = ", ".join(map(repr, dup[:10])) + (" ..." if len(dup) > 10 else "")
        raise ValueError(f"Duplicated participant ID(s) in {source}: {shown} ({len(dup)} in all).")


def check_genotypes(genotypes, *, source="genotypes", allow_dosage=False):
    """Check that a genotype table holds minor-allele counts.

    Parameters
    ----------
    genotypes : DataFrame
        Participants × SNPs.
    source : str, default="genotypes"
        Name of the table/file, used in error messages.
    allow_dosage : bool, default=False
        Accept any value in [0, 2] (imputed dosages) instead of only 0, 1 and 2.

    Returns
    -------
    genotypes : DataFrame of float32
        The same table, as float32.

    Raises
    ------
    ValueError
        Naming the first offending participant and SNP column.
    """
    _check_unique_ids(genotypes.index, source)
    dup_cols = genotypes.columns[genotypes.columns.duplicated()].unique().tolist()
    if dup_cols:
        raise ValueError(f"Duplicated SNP column(s) in {source}: {dup_cols[:10]}.")
    try:
        values = genotypes.to_numpy(dtype=np.float32, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        for col in genotypes.columns:
            coerced = pd.to_numeric(genotypes[col], errors="coerce")
            bad = coerced.isna() & genotypes[col].notna()
            if bad.any():
                pid = genotypes.index[np.flatnonzero(bad.to_numpy())[0]]
                raise ValueError(
                    f"Non-numeric genotype {genotypes.loc[pid, col]!r} for participant {pid!r}, "
                    f"SNP {col!r} in {source}."
                ) from exc
        raise
    finite = np.isfinite(values)
    if allow_dosage:
        bad = finite & ((values < 0) | (values > 2))
        allowed = "a dosage in [0, 2]"
    else:
        bad = finite & ~np.isin(values, (0.0, 1.0, 2.0))
        allowed = "0, 1, 2 or missing"
    bad |= np.isinf(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"Genotype code {float(values[rows[0], cols[0]])!r} for participant {genotypes.index[rows[0]]!r}, "
            f"SNP {genotypes.columns[cols[0]]!r} in {source} is not {allowed} "
            f"({bad.sum()} such value(s) in all)."
        )
    return pd.DataFrame(values, index=genotypes.index.astype(str), columns=genotypes.columns.astype(str))


def read_genotypes(path, *, id_column="participant_id", na_values=DEFAULT_NA_VALUES, allow_dosage=False,
                   count_A1=True):
    """Read genotypes from PLINK (.bed/.bim/.fam) or from a CSV table.

    Parameters
    ----------
    path : path-like
        A PLINK prefix or ``.bed`` file (read with bed-reader; participant IDs are the .fam
        IIDs, SNP IDs the .bim IDs), or a ``.csv``/``.tsv`` file with one row per participant,
        an ID column and one column per SNP.
    id_column : str, default="participant_id"
        ID column of a CSV (ignored for PLINK).
    na_values : sequence of str
        CSV strings read as missing calls.
    allow_dosage : bool, default=False
        Accept imputed dosages in [0, 2] rather than only hard calls.
    count_A1 : bool, default=True
        For PLINK: count the A1 allele (PLINK's minor allele by convention) as bed-reader does.

    Returns
    -------
    genotypes : DataFrame of float32
        Index ``participant_id`` (str), one column per SNP; ``NaN`` marks a missing call.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    if suffix in (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz"):
        if not path.exists():
            raise FileNotFoundError(f"Genotype file {os.fspath(path)!r} does not exist.")
        sep = "\t" if ".tsv" in suffix or suffix == ".txt" else ","
        table = pd.read_csv(path, sep=sep, na_values=list(na_values), keep_default_na=False,
                            dtype={id_column: str})
        if id_column not in table.columns:
            raise ValueError(
                f"Genotype table {os.fspath(path)!r} has no participant ID column {id_column!r}; "
                f"its first columns are {list(table.columns[:5])}."
            )
        table = table.set_index(id_column)
        table.index.name = "participant_id"
        return check_genotypes(table, source=os.fspath(path), allow_dosage=allow_dosage)

    prefix = _plink_prefix(path)
    missing = [os.fspath(prefix.with_suffix(s)) for s in (".bed", ".bim", ".fam") if not prefix.with_suffix(s).exists()]
    if missing:
        raise FileNotFoundError(f"PLINK file set {os.fspath(prefix)!r} is incomplete: missing {missing}.")
    from bed_reader import open_bed

    try:
        with open_bed(prefix.with_suffix(".bed"), count_A1=count_A1) as bed:
            values = bed.read(dtype="float32")
            iid = [str(i) for i in bed.iid]
            sid = [str(s) for s in bed.sid]
    except Exception as exc:
        raise OSError(f"Could not read PLINK file set {os.fspath(prefix)!r}: {exc}") from exc
    table = pd.DataFrame(values, index=pd.Index(iid, name="participant_id"), columns=sid)
    return check_genotypes(table, source=os.fspath(prefix.with_suffix(".bed")))


def read_phenotypes(path, *, id_column="participant_id", required=(), na_values=DEFAULT_NA_VALUES[:5]):
    """Read a phenotype CSV keyed by participant ID.

    Parameters
    ----------
    path : path-like
        CSV (or TSV) file with one row per participant.
    id_column : str, default="participant_id"
        Name of the participant ID column.
    required : sequence of str, default=()
        Columns that must be present (e.g. ``("digit_span", "age", "sex")``).
    na_values : sequence of str
        Strings read as missing.

    Returns
    -------
    phenotypes : DataFrame
        Indexed by participant ID (str).

    Raises
    ------
    ValueError
        If the ID column or a required column is absent, or IDs are duplicated.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Phenotype file {os.fspath(path)!r} does not exist.")
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    table = pd.read_csv(path, sep=sep, na_values=list(na_values), keep_default_na=False, dtype={id_column: str})
    if id_column not in table.columns:
        raise ValueError(
            f"Phenotype file {os.fspath(path)!r} has no participant ID column {id_column!r}; "
            f"columns are {list(table.columns)}."
        )
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise ValueError(
            f"Phenotype file {os.fspath(path)!r} lacks required column(s) {absent}; "
            f"columns are {list(table.columns)}."
        )
    table = table.set_index(id_column)
    table.index = table.index.astype(str)
    table.index.name = "participant_id"
    _check_unique_ids(table.index, os.fspath(path))
    return table


def write_genotypes_csv(genotypes, path):
    """Write a genotype table as CSV (``participant_id`` column, one column per SNP, empty = missing)."""
    out = genotypes.copy()
    out.index.name = "participant_id"
    # integers where called, empty where missing
    out.astype("Int8").to_csv(path, na_rep="")
    return Path(path)


def write_plink(genotypes, prefix, snp_info=None, sex=None):
    """Write genotypes as a PLINK .bed/.bim/.fam file set (bed-reader).

    Parameters
    ----------
    genotypes : DataFrame
        Participants × SNPs of A1 allele counts (NaN = missing).
    prefix : path-like
        Output prefix; ``prefix.bed``, ``.bim`` and ``.fam`` are written.
    snp_info : DataFrame, optional
        Indexed by SNP ID with columns ``chrom``, ``pos``, ``a1``, ``a2``.
    sex : array-like, optional
        0 female / 1 male per participant (PLINK codes 2 / 1).
    """
    from bed_reader import to_bed

    prefix = Path(prefix)
    props = {"iid": [str(i) for i in genotypes.index], "fid": [str(i) for i in genotypes.index],
             "sid": [str(s) for s in genotypes.columns]}
    if snp_info is not None:
        info = snp_info.loc[genotypes.columns]
        props.update(chromosome=[str(c) for c in info["chrom"]], bp_position=info["pos"].astype(int).tolist(),
                     allele_1=info["a1"].astype(str).tolist(), allele_2=info["a2"].astype(str).tolist())
    if sex is not None:
        props["sex"] = [1 if s == 1 else 2 for s in np.asarray(sex)]
    # bed-reader writes from a writeable array (pandas may hand out read-only views)
    values = np.array(genotypes.to_numpy(dtype=np.float32, na_value=np.nan), copy=True)
    to_bed(prefix.with_suffix(".bed"), values, properties=props, count_A1=True)
    return prefix
