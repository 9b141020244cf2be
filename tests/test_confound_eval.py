"""Covariate-only baselines, evaluate_confounds and the paired tests."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.evaluation import (
    CovariateRegressor,
    adjusted_model,
    corrected_resampled_ttest,
    covariate_baselines,
    evaluate_confounds,
    incremental_value,
    paired_permutation_test,
)


def _cohort_data(demographics):
    c = make_cohort(500, n_snps=40, shape=(12, 14, 12), demographics=demographics, random_state=1)
    keep = c.phenotypes["wm_group"].notna().to_numpy()
    p = c.phenotypes[keep]
    images = c.images[keep]
    X = pd.DataFrame({"gm_total": images.reshape(len(p), -1).mean(axis=1)}, index=p.index)
    X = X.join(c.genotypes.loc[p.index])
    return X, p["wm_group"].astype(int).to_numpy(), p[["age", "sex"]]


@pytest.fixture(scope="module")
def reference():
    return _cohort_data("reference")


def _lr():
    return LogisticRegression(class_weight="balanced", max_iter=500)


def test_age_alone_separates_the_groups_on_the_default_cohort(reference):
    X, y, cov = reference
    snps = [c for c in X.columns if c != "gm_total"]
    models = {
        "gray matter (total)": make_pipeline(ColumnTransformer([("gm", StandardScaler(), ["gm_total"])]), _lr()),
        "SNPs": make_pipeline(ColumnTransformer([("snp", SimpleImputer(strategy="most_frequent"), snps)]),
                              StandardScaler(), _lr()),
    }
    res = evaluate_confounds(models, X, y, cov, cv=5, random_state=0)
    s = res.summary.set_index("model")
    # covariate-only rows are present and age alone is far above chance (reference: ~0.8)
    assert list(s.index) == ["gray matter (total)", "SNPs", "covariates: age", "covariates: sex",
                             "covariates: age + sex"]
    assert s.loc["covariates: age", "raw_mean"] > 0.75
    assert s.loc["covariates: age + sex", "raw_mean"] > 0.75
    assert 0.45 < s.loc["covariates: sex", "raw_mean"] < 0.7
    # on the matched subset age and sex carry (almost) nothing
    assert s.loc["covariates: age + sex", "matched_mean"] < 0.62
    assert abs(res.balance.loc["age", "smd_after"]) < 0.1
    # the baselines' raw scores are exactly cross_val_score on the same splits
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    ref = cross_val_score(covariate_baselines()["covariates: age"], cov, y, cv=cv, scoring="balanced_accuracy")
    got = res.scores.query("model == 'covariates: age' and evaluation == 'raw'").sort_values("fold")["score"]
    np.testing.assert_allclose(got.to_numpy(), ref)
    # total gray matter is mostly age: adjusting for age and sex inside CV removes most of it
    assert s.loc["gray matter (total)", "raw_mean"] > s.loc["gray matter (total)", "adjusted_mean"] + 0.1
    # the tidy per-fold table: one row per model x evaluation x fold
    assert set(res.scores["evaluation"]) == {"raw", "adjusted", "matched"}
    assert len(res.scores.query("evaluation == 'adjusted'")) == 2 * 5  # baselines are not adjusted
    assert (s["n_folds"] == 5).all()
    for col in ["gain_mean", "gain_t", "gain_p", "gain_p_permutation", "matched_gain_mean", "matched_gain_p"]:
        assert col in s.columns
    assert np.isnan(s.loc["covariates: age + sex", "gain_p"])  # the baseline against itself


def test_independent_demographics_remove_the_confound():
    X, y, cov = _cohort_data("independent")
    res = evaluate_confounds({"gm": make_pipeline(StandardScaler(), _lr())}, X[["gm_total"]], y, cov, cv=5,
                             match=False, random_state=0)
    s = res.summary.set_index("model")
    assert s.loc["covariates: age", "raw_mean"] < 0.62
    assert res.balance is None and np.isnan(s.loc["gm", "matched_mean"])


def _synthetic(n=400, seed=0):
    """Label confounded by age; feature 'signal' carries the label beyond age, 'proxy' only age."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.36).astype(int)
    age = np.where(y == 0, 55.95, 42.35) + 7.3 * rng.standard_normal(n)
    sex = (rng.random(n) < np.where(y == 0, 0.41, 0.57)).astype(int)
    X = pd.DataFrame({"signal": 1.2 * y + rng.standard_normal(n) - 0.02 * age,
                      "proxy": -0.01 * age + 0.005 * rng.standard_normal(n)},
                     index=[f"sub-{i:04d}" for i in range(n)])
    return X, y, pd.DataFrame({"age": age, "sex": sex}, index=X.index)


