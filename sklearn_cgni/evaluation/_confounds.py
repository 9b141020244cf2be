"""Covariate-only baselines and confound-aware evaluation of any set of models.

For each named model, under the same cross-validation splits and metric:

* ``raw``: the model on its features;
* ``adjusted``: the model with a :class:`CovariateRegressor` inside the pipeline (fitted on
  the training fold only), placed where the caller says;
* ``matched``: the raw model scored on the age- and sex-matched participants of each test
  fold (or trained and tested on matched participants only), where age cannot explain the
  label;
* ``gain``: raw score minus the covariate-only model's score on the same folds, with the
  corrected resampled t-test and a sign-flip permutation test across folds;
* ``incremental``: a likelihood-ratio test of whether the model's out-of-fold predictions
  explain the label beyond the covariates (:func:`incremental_value`), valid for
  non-linear models where the adjusted score is not.
"""

import numbers

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import Bunch, _safe_indexing

from ._covariates import CovariateRegressor
from ._incremental import _design, _orthogonal_part, _proba_logit, _residualize, _signed_root
from ._matching import match_groups
from ._stats import corrected_resampled_ttest, paired_permutation_test

__all__ = ["covariate_baselines", "evaluate_confounds", "adjusted_model", "summarize_confounds"]


def _covariate_model(columns, categorical, class_weight, random_state):
    numeric = [c for c in columns if c not in categorical]
    cats = [c for c in columns if c in categorical]
    parts = []
    if numeric:
        parts.append(("numeric", StandardScaler(), numeric))
    if cats:
        parts.append(("categorical", OneHotEncoder(drop="first", handle_unknown="ignore"), cats))
    return Pipeline([
        ("covariates", ColumnTransformer(parts)),
        ("logistic", LogisticRegression(class_weight=class_weight, random_state=random_state)),
    ])


def covariate_baselines(covariates=("age", "sex"), *, categorical=(), class_weight="balanced",
                        random_state=None):
    """Logistic regressions on covariates only: one per covariate and one on all of them.

    Each model is ``ColumnTransformer`` (standardised continuous covariates, one-hot
    categorical ones) followed by ``LogisticRegression``; it takes a DataFrame with the
    covariate columns. ``class_weight="balanced"`` makes the decision threshold suit
    balanced accuracy with unequal groups (the reference study's 3192 vs 1803).

    Parameters
    ----------
    covariates : list of str, default=("age", "sex")
    categorical : list of str, default=()
        Covariates to one-hot encode (e.g. ``"site"``).
    class_weight : "balanced", dict or None, default="balanced"
    random_state : int or None, default=None

    Returns
    -------
    baselines : dict of str -> Pipeline
        ``"covariates: age"``, ``"covariates: sex"``, ..., and
        ``"covariates: age + sex"`` (all covariates; only once when there is one).

    Examples
    --------
    >>> from sklearn_cgni.evaluation import covariate_baselines
    >>> list(covariate_baselines())
    ['covariates: age', 'covariates: sex', 'covariates: age + sex']
    """
    covariates = list(covariates)
    categorical = set(categorical)
    out = {}
    for c in covariates:
        out[f"covariates: {c}"] = _covariate_model([c], categorical, class_weight, random_state)
    if len(covariates) > 1:
        out["covariates: " + " + ".join(covariates)] = _covariate_model(covariates, categorical, class_weight,
                                                                       random_state)
    return out


