"""Polygenic scores from PGS Catalog scoring files, as a scikit-learn transformer."""

import os
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ..io._pgs import COVERAGE_COLUMNS, check_coverage, match_scoring_file, read_scoring_file, read_variant_table

__all__ = ["PolygenicScore", "polygenic_scores"]


def _as_files(scoring_files):
    if isinstance(scoring_files, (str, os.PathLike)):
        return [scoring_files]
    return list(scoring_files)


def _match_all(scoring_files, variants, keep_ambiguous, min_coverage):
    """Read and match every scoring file: (weights DataFrame id × score, coverage DataFrame)."""
    columns, coverage = {}, []
    for f in _as_files(scoring_files):
        table = read_scoring_file(f)
        sid = table.attrs["score_id"]
        if sid in columns:
            raise ValueError(f"Two scoring files have the score ID {sid!r} (the second is {os.fspath(f)!r}); "
                             "each score needs its own #pgs_id.")
        matched, cov = match_scoring_file(table, variants, keep_ambiguous=keep_ambiguous, source=os.fspath(f))
        check_coverage(cov, sid, os.fspath(f), min_coverage)
        w = matched["weight"].where(~matched["flipped"], -matched["weight"])
        columns[sid] = (pd.Series(w.to_numpy(), index=matched["id"]),
                        pd.Series(np.where(matched["flipped"], 2.0, 0.0) * matched["weight"].to_numpy(),
                                  index=matched["id"]))
        coverage.append({"score_id": sid, "file": os.fspath(f), **cov})
    slope = pd.DataFrame({k: v[0] for k, v in columns.items()}).fillna(0.0)
    offset = pd.Series({k: v[1].sum() for k, v in columns.items()})
    return slope, offset, pd.DataFrame(coverage, columns=list(COVERAGE_COLUMNS))


def polygenic_scores(scoring_files, genotypes, *, keep_ambiguous=False, min_coverage=0.75, **read_kwargs):
    """Score a genotype file with PGS Catalog scoring files, decoding only the matched variants.

    Parameters
    ----------
    scoring_files : path-like or list of path-like
        PGS Catalog scoring files (format 2.0, ``.txt`` or ``.txt.gz``), one score each.
    genotypes : path-like
        A PLINK 1/2 file set, BGEN or VCF/BCF file (:func:`~sklearn_cgni.io.read_genotypes`).
    keep_ambiguous : bool, default=False
        Keep strand-ambiguous A/T and C/G variants (the PGS Catalog calculator drops them).
    min_coverage : float, default=0.75
        A smaller fraction of a file's variants matched gives a warning with the numbers.
    **read_kwargs
        Passed to :func:`~sklearn_cgni.io.read_genotypes` (``sample``, ``allow_dosage`` ...).

    Returns
    -------
    scores : DataFrame
        Participants × scores (columns: score IDs), the raw Σ weight × effect-allele dosage
        (a missing call counts as the effect allele's mean dosage).
    coverage : DataFrame
        One row per score: matched, flipped, ambiguous, missing variants and coverage.
    """
    from ..io import read_genotypes

    variants = read_variant_table(genotypes, count_A1=read_kwargs.get("count_A1", True))
    slope, offset, coverage = _match_all(scoring_files, variants, keep_ambiguous, min_coverage)
    read_kwargs.setdefault("allow_dosage", True)
    geno = read_genotypes(genotypes, snps=list(slope.index), **read_kwargs)
    return _score(geno[slope.index].to_numpy(dtype=np.float64), slope, offset, geno.index), coverage


def _score(dosage, slope, offset, index, mean=None):
    if mean is None:
        mean = np.nanmean(dosage, axis=0) if len(dosage) else np.zeros(dosage.shape[1])
        mean = np.where(np.isnan(mean), 0.0, mean)
    filled = np.where(np.isnan(dosage), mean, dosage)
    values = filled @ slope.to_numpy() + offset.to_numpy()
    return pd.DataFrame(values, index=index, columns=list(slope.columns))