def test_gain_adjusted_and_matched_separate_signal_from_age():
    X, y, cov = _synthetic()
    models = {"signal": make_pipeline(ColumnTransformer([("s", "passthrough", ["signal"])]), StandardScaler(), _lr()),
              "age proxy": make_pipeline(ColumnTransformer([("s", "passthrough", ["proxy"])]), StandardScaler(),
                                         _lr())}
    res = evaluate_confounds(models, X, y, cov, cv=5, adjust="last", alternative="greater", random_state=0)
    s = res.summary.set_index("model")
    # the age proxy: as good as age raw, nothing once adjusted or matched, no gain over age + sex
    assert s.loc["age proxy", "raw_mean"] > 0.75
    assert s.loc["age proxy", "adjusted_mean"] < 0.6
    assert s.loc["age proxy", "matched_mean"] < 0.62
    assert s.loc["age proxy", "gain_p"] > 0.05
    # the real signal survives adjustment and matching, and beats the covariates on matched data.
    # Adjustment is conservative: the part of the label that is collinear with age goes too
    # (0.63 here against 0.70 on the matched subset).
    assert s.loc["signal", "adjusted_mean"] > 0.6
    assert s.loc["signal", "adjusted_mean"] > s.loc["age proxy", "adjusted_mean"] + 0.08
    assert s.loc["signal", "matched_mean"] > 0.65
    assert s.loc["signal", "matched_gain_mean"] > 0.1
    assert s.loc["signal", "matched_gain_p"] < 0.05
    # a precomputed match_groups result or a list of IDs gives the same matched scores
    from sklearn_cgni.evaluation import match_groups

    m = match_groups(cov, y, random_state=0)
    for given in (m, list(m.ids)):
        again = evaluate_confounds(models, X, y, cov, cv=5, adjust=None, match=given, random_state=0)
        np.testing.assert_allclose(again.summary.set_index("model")["matched_mean"], s["matched_mean"])
    with pytest.raises(ValueError, match="not participants"):
        evaluate_confounds(models, X, y, cov, cv=5, adjust=None, match=["nobody"])
    # refitting on matched participants only: fewer training rows, still a valid score
    res_m = evaluate_confounds(models, X, y, cov, cv=5, matched_training="matched", adjust=None, random_state=0)
    matched = res_m.scores.query("evaluation == 'matched'")
    assert (matched["n_train"] < 0.6 * len(X)).all()
    assert res_m.summary.set_index("model").loc["signal", "matched_mean"] > 0.6
    assert "adjusted" not in set(res_m.scores["evaluation"])


def test_adjusted_model_placement():
    X, y, cov = _synthetic(200)
    X = X.assign(image="sub.nii.gz")  # a non-numeric column only the first step may see
    pipe = Pipeline([("select", ColumnTransformer([("s", StandardScaler(), ["signal", "proxy"])])),
                     ("clf", _lr())])
    last = adjusted_model(pipe, ["age", "sex"], at="last")
    assert [name for name, _ in last.steps] == ["covariate_adjustment", "clf"]
    inner = last.steps[0][1].transformer
    assert isinstance(inner, Pipeline) and [n for n, _ in inner.steps] == ["select"]
    assert inner.steps[0][1] is not pipe.steps[0][1]  # cloned, the caller's pipeline is untouched
    XC = X.join(cov)
    assert last.fit(XC, y).predict(XC).shape == (200,)
    first = adjusted_model(pipe, ["age", "sex"], at="first")
    assert isinstance(first.steps[0][1], CovariateRegressor) and first.steps[0][1].transformer is None
    with pytest.raises(ValueError, match="must be numeric"):
        first.fit(XC, y)
    with pytest.raises(ValueError, match="`at` must be"):
        adjusted_model(pipe, ["age"], at=5)
    with pytest.raises(ValueError, match="both X and covariates"):
        evaluate_confounds({"m": pipe}, X.join(cov[["age"]]), y, cov)
    with pytest.raises(ValueError, match="reserved"):
        evaluate_confounds({"covariates: age": pipe}, X, y, cov)


