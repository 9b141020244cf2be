"""Genotype (PLINK 1 and 2, BGEN, VCF, CSV) and phenotype (CSV) readers and writers.

Genotypes are returned as a participant × SNP :class:`pandas.DataFrame` of float32 minor-allele
counts (0, 1, 2) with ``NaN`` for missing calls, indexed by participant ID (str).
"""

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["read_genotypes", "read_phenotypes", "infer_column_type", "PHENOTYPE_NA_VALUES", "write_genotypes_csv",
           "write_plink", "check_genotypes", "SEX_CODING"]

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


#: Cells per block of participants in :func:`check_genotypes` (boolean temporaries of a few MB).
_CHECK_BLOCK_CELLS = 4 * 1024**2


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
    # checked in blocks of participants: the boolean temporaries stay small whatever the cohort size
    n_bad, first, out_of_range = 0, None, False
    step = max(1, _CHECK_BLOCK_CELLS // max(1, values.shape[1]))
    for r0 in range(0, values.shape[0], step):
        v = values[r0:r0 + step]
        finite = np.isfinite(v)
        if allow_dosage:
            bad = finite & ((v < 0) | (v > 2))
        else:
            bad = finite & ~np.isin(v, (0.0, 1.0, 2.0))
            out_of_range = out_of_range or bool((finite & ((v < 0) | (v > 2))).any())
        bad |= np.isinf(v)
        k = int(bad.sum())
        if k and first is None:
            rows, cols = np.nonzero(bad)
            first = (r0 + rows[0], cols[0])
        n_bad += k
    if n_bad:
        allowed = "a dosage in [0, 2]" if allow_dosage else "0, 1, 2 or missing"
        if not allow_dosage and not out_of_range:
            allowed += (" (it looks like an imputed dosage: accept dosages with allow_dosage=True; in "
                        "sklearn-cgni run: data.allow_dosage = true, --allow-dosage)")
        r, c = first
        raise ValueError(
            f"Genotype code {float(values[r, c])!r} for participant {genotypes.index[r]!r}, "
            f"SNP {genotypes.columns[c]!r} in {source} is not {allowed} "
            f"({n_bad} such value(s) in all)."
        )
    # no copy of the values (a frame of float32 hands out its own array), unless they are read-only (pandas'
    # copy-on-write hands out read-only views): the caller gets a frame it can edit
    if not values.flags.writeable:
        values = values.copy()
    return pd.DataFrame(values, index=genotypes.index.astype(str), columns=genotypes.columns.astype(str), copy=False)


def read_genotypes(path, *, id_column="participant_id", na_values=DEFAULT_NA_VALUES, allow_dosage=False,
                   count_A1=True, snps=None, genes=None, snp_genes=None, sample=None, info_table=None):
    """Read genotypes from PLINK 1 or 2, BGEN, VCF or CSV, optionally only selected variants.

    Parameters
    ----------
    path : path-like
        One of

        - a PLINK 1 prefix or its ``.bed``/``.bim``/``.fam`` file (bed-reader; participant IDs
          are the .fam IIDs, SNP IDs the .bim IDs);
        - a PLINK 2 prefix or its ``.pgen``/``.pvar``/``.psam`` file (pgenlib; IDs from the
          .psam IID and the .pvar ID columns; hard calls or dosages);
        - a ``.bgen`` file (v1.1/v1.2; the ``bgen`` package), with its Oxford ``.sample`` file
          (``sample``, default ``<stem>.sample`` next to it) unless the file stores the IDs; its
          bgenix index ``.bgen.bgi`` is used when present and nothing is ever written next to it;
        - a ``.vcf``, ``.vcf.gz`` or ``.bcf`` file (cyvcf2; ``GT``, or ``DS`` when present);
        - a ``.csv``/``.tsv`` file with one row per participant, an ID column and one column
          per SNP.

        PLINK 2, BGEN and VCF values count the ALT allele (BGEN: the second allele), which is
        PLINK 2's A1 when it writes a ``.bed``; see :mod:`sklearn_cgni.io._genotypes`.
    id_column : str, default="participant_id"
        ID column of a CSV (ignored for the other formats).
    na_values : sequence of str
        CSV strings read as missing calls.
    allow_dosage : bool, default=False
        Accept imputed dosages in [0, 2] rather than only hard calls (BGEN probabilities give
        dosages, which are hard calls only where the probabilities are 0 or 1).
    count_A1 : bool, default=True
        For PLINK 1: count the A1 allele (PLINK's minor allele by convention) as bed-reader does.
    snps : list of str or path-like, optional
        Read only these variant IDs (rsIDs), or those listed one per line in this file. Only
        the selected variants are decoded. IDs not in the file are warned about; none found is
        an error.
    genes : list of str or path-like, optional
        Read only the variants that ``snp_genes`` maps to these genes (with ``snps``: both).
    snp_genes : DataFrame or path-like, optional
        SNP -> gene table with columns ``snp`` and ``gene``, for ``genes``.
    sample : path-like, optional
        BGEN only: the ``.sample`` file.
    info_table : path-like, optional
        BGEN only: a UK Biobank mfi table (``ukb_mfi_chrN_v3.txt``) giving each variant's
        imputation info; by default the info is computed from the genotype probabilities.

    Returns
    -------
    genotypes : DataFrame of float32
        Index ``participant_id`` (str, the file's order), one column per SNP; ``NaN`` marks a
        missing call. The columns are in one canonical order, whatever the file's: the order of
        ``snps`` when given, else by chromosome and position (a CSV, which has no positions,
        keeps its column order). A BGEN read also sets ``genotypes.attrs["info"]``: a dict
        SNP -> imputation info in [0, 1].

    Raises
    ------
    FileNotFoundError
        A missing file or companion file (``.bim``, ``.pvar``, ``.psam``, ``.sample``), named.
    OSError
        A file the reader cannot decode (corrupt, truncated), named.
    ValueError
        Mismatching participants between a BGEN and its ``.sample``, no selected variant in
        the file, duplicated variant IDs, multi-allelic variants (refused: split them first),
        or genotype values that are not counts (or dosages with ``allow_dosage``).

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> from sklearn_cgni.io import write_bgen
    >>> g = pd.DataFrame({"rs1": [0.0, 1.0, 2.0], "rs2": [2.0, 1.0, 0.0], "rs3": [1.0, 1.0, 0.0]},
    ...                  index=["1001", "1002", "1003"])
    >>> path = write_bgen(g, os.path.join(tempfile.mkdtemp(), "chr1.bgen"))
    >>> read_genotypes(path, snps=["rs3", "rs1"]).to_dict("list")
    {'rs3': [1.0, 1.0, 0.0], 'rs1': [0.0, 1.0, 2.0]}
    """
    from ._genotypes import canonical_variant_order, genotype_format, read_bgen, read_pgen, read_vcf, selected_snps

    path = Path(path)
    snps = selected_snps(snps, genes, snp_genes)
    fmt = genotype_format(path)
    if fmt != "bgen" and (sample is not None or info_table is not None):
        raise ValueError(f"sample= and info_table= apply to a BGEN file; {os.fspath(path)!r} is not one.")
    if fmt == "csv":
        table = _read_genotype_csv(path, id_column, na_values, snps)
    elif fmt == "plink":
        table = _read_plink1(path, count_A1, snps)
    elif fmt == "pgen":
        table = read_pgen(path, snps=snps)
    elif fmt == "vcf":
        table = read_vcf(path, snps=snps)
    else:
        table = read_bgen(path, snps=snps, sample=sample, info_table=info_table)
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(f"Genotype file {os.fspath(path)!r} holds {table.shape[0]} participant(s) and "
                         f"{table.shape[1]} SNP(s); it is empty.")
    info = table.attrs.get("info")
    order = canonical_variant_order(table.columns, snps, table.attrs.get("loci"))
    if not np.array_equal(order, np.arange(table.shape[1])):  # no copy when already in order
        table = table.iloc[:, order]
    out = check_genotypes(table, source=os.fspath(path), allow_dosage=allow_dosage)
    if info is not None:
        out.attrs["info"] = info
    return out


def _read_genotype_csv(path, id_column, na_values, snps):
    from ._genotypes import select_variants

    source = os.fspath(path)
    if not path.exists():
        raise FileNotFoundError(f"Genotype file {source!r} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"Genotype file {source!r} is a folder; expected a CSV file.")
    sep = "\t" if ".tsv" in "".join(path.suffixes) or path.suffix == ".txt" else ","
    table = _read_table(path, sep, id_column, na_values, "genotype")
    if id_column not in table.columns:
        raise ValueError(
            f"Genotype table {source!r} has no participant ID column {id_column!r}; "
            f"its first columns are {list(table.columns[:5])}. Name it with id_column (data.id_column, "
            "--id-column)."
        )
    table = table.set_index(id_column)
    table.index.name = "participant_id"
    if table.shape[1] == 0:
        raise ValueError(f"Genotype file {source!r} has no SNP column besides {id_column!r}.")
    if snps is not None:
        table = table.iloc[:, select_variants(table.columns, snps, f"genotype file {source!r}")]
    return table


#: The most variants whose last byte may carry non-zero padding before a .bed is refused
#: (PLINK writes the padding as zeros; a few stray bits are tolerated, a shifted .fam is not).
MAX_NONZERO_PADDING = 3


def check_plink_bed(bed, n_participants, n_variants):
    """Check a PLINK 1 ``.bed`` against its ``.fam`` and ``.bim`` line counts, and its padding bits.

    A variant-major ``.bed`` holds ``3 + n_variants * ceil(n_participants / 4)`` bytes; a
    ``.fam`` or ``.bim`` with a line too few or too many changes that size, unless only the
    ``.fam`` changed and ``n_participants`` stayed within the same multiple of 4. Then the
    last byte of each variant shows it: PLINK writes the ``4 - n % 4`` unused two-bit slots
    after the last participant as zeros, and with a shortened ``.fam`` they hold the
    genotypes of the participant the ``.fam`` lost. Every participant after the removed line
    would otherwise silently get the next participant's genotypes.

    Parameters
    ----------
    bed : path-like
        The ``.bed`` file.
    n_participants, n_variants : int
        Lines of its ``.fam`` and ``.bim``.

    Raises
    ------
    ValueError
        Naming the file set, when the size does not match or the padding is non-zero in more
        than :data:`MAX_NONZERO_PADDING` variants.
    """
    bed = Path(bed)
    prefix = os.fspath(bed.with_suffix(""))
    per_variant = -(-n_participants // 4)
    expected = 3 + n_variants * per_variant
    size = bed.stat().st_size
    with open(bed, "rb") as fh:
        magic = fh.read(3)
    if magic[:2] != b"\x6c\x1b" or magic[2:3] != b"\x01":
        raise ValueError(f"PLINK file set {prefix!r}: {os.fspath(bed)!r} is not a variant-major PLINK 1 .bed "
                         "(wrong magic bytes).")
    if size != expected:
        actual = (size - 3) / per_variant if per_variant else float("nan")
        raise ValueError(
            f"PLINK file set {prefix!r} is inconsistent: the .bed holds {size} bytes, but {n_participants} "
            f"participant(s) in the .fam and {n_variants} variant(s) in the .bim make {expected} "
            f"({actual:g} variants of {per_variant} bytes). A line is probably missing from or added to the "
            ".fam or .bim; rewrite the file set with PLINK."
        )
    used = n_participants % 4
    if used == 0 or n_variants == 0:
        return
    last = np.memmap(bed, dtype=np.uint8, mode="r", offset=3, shape=(n_variants, per_variant))[:, -1]
    padding = np.asarray(last) & np.uint8((0xFF << (2 * used)) & 0xFF)
    bad = np.flatnonzero(padding)
    if bad.size > MAX_NONZERO_PADDING:
        raise ValueError(
            f"PLINK file set {prefix!r} is inconsistent: the padding bits after the last of the {n_participants} "
            f".fam participant(s) are non-zero in {bad.size} of {n_variants} variant(s) (PLINK writes them as "
            "zero). The .fam is probably shorter than the genotype data (a line removed), which would give every "
            "participant after the missing line the next participant's genotypes; restore the .fam or rewrite "
            "the file set with PLINK."
        )


@functools.lru_cache(maxsize=4)
def _plink1_layout(prefix, stamp):
    """The ``.fam``/``.bim`` of a PLINK 1 file set, parsed and checked against the ``.bed`` once per
    version of the files (``stamp``: their sizes and modification times). A genotype file read a
    block of variants at a time (:class:`~sklearn_cgni.io.GenotypeBlocks`) asks for it once per
    block; parsing a 100,000-line ``.fam`` each time would make reading grow as n²."""
    from bed_reader import open_bed

    prefix = Path(prefix)
    try:
        with open_bed(prefix.with_suffix(".bed")) as bed:
            props = {"iid": np.asarray(bed.iid), "sid": np.asarray(bed.sid),
                     "chromosome": np.asarray(bed.chromosome), "bp_position": np.asarray(bed.bp_position)}
    except Exception as exc:
        raise OSError(f"Could not read PLINK file set {os.fspath(prefix)!r}: {exc}") from exc
    check_plink_bed(prefix.with_suffix(".bed"), len(props["iid"]), len(props["sid"]))
    return props


def _read_plink1(path, count_A1, snps):
    from ._genotypes import select_variants

    prefix = _plink_prefix(path)
    files = [prefix.with_suffix(s) for s in (".bed", ".bim", ".fam")]
    missing = [os.fspath(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"PLINK file set {os.fspath(prefix)!r} is incomplete: missing {missing}.")
    from bed_reader import open_bed

    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    props = _plink1_layout(os.fspath(prefix.resolve()), stamp)
    sid, iid = [str(s) for s in props["sid"]], [str(i) for i in props["iid"]]
    positions = (slice(None) if snps is None
                 else select_variants(sid, snps, f"PLINK file set {os.fspath(prefix)!r}"))
    try:  # the parsed properties given: bed-reader reads neither the .fam nor the .bim again
        with open_bed(prefix.with_suffix(".bed"), count_A1=count_A1, iid_count=len(iid), sid_count=len(sid),
                      properties=props) as bed:
            values = bed.read(index=np.s_[:, positions], dtype="float32")
    except Exception as exc:
        raise OSError(f"Could not read PLINK file set {os.fspath(prefix)!r}: {exc}") from exc
    loci = list(zip(props["chromosome"].astype(str), props["bp_position"]))
    if snps is not None:
        loci = [loci[p] for p in positions]
    sid = sid if snps is None else [sid[p] for p in positions]
    table = pd.DataFrame(values, index=pd.Index(iid, name="participant_id"), columns=sid, copy=False)
    table.attrs["loci"] = loci
    return table


#: The default coding of ``sex`` (keys compared case-insensitively): 0 = female, 1 = male, as the
#: simulated cohorts and UK Biobank's field 31 code it.
SEX_CODING = {"0": 0, "1": 1, "f": 0, "female": 0, "m": 1, "male": 1}


def _code_key(value):
    """A cell as a coding key: integral numbers without ``.0``, text stripped and lower-cased."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip().lower()


def _apply_coding(table, column, coding, source, file_column):
    """Map the codes of ``table[column]`` through ``coding``; unknown codes raise naming participants."""
    lookup = {_code_key(k): v for k, v in coding.items()}
    raw = table[column]
    present = raw.notna()
    keys = raw[present].map(_code_key)
    unknown = ~keys.isin(list(lookup))
    if unknown.any():
        bad = keys[unknown]
        ids = bad.index.tolist()
        shown = ", ".join(map(repr, ids[:10])) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
        codes = sorted(set(raw[present][unknown].astype(str)))
        col = repr(column) if file_column == column else f"{file_column!r} (used as {column!r})"
        raise ValueError(
            f"Phenotype file {source}, column {col}: unknown code(s) {codes[:10]} for participant(s) {shown}; "
            f"known codes are {sorted(coding)} (case-insensitive). Give this column's coding with "
            f"codings={{{column!r}: {{code: value}}}}"
            + (" (in sklearn-cgni run: data.sex_coding)." if column == "sex" else ".")
        )
    out = pd.Series(np.nan, index=raw.index, dtype=float)
    out[present] = keys.map(lookup).astype(float)
    return out


def _read_header(path, sep):
    """The header row as written (pandas would rename a repeated name to ``name.1``)."""
    import csv
    import gzip

    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return next(csv.reader(fh, delimiter=sep), None)


def _read_table(path, sep, id_column, na_values, what):
    """One CSV/TSV read: refuse an empty file or a repeated column name, naming the file."""
    try:
        header = _read_header(path, sep)
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"Could not read {what} file {os.fspath(path)!r}: {exc}") from exc
    if not header or not any(h.strip() for h in header):
        raise ValueError(f"{what.capitalize()} file {os.fspath(path)!r} is empty: no header row.")
    seen, repeated = set(), []
    for name in header:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise ValueError(
            f"{what.capitalize()} file {os.fspath(path)!r} repeats {'SNP ' if what == 'genotype' else ''}"
            f"column(s) {repeated[:10]} in its header; each column must appear once."
        )
    try:
        table = pd.read_csv(path, sep=sep, na_values=list(na_values), keep_default_na=False,
                            dtype={id_column: str})
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"Could not parse {what} file {os.fspath(path)!r}: {exc}") from exc
    if table.empty:
        raise ValueError(f"{what.capitalize()} file {os.fspath(path)!r} has a header but no participant rows.")
    return table


#: Cells read as missing in a phenotype or covariate column (besides the codes a user declares,
#: e.g. UK Biobank's negative codes with ``missing_codes=(-1, -3)``).
PHENOTYPE_NA_VALUES = ("", "NA", "N/A", "n/a", "na", "NaN", "nan", ".", "NULL", "null")

#: The column types :func:`read_phenotypes` knows.
COLUMN_TYPES = ("numeric", "categorical", "sex")


def _read_keyed_table(path, *, id_column, required, what, na_values, columns=None, hint=""):
    """A CSV/TSV keyed by participant ID (phenotypes, an image list): ``(table, source, file_column)``.

    The one reader of such tables: refuses a missing or empty file, a repeated column, a missing
    ID, mapped or required column and duplicated IDs, naming ``what`` and the file. ``hint`` is
    appended to the message about missing columns.
    """
    path = Path(path)
    source = repr(os.fspath(path))
    label = what[0].upper() + what[1:]
    if not path.exists():
        raise FileNotFoundError(f"{label} file {source} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"{label} file {source} is a folder; expected a CSV file.")
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    table = _read_table(path, sep, id_column, na_values, what)
    if id_column not in table.columns:
        raise ValueError(
            f"{label} file {source} has no participant ID column {id_column!r}; "
            f"columns are {list(table.columns)[:20]}. Name it with id_column (data.id_column, --id-column)."
        )
    columns = {str(k): str(v) for k, v in (columns or {}).items() if str(k) != str(v)}
    absent = {k: v for k, v in columns.items() if v not in table.columns}
    if absent:
        raise ValueError(
            f"{label} file {source} has no column(s) {sorted(absent.values())} (mapped to "
            f"{sorted(absent)}); columns are {list(table.columns)[:20]}."
        )
    clash = [k for k in columns if k in table.columns and k not in columns.values()]
    if clash:
        raise ValueError(
            f"{label} file {source} has column(s) {clash} and also maps other columns to these names "
            f"({ {k: columns[k] for k in clash} }); rename or remove one of them."
        )
    table = table.rename(columns={v: k for k, v in columns.items()})
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise ValueError(f"{label} file {source} lacks required column(s) {absent}; "
                         f"columns are {list(table.columns)[:20]}.{hint}")
    missing_id = table[id_column].isna()
    if missing_id.any():
        rows = (np.flatnonzero(missing_id.to_numpy()) + 2).tolist()  # 1-based, after the header
        raise ValueError(f"{label} file {source} has no participant ID in column {id_column!r} on line(s) "
                         f"{rows[:10]}.")
    table = table.set_index(id_column)
    table.index = table.index.astype(str).str.strip()
    table.index.name = "participant_id"
    _check_unique_ids(table.index, os.fspath(path))
    return table, source, lambda c: columns.get(c, c)


def _is_number(cell):
    try:
        float(cell)
    except (TypeError, ValueError):
        return False
    return True


def _type_column(table, column, kind, *, source, file_column, missing_codes, coding):
    """``table[column]`` as its type says: float (numeric, sex) or text levels (categorical); NaN = missing."""
    raw = table[column]
    col = repr(column) if file_column == column else f"{file_column!r} (used as {column!r})"
    if missing_codes:
        codes = {_code_key(c) for c in missing_codes}
        declared = raw.map(lambda v: bool(pd.notna(v) and _code_key(v) in codes)).astype(bool)
        raw = raw.where(~declared, np.nan)
        table[column] = raw
    if kind == "sex" or (kind == "categorical" and coding is not None):
        return _apply_coding(table, column, coding if coding is not None else SEX_CODING, source, file_column)
    if kind == "numeric":
        present = raw.notna()
        bad = present & ~raw.map(_is_number)
        if bad.any():
            cells = raw[bad]
            shown = ", ".join(f"{pid!r}: {str(v)!r}" for pid, v in cells.head(5).items())
            more = f" and {bad.sum() - 5} more" if bad.sum() > 5 else ""
            raise ValueError(
                f"Phenotype file {source}, column {col} is numeric but holds non-numeric cell(s) for participant(s) "
                f"{shown}{more}. Fix these cells, or leave them empty (missing: "
                f"{', '.join(map(repr, PHENOTYPE_NA_VALUES[1:]))}, "
                "or codes declared with missing_codes / data.missing_codes); a column of categories is declared "
                "categorical (data.categorical)."
            )
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        if np.isinf(values).any():
            pid = values.index[np.isinf(values.to_numpy())][0]
            raise ValueError(f"Phenotype file {source}, column {col}: infinite value for participant {pid!r}.")
        return values
    return raw.map(lambda v: v if pd.isna(v) else _level(v)).astype(object)


def _level(value):
    """A categorical cell as its level name: text stripped, integral numbers without ``.0``."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def infer_column_type(values):
    """``"numeric"`` when at least half the non-missing cells are numbers, else ``"categorical"``.

    A column mostly of numbers with a few text cells is numeric (its text cells are then
    refused, not turned into categories); declare a column of number codes (a site ID)
    categorical to have it one-hot encoded.
    """
    present = pd.Series(values).dropna()
    if present.empty:
        return "numeric"
    return "numeric" if present.map(_is_number).mean() >= 0.5 else "categorical"


def read_phenotypes(path, *, id_column="participant_id", required=(), columns=None, codings=None, types=None,
                    missing_codes=(), na_values=PHENOTYPE_NA_VALUES):
    """Read a phenotype CSV keyed by participant ID: renamed, typed and recoded columns.

    Every column named in ``required`` or ``types`` gets one type, declared or inferred, and
    is checked cell by cell:

    - ``"numeric"``: every cell is a number or missing; any other cell is refused, naming
      the file, the column and up to five participants with their cells;
    - ``"categorical"``: the cells are level names (text; ``3.0`` reads as ``"3"``);
    - ``"sex"``: the cells are mapped through ``codings["sex"]`` (default :data:`SEX_CODING`).

    ``sex`` is of type ``"sex"``; any other required column not in ``types`` is inferred with
    :func:`infer_column_type` (numeric when at least half its cells are numbers). Missing cells
    are the ``na_values`` (by default :data:`PHENOTYPE_NA_VALUES`: empty, ``NA``, ``N/A``,
    ``n/a``, ``na``, ``NaN``, ``nan``, ``.``, ``NULL``, ``null``) and any of ``missing_codes``.

    Parameters
    ----------
    path : path-like
        CSV (or TSV) file with one row per participant.
    id_column : str, default="participant_id"
        Name of the participant ID column in the file (e.g. ``"eid"`` for UK Biobank).
    required : sequence of str, default=()
        Columns that must be present after renaming (e.g. ``("digit_span", "age", "sex")``).
    columns : dict, optional
        The toolkit's column name -> the file's column name (e.g. ``{"digit_span": "4282-2.0",
        "age": "21003-2.0", "sex": "31-0.0"}``). Columns not listed keep their names.
    codings : dict, optional
        Column (toolkit name) -> ``{code: value}`` for coded columns. Codes are compared
        case-insensitively, numbers without a trailing ``.0``. By default ``sex`` is recoded
        with :data:`SEX_CODING` (0/1, F/M, Female/Male: 0 = female, 1 = male, UK Biobank's
        coding); pass ``{"sex": None}`` to keep the column as it is.
    types : dict, optional
        Column (toolkit name) -> one of :data:`COLUMN_TYPES`, for the columns present (only
        ``required`` ones must be).
    missing_codes : sequence of int, float or str, default=()
        Codes that mean a missing value in every typed column, e.g. UK Biobank's ``-1`` (do
        not know) and ``-3`` (prefer not to answer).
    na_values : sequence of str
        Cells read as missing.

    Returns
    -------
    phenotypes : DataFrame
        Indexed by participant ID (str), columns under the toolkit's names; the typed columns
        as float (numeric, sex) or text with NaN for missing (categorical).

    Raises
    ------
    ValueError
        If the file is empty, repeats a column, lacks the ID column, a mapped or required
        column, holds duplicated IDs, an unknown code or a non-numeric cell in a numeric column
        (naming the participants and column).

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ukb.csv")
    >>> pd.DataFrame({"eid": [1001, 1002], "4282-2.0": [4, 10], "31-0.0": ["Female", "M"]}).to_csv(
    ...     path, index=False)
    >>> ph = read_phenotypes(path, id_column="eid", columns={"digit_span": "4282-2.0", "sex": "31-0.0"})
    >>> ph.index.tolist(), ph["digit_span"].tolist(), ph["sex"].tolist()
    (['1001', '1002'], [4, 10], [0.0, 1.0])
    """
    types = dict(types or {})
    unknown = {c: t for c, t in types.items() if t not in COLUMN_TYPES}
    if unknown:
        raise ValueError(f"read_phenotypes: unknown column type(s) {unknown}; use one of {list(COLUMN_TYPES)}.")
    table, source, file_column = _read_keyed_table(
        path, id_column=id_column, required=tuple(required), what="phenotype",
        na_values=na_values, columns=columns,
        hint=" Map your column names with columns= (data.columns, --column NAME=COLUMN).")
    codings = {"sex": SEX_CODING, **(codings or {})}
    typed = dict.fromkeys(required)
    typed.update({c: t for c, t in types.items() if c in table.columns})
    for column, coding in codings.items():  # coded columns not otherwise typed (e.g. sex when not required)
        if coding is not None and column in table.columns and typed.get(column) is None:
            typed[column] = "sex" if column == "sex" else "categorical"
    for column, kind in typed.items():
        coding = codings.get(column)
        if kind is None:
            kind = "sex" if column == "sex" and coding is not None else infer_column_type(table[column])
        if column == "sex" and coding is None and kind == "sex":
            continue  # kept as it is
        table[column] = _type_column(table, column, kind, source=source, file_column=file_column(column),
                                     missing_codes=missing_codes, coding=coding if kind != "numeric" else None)
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