class PolygenicScore(TransformerMixin, BaseEstimator):
    """Polygenic scores from PGS Catalog scoring files: Σ weight × effect-allele dosage.

    Each scoring file (format 2.0, read with the Catalog's pgscatalog-core) is matched to the
    cohort's variants by rsID or by chromosome and position, with allele flips handled and
    strand-ambiguous A/T, C/G variants dropped by default, as the PGS Catalog calculator does
    (rules in :mod:`sklearn_cgni.io._pgs`). The transformer turns a genotype table into one
    column per score.

    Parameters
    ----------
    scoring_files : path-like or list of path-like
        One or several scoring files (``.txt`` or ``.txt.gz``); one output column each, named
        by the file's ``#pgs_id``.
    variants : DataFrame or path-like, default=None
        The alleles of the genotype columns: a table with columns ``id``, ``chrom``, ``pos``,
        ``counted`` (the allele the genotype values count) and ``other``
        (:func:`~sklearn_cgni.io.read_variant_table`), or the genotype file itself
        (PLINK 1/2, BGEN, VCF). Required: genotype values mean nothing without their alleles.
    keep_ambiguous : bool, default=False
        Keep strand-ambiguous variants, assumed to be on the same strand.
    min_coverage : float, default=0.75
        A score with a smaller fraction of its variants matched gives a warning.

    Attributes
    ----------
    score_ids_ : list of str
        Output columns.
    weights_ : DataFrame
        Matched variants × scores: the weight per counted-allele dosage (minus the file's
        weight for a flipped variant; 0 where a score lacks the variant).
    offsets_ : ndarray of shape (n_scores,)
        ``Σ 2 × weight`` over each score's flipped variants.
    effect_mean_ : ndarray of shape (n_matched,)
        Mean counted-allele dosage in the fit data, for missing calls.
    coverage_ : DataFrame
        One row per score: ``n_variants``, ``matched``, ``flipped``, ``ambiguous``, ``missing``,
        ``coverage``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> from sklearn_cgni.genetics import PolygenicScore
    >>> from sklearn_cgni.io._pgs import write_scoring_file
    >>> weights = pd.DataFrame({"rsID": ["rs1", "rs2"], "chr_name": ["1", "1"], "chr_position": [10, 20],
    ...                         "effect_allele": ["A", "G"], "other_allele": ["C", "T"],
    ...                         "effect_weight": [0.5, -1.0]})
    >>> path = write_scoring_file(weights, os.path.join(tempfile.mkdtemp(), "PGS1.txt.gz"), pgs_id="PGS1")
    >>> variants = pd.DataFrame({"id": ["rs1", "rs2"], "chrom": ["1", "1"], "pos": [10, 20],
    ...                          "counted": ["A", "T"], "other": ["C", "G"]})   # rs2 is flipped
    >>> X = pd.DataFrame({"rs1": [0, 1, 2], "rs2": [2, 1, 0]}, index=["a", "b", "c"])
    >>> PolygenicScore(path, variants=variants).fit_transform(X)["PGS1"].tolist()
    [0.0, -0.5, -1.0]
    """

    _parameter_constraints = {
        "scoring_files": ["array-like", str, os.PathLike],
        "variants": [pd.DataFrame, str, os.PathLike, None],
        "keep_ambiguous": ["boolean"],
        "min_coverage": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, scoring_files=(), *, variants=None, keep_ambiguous=False, min_coverage=0.75):
        self.scoring_files = scoring_files
        self.variants = variants
        self.keep_ambiguous = keep_ambiguous
        self.min_coverage = min_coverage

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing call counts as the mean dosage
        return tags

    def _columns(self, X):
        if isinstance(X, pd.DataFrame):
            return [str(c) for c in X.columns]
        return [f"x{i}" for i in range(np.shape(X)[1])]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Match the scoring files to the columns of ``X`` (a genotype table: participants × variants)."""
        if not _as_files(self.scoring_files):
            raise ValueError("PolygenicScore needs scoring_files: one or more PGS Catalog scoring files; got none.")
        if self.variants is None:
            raise ValueError("PolygenicScore needs variants=: the alleles of the genotype columns (a table with "
                             "id, chrom, pos, counted, other, or the genotype file itself).")
        variants = (self.variants if isinstance(self.variants, pd.DataFrame)
                    else read_variant_table(Path(self.variants)))
        missing = {"id", "chrom", "pos", "counted", "other"} - set(variants.columns)
        if missing:
            raise ValueError(f"PolygenicScore: variants lacks the column(s) {sorted(missing)}.")
        X = self._check_X(X, reset=True)
        cols = self._columns(X)
        variants = variants[variants["id"].astype(str).isin(cols)].copy()
        variants["counted"] = variants["counted"].astype(str).str.upper()
        variants["other"] = variants["other"].astype(str).str.upper()
        slope, offset, self.coverage_ = _match_all(self.scoring_files, variants, self.keep_ambiguous,
                                                   self.min_coverage)
        self.weights_ = slope
        self.offsets_ = offset.to_numpy()
        self.score_ids_ = list(slope.columns)
        self._positions = np.array([cols.index(c) for c in slope.index], dtype=int)
        dosage = np.asarray(X, dtype=np.float64)[:, self._positions]
        mean = np.nanmean(dosage, axis=0) if np.isfinite(dosage).any() else np.zeros(dosage.shape[1])
        self.effect_mean_ = np.where(np.isnan(mean), 0.0, mean)
        return self

    def _check_X(self, X, reset):
        from sklearn.utils.validation import validate_data

        frame = X if isinstance(X, pd.DataFrame) else None
        arr = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64)
        return frame if frame is not None else arr

    def transform(self, X):
        """Scores: participants × ``score_ids_``."""
        check_is_fitted(self)
        index = X.index if isinstance(X, pd.DataFrame) else None
        X = self._check_X(X, reset=False)
        dosage = np.asarray(X, dtype=np.float64)[:, self._positions]
        out = _score(dosage, self.weights_, pd.Series(self.offsets_, index=self.score_ids_),
                     index if index is not None else pd.RangeIndex(len(dosage)), mean=self.effect_mean_)
        return out if index is not None else out.to_numpy()

    def get_feature_names_out(self, input_features=None):
        """The score IDs."""
        check_is_fitted(self)
        return np.asarray(self.score_ids_, dtype=object)