# ----------------------------------------------------------------------------- paired tests
def test_corrected_ttest_reduces_to_paired_ttest_and_is_more_conservative():
    rng = np.random.default_rng(0)
    a, b = 0.8 + 0.02 * rng.standard_normal(10), 0.78 + 0.02 * rng.standard_normal(10)
    plain = stats.ttest_rel(a, b)
    tiny = corrected_resampled_ttest(a, b, n_train=1e12, n_test=1.0)
    assert tiny.statistic == pytest.approx(plain.statistic, rel=1e-6)
    assert tiny.pvalue == pytest.approx(plain.pvalue, rel=1e-5)
    corr = corrected_resampled_ttest(a, b, n_train=900, n_test=100)
    assert corr.df == 9
    assert corr.statistic == pytest.approx(plain.statistic * np.sqrt(0.1 / (0.1 + 100 / 900)))
    assert corr.pvalue > plain.pvalue
    one = corrected_resampled_ttest(a, b, 900, 100, alternative="greater")
    half = corr.pvalue / 2
    assert one.pvalue == pytest.approx(half if corr.statistic > 0 else 1 - half)
    same = corrected_resampled_ttest([0.7, 0.7], [0.6, 0.6], 10, 5)
    assert same.statistic == np.inf and same.pvalue == 0.0
    with pytest.raises(ValueError, match="same length"):
        corrected_resampled_ttest([0.1, 0.2], [0.1], 10, 5)


def test_permutation_test_exact_and_sampled():
    a = np.array([0.80, 0.82, 0.79, 0.81, 0.83])
    b = a - np.array([0.05, 0.04, 0.03, 0.07, 0.06])
    exact = paired_permutation_test(a, b)
    assert exact.exact and exact.n_permutations == 32
    assert exact.pvalue == pytest.approx(2 / 32)  # only all-positive and all-negative are as extreme
    assert paired_permutation_test(a, b, alternative="greater").pvalue == pytest.approx(1 / 32)
    assert paired_permutation_test(a, b, alternative="less").pvalue == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    a12, b12 = rng.random(12), rng.random(12)
    sampled = paired_permutation_test(a12, b12, n_permutations=2000, random_state=0)
    assert not sampled.exact and 0 < sampled.pvalue <= 1
    full = paired_permutation_test(a12, b12, n_permutations=5000)
    assert full.exact and abs(full.pvalue - sampled.pvalue) < 0.05


