"""Association of brain-genotype scores with cognition (second paper, stage 2).

For every score x cognitive measure pair, an ordinary least-squares regression (statsmodels)

    measure ~ score + age + sex + other covariates

with the score and the measure standardized over the participants of that test, so that the
score's coefficient is a standardized effect size (beta). Its standard error, t and two-sided
p-value are reported, with Bonferroni and Benjamini-Hochberg FDR corrections over all tests of
the table (statsmodels ``multipletests``).

With ``n_permutations > 0`` each test also gets a permutation p-value that does not rely on the
OLS assumptions (Freedman and Lane, 1983: the residuals of ``measure ~ covariates`` are permuted
and added back to its fitted values, and the score's partial correlation is recomputed), and
the same corrections are applied to those.

With ``genotypes``, each row also says whether its score tracks the genotype it was trained to
predict. An image-derived score can be associated with cognition without carrying anything of
its SNP: cognition depends on the brain, and a score that failed to learn its SNP is still a
function of the image. No permutation of the measure removes that, because the association of
the score itself is real. Such an association is evidence about the image, not about the SNP.
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
                      standardize=True, n_permutations=0, genotypes=None, random_state=None):
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
        z-score the score and the measure within each test (``beta`` is then a standardized
        coefficient: SD change of the measure per SD of the score, adjusted).
    n_permutations : int, default=0
        Permutations for calibrated p-values (Freedman-Lane; the same permutations for every
        score of a measure). ``p_perm = (1 + #{|r*| >= |r|}) / (1 + n_permutations)``, with
        ``r`` the partial correlation of score and measure given the covariates (equivalent
        to the OLS t). A Bonferroni-corrected permutation p-value can only fall below
        ``alpha`` if ``n_permutations + 1 >= n_tests / alpha``; fewer permutations give a
        warning.
    genotypes : DataFrame or None, default=None
        The observed genotypes (dosages) of the scored SNPs, one column per score (same names,
        rows matched like ``phenotypes``; missing calls allowed). Adds ``genotype_r``, the
        correlation of each (held-out) score with its genotype, its one-sided ``genotype_p``
        (r > 0), and ``tracks_genotype``: ``genotype_p`` below ``alpha`` divided by the number
        of scores (Bonferroni). An association of a score with ``tracks_genotype=False`` says
        nothing about its SNP (see the module's notes).
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations.

    Returns
    -------
    table : DataFrame
        One row per (score, measure): ``score``, ``measure``, ``n``, ``n_missing``, ``beta``,
        ``se``, ``t``, ``p``, ``p_bonferroni``, ``p_fdr``, ``significant_bonferroni``,
        ``significant_fdr``. Corrections are over all tests with a p-value. A score with no
        variation among the participants of a test gets NaN statistics (and a warning) and
        is not counted in the corrections. With ``n_permutations > 0`` also ``p_perm``,
        ``p_perm_bonferroni``, ``p_perm_fdr``, ``significant_perm_bonferroni`` and
        ``significant_perm_fdr``. With ``genotypes``, also ``genotype_r``, ``genotype_p``
        and ``tracks_genotype``.

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
    >>> g = pd.DataFrame(np.random.default_rng(1).binomial(2, 0.3, (200, 2)), columns=["rs1", "rs2"])
    >>> s2 = s.assign(rs2=s["rs2"] + g["rs2"])  # rs2's score tracks its genotype, rs1's does not
    >>> association_table(s2, ph, ["memory"], genotypes=g)["tracks_genotype"].tolist()
    [False, True]
    """
    import statsmodels.api as sm
    from sklearn.utils import check_random_state

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

    ph = _rows_of(phenotypes, scores, "phenotypes")
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

    rng = check_random_state(random_state)
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
        p_perm = _freedman_lane(score_vals[ok], y, C, n_permutations, rng) if n_permutations else None
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
                if p_perm is not None:
                    row["p_perm"] = float(p_perm[j])
            rows.append(row)
    table = pd.DataFrame(rows)
    if genotypes is not None:
        table = table.merge(_genotype_tracking(scores, genotypes, alpha), on="score", how="left")
    _correct(table, "p", "", alpha)
    if n_permutations:
        if "p_perm" not in table:
            table["p_perm"] = np.nan
        n_tests = _correct(table, "p_perm", "perm_", alpha)
        if n_tests and n_permutations + 1 < n_tests / alpha:
            warnings.warn(f"association_table: with {n_permutations} permutations the smallest permutation "
                          f"p-value is 1/{n_permutations + 1}, which cannot pass Bonferroni over "
                          f"{n_tests} tests at alpha={alpha}; use n_permutations >= "
                          f"{int(np.ceil(n_tests / alpha))}.", UserWarning, stacklevel=2)
    return table


