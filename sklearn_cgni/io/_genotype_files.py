"""File-level helpers of the genotype readers (not public).

BGEN: the Oxford ``.sample`` file, the check of a bgenix index and the dosages of one decoded
variant. PLINK 2: the ``.pvar`` / ``.psam`` text tables.
"""

import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd


def _read_sample_file(path, bgen_source):
    """Participant IDs of an Oxford ``.sample`` file (ID_2, the IID; ID_1 when there is no ID_2)."""
    source = repr(os.fspath(path))
    try:
        with open(path) as fh:
            rows = [line.split() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"Could not read sample file {source} of BGEN file {bgen_source}: {exc}") from exc
    if len(rows) < 2 or not rows[1] or rows[1][0] != "0":
        raise ValueError(f"Sample file {source} is not an Oxford .sample file: it needs a header row "
                         "(ID_1 ID_2 missing ...) and a column-type row (0 0 0 ...).")
    header = [h.upper() for h in rows[0]]
    col = header.index("ID_2") if "ID_2" in header else 0
    short = [i + 3 for i, r in enumerate(rows[2:]) if len(r) <= col]
    if short:
        raise ValueError(f"Sample file {source}, line {short[0]}: no {rows[0][col]} field.")
    return [r[col] for r in rows[2:]]


def _check_bgi(path, source):
    """Refuse a bgenix index that describes another version of the BGEN file."""
    bgi = Path(f"{path}.bgi")
    if not bgi.exists():
        return False
    try:
        conn = sqlite3.connect(f"{bgi.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT file_size FROM Metadata").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise OSError(f"Could not read the index {os.fspath(bgi)!r} of BGEN file {source}: {exc}; "
                      "rebuild it (bgenix -g FILE.bgen -index) or move it away.") from exc
    size = Path(path).stat().st_size
    if row is not None and row[0] is not None and int(row[0]) != size:
        raise ValueError(f"The index {os.fspath(bgi)!r} describes a BGEN file of {row[0]} bytes, but {source} "
                         f"has {size}: rebuild it (bgenix -g FILE.bgen -index) or move it away.")
    return True


def _bgen_dosage(var):
    """ALT dosage, E[g²] of one decoded BGEN variant (diploid; other ploidies: dosage only)."""
    probs = np.asarray(var.probabilities, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 3 and not var.is_phased:
        dosage = probs[:, 1] + 2 * probs[:, 2]
        return dosage, probs[:, 1] + 4 * probs[:, 2]
    if probs.ndim == 2 and probs.shape[1] == 4 and var.is_phased:
        q1, q2 = probs[:, 1], probs[:, 3]
        return q1 + q2, q1 + q2 + 2 * q1 * q2
    dosage = np.asarray(var.alt_dosage, dtype=np.float64)
    return dosage, np.full_like(dosage, np.nan)


def _read_plink_text(path, what, default_header):
    """A .pvar/.psam: '##' lines skipped, a '#'-prefixed header row, else ``default_header``."""
    source = repr(os.fspath(path))
    header, skip = None, 0
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("##"):
                    skip += 1
                    continue
                if line.startswith("#"):
                    header = line[1:].split()
                    skip += 1
                break
        table = pd.read_csv(path, sep=r"\s+", header=None, skiprows=skip, dtype=str, keep_default_na=False,
                            engine="c")
    except pd.errors.EmptyDataError:
        raise ValueError(f"PLINK 2 {what} file {source} holds no row.") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"Could not parse PLINK 2 {what} file {source}: {exc}") from exc
    names = header or default_header
    if table.shape[1] != len(names) and not (header is None and table.shape[1] >= 2):
        raise ValueError(f"PLINK 2 {what} file {source} has {table.shape[1]} columns but its header names "
                         f"{len(names)}: {names}.")
    table.columns = list(names[: table.shape[1]]) + [f"col{i}" for i in range(len(names), table.shape[1])]
    return table