def test_summarize_confounds_combines_rows_scored_elsewhere():
    from sklearn.metrics import balanced_accuracy_score

    from sklearn_cgni.evaluation import summarize_confounds

    X, y, cov = _synthetic(300)
    sig = make_pipeline(ColumnTransformer([("s", "passthrough", ["signal"])]), StandardScaler(), _lr())
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    full = evaluate_confounds({"signal": sig}, X, y, cov, cv=folds, n_permutations=100, random_state=0)
    # re-summarising the scores (and predictions) gives the same table
    again = summarize_confounds(full.scores, predictions=full.predictions, y=y, covariates=cov, n_permutations=100,
                                random_state=0)
    pd.testing.assert_frame_equal(again, full.summary)
    without = summarize_confounds(full.scores, n_permutations=100, random_state=0)
    assert not any(c.startswith("incremental") for c in without.columns)
    pd.testing.assert_frame_equal(without, full.summary[without.columns])
    # the same model scored "elsewhere" (its own loop on the same folds), added to baselines-only scores
    only_baselines = evaluate_confounds({}, X, y, cov, cv=folds, n_permutations=100, random_state=0)
    assert set(only_baselines.scores["kind"]) == {"covariate-only"}
    m = full.matched_ids
    rows = []
    for f, (tr, te) in enumerate(folds):
        est = sig.fit(X.iloc[tr], y[tr])
        te_m = te[X.index[te].isin(m)]
        for ev, idx in (("raw", te), ("matched", te_m)):
            rows.append({"model": "signal", "kind": "model", "evaluation": ev, "fold": f, "n_train": len(tr),
                         "n_test": len(idx), "score": balanced_accuracy_score(y[idx], est.predict(X.iloc[idx]))})
    combined = pd.concat([pd.DataFrame(rows), only_baselines.scores], ignore_index=True)
    s = summarize_confounds(combined, n_permutations=100, random_state=0).set_index("model")
    ref = full.summary.set_index("model")
    for col in ("raw_mean", "matched_mean", "gain_mean", "gain_p", "matched_gain_p"):
        assert s.loc["signal", col] == pytest.approx(ref.loc["signal", col])
    assert list(s.index) == ["signal", "covariates: age", "covariates: sex", "covariates: age + sex"]
    # folds that differ from the baseline's, a duplicated score, no covariate-only model: clear errors
    with pytest.raises(ValueError, match="'signal' is scored on folds"):
        summarize_confounds(combined[~((combined["model"] == "signal") & (combined["fold"] == 0))])
    with pytest.raises(ValueError, match="two 'raw' scores for fold 0"):
        summarize_confounds(pd.concat([combined, combined.iloc[[0]]]))
    with pytest.raises(ValueError, match="no covariate-only model"):
        summarize_confounds(pd.DataFrame(rows))
    with pytest.raises(ValueError, match="baseline 'covariates: site'"):
        summarize_confounds(combined, baseline="covariates: site")
    with pytest.raises(ValueError, match="lacks the columns"):
        summarize_confounds(combined.drop(columns="n_test"))


def test_incremental_value_is_the_likelihood_ratio_test_of_nested_logistic_models():
    import statsmodels.api as sm

    X, y, cov = _synthetic(400)
    pred = X["signal"].to_numpy()
    res = incremental_value(y, pred, cov)
    # the same statistic as statsmodels on the raw prediction (the test only orthogonalises it)
    D = sm.add_constant(cov.astype(float))
    small = sm.Logit(y, D).fit(disp=0)
    big = sm.Logit(y, D.assign(pred=pred)).fit(disp=0)
    assert res.statistic == pytest.approx(2 * (big.llf - small.llf), rel=1e-6)
    assert res.pvalue == pytest.approx(stats.chi2.sf(res.statistic, 1), rel=1e-6)
    assert res.coef > 0 and res.pvalue < 1e-6 and res.n == 400
    assert 0 < res.d2_covariates < res.d2_full < 1
    assert res.partial_d2 == pytest.approx(res.statistic / (-2 * small.llf), rel=1e-6)
    # one-sided: the reversed prediction explains as much, in the wrong direction
    rev = incremental_value(y, -pred, cov, alternative="greater")
    assert rev.coef < 0 and rev.pvalue > 0.99
    assert incremental_value(y, pred, cov, alternative="greater").pvalue == pytest.approx(res.pvalue / 2, rel=1e-6)
    # a linear function of the covariates adds exactly nothing (no singular fit)
    lin = incremental_value(y, 3 * cov["age"] - cov["sex"] + 1, cov)
    assert lin.statistic == 0 and lin.pvalue == 1 and lin.coef == 0
    # an accurate age proxy (0.8 balanced accuracy on its own) adds nothing significant
    proxy = X["proxy"].to_numpy()
    assert incremental_value(y, proxy, cov, alternative="greater").pvalue > 0.05
    # categorical covariates are one-hot encoded: a site effect is absorbed
    site = pd.Series(np.arange(400) % 3, index=cov.index).astype(str)
    with_site = cov.assign(site=site)
    assert incremental_value(y, site.astype(int).to_numpy() * 1.0, with_site).statistic == 0
    # parametric bootstrap: agrees with the asymptotic p-value where both are resolvable
    boot = incremental_value(y, proxy, cov, n_bootstrap=999, random_state=0)
    asym = incremental_value(y, proxy, cov)
    assert boot.statistic == asym.statistic and abs(boot.pvalue - asym.pvalue) < 0.08
    assert incremental_value(y, pred, cov, n_bootstrap=99, random_state=0).pvalue == pytest.approx(0.01)  # 1 / 100
    with pytest.raises(ValueError, match="n_bootstrap"):
        incremental_value(y, pred, cov, n_bootstrap=-1)
    with pytest.raises(ValueError, match="two classes"):
        incremental_value(np.zeros(400), pred, cov)
    with pytest.raises(ValueError, match=r"participants \['sub-0003'\]"):
        incremental_value(y, np.where(np.arange(400) == 3, np.nan, pred), cov)
    with pytest.raises(ValueError, match="same number of rows"):
        incremental_value(y[:10], pred, cov)
    with pytest.raises(ValueError, match="alternative"):
        incremental_value(y, pred, cov, alternative="less")


