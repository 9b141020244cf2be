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


def _dense_reference(cov, g, continuous, caliper, method, seed):
    """The former dense matching per sex stratum (every pair's distance, Hungarian algorithm or greedy), for
    comparison with the sparse matching on small inputs."""
    from scipy.optimize import linear_sum_assignment

    g = np.asarray(g)
    sd = {c: np.sqrt((cov[c][g == 0].var() + cov[c][g == 1].var()) / 2) for c in continuous}
    Z = np.column_stack([cov[c].to_numpy(float) / sd[c] for c in continuous])
    rng = np.random.RandomState(seed)  # what check_random_state(seed) gives match_groups
    ids, total = [], 0.0
    for s in sorted(cov["sex"].astype(str).unique()):
        i0 = np.flatnonzero((cov["sex"].astype(str) == s).to_numpy() & (g == 0))
        i1 = np.flatnonzero((cov["sex"].astype(str) == s).to_numpy() & (g == 1))
        d = np.sqrt(((Z[i0][:, None, :] - Z[i1][None, :, :]) ** 2).sum(axis=2))
        d[d > caliper] = np.inf
        if method == "optimal":
            cost = np.where(np.isfinite(d), d, 1e6)
            r, c = linear_sum_assignment(cost)
            pairs = [(a, b) for a, b in zip(r, c) if np.isfinite(d[a, b])]
        else:
            dd, t = (d.T, True) if d.shape[0] > d.shape[1] else (d, False)
            free, pairs = np.ones(dd.shape[1], bool), []
            for i in rng.permutation(dd.shape[0]):
                row = np.where(free, dd[i], np.inf)
                j = int(np.argmin(row))
                if np.isfinite(row[j]):
                    free[j] = False
                    pairs.append((j, i) if t else (i, j))
        ids += [cov.index[i0[a]] for a, _ in pairs] + [cov.index[i1[b]] for _, b in pairs]
        total += sum(d[a, b] for a, b in pairs)
    return set(ids), total


@pytest.mark.parametrize("seed", range(4))
def test_sparse_matching_equals_the_dense_matching(seed):
    """The matching reads only the pairs inside the caliper (a k-d tree and a sparse assignment), never every
    pair's distance: optimal keeps as many participants at the same total distance as the dense Hungarian
    algorithm (the same participants where distances do not tie; with one continuous column many pairings tie,
    so the pairs may differ), greedy the same pairs; a pair exactly at the caliper is kept."""
    rng = np.random.default_rng(seed)
    n = 300
    g = (rng.random(n) < 0.4).astype(int)
    cov = pd.DataFrame({"age": np.where(g == 0, 56, 44) + 7.5 * rng.standard_normal(n),
                        "bmi": 25 + 3 * rng.standard_normal(n), "sex": (rng.random(n) < 0.5).astype(int)},
                       index=[f"p{i}" for i in range(n)])
    for continuous, caliper in ((["age"], 0.2), (["age", "bmi"], 0.6)):
        for method in ("optimal", "greedy"):
            m = match_groups(cov, g, continuous=continuous, caliper=caliper, method=method, random_state=seed)
            ids, total = _dense_reference(cov, g, continuous, caliper, method, seed)
            assert set(m.ids) == ids and len(ids) > 20
            assert m.pairs["distance_sd"].sum() == pytest.approx(total, rel=1e-9)
    # ages to a tenth of a year (as make_cohort writes them) tie often: several matchings are optimal, and the
    # sparse assignment may keep other participants than the Hungarian algorithm, but as many, as close in total
    cov["age"] = cov["age"].round(1)
    m = match_groups(cov, g, random_state=seed)
    ids, total = _dense_reference(cov, g, ["age"], 0.2, "optimal", seed)
    assert len(m.ids) == len(ids) and m.pairs["distance_sd"].sum() == pytest.approx(total, rel=1e-9)
    # a partner exactly one caliper away is inside it (pooled SD √0.5: each partner is 0.5 / √0.5 SD away)
    edge = pd.DataFrame({"age": [0.0, 1.0, 0.5, 1.5], "sex": [0, 0, 0, 0]}, index=list("abcd"))
    assert set(match_groups(edge, [0, 0, 1, 1], caliper=0.5 / np.sqrt(0.5)).ids) == set("abcd")