def adjusted_model(model, covariates, *, at="first", categorical=None):
    """Insert a :class:`CovariateRegressor` into ``model``.

    The result takes ``X`` with the covariate columns added (see :func:`evaluate_confounds`).

    Parameters
    ----------
    model : estimator or Pipeline
    covariates : list of str
        Covariate column names.
    at : "first", "last" or int, default="first"
        Where the adjustment goes. ``"first"`` (0): on the input features of the model
        (they must be numeric). ``"last"``: on the input of the final estimator, i.e.
        after every transforming step (CNN features, SNP embeddings...). An int ``k``:
        after the first ``k`` steps of the Pipeline. The steps before the adjustment are
        wrapped as ``CovariateRegressor(transformer=Pipeline(steps[:k]))``, so they are
        fitted on the non-covariate columns only and never see the covariates.
    categorical : list of str, optional
        Passed to :class:`CovariateRegressor`.

    Returns
    -------
    adjusted : Pipeline
        Its ``CovariateRegressor`` outputs a DataFrame (``set_output(transform="pandas")``)
        so that later steps can still select columns by name.
    """
    if isinstance(model, Pipeline):
        steps = list(model.steps)
        n = len(steps)
        k = 0 if at == "first" else n - 1 if at == "last" else at
        if not isinstance(k, numbers.Integral) or not 0 <= k < n:
            raise ValueError(f"adjusted_model: `at` must be 'first', 'last' or an int in [0, {n - 1}] for a "
                             f"Pipeline of {n} steps; got {at!r}.")
        prefix = None if k == 0 else clone(Pipeline(steps[:k]))
        adj = CovariateRegressor(list(covariates), categorical=categorical, transformer=prefix)
        adj.set_output(transform="pandas")  # later steps may select columns by name
        return Pipeline([("covariate_adjustment", adj)] + [(name, clone(est)) for name, est in steps[k:]],
                        memory=model.memory)
    if at not in ("first", "last", 0):
        raise ValueError(f"adjusted_model: a model that is not a Pipeline takes at='first' or 'last'; got {at!r}.")
    adj = CovariateRegressor(list(covariates), categorical=categorical).set_output(transform="pandas")
    return Pipeline([("covariate_adjustment", adj), ("model", clone(model))])


def _continuous_prediction(est, X):
    """Score of the positive (larger) class: logit of predict_proba, decision_function or 0/1."""
    classes = getattr(est, "classes_", None)
    if classes is None or len(classes) != 2:
        return None
    if hasattr(est, "predict_proba"):
        return _proba_logit(np.asarray(est.predict_proba(X))[:, 1])
    if hasattr(est, "decision_function"):
        return np.asarray(est.decision_function(X), dtype=float).ravel()
    return (np.asarray(est.predict(X)) == classes[1]).astype(float)


class _WithCovariates:
    """The input of the adjusted models: ``X``'s columns, then the covariates', built for the rows a fit or a
    score reads (:meth:`rows`), never for every participant at once (that frame was one more copy of ``X``)."""

    def __init__(self, X_frame, cov_frame):
        self.X, self.cov = X_frame, cov_frame

    def rows(self, idx):
        """``[X ⊕ covariates]`` of rows ``idx``, indexed as ``X`` is."""
        out = pd.concat([self.X.iloc[idx].reset_index(drop=True), self.cov.iloc[idx].reset_index(drop=True)],
                        axis=1)
        out.index = self.X.index[idx]
        return out


def _rows(X, idx):
    return X.rows(idx) if isinstance(X, _WithCovariates) else _safe_indexing(X, idx)


def _fit_and_score(estimator, X, y, train, evals, scorer, predict=False):
    """Fit on ``train``; score on each named index set of ``evals`` (NaN when too few classes).

    With ``predict``, also return the continuous prediction on ``evals["raw"]``.
    """
    est = clone(estimator)
    est.fit(_rows(X, train), _safe_indexing(y, train))
    out = {}
    for name, idx in evals.items():
        if len(idx) == 0 or len(np.unique(_safe_indexing(y, idx))) < 2:
            out[name] = np.nan
            continue
        out[name] = float(scorer(est, _rows(X, idx), _safe_indexing(y, idx)))
    pred = _continuous_prediction(est, _rows(X, evals["raw"])) if predict else None
    return out, pred


def _resolve_match(match, covariates, y, random_state):
    if match is None or match is False:
        return None
    if match is True:
        match = {}
    if isinstance(match, Bunch) and "ids" in match:  # a match_groups result (Bunch is a dict: test first)
        return match
    if isinstance(match, dict):
        kwargs = {"random_state": random_state, **match}
        return match_groups(covariates, y, **kwargs)
    return Bunch(ids=pd.Index(match), balance=None, counts=None)