def _rows_of(frame, scores, what):
    """The rows of ``frame`` in the order of ``scores``: by participant ID (index), else by position."""
    if set(scores.index) == set(frame.index) and scores.index.is_unique and frame.index.is_unique:
        return frame.loc[scores.index]
    if len(scores) == len(frame):
        if not scores.index.equals(pd.RangeIndex(len(scores))) and not frame.index.equals(pd.RangeIndex(len(frame))):
            raise ValueError(f"association_table: scores and {what} have different participant "
                             "IDs (index); align them first (sklearn_cgni.io.align_cohort).")
        return frame.set_axis(scores.index)
    raise ValueError(f"association_table: {len(scores)} rows of scores but {len(frame)} "
                     f"of {what}, and their indexes (participant IDs) differ.")


def _genotype_tracking(scores, genotypes, alpha):
    """Per score: r with its observed genotype, one-sided p (r > 0), and whether it passes Bonferroni."""
    from scipy.stats import pearsonr

    if not isinstance(genotypes, pd.DataFrame):
        raise TypeError(f"association_table: genotypes must be a DataFrame; got {type(genotypes).__name__}.")
    absent = [str(c) for c in scores.columns if c not in genotypes.columns]
    if absent:
        raise ValueError(f"association_table: genotypes has no column for score(s) {absent[:10]}.")
    G = _rows_of(genotypes[list(scores.columns)], scores, "genotypes")
    rows = []
    for s in scores.columns:
        x, g = scores[s].to_numpy(dtype=float), pd.to_numeric(G[s], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(g)
        r = p = np.nan
        if ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(g[ok]) > 0:
            r, p = pearsonr(x[ok], g[ok], alternative="greater")
        rows.append({"score": str(s), "genotype_r": float(r), "genotype_p": float(p)})
    out = pd.DataFrame(rows)
    out["tracks_genotype"] = out["genotype_p"] < alpha / len(out)
    return out


def _correct(table, column, prefix, alpha):
    """Bonferroni and BH-FDR columns for the p-values in ``column`` (NaN rows left out); returns the test count."""
    from statsmodels.stats.multitest import multipletests

    table[f"{column}_bonferroni"] = np.nan
    table[f"{column}_fdr"] = np.nan
    has_p = table[column].notna().to_numpy()
    if has_p.any():
        p = table.loc[has_p, column].to_numpy()
        table.loc[has_p, f"{column}_bonferroni"] = multipletests(p, alpha=alpha, method="bonferroni")[1]
        table.loc[has_p, f"{column}_fdr"] = multipletests(p, alpha=alpha, method="fdr_bh")[1]
    table[f"significant_{prefix}bonferroni"] = (table[f"{column}_bonferroni"] < alpha).to_numpy()
    table[f"significant_{prefix}fdr"] = (table[f"{column}_fdr"] < alpha).to_numpy()
    return int(has_p.sum())


def _residualize(A, C):
    """Residuals of the columns of ``A`` after least squares on ``[1, C]``."""
    design = np.column_stack([np.ones(len(A)), C])
    coef, *_ = np.linalg.lstsq(design, A, rcond=None)
    return A - design @ coef


#: Bytes of one block of permuted residuals (participants × permutations, float64): the
#: permutations run in blocks this size, so their memory does not grow with the participants.
_PERMUTATION_BLOCK_BYTES = 16 * 1024**2


def _freedman_lane(X, y, C, n_permutations, rng, chunk=1000):
    """Two-sided Freedman-Lane permutation p-values of each column of ``X`` for ``y`` given ``C``.

    Under the reduced model ``y ~ C`` the residuals ``e`` are exchangeable; ``y* = fitted + e[perm]``
    residualized on ``C`` is ``R e[perm]``, and the test statistic, the partial correlation of
    ``x`` and ``y`` given ``C``, is the cosine of ``R x`` and ``R y``. Permutations run in
    blocks of at most ``chunk`` and at most :data:`_PERMUTATION_BLOCK_BYTES` of residuals (the
    permutations drawn, and so the p-values, do not depend on the block size).
    """
    chunk = max(1, min(int(chunk), _PERMUTATION_BLOCK_BYTES // (8 * max(1, len(y)))))
    Xr = _residualize(X, C)
    e = _residualize(y[:, None], C)[:, 0]
    xn = np.linalg.norm(Xr, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_obs = np.abs(Xr.T @ e) / (xn * np.linalg.norm(e))
    exceed = np.zeros(X.shape[1])
    done = 0
    while done < n_permutations:
        b = min(chunk, n_permutations - done)
        E = np.stack([e[rng.permutation(len(e))] for _ in range(b)], axis=1)
        E = _residualize(E, C)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.abs(Xr.T @ E) / (xn[:, None] * np.linalg.norm(E, axis=0)[None, :])
        exceed += (r >= r_obs[:, None] - 1e-12).sum(axis=1)
        done += b
    p = (1 + exceed) / (1 + n_permutations)
    p[~np.isfinite(r_obs)] = np.nan
    return p
