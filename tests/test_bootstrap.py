"""Bootstrap intervals, paired tests on per-participant predictions, and Holm's adjustment."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sklearn_cgni.evaluation import (
    balanced_accuracy_interval,
    holm_adjust,
    paired_balanced_accuracy_test,
    paired_mean_difference,
)


def _noisy(y, accuracy, rng):
    return np.where(rng.random(y.size) < accuracy, y, 1 - y)


def test_interval_is_the_balanced_accuracy_and_covers_it():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(70), np.ones(30)].astype(int)  # unbalanced: BA differs from accuracy
    pred = _noisy(y, 0.75, rng)
    res = balanced_accuracy_interval(y, pred, random_state=0)
    assert res.score == pytest.approx(balanced_accuracy_score(y, pred))
    assert res.ci_low < res.score < res.ci_high and res.n == 100 and res.n_models == 1
    # about sqrt(0.25 * 0.75 / 100) * 2 * 1.96 wide, more with unequal classes
    assert 0.12 < res.ci_high - res.ci_low < 0.30
    # more participants, narrower interval
    y4, p4 = np.tile(y, 4), np.tile(pred, 4)
    wide4 = balanced_accuracy_interval(y4, p4, random_state=0)
    assert wide4.ci_high - wide4.ci_low < 0.65 * (res.ci_high - res.ci_low)


def test_several_fold_models_average_their_balanced_accuracies():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    P = np.column_stack([_noisy(y, a, rng) for a in (0.6, 0.8, 0.9)])
    res = balanced_accuracy_interval(y, P, n_resamples=200, random_state=0)
    assert res.score == pytest.approx(np.mean([balanced_accuracy_score(y, p) for p in P.T]))
    assert res.n_models == 3


def test_paired_test_tells_a_real_difference_from_a_tie():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    good, bad = _noisy(y, 0.9, rng), _noisy(y, 0.6, rng)
    res = paired_balanced_accuracy_test(y, good, bad, n_permutations=2000, random_state=0)
    direct = balanced_accuracy_score(y, good) - balanced_accuracy_score(y, bad)
    assert res.difference == pytest.approx(direct)
    assert res.ci_low > 0 and res.pvalue < 0.001
    # two models of the same accuracy that err on different participants: a tie
    a, b = _noisy(y, 0.8, rng), _noisy(y, 0.8, rng)
    tie = paired_balanced_accuracy_test(y, a, b, n_permutations=2000, random_state=0)
    assert tie.ci_low < 0 < tie.ci_high and tie.pvalue > 0.05
    # the sign follows the order of the arguments; the p-value does not
    back = paired_balanced_accuracy_test(y, bad, good, n_permutations=2000, random_state=0)
    assert back.difference == pytest.approx(-res.difference) and back.ci_high < 0


def test_paired_test_is_calibrated_under_the_null():
    """Exchangeable models: p < 0.05 in about 5 % of the data sets."""
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(150):
        y = rng.integers(0, 2, 60)
        ps.append(paired_balanced_accuracy_test(y, _noisy(y, 0.7, rng), _noisy(y, 0.7, rng), n_resamples=1,
                                                n_permutations=400, random_state=rng.integers(1 << 30)).pvalue)
    assert 0.0 <= np.mean(np.array(ps) < 0.05) <= 0.11


def test_inputs_are_checked():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="n_participants = len"):
        balanced_accuracy_interval(y, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="same shape"):
        paired_balanced_accuracy_test(y, y, np.column_stack([y, y]))
    with pytest.raises(ValueError, match="at least 2 complete pairs"):
        paired_mean_difference([0.1, np.nan], [0.2, 0.3])


def test_paired_mean_difference_over_items():
    a = np.array([0.30, 0.25, 0.40, 0.35, 0.28, 0.33])
    res = paired_mean_difference(a, a - 0.2 + np.linspace(-0.01, 0.01, 6), random_state=0)
    assert res.difference == pytest.approx(0.2) and res.ci_low > 0.18 and res.pvalue == pytest.approx(2 / 64)
    same = paired_mean_difference(a, a[::-1], random_state=0)
    assert same.ci_low <= 0 <= same.ci_high and same.pvalue == 1.0


def test_holm_adjust():
    p = holm_adjust([0.01, 0.04, np.nan, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, made monotone
    np.testing.assert_allclose(p[[0, 3, 1, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(p[2])
    assert holm_adjust([0.6, 0.9]).tolist() == [1.0, 1.0]