def summarize_confounds(scores, *, predictions=None, y=None, covariates=None, categorical=None, baseline=None,
                        alternative="two-sided", n_permutations=10000, random_state=None):
    """Summary table of per-fold confound scores: means, gains over a baseline and paired tests.

    :func:`evaluate_confounds` calls this on the scores it computes. Call it yourself to
    add rows scored elsewhere on the same folds (e.g. a CNN whose fold predictions already
    exist) to those of :func:`evaluate_confounds`: concatenate the ``scores`` frames first.

    Parameters
    ----------
    scores : DataFrame
        Tidy per-fold scores with columns ``model``, ``kind`` ("model" or
        "covariate-only"), ``evaluation`` ("raw", "adjusted" or "matched"), ``fold``,
        ``score``, ``n_train`` and ``n_test`` (the ``scores`` of :func:`evaluate_confounds`).
        Every model must be scored on the same folds as the baseline.
    predictions : DataFrame, optional
        Out-of-fold predictions with columns ``model``, ``fold``, ``participant`` (a label
        of ``covariates``' index) and ``prediction`` (a continuous score of the positive
        class, e.g. the logit of its probability): the ``predictions`` of
        :func:`evaluate_confounds`. With ``y`` and ``covariates``, each model's predictions
        are tested for what they add to the covariates (:func:`incremental_value`): within
        each pass over the data (disjoint test folds; one repeat of a repeated k-fold), each
        fold model's predictions have their linear covariate part removed on its own test
        fold and are standardised, then pooled for one likelihood-ratio test; the signed
        roots of the statistics (z) are averaged over passes and referred to the standard
        normal. Slightly liberal: with 300 participants its type-I error at 0.05 was
        0.045-0.075 (``benchmarks/results/incremental_calibration.md``), because each fold
        model was trained on the labels of the other folds, which makes the folds'
        contributions positively correlated. A parametric bootstrap that holds the
        predictions fixed misses that correlation too and was more liberal (0.05-0.12),
        so it is offered only for one model on one held-out set (:func:`incremental_value`).
    y : array-like of shape (n_participants,), optional
        Labels, in the row order of ``covariates``.
    covariates : DataFrame, optional
        Covariates indexed by participant.
    categorical : list of str, optional
        Categorical covariates, for the incremental test.
    baseline : str, optional
        The covariate-only model gains are measured against; default: the last
        covariate-only model in ``scores`` (the one on all covariates for
        :func:`evaluate_confounds`).
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
    n_permutations : int, default=10000
    random_state : int or None, default=None

    Returns
    -------
    summary : DataFrame
        One row per model, in order of first appearance (models, then covariate-only
        ones); columns as described in :func:`evaluate_confounds`.
    """
    need = {"model", "kind", "evaluation", "fold", "score", "n_train", "n_test"}
    missing = need - set(scores.columns)
    if missing:
        raise ValueError(f"summarize_confounds: `scores` lacks the columns {sorted(missing)}.")
    kinds = dict(zip(scores["model"], scores["kind"]))
    names = [m for m in pd.unique(scores["model"]) if kinds[m] != "covariate-only"]
    names += [m for m in pd.unique(scores["model"]) if kinds[m] == "covariate-only"]
    covariate_only = [m for m in names if kinds[m] == "covariate-only"]
    if not covariate_only:
        raise ValueError("summarize_confounds: `scores` holds no covariate-only model to measure gains against.")
    baseline = baseline or covariate_only[-1]
    if baseline not in covariate_only:
        raise ValueError(f"summarize_confounds: baseline {baseline!r} is not one of the covariate-only models "
                         f"{covariate_only}.")
    dup = scores.duplicated(["model", "evaluation", "fold"])
    if dup.any():
        first = scores[dup].iloc[0]
        raise ValueError(f"summarize_confounds: model {first['model']!r} has two {first['evaluation']!r} scores for "
                         f"fold {first['fold']}.")
    base_folds = set(scores.loc[(scores["model"] == baseline) & (scores["evaluation"] == "raw"), "fold"])
    for name in names:
        folds = set(scores.loc[(scores["model"] == name) & (scores["evaluation"] == "raw"), "fold"])
        if folds and folds != base_folds:
            raise ValueError(f"summarize_confounds: model {name!r} is scored on folds {sorted(folds)} but the "
                             f"baseline {baseline!r} on {sorted(base_folds)}; gains need the same folds.")
    rows = []
    wide = scores.pivot_table(index=["evaluation", "fold"], columns="model", values="score", dropna=False)
    sizes = scores.drop_duplicates(["evaluation", "fold"]).set_index(["evaluation", "fold"])
    for name in names:
        row = {"model": name, "kind": kinds[name]}
        for ev in ("raw", "adjusted", "matched"):
            s = wide.loc[ev, name] if ev in wide.index.get_level_values(0) and name in wide else None
            ok = s is not None and s.notna().any()
            row[f"{ev}_mean"] = float(s.mean()) if ok else np.nan
            row[f"{ev}_sd"] = float(s.std(ddof=1)) if ok and s.notna().sum() > 1 else np.nan
        row["baseline"] = baseline
        row["baseline_raw_mean"] = float(wide.loc["raw", baseline].mean())
        for ev, prefix in (("raw", "gain"), ("matched", "matched_gain")):
            if ev not in wide.index.get_level_values(0) or name not in wide:
                continue
            a, b = wide.loc[ev, name], wide.loc[ev, baseline]
            keep = a.notna() & b.notna()
            row[f"{prefix}_mean"] = float((a - b)[keep].mean()) if keep.any() else np.nan
            row[f"{prefix}_sd"] = float((a - b)[keep].std(ddof=1)) if keep.sum() > 1 else np.nan
            if name == baseline or keep.sum() < 2:
                row[f"{prefix}_t"], row[f"{prefix}_p"], row[f"{prefix}_p_permutation"] = np.nan, np.nan, np.nan
                continue
            sz = sizes.loc[ev].loc[keep[keep].index]
            t = corrected_resampled_ttest(a[keep], b[keep], sz["n_train"].mean(), sz["n_test"].mean(),
                                          alternative=alternative)
            perm = paired_permutation_test(a[keep], b[keep], n_permutations=n_permutations,
                                           alternative=alternative, random_state=random_state)
            row[f"{prefix}_t"], row[f"{prefix}_p"], row[f"{prefix}_p_permutation"] = t.statistic, t.pvalue, perm.pvalue
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["n_folds"] = scores["fold"].nunique()
    if predictions is not None:
        summary = _add_incremental(summary, predictions, y, covariates, categorical, alternative)
    return summary


