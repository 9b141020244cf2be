"""Genotype readers for BGEN v1.2 (+ ``.sample``), PLINK 2 (``.pgen``/``.pvar``/``.psam``) and
VCF/BCF, variant selection by ID or gene, imputation info, and BGEN / PLINK 2 writers.

All readers return the same table as :func:`sklearn_cgni.io.read_genotypes` does for PLINK 1:
participants × variants of float32 counts of the *counted allele* (see below), ``NaN`` for a
missing call, indexed by participant ID (str).

The counted allele is the ALT allele: the second allele of a BGEN variant, the ``ALT`` of a
``.pvar`` or VCF record. PLINK 2 writes that allele as A1 when it exports a ``.bed``
(``--make-bed``), so a cohort converted between the formats with PLINK 2 gives the same table
through every reader (PLINK 1 ``.bed`` files are read with bed-reader's ``count_A1=True``).
For UK Biobank's imputed BGEN files (``a1`` = reference, ``a2`` = alternative in the mfi
tables) the counted allele is ``a2``, which is not always the minor allele.

Variant selection happens before any genotype is decoded: a BGEN file is reached through its
bgenix index (``<file>.bgen.bgi``, shipped with UK Biobank's files) when there is one, otherwise
through its variant headers (read once, without decoding genotypes); a PLINK 2 file through its
``.pvar`` and pgenlib's random access. A VCF has no index by variant ID, so it is scanned, but
only the selected records' genotypes are decoded. No reader writes anything next to the input
files (no index is created).
"""

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ._genotype_files import _bgen_dosage, _check_bgi, _read_plink_text, _read_sample_file

