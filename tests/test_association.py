"""association_table: OLS of cognition on scores with covariates, corrections, bad input."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from sklearn_cgni.explain import association_table


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    n = 300
    ids = [f"sub-{i:03d}" for i in range(n)]
    ph = pd.DataFrame({"age": rng.uniform(40, 75, n), "sex": rng.integers(0, 2, n),
                       "site": rng.choice(["A", "B", "C"], n)}, index=ids)
    scores = pd.DataFrame(rng.normal(size=(n, 3)), index=ids, columns=["rs_causal", "rs_null1", "rs_null2"])
    ph["fluid_intelligence"] = 0.4 * scores["rs_causal"] - 0.03 * ph["age"] + rng.normal(size=n)
    ph["digit_span"] = np.round(7 + 0.5 * scores["rs_causal"] + rng.normal(size=n))
    return scores, ph


def test_matches_statsmodels_and_corrections(cohort):
    scores, ph = cohort
    tab = association_table(scores, ph, ["fluid_intelligence", "digit_span"],
                            covariates=["age", "sex", "site"])
    assert list(tab.columns) == ["score", "measure", "n", "n_missing", "beta", "se", "t", "p",
                                 "p_bonferroni", "p_fdr", "significant_bonferroni",
                                 "significant_fdr"]
    assert len(tab) == 6 and (tab["n"] == 300).all() and (tab["n_missing"] == 0).all()
    # reference fit for one row, by hand
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    design = pd.concat([z(scores["rs_causal"]), ph[["age", "sex"]],
                        pd.get_dummies(ph["site"], drop_first=True, dtype=float)], axis=1)
    ref = sm.OLS(z(ph["fluid_intelligence"]).to_numpy(), sm.add_constant(design.to_numpy())).fit()
    row = tab.query("score == 'rs_causal' and measure == 'fluid_intelligence'").iloc[0]
    assert row["beta"] == pytest.approx(ref.params[1]) and row["se"] == pytest.approx(ref.bse[1])
    assert row["p"] == pytest.approx(ref.pvalues[1])
    np.testing.assert_allclose(tab["p_bonferroni"], np.minimum(tab["p"] * 6, 1))
    np.testing.assert_allclose(tab["p_fdr"], multipletests(tab["p"], method="fdr_bh")[1])
    sig = tab.set_index(["score", "measure"])["significant_bonferroni"]
    assert sig[("rs_causal", "fluid_intelligence")] and sig[("rs_causal", "digit_span")]
    assert not sig[("rs_null1", "fluid_intelligence")] and not sig[("rs_null2", "digit_span")]


def test_missing_measure_dropped_per_test_and_counted(cohort):
    scores, ph = cohort
    ph = ph.copy()
    ph.iloc[:7, ph.columns.get_loc("digit_span")] = np.nan
    with pytest.warns(UserWarning, match=r"'digit_span' is missing for 7 participant\(s\).*n=293"):
        tab = association_table(scores, ph, ["fluid_intelligence", "digit_span"])
    by = tab.set_index("measure")
    assert (by.loc["digit_span", "n"] == 293).all() and (by.loc["digit_span", "n_missing"] == 7).all()
    assert (by.loc["fluid_intelligence", "n"] == 300).all()


def test_covariate_with_nan_names_column_and_participants(cohort):
    scores, ph = cohort
    ph = ph.copy()
    ph.loc[["sub-004", "sub-010"], "age"] = np.nan
    with pytest.raises(ValueError, match=r"covariate 'age' is missing.*2 participant.*sub-004.*sub-010"):
        association_table(scores, ph, ["fluid_intelligence"])


def test_score_without_variation_warns_and_gets_nan(cohort):
    scores, ph = cohort
    scores = scores.assign(rs_flat=1.0)
    with pytest.warns(UserWarning, match=r"no variation.*rs_flat"):
        tab = association_table(scores, ph, ["fluid_intelligence"])
    row = tab.set_index("score").loc["rs_flat"]
    assert np.isnan(row["p"]) and np.isnan(row["p_bonferroni"]) and not row["significant_bonferroni"]
    # corrections count only the 3 testable scores
    np.testing.assert_allclose(tab["p_bonferroni"].dropna(), np.minimum(tab["p"].dropna() * 3, 1))


def test_alignment_and_column_errors(cohort):
    scores, ph = cohort
    shuffled = ph.sample(frac=1, random_state=0)
    a = association_table(scores, ph, ["fluid_intelligence"])
    b = association_table(scores, shuffled, ["fluid_intelligence"])
    np.testing.assert_allclose(a["p"], b["p"])          # matched by participant ID
    with pytest.raises(ValueError, match=r"\['memory'\] not in phenotypes"):
        association_table(scores, ph, ["memory"])
    with pytest.raises(ValueError, match="rows of scores"):
        association_table(scores.iloc[:10], ph, ["fluid_intelligence"])
    with pytest.raises(ValueError, match="NaN"):
        association_table(scores.assign(rs_null1=np.nan), ph, ["fluid_intelligence"])


def test_permutation_p_values_are_calibrated_and_agree_with_ols_on_gaussian_data():
    rng = np.random.default_rng(1)
    n, k = 150, 200
    ph = pd.DataFrame({"age": rng.uniform(40, 70, n), "sex": rng.integers(0, 2, n), "site": rng.integers(0, 3, n)})
    scores = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"rs{j}" for j in range(k)])
    scores["rs0"] = scores["rs0"] + 0.02 * ph["age"]  # a score that carries a covariate only
    ph["memory"] = 0.05 * ph["age"] + rng.normal(size=n)
    with pytest.warns(UserWarning, match="cannot pass Bonferroni over 200 tests"):
        t = association_table(scores, ph, ["memory"], covariates=["age", "sex"], categorical=["site"],
                              n_permutations=999, random_state=0)
    # null everywhere: about 5 % below 0.05 (binomial sd 1.5 %), none after correction
    assert 0.02 <= (t["p_perm"] < 0.05).mean() <= 0.09
    assert not t["significant_perm_bonferroni"].any()
    # the exact finite-sample p of the OLS t agrees with the permutation p on Gaussian data
    assert np.corrcoef(t["p"], t["p_perm"])[0, 1] > 0.97
    assert t["p_perm"].min() >= 1 / 1000
    # reproducible given random_state
    t2 = association_table(scores, ph, ["memory"], covariates=["age", "sex"], categorical=["site"],
                           n_permutations=999, random_state=0)
    np.testing.assert_array_equal(t["p_perm"], t2["p_perm"])


def test_permutation_p_values_find_a_real_association_and_are_absent_by_default():
    rng = np.random.default_rng(2)
    n = 200
    ph = pd.DataFrame({"age": rng.uniform(40, 70, n), "sex": rng.integers(0, 2, n)})
    s = pd.DataFrame({"rs1": rng.normal(size=n), "rs2": rng.normal(size=n)})
    ph["memory"] = 0.5 * s["rs1"] + rng.normal(size=n)
    t = association_table(s, ph, ["memory"], categorical=(), n_permutations=199, random_state=0)
    assert t.set_index("score").loc["rs1", "p_perm"] == pytest.approx(1 / 200)
    assert t["significant_perm_bonferroni"].tolist() == [True, False]
    assert "p_perm" not in association_table(s, ph, ["memory"], categorical=()).columns


def test_genotype_tracking_flags_a_score_associated_through_the_image_only():
    """A score that learnt nothing of its SNP but reads a brain feature that cognition depends on:
    its association is real and passes every correction, and tracks_genotype says it is not the SNP's."""
    from scipy.stats import pearsonr

    rng = np.random.default_rng(3)
    n = 400
    ids = [f"sub-{i:03d}" for i in range(n)]
    geno = pd.DataFrame(rng.binomial(2, 0.3, (n, 2)).astype(float), index=ids, columns=["rs_causal", "rs_null"])
    brain = rng.normal(size=n)  # a brain feature that cognition depends on, unrelated to either SNP
    scores = pd.DataFrame({"rs_causal": geno["rs_causal"] + rng.normal(size=n),  # learnt its SNP
                           "rs_null": brain + 0.3 * rng.normal(size=n)}, index=ids)  # learnt the brain instead
    ph = pd.DataFrame({"age": rng.uniform(40, 70, n), "sex": rng.integers(0, 2, n)}, index=ids)
    ph["memory"] = 0.6 * brain + rng.normal(size=n)
    geno.iloc[:5, 0] = np.nan  # missing calls are left out of the correlation only
    shuffled = geno.iloc[::-1]  # rows matched by participant ID
    t = association_table(scores, ph, ["memory"], categorical=(), genotypes=shuffled).set_index("score")
    assert t.loc["rs_null", "significant_bonferroni"] and not t.loc["rs_null", "tracks_genotype"]
    assert t.loc["rs_causal", "tracks_genotype"] and not t.loc["rs_causal", "significant_bonferroni"]
    ok = geno["rs_causal"].notna()
    r, p = pearsonr(scores.loc[ok, "rs_causal"], geno.loc[ok, "rs_causal"], alternative="greater")
    assert t.loc["rs_causal", "genotype_r"] == pytest.approx(r) and t.loc["rs_causal", "genotype_p"] == pytest.approx(p)
    with pytest.raises(ValueError, match=r"genotypes has no column for score\(s\) \['rs_null'\]"):
        association_table(scores, ph, ["memory"], categorical=(), genotypes=geno[["rs_causal"]])


def test_permutation_blocks_do_not_change_the_p_values(monkeypatch):
    """Freedman-Lane permutations run in blocks bounded in bytes (memory flat in the participants):
    the same permutations are drawn whatever the block size, so the same p-values."""
    from sklearn_cgni.explain import _association

    rng = np.random.default_rng(0)
    X, C = rng.normal(size=(120, 3)), rng.normal(size=(120, 2))
    y = X[:, 0] * 0.3 + C[:, 0] + rng.normal(size=120)
    whole = _association._freedman_lane(X, y, C, 200, np.random.RandomState(1))
    monkeypatch.setattr(_association, "_PERMUTATION_BLOCK_BYTES", 8 * 120 * 7)  # blocks of 7 permutations
    blocks = _association._freedman_lane(X, y, C, 200, np.random.RandomState(1))
    np.testing.assert_array_equal(blocks, whole)