def _passes(fold_ids):
    """Group folds into passes over the data: a new pass starts when a participant recurs."""
    passes, seen = [], set()
    for f, ids in fold_ids:
        if not passes or seen & ids:
            passes.append([])
            seen = set()
        passes[-1].append(f)
        seen |= ids
    return passes


def _add_incremental(summary, predictions, y, covariates, categorical, alternative):
    """Columns incremental_* of the summary: one likelihood-ratio test per pass over the data."""
    need = {"model", "fold", "participant", "prediction"}
    missing = need - set(predictions.columns)
    if missing:
        raise ValueError(f"summarize_confounds: `predictions` lacks the columns {sorted(missing)}.")
    if y is None or covariates is None or not hasattr(covariates, "columns"):
        raise ValueError("summarize_confounds: `predictions` needs `y` and `covariates` (a DataFrame indexed by "
                         "participant) for the incremental test.")
    if len(y) != len(covariates):
        raise ValueError(f"summarize_confounds: y has {len(y)} rows but covariates {len(covariates)}.")
    unknown = pd.Index(predictions["participant"].unique()).difference(covariates.index)
    if len(unknown):
        raise ValueError(f"summarize_confounds: predictions for participants {list(unknown[:10])} who have no "
                         "covariates.")
    cols = {c: [] for c in ("incremental_z", "incremental_p", "incremental_partial_d2", "incremental_n")}
    alt = "greater" if alternative == "greater" else "two-sided"
    yb = pd.Series((np.asarray(y) == np.unique(y)[-1]).astype(float), index=covariates.index)
    for name in summary["model"]:
        pred = predictions[predictions["model"] == name]
        folds = {f: g for f, g in pred.groupby("fold", sort=True)}
        parts = []  # per pass over the data: (participants, covariate design, prediction part)
        for p in _passes([(f, set(g["participant"])) for f, g in folds.items()]):
            # each fold model's prediction minus its linear covariate part on its own test
            # fold, standardised: what differs between fold models along the covariates
            # (anti-correlated with the held-out labels) does not enter the pooled test
            ids = pd.Index(np.concatenate([folds[f]["participant"].to_numpy() for f in p]))
            if yb.loc[ids].nunique() < 2:
                continue
            r = np.concatenate([_residualize(folds[f]["prediction"].to_numpy(),
                                             covariates.loc[pd.Index(folds[f]["participant"])], categorical)
                                for f in p])
            design = _design(covariates.loc[ids], set(categorical or [])).to_numpy(float)
            parts.append((ids, design, _orthogonal_part(r, design)))
        if not parts:
            for c in cols:
                cols[c].append(np.nan)
            continue
        fits = [_signed_root(yb.loc[ids].to_numpy(), design, r) for ids, design, r in parts]
        Z = float(np.mean([f[0] for f in fits]))  # mean over passes (repeats), which are correlated
        pval = float(stats.norm.sf(Z) if alt == "greater" else 2 * stats.norm.sf(abs(Z)))
        cols["incremental_z"].append(Z)
        cols["incremental_p"].append(pval)
        cols["incremental_partial_d2"].append(float(np.mean([f[1] / f[3] for f in fits])))
        cols["incremental_n"].append(int(np.mean([len(ids) for ids, _, _ in parts])))
    for c, v in cols.items():
        summary[c] = v
    return summary