#: Genotype file suffixes :func:`read_genotypes` recognizes, by format.
GENOTYPE_FORMATS = {
    "plink": (".bed", ".bim", ".fam"),
    "pgen": (".pgen", ".pvar", ".psam"),
    "bgen": (".bgen",),
    "vcf": (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf"),
    "csv": (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz"),
}

#: Column names of a UK Biobank ``ukb_mfi_chrN_v3.txt`` table (no header in the file).
MFI_COLUMNS = ("alt_id", "rsid", "pos", "a1", "a2", "maf", "minor_allele", "info")


def genotype_format(path):
    """The format of a genotype path from its suffix: plink, pgen, bgen, vcf or csv.

    A path without a known suffix is a prefix: PLINK 1 (``prefix.bed``) or PLINK 2
    (``prefix.pgen``), whichever exists (PLINK 1 when neither does, for the error message).
    """
    name = os.fspath(path).lower()
    for fmt, suffixes in GENOTYPE_FORMATS.items():
        if name.endswith(suffixes):
            return fmt
    if not Path(f"{os.fspath(path)}.bed").exists() and Path(f"{os.fspath(path)}.pgen").exists():
        return "pgen"
    return "plink"


def companion_files(path):
    """The files read together with a genotype file (for fingerprints and messages)."""
    path = Path(path)
    fmt = genotype_format(path)
    if fmt in ("plink", "pgen"):
        prefix = path.with_suffix("") if path.suffix in GENOTYPE_FORMATS[fmt] else path
        return [prefix.with_suffix(s) for s in GENOTYPE_FORMATS[fmt]]
    if fmt == "bgen":
        return [path, path.with_suffix(".sample"), Path(f"{path}.bgi")]
    if fmt == "vcf":
        return [path, Path(f"{path}.tbi"), Path(f"{path}.csi")]
    return [path]


# ---------------------------------------------------------------------------- selection
def read_id_list(path):
    """Variant or gene IDs from a text file: the first field of each line; ``#`` lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Variant list {os.fspath(path)!r} does not exist.")
    ids = []
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                ids.append(fields[0])
    if not ids:
        raise ValueError(f"Variant list {os.fspath(path)!r} holds no ID.")
    return ids


def _as_id_list(ids):
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        return read_id_list(ids)
    return [str(i) for i in ids]


def selected_snps(snps=None, genes=None, snp_genes=None):
    """The variant IDs a reader decodes: ``snps`` (list or file), restricted to the variants that
    ``snp_genes`` maps to ``genes`` when given (those alone without ``snps``); None = all."""
    snps = _as_id_list(snps)
    if genes is None:
        return snps
    of_genes = snps_of_genes(genes, snp_genes)
    keep = set(of_genes)
    snps = of_genes if snps is None else [s for s in snps if s in keep]
    if not snps:
        raise ValueError("No variant is both in the selected SNPs and mapped to the selected genes.")
    return snps


def snps_of_genes(genes, snp_genes):
    """The SNPs that a SNP → gene table maps to the given genes.

    Parameters
    ----------
    genes : sequence of str or path-like
        Gene names (or a file with one per line).
    snp_genes : DataFrame or path-like
        Table with columns ``snp`` and ``gene`` (a CSV path, e.g. ``--snp-genes`` or a
        ``--snp-info`` with a ``gene`` column).

    Returns
    -------
    snps : list of str
    """
    genes = _as_id_list(genes)
    source = "the SNP -> gene table"
    if snp_genes is None:
        raise ValueError("Selecting variants by gene needs a SNP -> gene table with columns snp, gene "
                         "(snp_genes=; in sklearn-cgni run: --snp-genes, or a 'gene' column in --snp-info).")
    if not isinstance(snp_genes, pd.DataFrame):
        source = repr(os.fspath(snp_genes))
        snp_genes = pd.read_csv(snp_genes, dtype=str)
    absent = [c for c in ("snp", "gene") if c not in snp_genes.columns]
    if absent:
        raise ValueError(f"SNP -> gene table {source} has no column(s) {absent}; columns are "
                         f"{list(snp_genes.columns)[:10]}.")
    table = snp_genes.dropna(subset=["snp", "gene"])
    chosen = table[table["gene"].astype(str).isin(genes)]
    unknown = sorted(set(genes) - set(chosen["gene"].astype(str)))
    if len(unknown) == len(set(genes)):
        raise ValueError(f"None of the gene(s) {genes[:10]} is in {source}.")
    if unknown:
        warnings.warn(f"{len(unknown)} gene(s) are not in {source} and select no variant: {unknown[:20]}.",
                      UserWarning, stacklevel=3)
    return list(dict.fromkeys(chosen["snp"].astype(str)))


def _chromosome_key(chrom):
    """Sort key of a chromosome name: 1-22 numerically (``chr`` prefix ignored), then the others by name."""
    name = str(chrom)
    name = name[3:] if name.lower().startswith("chr") else name
    return (0, int(name), "") if name.isdigit() else (1, 0, name.upper())


def canonical_variant_order(columns, snps=None, loci=None):
    """Column positions putting variants in the package's one order.

    The order of ``snps`` (the user's list) when given; else by chromosome and position (ties
    by ID) when ``loci`` (one ``(chrom, pos)`` per column) is known; else (a CSV, or positions
    all 0 or missing) the given order.
    Models initialise and iterate over columns in this order, so the same cohort gives the
    same results whatever the variant order of its file.
    """
    columns = [str(c) for c in columns]
    if snps is not None:
        rank = {s: i for i, s in enumerate(dict.fromkeys(str(s) for s in snps))}
        return np.array(sorted(range(len(columns)), key=lambda j: (rank.get(columns[j], len(rank)), j)), dtype=int)
    known = loci is not None and len(loci) == len(columns) and any(
        pd.notna(pos) and float(pos) > 0 for _, pos in loci)  # PLINK writes 0 for an unknown position
    if known:
        def key(j):
            chrom, pos = loci[j]
            pos = float(pos) if pos is not None and pd.notna(pos) else float("inf")
            return (*_chromosome_key(chrom), pos, columns[j])

        return np.array(sorted(range(len(columns)), key=key), dtype=int)
    return np.arange(len(columns))


def select_variants(ids, snps, source):
    """Positions (file order) of the requested variant IDs among a file's IDs.

    Duplicated IDs among the selected (or, with no selection, among all) variants are refused;
    requested IDs absent from the file are warned about; none at all is an error.
    """
    ids = pd.Index([str(i) for i in ids])
    if snps is None:
        positions = np.arange(len(ids))
    else:
        wanted = pd.Index(list(dict.fromkeys(snps)))
        positions = np.flatnonzero(ids.isin(wanted))
        missing = wanted.difference(ids[positions], sort=False).tolist()
        if len(positions) == 0:
            raise ValueError(f"None of the {len(wanted)} selected variant(s) (e.g. {wanted[:5].tolist()}) is in "
                             f"{source}" + (f", whose variant IDs begin {ids[:5].tolist()}." if len(ids) else "."))
        if missing:
            warnings.warn(f"{len(missing)} of the {len(wanted)} selected variant(s) are not in {source}: "
                          f"{missing[:20]}{' ...' if len(missing) > 20 else ''}.", UserWarning, stacklevel=3)
    chosen = ids[positions]
    dup = chosen[chosen.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Variant ID(s) {dup[:10]} appear more than once in {source} ({len(dup)} such ID(s)); "
                         "give each variant a unique ID (e.g. plink2 --set-all-var-ids) or select others.")
    return positions


def _refuse_multiallelic(variant_id, alleles, source):
    raise ValueError(
        f"Variant {variant_id!r} in {source} has {len(alleles)} alleles {list(alleles)[:6]}; only biallelic "
        "variants are read. Split multi-allelic variants first (bcftools norm -m-, or plink2 --make-pgen "
        "with --max-alleles 2 to drop them), or leave them out of the selection."
    )


# ---------------------------------------------------------------------------- info r²
def impute_info(expected, expected_sq):
    """IMPUTE's info measure per variant from each participant's E[g] and E[g²].

    ``info = 1 - Σ (E[g²] - E[g]²) / (2 N θ (1 - θ))`` with ``θ = Σ E[g] / 2N`` over the
    non-missing participants; 1 for a monomorphic variant. Hard calls give 1.

    Parameters
    ----------
    expected, expected_sq : ndarray of shape (n_participants, n_variants)
        Expected ALT count and expected squared count (``NaN`` = missing).

    Returns
    -------
    info : ndarray of shape (n_variants,)
    """
    e = np.asarray(expected, dtype=np.float64)
    f = np.asarray(expected_sq, dtype=np.float64)
    n = np.sum(np.isfinite(e), axis=0)
    theta = np.nansum(e, axis=0) / np.maximum(2 * n, 1)
    denom = 2 * n * theta * (1 - theta)
    with np.errstate(invalid="ignore", divide="ignore"):
        info = 1 - np.nansum(f - e * e, axis=0) / denom
    return np.where(denom > 1e-12, np.clip(info, 0.0, 1.0), 1.0)


def read_info_table(path):
    """Imputation info per rsID from a UK Biobank mfi table (``ukb_mfi_chrN_v3.txt``).

    The file has no header and the columns alt_id, rsid, pos, a1, a2, maf, minor_allele, info
    (:data:`MFI_COLUMNS`); a table with a header holding ``rsid`` and ``info`` columns is read too.

    Returns
    -------
    info : Series of float
        Indexed by rsID (the first row of a repeated rsID).
    """
    source = repr(os.fspath(path))
    if not Path(path).is_file():
        raise FileNotFoundError(f"Info table {source} does not exist.")
    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"Could not parse info table {source}: {exc}") from exc
    first = table.iloc[0].str.lower().tolist()
    if "rsid" in first and "info" in first:
        table = table.iloc[1:].set_axis(first, axis=1)
    elif table.shape[1] == len(MFI_COLUMNS):
        table.columns = list(MFI_COLUMNS)
    else:
        raise ValueError(f"Info table {source} has {table.shape[1]} columns; expected the {len(MFI_COLUMNS)} "
                         f"columns of a UK Biobank mfi table {list(MFI_COLUMNS)} (no header) or a header "
                         "with 'rsid' and 'info'.")
    info = pd.to_numeric(table["info"], errors="coerce")
    bad = info.isna() | (info < 0) | (info > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"Info table {source}, variant {table['rsid'].iloc[row]!r}: info "
                         f"{table['info'].iloc[row]!r} is not a number in [0, 1].")
    info.index = table["rsid"].astype(str)
    return info[~info.index.duplicated()]


@functools.lru_cache(maxsize=2)
def _cached_info_table(path, mtime_ns, size):
    return read_info_table(path)


def _info_table(path):
    """:func:`read_info_table`, parsed once while the file is unchanged (a BGEN read a block of
    variants at a time, :class:`~sklearn_cgni.io.GenotypeBlocks`, asks for it once per block;
    an mfi table holds millions of rows). The Series is shared: read it, do not change it."""
    p = Path(path)
    if not p.is_file():
        return read_info_table(path)  # its own error
    st = p.stat()
    return _cached_info_table(os.fspath(p.resolve()), st.st_mtime_ns, st.st_size)


# ---------------------------------------------------------------------------- BGEN
def read_bgen(path, *, snps=None, sample=None, info_table=None):
    """Read ALT-allele dosages of the selected variants of a BGEN (v1.1/v1.2) file.

    Parameters
    ----------
    path : path-like
        The ``.bgen`` file. Its bgenix index ``<path>.bgi`` is used when present.
    snps : list of str, optional
        Variant IDs (the BGEN rsid field; the variant ID when the rsid is empty or ``.``).
    sample : path-like, optional
        Oxford ``.sample`` file; default ``<stem>.sample`` next to the BGEN file, else the
        participant IDs stored in the BGEN file.
    info_table : path-like, optional
        UK Biobank mfi table; default: the info measure computed from the probabilities.

    Returns
    -------
    genotypes : DataFrame of float32
        With ``attrs["info"]``: a dict variant ID → imputation info.
    """
    from bgen import BgenReader

    path = Path(path)
    source = repr(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"BGEN file {source} does not exist.")
    indexed = _check_bgi(path, source)
    try:
        reader = BgenReader(os.fspath(path), delay_parsing=indexed)
        n_samples, embedded = reader.header.nsamples, reader.header.has_sample_ids
        stored = list(reader.samples) if embedded else None
        if indexed and snps is not None:  # only the selected rsIDs are looked up in the index
            found = sorted((v.fileoffset, v.rsid, v) for s in dict.fromkeys(snps) for v in reader.with_rsid(s))
            ids, variants = [f[1] for f in found], [f[2] for f in found]
        else:
            rsids = reader.rsids()
            varids = None if indexed else reader.varids()
            ids = [r if r not in ("", ".") or varids is None else varids[i] for i, r in enumerate(rsids)]
            variants = None
    except Exception as exc:  # the reader raises ValueError/IndexError/RuntimeError on bad files
        raise OSError(f"Could not read BGEN file {source}: {exc}") from exc

    sample_path = Path(sample) if sample is not None else path.with_suffix(".sample")
    if sample is not None and not sample_path.is_file():
        raise FileNotFoundError(f"Sample file {os.fspath(sample_path)!r} of BGEN file {source} does not exist.")
    if sample_path.is_file():
        participants = _read_sample_file(sample_path, source)
        if len(participants) != n_samples:
            raise ValueError(f"Sample file {os.fspath(sample_path)!r} lists {len(participants)} participant(s) but "
                             f"BGEN file {source} holds {n_samples}; give the .sample file of this BGEN file.")
        if stored is not None and stored != participants:
            k = next(i for i, (a, b) in enumerate(zip(stored, participants)) if a != b)
            raise ValueError(f"Participant {k + 1} is {participants[k]!r} in sample file "
                             f"{os.fspath(sample_path)!r} but {stored[k]!r} in BGEN file {source}.")
    elif stored is not None:
        participants = stored
    else:
        raise FileNotFoundError(f"BGEN file {source} stores no participant IDs and its sample file "
                                f"{os.fspath(sample_path)!r} does not exist; give the .sample file "
                                "(sample=; in sklearn-cgni run: data.sample, --sample).")

    positions = select_variants(ids, snps, f"BGEN file {source}")
    values = np.empty((n_samples, len(positions)), dtype=np.float32)
    computed = np.empty(len(positions))
    loci = []
    for j, pos in enumerate(positions):
        try:
            var = reader[int(pos)] if variants is None else variants[pos]
            alleles = var.alleles
        except Exception as exc:  # a truncated or corrupt variant block
            raise OSError(f"Could not read variant {ids[pos]!r} of BGEN file {source}: {exc}") from exc
        if len(alleles) != 2:
            _refuse_multiallelic(ids[pos], alleles, f"BGEN file {source}")
        try:
            dosage, sq = _bgen_dosage(var)
        except Exception as exc:
            raise OSError(f"Could not decode variant {ids[pos]!r} of BGEN file {source}: {exc}") from exc
        values[:, j] = dosage
        loci.append((str(var.chrom), int(var.pos)))
        computed[j] = impute_info(dosage[:, None], sq[:, None])[0] if np.isfinite(sq).any() else np.nan
    reader.close()
    columns = [ids[p] for p in positions]
    info = pd.Series(computed, index=columns)
    if info_table is not None:
        table = _info_table(info_table)
        found = info.index.isin(table.index)
        if not found.all():
            warnings.warn(f"{int((~found).sum())} variant(s) of {source} are not in the info table "
                          f"{os.fspath(info_table)!r}; their info is computed from the probabilities: "
                          f"{info.index[~found][:10].tolist()}.", UserWarning, stacklevel=3)
        info[found] = table.reindex(info.index[found]).to_numpy()
    table = pd.DataFrame(values, index=pd.Index(participants, name="participant_id"), columns=columns)
    table.attrs["info"] = {k: float(v) for k, v in info.items()}
    table.attrs["loci"] = loci
    return table


# ---------------------------------------------------------------------------- PLINK 2
def read_pgen(path, *, snps=None):
    """Read ALT-allele counts or dosages of the selected variants of a PLINK 2 file set (pgenlib).

    Parameters
    ----------
    path : path-like
        The prefix, or its ``.pgen``, ``.pvar`` or ``.psam`` file.
    snps : list of str, optional
        Variant IDs (the ``.pvar`` ID column).

    Returns
    -------
    genotypes : DataFrame of float32
    """
    import pgenlib

    path = Path(path)
    prefix = path.with_suffix("") if path.suffix in GENOTYPE_FORMATS["pgen"] else path
    files = {s: prefix.with_suffix(s) for s in GENOTYPE_FORMATS["pgen"]}
    missing = [os.fspath(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"PLINK 2 file set {os.fspath(prefix)!r} is incomplete: missing {missing}.")
    psam = _read_plink_text(files[".psam"], ".psam", ["FID", "IID"])
    iid = "IID" if "IID" in psam.columns else psam.columns[1 if psam.shape[1] > 1 else 0]
    participants = psam[iid].astype(str).tolist()
    pvar = _read_plink_text(files[".pvar"], ".pvar", ["CHROM", "ID", "CM", "POS", "ALT", "REF"])
    if "ID" not in pvar.columns or "ALT" not in pvar.columns:
        raise ValueError(f"PLINK 2 .pvar file {os.fspath(files['.pvar'])!r} has no ID or ALT column; "
                         f"columns are {list(pvar.columns)}.")
    source = f"PLINK 2 file set {os.fspath(prefix)!r}"
    positions = select_variants(pvar["ID"].tolist(), snps, source)
    alt = pvar["ALT"].to_numpy()[positions]
    multi = [i for i, a in enumerate(alt) if "," in a]
    if multi:
        row = positions[multi[0]]
        _refuse_multiallelic(pvar["ID"].iloc[row], [pvar["REF"].iloc[row], *alt[multi[0]].split(",")]
                             if "REF" in pvar else alt[multi[0]].split(","), source)
    try:
        reader = pgenlib.PgenReader(os.fspath(files[".pgen"]).encode(), raw_sample_ct=len(participants),
                                    variant_ct=len(pvar))
        if reader.get_raw_sample_ct() != len(participants) or reader.get_variant_ct() != len(pvar):
            raise ValueError(f"it holds {reader.get_raw_sample_ct()} participants x {reader.get_variant_ct()} "
                             f"variants, the .psam/.pvar list {len(participants)} x {len(pvar)}")
        order = np.argsort(positions, kind="stable")
        buf = np.empty((len(positions), len(participants)), dtype=np.float32)
        reader.read_dosages_list(np.ascontiguousarray(positions[order], dtype=np.uint32), buf)
        reader.close()
    except Exception as exc:  # pgenlib raises RuntimeError with a bytes message
        msg = exc.args[0].decode(errors="replace").strip() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise OSError(f"Could not read {source} ({os.fspath(files['.pgen'])!r}): {msg}") from exc
    values = np.empty_like(buf)
    values[order] = buf
    values[values < 0] = np.nan  # -9 = missing
    columns = pvar["ID"].to_numpy()[positions].tolist()
    table = pd.DataFrame(values.T, index=pd.Index(participants, name="participant_id"), columns=columns)
    if "CHROM" in pvar.columns and "POS" in pvar.columns:
        table.attrs["loci"] = list(zip(pvar["CHROM"].astype(str).to_numpy()[positions],
                                       pd.to_numeric(pvar["POS"], errors="coerce").to_numpy()[positions]))
    return table


# ---------------------------------------------------------------------------- VCF
def read_vcf(path, *, snps=None):
    """Read ALT-allele counts (``GT``) or dosages (``DS``, when present) from a VCF/BCF (cyvcf2).

    The file is scanned (a VCF has no index by variant ID); only the selected records'
    genotypes are decoded. A record without an ID is named ``CHROM:POS``.

    Returns
    -------
    genotypes : DataFrame of float32
    """
    from cyvcf2 import VCF

    path = Path(path)
    source = f"VCF file {os.fspath(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{source} does not exist.")
    wanted = None if snps is None else set(snps)
    ids, columns, seen, multi = [], [], set(), []
    try:
        vcf = VCF(os.fspath(path), gts012=True)  # lazy=True crashes cyvcf2 0.35 on FORMAT
        participants = list(vcf.samples)
        for rec in vcf:
            vid = rec.ID or f"{rec.CHROM}:{rec.POS}"
            ids.append(vid)
            if wanted is not None and vid not in wanted:
                continue
            if vid in seen:
                continue  # reported by select_variants
            seen.add(vid)
            if len(rec.ALT) != 1:
                multi.append((vid, [rec.REF, *rec.ALT]))
                break
            if "DS" in rec.FORMAT:
                col = np.asarray(rec.format("DS"), dtype=np.float32)[:, 0]
                col[col < 0] = np.nan
            else:
                gt = rec.gt_types.astype(np.float32)
                col = np.where(gt == 3, np.nan, gt).astype(np.float32)
            columns.append((vid, col, (str(rec.CHROM), int(rec.POS))))
        vcf.close()
    except Exception as exc:
        raise OSError(f"Could not read {source}: {exc}") from exc
    if multi:
        _refuse_multiallelic(*multi[0], source)
    if not ids:
        raise ValueError(f"{source} holds no variant.")
    select_variants(ids, snps, source)  # duplicates, absent and none-found messages
    values = np.column_stack([c for _, c, _ in columns]) if columns else np.empty((len(participants), 0), np.float32)
    table = pd.DataFrame(values, index=pd.Index(participants, name="participant_id"),
                         columns=[v for v, _, _ in columns])
    table.attrs["loci"] = [locus for _, _, locus in columns]
    return table


# ---------------------------------------------------------------------------- writers
def _variant_table(genotypes, snp_info):
    cols = [str(c) for c in genotypes.columns]
    if snp_info is None:
        return pd.DataFrame({"chrom": "1", "pos": np.arange(1, len(cols) + 1), "a1": "A", "a2": "G"}, index=cols)
    info = snp_info.loc[cols]
    return pd.DataFrame({"chrom": info["chrom"].astype(str).to_numpy(), "pos": info["pos"].astype(int).to_numpy(),
                         "a1": info["a1"].astype(str).to_numpy(), "a2": info["a2"].astype(str).to_numpy()},
                        index=cols)


def write_bgen(genotypes, path, snp_info=None, *, bit_depth=8, compression="zlib", index=True):
    """Write genotypes as a BGEN v1.2 file (layout 2) with its ``.sample`` file (bgen package).

    Each count or dosage ``d`` of the counted allele (A1, as :func:`write_plink` counts it) is
    stored as the genotype probabilities ``P(2) = max(d - 1, 0)``, ``P(1) = d - 2 P(2)``,
    ``P(0) = 1 - P(1) - P(2)`` (hard calls exactly); ``NaN`` as missing. The counted allele is
    the second (ALT) allele, so :func:`read_genotypes` reads the same table back.

    Parameters
    ----------
    genotypes : DataFrame
        Participants × SNPs of A1 counts or dosages in [0, 2].
    path : path-like
        The ``.bgen`` file; ``<stem>.sample`` is written next to it.
    snp_info : DataFrame, optional
        Indexed by SNP ID with columns ``chrom``, ``pos``, ``a1``, ``a2``.
    bit_depth : int, default=8
        Bits per stored probability (UK Biobank's imputed files use 8).
    compression : {"zlib", "zstd", None}, default="zlib"
    index : bool, default=True
        Keep the bgenix index ``<path>.bgi`` the writer makes (as UK Biobank ships one).

    Returns
    -------
    path : Path
    """
    from bgen import BgenWriter

    path = Path(path)
    variants = _variant_table(genotypes, snp_info)
    ids = [str(i) for i in genotypes.index]
    values = np.asarray(genotypes.to_numpy(dtype=np.float64, na_value=np.nan))
    with BgenWriter(os.fspath(path), len(ids), samples=ids, compression=compression, layout=2) as writer:
        for j, (snp, row) in enumerate(variants.iterrows()):
            d = values[:, j]
            p2 = np.clip(d - 1, 0, 1)
            p1 = np.clip(d - 2 * p2, 0, 1)
            probs = np.column_stack([1 - p1 - p2, p1, p2])
            writer.add_variant(snp, snp, row["chrom"], int(row["pos"]), [row["a2"], row["a1"]], probs,
                               bit_depth=bit_depth)
    with open(path.with_suffix(".sample"), "w") as fh:
        fh.write("ID_1 ID_2 missing sex\n0 0 0 D\n")
        fh.writelines(f"{i} {i} 0 NA\n" for i in ids)
    if not index:
        Path(f"{path}.bgi").unlink(missing_ok=True)
    return path


def write_pgen(genotypes, prefix, snp_info=None):
    """Write genotypes as a PLINK 2 file set (``.pgen`` with pgenlib, ``.pvar``, ``.psam``).

    ALT is the counted allele (A1 of ``snp_info``), REF the other one; hard calls are stored as
    hard calls, anything else as dosages.

    Parameters
    ----------
    genotypes : DataFrame
        Participants × SNPs of A1 counts or dosages in [0, 2] (NaN = missing).
    prefix : path-like
    snp_info : DataFrame, optional
        Indexed by SNP ID with columns ``chrom``, ``pos``, ``a1``, ``a2``.

    Returns
    -------
    prefix : Path
    """
    import pgenlib

    prefix = Path(prefix)
    variants = _variant_table(genotypes, snp_info)
    values = np.asarray(genotypes.to_numpy(dtype=np.float32, na_value=np.nan)).T
    hard = bool(np.all(np.isnan(values) | np.isin(values, (0.0, 1.0, 2.0))))
    writer = pgenlib.PgenWriter(os.fspath(prefix.with_suffix(".pgen")).encode(), values.shape[1],
                                variant_ct=values.shape[0], nonref_flags=False, dosage_present=not hard)
    for row in values:
        row = np.where(np.isnan(row), -9, row)
        if hard:
            writer.append_biallelic(np.ascontiguousarray(row, dtype=np.int8))
        else:
            writer.append_dosages(np.ascontiguousarray(row, dtype=np.float32))
    writer.close()
    pd.DataFrame({"#IID": [str(i) for i in genotypes.index]}).to_csv(prefix.with_suffix(".psam"), sep="\t",
                                                                     index=False)
    pd.DataFrame({"#CHROM": variants["chrom"].to_numpy(), "POS": variants["pos"].to_numpy(),
                  "ID": variants.index, "REF": variants["a2"].to_numpy(), "ALT": variants["a1"].to_numpy()}
                 ).to_csv(prefix.with_suffix(".pvar"), sep="\t", index=False)
    return prefix