def test_incremental_test_in_evaluate_confounds():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import RepeatedStratifiedKFold

    X, y, cov = _synthetic(400)
    X = X.assign(noise=np.random.default_rng(5).standard_normal(len(X)))

    def sel(cols):
        return ColumnTransformer([("s", "passthrough", cols)])

    models = {"signal": make_pipeline(sel(["signal"]), StandardScaler(), _lr()),
              "age proxy": make_pipeline(sel(["proxy"]), StandardScaler(), _lr()),
              "age proxy, trees": make_pipeline(sel(["proxy"]), HistGradientBoostingClassifier(max_iter=30)),
              "noise": make_pipeline(sel(["noise"]), StandardScaler(), _lr())}
    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=2, random_state=0)
    res = evaluate_confounds(models, X, y, cov, cv=cv, adjust=None, match=False, alternative="greater",
                             n_permutations=100, random_state=0)
    s = res.summary.set_index("model")
    # out-of-fold predictions: every participant once per repeat, for every model and baseline
    pred = res.predictions
    assert set(pred.columns) == {"model", "fold", "participant", "prediction"}
    counts = pred.groupby(["model", "participant"]).size()
    assert (counts == 2).all() and counts.index.get_level_values("participant").nunique() == len(X)
    # the signal model loses to age + sex on accuracy, but its predictions add to the covariates
    assert s.loc["signal", "gain_mean"] < 0
    assert s.loc["signal", "incremental_z"] > 3 and s.loc["signal", "incremental_p"] < 0.001
    assert s.loc["signal", "incremental_n"] == len(X)
    # covariate-only models: their predictions are linear in the covariates, z = 0 exactly
    for name in ("covariates: age", "covariates: sex", "covariates: age + sex"):
        assert s.loc[name, "incremental_z"] == 0
    # why the test removes each fold model's covariate part first: pooled as they are, the
    # out-of-fold predictions of the five age + sex models "add" to age + sex, with a negative
    # sign (fold-to-fold differences are anti-correlated with the held-out labels)
    first = pred[(pred["model"] == "covariates: age + sex") & (pred["fold"] < 5)].set_index("participant")
    pooled = incremental_value(y, first.loc[X.index, "prediction"].to_numpy(), cov)
    assert pooled.statistic > 3.84 and pooled.coef < 0
    # what only knows age, linearly or not, adds nothing significant (one-sided)
    for name in ("age proxy", "age proxy, trees", "noise"):
        assert s.loc[name, "incremental_p"] > 0.05, name
    with pytest.raises(ValueError, match="needs `y` and `covariates`"):
        from sklearn_cgni.evaluation import summarize_confounds

        summarize_confounds(res.scores, predictions=res.predictions)
    with pytest.raises(ValueError, match="no covariates"):
        summarize_confounds(res.scores, predictions=res.predictions, y=y[:100], covariates=cov.iloc[:100])


def test_batched_bootstrap_fits_equal_statsmodels():
    from sklearn_cgni.evaluation._incremental import _batch_signed_root, _signed_root

    rng = np.random.default_rng(0)
    design = rng.standard_normal((250, 3))
    r = rng.standard_normal(250)
    Y = (rng.random((20, 250)) < 1 / (1 + np.exp(-1.5 * design[:, 0]))).astype(float)
    batch = _batch_signed_root(Y, design, r)
    one = np.array([_signed_root(yy, design, r)[0] for yy in Y])
    np.testing.assert_allclose(batch, one, atol=1e-8)