def evaluate_confounds(models, X, y, covariates, *, cv=5, adjust="first", categorical=None, match=True,
                       matched_training="full", baseline=None, scoring="balanced_accuracy", alternative="two-sided",
                       n_permutations=10000, n_jobs=None, random_state=None):
    """Score models raw, covariate-adjusted and on a matched subset, against covariate-only models.

    All models (and the covariate-only baselines of :func:`covariate_baselines`) are
    fitted and scored on the same splits with the same metric.

    Parameters
    ----------
    models : dict of str -> estimator
        Named scikit-learn estimators or pipelines taking ``X``. May be empty: then only
        the covariate-only models are scored (to combine with rows scored elsewhere in
        :func:`summarize_confounds`).
    X : DataFrame or array-like of shape (n_samples, n_features)
        Model input, without covariates (a DataFrame may hold path columns, SNPs, ...).
        When a DataFrame, its index (participant IDs) is used to align ``covariates`` and
        to name matched participants.
    y : array-like of shape (n_samples,)
        Labels (e.g. working-memory group, 0 low / 1 high).
    covariates : DataFrame of shape (n_samples, n_covariates)
        Covariates (e.g. ``phenotypes[["age", "sex"]]``), aligned on ``X``'s index (or by
        row when ``X`` is an array). Column names must not clash with ``X``'s.
    cv : int, CV splitter or iterable, default=5
        An int means ``StratifiedKFold(cv, shuffle=True, random_state=random_state)``.
    adjust : "first", "last", int, callable, dict or None, default="first"
        How the adjusted variant of each model is built: ``"first"``/``"last"``/int
        are the ``at`` of :func:`adjusted_model`; a callable takes a model and returns its
        adjusted version; a dict maps model names to adjusted estimators (models not in it
        get no adjusted score). Adjusted models are fitted on ``X`` with the covariate
        columns appended. None: no adjusted scores.
    categorical : list of str, optional
        Categorical covariates (one-hot encoded in the adjustment and the baselines).
    match : bool, dict, Bunch or array-like, default=True
        The matched subset: True runs :func:`match_groups` with its defaults (age within
        sex, caliper 0.2 SD, optimal) on ``covariates`` and ``y``; a dict gives its keyword
        arguments; a :func:`match_groups` result or a list of participant IDs is used as it
        is. False/None: no matched scores.
    matched_training : {"full", "matched"}, default="full"
        ``"full"``: each fold's model (trained on the whole training part) is scored on the
        matched participants of the test part (no extra fit). ``"matched"``: models are
        refitted on the matched participants of each training part.
    baseline : str, optional
        The covariate-only model that gains are measured against; default: the one on all
        covariates (``"covariates: age + sex"``).
    scoring : str or callable, default="balanced_accuracy"
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        Alternative hypothesis of the paired tests ("greater": the model beats the baseline).
    n_permutations : int, default=10000
        For :func:`paired_permutation_test` (exact with few folds).
    n_jobs : int, optional
        Parallel (model, fold) fits with joblib.
    random_state : int or None, default=None
        Seed of the default CV, of the matching and of the permutation test.

    Returns
    -------
    result : Bunch
        ``summary``: DataFrame, one row per model and per covariate-only baseline
        (``kind``), with ``raw_mean``/``raw_sd``, ``adjusted_mean``/``_sd``,
        ``matched_mean``/``_sd``, ``baseline``, ``baseline_raw_mean``, ``gain_mean``/``_sd``
        (raw minus baseline on the same folds), ``gain_t``, ``gain_p`` (corrected
        resampled t-test), ``gain_p_permutation`` (sign-flip test), the same for
        ``matched_gain_*`` (on the matched subset), ``n_folds``, and the likelihood-ratio
        test of the model's out-of-fold predictions against the covariates
        (:func:`incremental_value`, per pass over the data as in
        :func:`summarize_confounds`): ``incremental_z`` (positive: the prediction adds
        to the covariates in the right direction), ``incremental_p``,
        ``incremental_partial_d2`` (mean over passes of the fraction of the deviance left
        by the covariates that the prediction explains) and ``incremental_n``
        (participants per pass).
        ``scores``: tidy DataFrame (model, kind, evaluation, fold, score, n_train,
        n_test). ``predictions``: tidy DataFrame of the raw models' out-of-fold
        predictions (model, fold, participant, prediction: logit of the positive class's
        probability, or the decision function). ``balance`` and ``counts``: the matching
        report (None without matching). ``matched_ids``: the matched participants.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_cgni.evaluation import evaluate_confounds
    >>> rng = np.random.default_rng(0)
    >>> y = np.r_[np.zeros(120), np.ones(80)].astype(int)
    >>> cov = pd.DataFrame({"age": np.where(y == 0, 56, 42) + 7.5 * rng.standard_normal(200),
    ...                     "sex": rng.integers(0, 2, 200)})
    >>> X = pd.DataFrame({"gm": -0.01 * cov["age"] + 0.01 * rng.standard_normal(200)})
    >>> gm_model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    >>> res = evaluate_confounds({"gm logistic": gm_model}, X, y, cov, cv=3, random_state=0)
    >>> row = res.summary.set_index("model").loc["gm logistic"]
    >>> bool(row["raw_mean"] > 0.7)  # age, seen through gray matter
    True
    >>> bool(row["adjusted_mean"] < 0.65)  # once age is regressed out inside each fold
    True
    """
    if not isinstance(models, dict):
        raise ValueError("evaluate_confounds: `models` must be a dict of name -> estimator (empty: only the "
                         "covariate-only models).")
    if not hasattr(covariates, "columns"):
        raise ValueError("evaluate_confounds: `covariates` must be a DataFrame (columns such as 'age', 'sex').")
    if matched_training not in ("full", "matched"):
        raise ValueError(f"evaluate_confounds: matched_training must be 'full' or 'matched'; got {matched_training!r}.")
    y = np.asarray(y)
    n = len(y)
    is_df = hasattr(X, "columns")
    if is_df:
        if len(X) != n:
            raise ValueError(f"evaluate_confounds: X has {len(X)} rows but y has {n}.")
        if not covariates.index.equals(X.index):
            missing = X.index.difference(covariates.index)
            if len(missing):
                raise ValueError(f"evaluate_confounds: no covariates for participants {list(missing[:10])}.")
            covariates = covariates.loc[X.index]
        clash = set(map(str, X.columns)) & set(map(str, covariates.columns))
        if clash:
            raise ValueError(f"evaluate_confounds: columns {sorted(clash)} are in both X and covariates; "
                             "pass the covariates only in `covariates`.")
        X_frame = X
    else:
        X_arr = np.asarray(X)
        if X_arr.ndim != 2 or X_arr.shape[0] != n:
            raise ValueError(f"evaluate_confounds: X must be 2-D with {n} rows; got shape {X_arr.shape}.")
        X_frame = pd.DataFrame(X_arr, columns=[f"x{j}" for j in range(X_arr.shape[1])])
    if len(covariates) != n:
        raise ValueError(f"evaluate_confounds: covariates has {len(covariates)} rows but y has {n}.")
    cov_names = [str(c) for c in covariates.columns]
    covariates = covariates.copy()
    covariates.columns = cov_names
    categorical = list(categorical or [])
    bad = covariates.columns[covariates.isna().any().to_numpy()]
    if len(bad):
        rows = covariates.index[covariates[bad].isna().any(axis=1).to_numpy()]
        raise ValueError(f"evaluate_confounds: covariates {list(bad)} are missing for participants {list(rows[:10])}.")

    cov_frame = covariates.reset_index(drop=True)
    if is_df:
        cov_frame.index = X.index
    XC = _WithCovariates(X_frame, cov_frame)  # the adjusted models' input, built per job for its rows

    baselines = covariate_baselines(cov_names, categorical=categorical, random_state=random_state)
    baseline = baseline or list(baselines)[-1]
    if baseline not in baselines:
        raise ValueError(f"evaluate_confounds: baseline {baseline!r} is not one of {list(baselines)}.")
    clash = set(models) & set(baselines)
    if clash:
        raise ValueError(f"evaluate_confounds: model names {sorted(clash)} are reserved for the baselines.")

    adjusted = {}
    if adjust is not None:
        for name, model in models.items():
            if isinstance(adjust, dict):
                if name in adjust:
                    adjusted[name] = adjust[name]
            elif callable(adjust):
                adjusted[name] = adjust(model)
            else:
                adjusted[name] = adjusted_model(model, cov_names, at=adjust, categorical=categorical)

    if isinstance(cv, numbers.Integral):
        cv = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    else:
        cv = check_cv(cv, y, classifier=True)
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X_frame, y)]

    m = _resolve_match(match, covariates if is_df else cov_frame, y, random_state)
    if m is not None:
        ids = X_frame.index
        unknown = pd.Index(m.ids).difference(ids)
        if len(unknown):
            raise ValueError(f"evaluate_confounds: matched IDs {list(unknown[:10])} are not participants of X.")
        in_match = ids.isin(m.ids)
    scorer = check_scoring(next(iter({**models, **baselines}.values())), scoring=scoring)

    kinds = {**{k: "model" for k in models}, **{k: "covariate-only" for k in baselines}}
    jobs = []  # (model, evaluation tag(s), estimator, data, train, evals)
    for f, (tr, te) in enumerate(splits):
        for name, est in {**models, **baselines}.items():
            data = cov_frame if name in baselines else X_frame
            evals = {"raw": te}
            if m is not None and matched_training == "full":
                evals["matched"] = te[in_match[te]]
            jobs.append((name, f, est, data, tr, evals))
            if m is not None and matched_training == "matched":
                jobs.append((name, f, est, data, tr[in_match[tr]], {"matched": te[in_match[te]]}))
            if name in adjusted:
                jobs.append((name, f, adjusted[name], XC, tr, {"adjusted": te}))
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score)(est, data, y, tr, evals, scorer, predict="raw" in evals)
        for _, _, est, data, tr, evals in jobs
    )
    rows, preds = [], []
    ids = X_frame.index
    for (name, f, _, _, tr, evals), (res, pred) in zip(jobs, results):
        for ev, score in res.items():
            rows.append({"model": name, "kind": kinds[name], "evaluation": ev, "fold": f, "score": score,
                         "n_train": len(tr), "n_test": len(evals[ev])})
        if pred is not None:
            preds.append(pd.DataFrame({"model": name, "fold": f, "participant": ids[evals["raw"]],
                                       "prediction": pred}))
    scores = pd.DataFrame(rows)
    predictions = (pd.concat(preds, ignore_index=True) if preds
                   else pd.DataFrame(columns=["model", "fold", "participant", "prediction"]))
    summary = summarize_confounds(scores, predictions=predictions, y=y, covariates=cov_frame, categorical=categorical,
                                  baseline=baseline, alternative=alternative, n_permutations=n_permutations,
                                  random_state=random_state)
    return Bunch(summary=summary, scores=scores, predictions=predictions,
                 balance=None if m is None else m.get("balance"),
                 counts=None if m is None else m.get("counts"),
                 matched_ids=None if m is None else pd.Index(m.ids))
