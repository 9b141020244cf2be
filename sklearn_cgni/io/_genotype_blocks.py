"""A genotype file read one block of variants at a time.

:func:`~sklearn_cgni.io.read_genotypes` returns the whole participants × variants matrix. At
UK Biobank's size (100,000 participants × thousands of variants, several GB of float32) that
matrix, and the copies made while it is filtered, set the memory of the run.
:class:`GenotypeBlocks` lists a file's participants and variants without decoding any genotype,
then reads the variants in blocks of a bounded size, each block through ``read_genotypes``
itself (the one reader of each format: the same checks, orders and errors).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["GenotypeBlocks"]

#: Default size of a block: float32 participants × variants of a block, at most this many bytes.
DEFAULT_BLOCK_BYTES = 64 * 1024**2


class GenotypeBlocks:
    """A genotype file read one block of variants at a time.

    The participants and the variants (selected and in the package's one order, as
    :func:`~sklearn_cgni.io.read_genotypes` gives them) are listed when it is created, without
    decoding a genotype; :meth:`blocks` then reads them, each block through ``read_genotypes``
    with the same checks. A block holds at most ``block_bytes`` of float32 (at least one
    variant), so memory does not grow with participants × variants.

    PLINK 1 and 2 files are read by random access to the blocks' variants, a BGEN file through
    its bgenix index when it has one (without one, each block scans the variant headers again).
    A VCF or CSV file has no random access by variant: it is read whole once, when the object
    is created, and served in blocks from memory (convert a large VCF to PLINK 2 or BGEN first).

    Parameters
    ----------
    path : path-like
        As :func:`~sklearn_cgni.io.read_genotypes`.
    block_bytes : int, default=64 MiB
        The most bytes of one block (participants × variants × 4).
    **read_kwargs
        ``id_column``, ``na_values``, ``allow_dosage``, ``count_A1``, ``snps``, ``genes``,
        ``snp_genes``, ``sample``, ``info_table``: as :func:`~sklearn_cgni.io.read_genotypes`.

    Attributes
    ----------
    participants : pandas.Index
        The file's participant IDs, in its order.
    variants : list of str
        The variants the blocks hold, in order.
    streamed : bool
        False for a VCF or CSV file (held whole in memory).
    info : dict
        BGEN only: variant ID → imputation info of the variants read so far.

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> from sklearn_cgni.io import GenotypeBlocks, write_plink
    >>> g = pd.DataFrame({"rs1": [0.0, 1.0, 2.0], "rs2": [2.0, 1.0, 0.0], "rs3": [1.0, 1.0, 0.0]},
    ...                  index=["1001", "1002", "1003"])
    >>> prefix = write_plink(g, os.path.join(tempfile.mkdtemp(), "cohort"))
    >>> blocks = GenotypeBlocks(prefix, block_bytes=24)  # 24 bytes: two variants of three participants
    >>> blocks.variants
    ['rs1', 'rs2', 'rs3']
    >>> [list(b.columns) for b in blocks.blocks(rows=["1003", "1001"])]
    [['rs1', 'rs2'], ['rs3']]
    """

    def __init__(self, path, *, block_bytes=DEFAULT_BLOCK_BYTES, **read_kwargs):
        from ._genotypes import canonical_variant_order, genotype_format, select_variants, selected_snps
        from ._pgs import read_variant_table
        from ._tables import read_genotypes

        unknown = set(read_kwargs) - {"id_column", "na_values", "allow_dosage", "count_A1", "snps", "genes",
                                      "snp_genes", "sample", "info_table"}
        if unknown:
            raise TypeError(f"GenotypeBlocks got unexpected keyword argument(s) {sorted(unknown)}.")
        if not isinstance(block_bytes, (int, np.integer)) or block_bytes < 1:
            raise ValueError(f"block_bytes must be a positive integer; got {block_bytes!r}.")
        self.path, self.block_bytes = Path(path), int(block_bytes)
        self.info = {}
        fmt = genotype_format(self.path)
        self.streamed = fmt in ("plink", "pgen", "bgen")
        snps = selected_snps(read_kwargs.pop("snps", None), read_kwargs.pop("genes", None),
                             read_kwargs.pop("snp_genes", None))  # as read_genotypes selects them
        if not self.streamed:
            self._whole = read_genotypes(self.path, snps=snps, **read_kwargs)
            self.info = dict(self._whole.attrs.get("info") or {})
            self.participants, self.variants = self._whole.index, [str(c) for c in self._whole.columns]
            return
        self._read = read_kwargs
        try:  # the .bim, .pvar or BGEN variant headers: no genotype decoded
            table = read_variant_table(self.path, count_A1=read_kwargs.get("count_A1", True))
        except (OSError, ValueError):
            read_genotypes(self.path, snps=snps, **read_kwargs)  # raises the reader's own, named error
            raise
        ids, loci = table["id"].tolist(), list(zip(table["chrom"], table["pos"]))
        positions = select_variants(ids, snps, f"genotype file {os.fspath(self.path)!r}")
        chosen = [ids[p] for p in positions]
        order = canonical_variant_order(chosen, snps, [loci[p] for p in positions])
        self.variants = [chosen[j] for j in order]
        # a one-variant read: the participants, and the reader's errors about missing or mismatched files
        self.participants = read_genotypes(self.path, snps=self.variants[:1], **read_kwargs).index

    def _step(self, n_rows):
        return max(1, self.block_bytes // (4 * max(1, n_rows)))

    def blocks(self, rows=None):
        """The variants, a block at a time.

        Parameters
        ----------
        rows : sequence of str, optional
            Participant IDs to keep, in this order (default: all, in the file's order).

        Yields
        ------
        block : DataFrame of float32
            ``rows`` × the block's variants, as :func:`~sklearn_cgni.io.read_genotypes` gives them.
        """
        from ._tables import read_genotypes

        positions = None
        if rows is not None:
            positions = self.participants.get_indexer(pd.Index([str(r) for r in rows]))
            if (positions < 0).any():
                absent = [str(r) for r, p in zip(rows, positions) if p < 0]
                raise KeyError(f"{len(absent)} participant(s) are not in genotype file {os.fspath(self.path)!r}, "
                               f"e.g. {absent[:10]}.")
            if np.array_equal(positions, np.arange(len(self.participants))):
                positions = None  # the file's own rows in its order: no copy
        step = self._step(len(self.participants))
        for start in range(0, len(self.variants), step):
            names = self.variants[start:start + step]
            if self.streamed:
                block = read_genotypes(self.path, snps=names, **self._read)
                self.info.update(block.attrs.get("info") or {})
            else:
                block = self._whole.iloc[:, start:start + step]
            if list(block.columns) != names:  # read_genotypes keeps the order of snps=
                raise RuntimeError(f"genotype file {os.fspath(self.path)!r}: a block came back with variants "
                                   f"{list(block.columns)[:5]}..., expected {names[:5]}...")
            yield block if positions is None else block.iloc[positions]
