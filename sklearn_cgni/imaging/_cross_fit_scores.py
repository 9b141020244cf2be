"""Held-out brain-genotype scores by cross-fitting.

Private module; :func:`sklearn_cgni.imaging.cross_fit_scores` is also importable from
:mod:`sklearn_cgni.imaging._genotype_scorer`.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import check_cv

from ..io import ImageSource
from ._genotype_targets import check_genotype_targets


# ---------------------------------------------------------------------- cross-fitting
def _fit_and_score_fold(est, X_train, G_train, X_test, snps):
    """One fold of :func:`cross_fit_scores`: ``(fitted estimator, float64 scores of X_test)``."""
    est.fit(X_train, G_train)
    scores = est.transform(X_test, snps=snps) if snps is not None else est.transform(X_test)
    return est, np.asarray(scores, dtype=np.float64)


def _take(X, idx):
    if isinstance(X, ImageSource):
        return X.subset(idx)
    if isinstance(X, (pd.Series, pd.DataFrame)):
        return X.iloc[idx]
    if isinstance(X, np.ndarray):
        return X[idx]
    if hasattr(X, "paths") and hasattr(X, "participant_ids"):
        return pd.Series([os.fspath(X.paths[i]) for i in idx],
                         index=[str(X.participant_ids[i]) for i in idx])
    return [X[i] for i in idx]


def cross_fit_scores(estimator, X, G, *, cv=5, groups=None, snps=None, select=None,
                     return_estimators=False, verbose=0, n_jobs=None):
    """Held-out brain-genotype scores: each participant scored by a model not trained on them.

    Like :func:`sklearn.model_selection.cross_val_predict` (which cannot pass a
    genotype matrix with missing calls through a skorch estimator): for every fold, a clone
    of ``estimator`` is fitted on the other folds and ``transform``-s the fold.

    Parameters
    ----------
    estimator : estimator with ``fit(X, G)`` and ``transform(X)`` returning one column per SNP
        E.g. :class:`BrainGenotypeScorer` or the IDP baseline pipeline
        (:func:`sklearn_cgni.imaging.make_idp_scorer`).
    X : images (array or paths) or 2-D features, as the estimator accepts
    G : DataFrame or array-like of shape (n, n_snps)
    cv : int, cross-validation generator or iterable, default=5
        An int gives ``KFold(cv, shuffle=True, random_state=0)``. The test folds must
        partition the participants (each exactly once).
    groups : array-like, optional
        Group labels for group-aware splitters (e.g. families, sites).
    snps : list, optional
        Passed to ``transform`` when the estimator supports it.
    select : callable, optional
        ``select(train) -> SNPs`` (column names of ``G``, or positions): the SNPs to fit and
        score in the fold whose training rows are ``train`` (an index array), e.g. a screen
        fitted on those rows only, so that the choice of SNPs never sees the participants it
        scores. The result has a column for every SNP chosen in at least one fold (in ``G``'s
        order) and NaN for participants of folds that did not choose it. Not with ``snps``.
    return_estimators : bool, default=False
    verbose : int, default=0
        Print one line per fold.
    n_jobs : int, optional
        Folds fitted in parallel through joblib (``None``: one after another, in this
        process). Under ``joblib.parallel_config(backend="dask")`` each fold is a task of the
        Dask cluster. Each fold's model is a clone of ``estimator`` with its own parameters,
        so the scores do not depend on ``n_jobs`` or on the backend (at the same torch
        thread count).

    Returns
    -------
    scores : DataFrame of shape (n, n_snps)
        Index: participant IDs (from ``G``'s index if a DataFrame, else ``X``'s, else
        ``0..n-1``); columns: SNP ids (with ``select``: the SNPs chosen in any fold).
    estimators : list, only if ``return_estimators``

    Notes
    -----
    Correlations between held-out scores and genotypes are over-dispersed under the null
    (cross-validated predictions of pure noise anti-correlate with it, and fold models
    differ), so the textbook Pearson p-value is anti-conservative: on ``make_cohort`` the
    permutation SD of r was 0.051 against 1/sqrt(n) = 0.038 (see
    ``benchmarks/results/brain_genotype_scores.md``). Use permutation p-values (permute
    the rows of ``G`` and cross-fit again) to call a score significant.
    """
    from sklearn.model_selection import KFold

    n = len(X)
    ids = None
    values, names = check_genotype_targets(G, task="dosage", caller="cross_fit_scores")
    if values.shape[0] != n:
        raise ValueError(f"cross_fit_scores: got {n} images but genotypes for {values.shape[0]} participants.")
    if isinstance(G, pd.DataFrame):
        ids = G.index
    elif isinstance(X, (pd.Series, pd.DataFrame)):
        ids = X.index
    if isinstance(cv, Integral):
        cv = KFold(int(cv), shuffle=True, random_state=0)
    cv = check_cv(cv)
    folds = list(cv.split(np.zeros((n, 1)), None, groups))
    seen = np.zeros(n, dtype=int)
    for _, test in folds:
        seen[test] += 1
    if (seen != 1).any():
        raise ValueError(
            f"cross_fit_scores: the cv test folds must cover every participant exactly once; "
            f"{int((seen == 0).sum())} never and {int((seen > 1).sum())} several times "
            f"(use KFold/GroupKFold-like splitters, not ShuffleSplit).")
    if select is not None and snps is not None:
        raise ValueError("cross_fit_scores: pass either snps (one subset for every fold) or select "
                         "(a subset chosen per fold), not both.")
    lookup = {str(s): j for j, s in enumerate(names)}
    fold_columns = []
    for k, (train, _) in enumerate(folds):
        if select is None:
            fold_columns.append(np.arange(len(names)))
            continue
        chosen = list(select(np.asarray(train)))
        if not chosen:
            raise ValueError(f"cross_fit_scores: select chose no SNP in fold {k + 1}.")
        unknown = [s for s in chosen if not isinstance(s, (Integral, np.integer)) and str(s) not in lookup]
        if unknown:
            raise ValueError(f"cross_fit_scores: select chose SNP(s) {unknown[:10]} that are not columns of G.")
        fold_columns.append(np.array([int(s) if isinstance(s, (Integral, np.integer)) else lookup[str(s)]
                                      for s in chosen]))
    for k, (train, _) in enumerate(folds):   # fail before training anything
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cols_k = fold_columns[k]
            span = np.zeros(len(names))
            span[cols_k] = np.nanmax(values[train][:, cols_k], axis=0) - np.nanmin(values[train][:, cols_k], axis=0)
            span[np.setdiff1d(np.arange(len(names)), cols_k)] = 1.0
        flat = ~(span > 0)
        if flat.any():
            raise ValueError(
                f"cross_fit_scores: SNP(s) {list(names[flat][:10])} have no variation in the "
                f"training participants of fold {k + 1} (rare variants). Raise the MAF "
                f"threshold (SNPQualityFilter(min_maf=...)) or use fewer folds.")
    G_rows = G if isinstance(G, pd.DataFrame) else values

    def fold_targets(k, train):
        Gk = G_rows.iloc[train] if isinstance(G_rows, pd.DataFrame) else G_rows[train]
        if select is not None:
            Gk = Gk.iloc[:, fold_columns[k]] if isinstance(Gk, pd.DataFrame) else Gk[:, fold_columns[k]]
        return Gk

    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score_fold)(clone(estimator), _take(X, train), fold_targets(k, train), _take(X, test), snps)
        for k, (train, test) in enumerate(folds))
    out = None
    estimators = []
    for k, ((train, test), (est, scores)) in enumerate(zip(folds, fitted)):
        if select is not None:
            if out is None:
                out = np.full((n, len(names)), np.nan)
            out[np.ix_(test, fold_columns[k])] = scores
        else:
            if out is None:
                out = np.full((n, scores.shape[1]), np.nan)
            out[test] = scores
        if verbose:
            print(f"cross_fit_scores: fold {k + 1}/{len(folds)} done ({len(test)} scored)")
        if return_estimators:
            estimators.append(est)
    cols = names if snps is None else [str(s) for s in snps]
    if snps is None and out.shape[1] != len(names):
        cols = [f"score{j}" for j in range(out.shape[1])]
    result = pd.DataFrame(out, index=ids if ids is not None else pd.RangeIndex(n), columns=cols)
    if select is not None:
        result = result.iloc[:, np.unique(np.concatenate(fold_columns))]
    return (result, estimators) if return_estimators else result
