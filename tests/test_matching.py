"""match_groups on make_cohort's reference demographics: balance achieved, pairs valid."""

import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.evaluation import match_groups, standardized_mean_difference


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(600, n_snps=40, shape=(12, 14, 12), random_state=0)


def _labelled(cohort):
    p = cohort.phenotypes
    return p[p["wm_group"].notna()]


def test_reference_demographics_are_confounded(cohort):
    """make_cohort's default reproduces the reference study's gap (SMD of age near 1.9)."""
    p = _labelled(cohort)
    smd_age = standardized_mean_difference(p["age"], p["wm_group"])
    assert -2.3 < smd_age < -1.5  # high-span participants are younger
    # and more often male (reference SMD about 0.32); the sex difference needs a larger sample
    # than the fixture's to be estimated well (SE about 0.04 at 2,700 vs 0.09 at 540)
    big = _labelled(make_cohort(3000, n_snps=40, shape=(12, 14, 12), random_state=1))
    assert standardized_mean_difference(big["sex"], big["wm_group"]) > 0.15


@pytest.mark.parametrize("method", ["optimal", "greedy", "stratified"])
def test_matching_balance_on_make_cohort(cohort, method):
    p = _labelled(cohort)
    m = match_groups(p, p["wm_group"], method=method, report=["site"], random_state=0)
    assert abs(m.balance.loc["age", "smd_before"]) > 1.5
    assert abs(m.balance.loc["age", "smd_after"]) < 0.1
    assert abs(m.balance.loc["sex", "smd_after"]) < 1e-12  # exact on sex
    assert {"site=0", "site=1", "site=2"} <= set(m.balance.index)
    # 1:1 without replacement, equal numbers kept per group, nobody used twice
    assert m.counts["n_after"].nunique() == 1
    assert m.counts["n_after"].iloc[0] == len(m.pairs) >= 40
    used = pd.concat([m.pairs.iloc[:, 0], m.pairs.iloc[:, 1]])
    assert used.is_unique and set(used) == set(m.ids)
    assert (m.counts["n_before"] == p["wm_group"].value_counts().sort_index().to_numpy()).all()
    # every pair is of the same sex, from different groups
    a, b = p.loc[m.pairs.iloc[:, 0]], p.loc[m.pairs.iloc[:, 1]]
    assert (a["sex"].to_numpy() == b["sex"].to_numpy()).all()
    assert (a["wm_group"] == 0).all() and (b["wm_group"] == 1).all()
    if method != "stratified":
        assert (m.pairs["distance_sd"] <= 0.2).all()
        assert (np.abs(a["age"].to_numpy() - b["age"].to_numpy()) <= m.caliper_units["age"] + 1e-9).all()


def test_optimal_keeps_at_least_as_many_as_greedy(cohort):
    p = _labelled(cohort)
    opt = match_groups(p, p["wm_group"], method="optimal")
    for seed in range(3):
        greedy = match_groups(p, p["wm_group"], method="greedy", random_state=seed)
        assert len(opt.ids) >= len(greedy.ids)
    tight = match_groups(p, p["wm_group"], caliper=0.05)
    assert len(tight.ids) < len(opt.ids)
    assert abs(tight.balance.loc["age", "smd_after"]) <= abs(opt.balance.loc["age", "smd_after"]) + 0.02


def test_unlabelled_warned_and_inputs_checked(cohort):
    p = cohort.phenotypes
    n_nan = int(p["wm_group"].isna().sum())
    assert n_nan > 0
    with pytest.warns(UserWarning, match=f"{n_nan} participants without a group"):
        m = match_groups(p, p["wm_group"], random_state=0)
    assert not set(m.ids) & set(p.index[p["wm_group"].isna()])
    lab = _labelled(cohort)
    with pytest.raises(ValueError, match=r"columns \['height'\]"):
        match_groups(lab, lab["wm_group"], continuous=["height"])
    with pytest.raises(ValueError, match="exactly two groups"):
        match_groups(lab, lab["digit_span"])
    with pytest.raises(ValueError, match="DataFrame"):
        match_groups(lab[["age", "sex"]].to_numpy(), lab["wm_group"])


def test_smd_formula():
    x = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
    g = np.array([0, 0, 0, 1, 1, 1])
    assert standardized_mean_difference(x, g) == pytest.approx(4.0)
    assert standardized_mean_difference(x, g, sd=2.0) == pytest.approx(2.0)
    assert np.isnan(standardized_mean_difference(np.ones(6), g))
