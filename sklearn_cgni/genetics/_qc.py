"""SNP quality control as a scikit-learn transformer (decisions made in ``fit`` only)."""

import warnings
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["SNPQualityFilter", "hwe_exact_pvalues"]

#: Bytes of float64 temporaries per block of SNP columns in fit and transform: the working memory
#: then does not grow with the number of participants beyond the data and the result themselves.
_BLOCK_BYTES = 8 * 1024**2


def _column_blocks(n_rows, n_cols):
    """Slices over the columns, each block at most :data:`_BLOCK_BYTES` of float64 (at least one column)."""
    step = max(1, _BLOCK_BYTES // (8 * max(1, n_rows)))
    return [slice(j, min(j + step, n_cols)) for j in range(0, n_cols, step)]


def _none_kept_message(exclusions, n_snps):
    return (f"SNP quality control removed all {n_snps} SNPs; reasons: "
            f"{exclusions['reason'].value_counts().to_dict()}.")


def _removed_message(exclusions, n_snps):
    """The warning that lists the removed SNPs (the first 20) and why."""
    return (f"SNPQualityFilter removed {len(exclusions)} of {n_snps} SNPs: "
            + ", ".join(f"{s} ({r})" for s, r in zip(exclusions["snp"][:20], exclusions["reason"][:20]))
            + (" ..." if len(exclusions) > 20 else "") + " (full list in exclusions_).")


def _hwe_exact_one(n_het, n_hom1, n_hom2):
    """Exact HWE test of Wigginton, Cutler & Abecasis (2005), as in PLINK; log-space, vectorised."""
    n_homr, n_homc = min(n_hom1, n_hom2), max(n_hom1, n_hom2)
    rare = 2 * n_homr + n_het
    n = n_het + n_homr + n_homc
    if n == 0 or rare == 0:
        return 1.0
    mid = rare * (2 * n - rare) // (2 * n)
    if (mid % 2) != (rare % 2):
        mid += 1
    log_p = np.full(rare + 1, -np.inf)
    log_p[mid] = 0.0
    # downwards: hets -> hets - 2
    hets = np.arange(mid, 1, -2)
    if len(hets):
        homr = (rare - hets) // 2
        homc = n - hets - homr
        steps = np.log(hets) + np.log(hets - 1) - np.log(4.0) - np.log(homr + 1) - np.log(homc + 1)
        log_p[hets - 2] = np.cumsum(steps)
    # upwards: hets -> hets + 2
    hets = np.arange(mid, rare - 1, 2)
    if len(hets):
        homr = (rare - hets) // 2
        homc = n - hets - homr
        steps = np.log(4.0) + np.log(homr) + np.log(homc) - np.log(hets + 2) - np.log(hets + 1)
        log_p[hets + 2] = np.cumsum(steps)
    valid = np.isfinite(log_p)
    probs = np.exp(log_p[valid] - log_p[valid].max())
    probs /= probs.sum()
    p_obs = np.exp(log_p[n_het] - log_p[valid].max()) / np.exp(log_p[valid] - log_p[valid].max()).sum()
    # sum of probabilities of tables no more likely than the observed one (PLINK's rule)
    return float(min(1.0, probs[probs <= p_obs * (1 + 1e-7)].sum()))


def hwe_exact_pvalues(genotypes):
    """Exact Hardy–Weinberg equilibrium p-values, one per SNP (column), ignoring missing calls.

    Parameters
    ----------
    genotypes : array-like of shape (n_participants, n_snps)
        Minor-allele counts 0/1/2, NaN for missing.

    Returns
    -------
    pvalues : ndarray of shape (n_snps,)

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[0]] * 50 + [[1]] * 40 + [[2]] * 10, dtype=float)  # in HWE
    >>> bool(hwe_exact_pvalues(g)[0] > 0.5)
    True
    >>> g = np.array([[1]] * 90 + [[0]] * 10, dtype=float)  # far too many heterozygotes
    >>> bool(hwe_exact_pvalues(g)[0] < 1e-10)
    True
    """
    X = np.asarray(genotypes, dtype=float)
    counts = np.stack([(X == k).sum(axis=0) for k in (0, 1, 2)], axis=1)
    return np.array([_hwe_exact_one(int(c[1]), int(c[0]), int(c[2])) for c in counts])


class SNPQualityFilter(SelectorMixin, TransformerMixin, BaseEstimator):
    """Remove SNPs failing quality control and impute the remaining missing calls.

    Which SNPs to keep, and the values used for imputation, are decided in ``fit`` from the
    training participants only, so the filter can sit inside a cross-validated Pipeline without
    leaking information across folds. The default thresholds are the reference study's.

    A SNP is **removed** when any of these holds:

    - imputation info r² ≤ ``min_info_r2`` (only when ``info_r2`` is given);
    - missing-call rate ≥ ``max_missing``;
    - minor-allele frequency ≤ ``min_maf`` (monomorphic SNPs included);
    - exact Hardy–Weinberg p-value ≤ ``min_hwe_p`` (Wigginton et al., 2005, as in PLINK).

    Remaining missing calls are imputed in ``transform`` with, per SNP, the training mean
    dosage (``impute="mean"``, i.e. twice the training allele frequency) or the training most
    frequent genotype (``impute="most_frequent"``).

    Parameters
    ----------
    min_info_r2 : float, default=0.3
        Info r² threshold (SNPs at or below it are removed).
    max_missing : float, default=0.05
        Missing-call rate threshold (SNPs at or above it are removed).
    min_maf : float, default=0.01
        MAF threshold (SNPs at or below it are removed).
    min_hwe_p : float, default=1e-6
        HWE p-value threshold (SNPs at or below it are removed). ``0`` disables the test.
    info_r2 : array-like of shape (n_snps,), dict or pandas.Series, default=None
        Imputation info r² per SNP: aligned with the columns, or keyed by SNP name (then the
        input must be a DataFrame). ``None`` skips the info filter.
    impute : {"mean", "most_frequent"}, default="mean"
        How remaining missing calls are filled.
    allow_dosage : bool, default=False
        Accept imputed dosages in [0, 2] instead of only the codes 0, 1 and 2 (the HWE test then
        uses dosages rounded to the nearest genotype).

    Attributes
    ----------
    maf_, missing_rate_, hwe_pvalue_ : ndarray of shape (n_features_in_,)
        Per-SNP statistics on the training data.
    info_r2_ : ndarray of shape (n_features_in_,) or None
    exclusions_ : DataFrame
        One row per removed SNP: ``snp`` and ``reason`` (all failed rules, ``;``-separated).
    impute_values_ : ndarray of shape (n_features_out,)
        Value substituted for a missing call of each kept SNP.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when X has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.genetics import SNPQualityFilter
    >>> rng = np.random.default_rng(0)
    >>> X = rng.binomial(2, 0.3, size=(200, 4)).astype(float)
    >>> X[:, 1] = 0            # monomorphic: removed
    >>> X[:20, 2] = np.nan     # 10 % missing: removed
    >>> X[0, 3] = np.nan       # one missing call: imputed
    >>> qc = SNPQualityFilter().fit(X)
    >>> qc.get_support().tolist()
    [True, False, False, True]
    >>> bool(np.isnan(qc.transform(X)).any())
    False
    """

    _parameter_constraints = {
        "min_info_r2": [Interval(Real, 0, 1, closed="both")],
        "max_missing": [Interval(Real, 0, 1, closed="right")],
        "min_maf": [Interval(Real, 0, 0.5, closed="left")],
        "min_hwe_p": [Interval(Real, 0, 1, closed="left")],
        "info_r2": ["array-like", dict, None],
        "impute": [StrOptions({"mean", "most_frequent"})],
        "allow_dosage": ["boolean"],
    }

    def __init__(self, min_info_r2=0.3, max_missing=0.05, min_maf=0.01, min_hwe_p=1e-6, info_r2=None,
                 impute="mean", allow_dosage=False):
        self.min_info_r2 = min_info_r2
        self.max_missing = max_missing
        self.min_maf = min_maf
        self.min_hwe_p = min_hwe_p
        self.info_r2 = info_r2
        self.impute = impute
        self.allow_dosage = allow_dosage

    def _check_codes(self, X, row_ids, offset=0, whole=True):
        """Refuse a value that is not a genotype code; ``X`` may be a block of columns from ``offset``
        (``whole=False``: the count in the message is then that of the block)."""
        finite = ~np.isnan(X)
        if self.allow_dosage:
            bad = finite & ((X < 0) | (X > 2))
            allowed = "a dosage in [0, 2]"
        else:
            bad = finite & (X != 0) & (X != 1) & (X != 2)
            allowed = "0, 1, 2 or missing (NaN)"
        if bad.any():
            r, c = np.argwhere(bad)[0]
            col = self.feature_names_in_[offset + c] if hasattr(self, "feature_names_in_") else f"column {offset + c}"
            who = f"participant {row_ids[r]!r}" if row_ids is not None else f"row {r}"
            raise ValueError(
                f"Genotype value {float(X[r, c])!r} for {who}, SNP {col!r} is not {allowed} "
                f"({int(bad.sum())} such value(s) {'in all' if whole else 'in its block of SNPs'})."
            )

    def _resolve_info(self):
        if self.info_r2 is None:
            return None
        if isinstance(self.info_r2, (dict, pd.Series)):
            if not hasattr(self, "feature_names_in_"):
                raise ValueError(
                    "info_r2 is keyed by SNP name, so X must be a DataFrame with SNP column names."
                )
            info = pd.Series(self.info_r2, dtype=float)
            absent = [s for s in self.feature_names_in_ if s not in info.index]
            if absent:
                raise ValueError(
                    f"info_r2 has no value for {len(absent)} SNP(s) of X, e.g. {absent[:10]}."
                )
            return info.loc[list(self.feature_names_in_)].to_numpy()
        info = np.asarray(self.info_r2, dtype=float)
        if info.shape != (self.n_features_in_,):
            raise ValueError(
                f"info_r2 must have one value per SNP ({self.n_features_in_}); got shape {info.shape}."
            )
        return info

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute per-SNP statistics and decide which SNPs to keep.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_participants, n_snps)
            Minor-allele counts; NaN marks a missing call.
        y : ignored

        Returns
        -------
        self : SNPQualityFilter
        """
        self._fit_columns(X)
        n_snps = len(self.support_mask_)
        if not self.support_mask_.any():
            raise ValueError(_none_kept_message(self.exclusions_, n_snps))
        if len(self.exclusions_):
            warnings.warn(_removed_message(self.exclusions_, n_snps), UserWarning, stacklevel=2)
        return self

    def _fit_columns(self, X):
        """``fit`` without its verdict (no error when nothing passes, no warning): the statistics and
        decisions of these SNP columns. Every SNP's decision depends on its own column alone, so a
        matrix too large for memory can be filtered one block of SNP columns at a time (the
        ``data`` stage of ``sklearn-cgni run``); the blocks' ``exclusions_`` then make the verdict."""
        row_ids = list(X.index) if isinstance(X, pd.DataFrame) else None
        # float32 stays float32 (codes and dosages are exact enough); the statistics are computed
        # per block of SNPs, so no float64 copy of the whole matrix is made
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan")
        n_called = np.empty(X.shape[1], dtype=np.int64)
        allele_sum = np.empty(X.shape[1])
        hwe = np.ones(X.shape[1])
        blocks = _column_blocks(*X.shape)
        for sl in blocks:
            block = X[:, sl].astype(np.float64)
            self._check_codes(block, row_ids, sl.start, whole=len(blocks) == 1)
            n_called[sl] = (~np.isnan(block)).sum(axis=0)
            allele_sum[sl] = np.nansum(block, axis=0)
            if self.min_hwe_p > 0:
                hwe[sl] = hwe_exact_pvalues(np.round(block))
        self.missing_rate_ = 1.0 - n_called / X.shape[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            freq = allele_sum / (2.0 * n_called)
        freq = np.where(n_called > 0, freq, 0.0)
        self.maf_ = np.minimum(freq, 1.0 - freq)
        self.hwe_pvalue_ = hwe
        self.info_r2_ = self._resolve_info()

        names = getattr(self, "feature_names_in_", np.array([f"x{i}" for i in range(X.shape[1])]))
        fails = {
            f"missing rate >= {self.max_missing}": self.missing_rate_ >= self.max_missing,
            f"MAF <= {self.min_maf}": self.maf_ <= self.min_maf,
            f"HWE p <= {self.min_hwe_p:g}": (self.hwe_pvalue_ <= self.min_hwe_p) if self.min_hwe_p > 0
            else np.zeros(X.shape[1], bool),
        }
        if self.info_r2_ is not None:
            fails[f"info r2 <= {self.min_info_r2}"] = self.info_r2_ <= self.min_info_r2
        removed = np.zeros(X.shape[1], dtype=bool)
        for mask in fails.values():
            removed |= mask
        self.support_mask_ = ~removed
        reasons = [
            "; ".join(reason for reason, mask in fails.items() if mask[j]) for j in np.flatnonzero(removed)
        ]
        self.exclusions_ = pd.DataFrame({"snp": names[removed], "reason": reasons})
        if self.impute == "mean":
            self.impute_values_ = 2.0 * freq[self.support_mask_]
        else:
            counts = np.zeros((3, X.shape[1]), dtype=np.int64)
            for sl in _column_blocks(*X.shape):
                block = X[:, sl]
                counts[:, sl] = np.stack([(block == k).sum(axis=0) for k in (0, 1, 2)])
            self.impute_values_ = counts[:, self.support_mask_].argmax(axis=0).astype(float)
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_mask_

    def transform(self, X):
        """Keep the SNPs that passed QC and impute their missing calls.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_participants, n_snps)

        Returns
        -------
        X_qc : ndarray of shape (n_participants, n_kept_snps)
            float32 for float32 input, else float64.
        """
        check_is_fitted(self)
        row_ids = list(X.index) if isinstance(X, pd.DataFrame) else None
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan", reset=False)
        out = np.empty((X.shape[0], int(self.support_mask_.sum())), dtype=X.dtype)
        impute = np.asarray(self.impute_values_, dtype=X.dtype)
        done, blocks = 0, _column_blocks(*X.shape)
        for sl in blocks:  # block by block: no whole-matrix temporaries
            block = X[:, sl]
            self._check_codes(block, row_ids, sl.start, whole=len(blocks) == 1)
            kept = block[:, self.support_mask_[sl]]  # a copy (boolean index)
            missing = np.isnan(kept)
            if missing.any():
                kept[missing] = np.broadcast_to(impute[done:done + kept.shape[1]], kept.shape)[missing]
            out[:, done:done + kept.shape[1]] = kept
            done += kept.shape[1]
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
