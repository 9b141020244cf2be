"""Association of brain-genotype scores with cognition (second paper, stage 2).

For every score x cognitive measure pair, an ordinary least-squares regression (statsmodels)

    measure ~ score + age + sex + other covariates

with the score and the measure standardised over the participants of that test, so that the
score's coefficient is a standardised effect size (beta). Its standard error, t and two-sided
p-value are reported, with Bonferroni and Benjamini-Hochberg FDR corrections over all tests of
the table (statsmodels ``multipletests``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["association_table"]

DEFAULT_MEASURES = ("digit_span", "fluid_intelligence", "reaction_time")


def _as_frame(scores, what):
    if isinstance(scores, pd.Series):
        scores = scores.to_frame()
    if not isinstance(scores, pd.DataFrame):
        arr = np.asarray(scores, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        scores = pd.DataFrame(arr, columns=[f"score{j}" for j in range(arr.shape[1])])
    if scores.shape[1] == 0:
        raise ValueError(f"association_table: {what} has no column.")
    return scores


def association_table(scores, phenotypes, measures=DEFAULT_MEASURES, *,
                      covariates=("age", "sex"), categorical=("site",), alpha=0.05,
                      standardize=True):
    """Regress each cognitive measure on each score with covariates: one tidy table.

    Parameters
    ----------
    scores : DataFrame of shape (n, n_scores)
        Held-out brain-genotype scores (e.g. :func:`sklearn_cgni.imaging.cross_fit_scores`),
        one column per SNP. Rows are matched to ``phenotypes`` by index (participant ID)
        when both have the same index values, else by position (lengths must agree).
    phenotypes : DataFrame
        Cognitive measures and covariates per participant.
    measures : sequence of str, default=("digit_span", "fluid_intelligence", "reaction_time")
        Cognitive measures (columns of ``phenotypes``). Participants missing a measure are
        dropped from that measure's tests only; the count is in ``n_missing`` and a warning
        says how many.
    covariates : sequence of str, default=("age", "sex")
        Adjustment variables (columns of ``phenotypes``). A NaN in a covariate raises
        ``ValueError`` naming the column and the participants (impute or drop them first).
    categorical : sequence of str, default=("site",)
        Covariates (among ``covariates``) to one-hot encode (first level dropped). Columns of
        non-numeric dtype are encoded too.
    alpha : float, default=0.05
        Family-wise / false-discovery level for the ``significant_*`` columns.
    standardize : bool, default=True
        z-score the score and the measure within each test (``beta`` is then a standardised
        coefficient: SD change of the measure per SD of the score, adjusted).

    Returns
    -------
    table : DataFrame
        One row per (score, measure): ``score``, ``measure``, ``n``, ``n_missing``, ``beta``,
        ``se``, ``t``, ``p``, ``p_bonferroni``, ``p_fdr``, ``significant_bonferroni``,
        ``significant_fdr``. Corrections are over all tests with a p-value. A score with no
        variation among the participants of a test gets NaN statistics (and a warning) and
        is not counted in the corrections.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_cgni.explain import association_table
    >>> rng = np.random.default_rng(0)
    >>> ph = pd.DataFrame({"age": rng.uniform(40, 70, 200), "sex": rng.integers(0, 2, 200)})
    >>> s = pd.DataFrame({"rs1": rng.normal(size=200), "rs2": rng.normal(size=200)})
    >>> ph["memory"] = 0.5 * s["rs1"] + rng.normal(size=200)
    >>> tab = association_table(s, ph, ["memory"])
    >>> tab[["score", "significant_bonferroni"]].values.tolist()
    [['rs1', True], ['rs2', False]]
    """
    import statsmodels.api as sm
    from statsmodels.stats.multitest import multipletests

    scores = _as_frame(scores, "scores")
    if not isinstance(phenotypes, pd.DataFrame):
        raise TypeError(f"association_table: phenotypes must be a DataFrame; got {type(phenotypes).__name__}.")
    measures = [measures] if isinstance(measures, str) else list(measures)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates or [])
    categorical = [categorical] if isinstance(categorical, str) else list(categorical or [])
    absent = [c for c in measures + covariates if c not in phenotypes.columns]
    if absent:
        raise ValueError(f"association_table: column(s) {absent} not in phenotypes "
                         f"(columns: {list(phenotypes.columns)}).")
    if not measures:
        raise ValueError("association_table: no cognitive measure given.")

    # rows: match by participant ID, else by position
    if set(scores.index) == set(phenotypes.index) and scores.index.is_unique:
        ph = phenotypes.loc[scores.index]
    elif len(scores) == len(phenotypes):
        if not scores.index.equals(pd.RangeIndex(len(scores))) and \
                not phenotypes.index.equals(pd.RangeIndex(len(phenotypes))):
            raise ValueError("association_table: scores and phenotypes have different participant "
                             "IDs (index); align them first (sklearn_cgni.io.align_cohort).")
        ph = phenotypes.set_axis(scores.index)
    else:
        raise ValueError(f"association_table: {len(scores)} rows of scores but {len(phenotypes)} "
                         f"of phenotypes, and their indexes (participant IDs) differ.")
    ids = [str(i) for i in scores.index]

    # covariates: no NaN, categorical one-hot
    cov_parts = []
    for c in covariates:
        col = ph[c]
        bad = col.isna().to_numpy()
        if bad.any():
            who = [ids[i] for i in np.flatnonzero(bad)]
            raise ValueError(
                f"association_table: covariate {c!r} is missing (NaN) for {len(who)} "
                f"participant(s): {who[:10]}{' ...' if len(who) > 10 else ''}. Impute or drop "
                f"them before testing.")
        if c in categorical or not pd.api.types.is_numeric_dtype(col):
            dummies = pd.get_dummies(col.astype(str), prefix=c, drop_first=True, dtype=float)
            cov_parts.append(dummies)
        else:
            cov_parts.append(col.astype(float).to_frame())
    cov = pd.concat(cov_parts, axis=1) if cov_parts else pd.DataFrame(index=ph.index)
    const_cov = [c for c in cov.columns if cov[c].nunique() <= 1]
    if const_cov:
        warnings.warn(f"association_table: covariate column(s) {const_cov} are constant and "
                      f"left out of the models.", UserWarning, stacklevel=2)
        cov = cov.drop(columns=const_cov)

    score_vals = scores.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(score_vals).any():
        bad_cols = scores.columns[np.isnan(score_vals).any(axis=0)].tolist()
        raise ValueError(f"association_table: scores contain NaN (columns {bad_cols[:10]}); "
                         f"every participant needs a held-out score.")
    flat_scores = [str(s) for s, v in zip(scores.columns, score_vals.T) if np.ptp(v) == 0]
    if flat_scores:
        warnings.warn(f"association_table: {len(flat_scores)} score(s) have no variation and "
                      f"get NaN statistics: {flat_scores[:10]}.", UserWarning, stacklevel=2)

    rows = []
    for m in measures:
        y_all = pd.to_numeric(ph[m], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(y_all)
        n_missing = int((~ok).sum())
        if n_missing:
            warnings.warn(f"association_table: {m!r} is missing for {n_missing} participant(s), "
                          f"dropped from its tests (n={int(ok.sum())}).", UserWarning, stacklevel=2)
        y = y_all[ok]
        if len(y) and np.ptp(y) == 0:
            warnings.warn(f"association_table: measure {m!r} has no variation; its tests get "
                          f"NaN statistics.", UserWarning, stacklevel=2)
        C = cov.to_numpy(dtype=np.float64)[ok]
        for j, s in enumerate(scores.columns):
            x = score_vals[ok, j]
            row = {"score": str(s), "measure": m, "n": int(ok.sum()), "n_missing": n_missing,
                   "beta": np.nan, "se": np.nan, "t": np.nan, "p": np.nan}
            if len(y) > C.shape[1] + 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
                xs, ys = x, y
                if standardize:
                    xs = (x - x.mean()) / x.std()
                    ys = (y - y.mean()) / y.std()
                design = np.column_stack([np.ones(len(ys)), xs, C])
                fit = sm.OLS(ys, design).fit()
                row.update(beta=float(fit.params[1]), se=float(fit.bse[1]),
                           t=float(fit.tvalues[1]), p=float(fit.pvalues[1]))
            rows.append(row)
    table = pd.DataFrame(rows)
    table["p_bonferroni"] = np.nan
    table["p_fdr"] = np.nan
    has_p = table["p"].notna().to_numpy()
    if has_p.any():
        p = table.loc[has_p, "p"].to_numpy()
        table.loc[has_p, "p_bonferroni"] = multipletests(p, alpha=alpha, method="bonferroni")[1]
        table.loc[has_p, "p_fdr"] = multipletests(p, alpha=alpha, method="fdr_bh")[1]
    table["significant_bonferroni"] = (table["p_bonferroni"] < alpha).to_numpy()
    table["significant_fdr"] = (table["p_fdr"] < alpha).to_numpy()
    return table
