"""Uncertainty of balanced accuracy from per-participant predictions.

Two helpers that every comparison of classifiers in the package goes through (Table 1 of the
report, ``benchmarks/bench_paper_size.py``):

* :func:`balanced_accuracy_interval`: the score with a bootstrap interval over participants;
* :func:`paired_balanced_accuracy_test`: the difference of two models' scores on the same
  participants, with a paired bootstrap interval and a paired permutation p-value;

and, for paired values of any kind (e.g. two scorers' held-out r per SNP),
:func:`paired_mean_difference`; :func:`holm_adjust` corrects a family of comparisons.

Predictions may hold one column (pooled out-of-fold predictions: every participant scored
once) or one column per fold model (a common holdout scored by each fold's model); the score
is then the mean over the columns of their balanced accuracies, and resampling draws whole
participants, so the models' errors on one participant stay together.
"""

import numbers

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["balanced_accuracy_interval", "paired_balanced_accuracy_test", "paired_mean_difference", "holm_adjust"]


def _check(y, predictions):
    y = np.asarray(y).ravel()
    p = np.asarray(predictions)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"predictions must have shape (n_participants,) or (n_participants, n_models) with "
                         f"n_participants = len(y) = {y.size}; got shape {np.shape(predictions)}.")
    if y.size < 2:
        raise ValueError(f"need at least 2 participants; got {y.size}.")
    return y, p


def _weights(y):
    """Per-participant weights: balanced accuracy is their dot product with the correct-prediction indicator."""
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inv] * len(classes))


def _scores(y, correct, idx):
    """Balanced accuracy (mean over model columns) of each bootstrap resample ``idx`` (n_resamples, n).

    ``correct`` may hold any per-participant values (e.g. differences of two models' correct
    indicators): the result is their class-balanced mean. A resample missing a class gives NaN.
    """
    classes = np.unique(y)
    onehot = (y[idx][..., None] == classes).astype(float)  # (n_resamples, n, n_classes)
    counts = onehot.sum(axis=1)  # (n_resamples, n_classes)
    sums = np.einsum("bnc,bnm->bcm", onehot, correct[idx])  # per class and model column
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = sums / counts[..., None]
    out = per_class.mean(axis=(1, 2))
    out[(counts == 0).any(axis=1)] = np.nan
    return out


def _percentile_interval(values, confidence):
    values = values[np.isfinite(values)]
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


@validate_params(
    {
        "y": ["array-like"],
        "predictions": ["array-like"],
        "n_resamples": [Interval(numbers.Integral, 1, None, closed="left")],
        "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def balanced_accuracy_interval(y, predictions, *, n_resamples=1000, confidence=0.95, random_state=None):
    """Balanced accuracy with a percentile bootstrap interval over participants.

    Parameters
    ----------
    y : array-like of shape (n_participants,)
        True labels.
    predictions : array-like of shape (n_participants,) or (n_participants, n_models)
        Predicted labels; with several columns (e.g. each fold's model on a common holdout)
        the score is the mean of the columns' balanced accuracies.
    n_resamples : int, default=1000
        Bootstrap resamples of the participants (drawn with replacement, whole rows).
    confidence : float, default=0.95
        Coverage of the interval.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``score``, ``ci_low``, ``ci_high`` (fractions, not percent), ``n`` (participants),
        ``n_models`` (columns).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.evaluation import balanced_accuracy_interval
    >>> y = np.r_[np.zeros(50), np.ones(50)]
    >>> pred = y.copy()
    >>> pred[:10] = 1  # 10 of the 50 low participants wrong
    >>> res = balanced_accuracy_interval(y, pred, random_state=0)
    >>> round(res.score, 2), res.ci_low < 0.9 < res.ci_high < 1
    (0.9, True)
    """
    y, p = _check(y, predictions)
    correct = (p == y[:, None]).astype(float)
    score = float((_weights(y) @ correct).mean())
    rng = check_random_state(random_state)
    boot = _scores(y, correct, rng.randint(0, y.size, (n_resamples, y.size)))
    low, high = _percentile_interval(boot, confidence)
    return Bunch(score=score, ci_low=low, ci_high=high, n=int(y.size), n_models=int(p.shape[1]))


@validate_params(
    {
        "y": ["array-like"],
        "predictions_a": ["array-like"],
        "predictions_b": ["array-like"],
        "n_resamples": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_permutations": [Interval(numbers.Integral, 1, None, closed="left")],
        "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def paired_balanced_accuracy_test(y, predictions_a, predictions_b, *, n_resamples=1000, n_permutations=10000,
                                  confidence=0.95, random_state=None):
    """Difference of two models' balanced accuracies on the same participants, with its uncertainty.

    The interval is a paired percentile bootstrap (participants resampled with replacement,
    both models' predictions of a participant kept together). The p-value is two-sided, from
    a paired permutation test: under the null hypothesis that the models are exchangeable,
    each participant's two predictions (all columns at once) are swapped with probability
    1/2; ``p = (1 + #{|null| >= |observed|}) / (1 + n_permutations)``.

    Parameters
    ----------
    y : array-like of shape (n_participants,)
    predictions_a, predictions_b : array-like of shape (n_participants,) or (n_participants, n_models)
        Predicted labels of the two models, rows in the same participant order.
    n_resamples : int, default=1000
    n_permutations : int, default=10000
    confidence : float, default=0.95
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``difference`` (score of a minus score of b, a fraction), ``ci_low``, ``ci_high``,
        ``pvalue``, ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.evaluation import paired_balanced_accuracy_test
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 40)
    >>> a = np.where(rng.random(40) < 0.8, y, 1 - y)
    >>> res = paired_balanced_accuracy_test(y, a, a, random_state=0)  # a model against itself
    >>> res.difference, res.pvalue
    (0.0, 1.0)
    """
    y, a = _check(y, predictions_a)
    _, b = _check(y, predictions_b)
    if a.shape != b.shape:
        raise ValueError(f"predictions_a and predictions_b must have the same shape; got {a.shape} and {b.shape}.")
    ca, cb = (a == y[:, None]).astype(float), (b == y[:, None]).astype(float)
    d = ca - cb  # per participant and model column
    w = _weights(y)
    observed = float((w @ d).mean())
    rng = check_random_state(random_state)
    boot = _scores(y, d, rng.randint(0, y.size, (n_resamples, y.size)))
    low, high = _percentile_interval(boot, confidence)
    per_participant = d.mean(axis=1) * w  # the statistic is the sum of these; a swap flips a participant's sign
    signs = np.where(rng.random_sample((n_permutations, y.size)) < 0.5, -1.0, 1.0)
    null = signs @ per_participant
    tol = 1e-12 * max(1.0, abs(observed))
    p = (1 + np.sum(np.abs(null) >= abs(observed) - tol)) / (1 + n_permutations)
    return Bunch(difference=observed, ci_low=low, ci_high=high, pvalue=float(min(p, 1.0)) if observed else 1.0,
                 n=int(y.size))


@validate_params(
    {
        "a": ["array-like"],
        "b": ["array-like"],
        "n_resamples": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_permutations": [Interval(numbers.Integral, 1, None, closed="left")],
        "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def paired_mean_difference(a, b, *, n_resamples=1000, n_permutations=10000, confidence=0.95, random_state=None):
    """Mean of the paired differences ``a - b`` with a bootstrap interval and a sign-flip permutation p.

    The items (e.g. SNPs scored by two methods) are resampled with replacement for the
    interval; the two-sided p-value is :func:`~sklearn_cgni.evaluation.paired_permutation_test`'s
    (exact when ``2**n <= n_permutations``).

    Parameters
    ----------
    a, b : array-like of shape (n_items,)
        Paired values; pairs with a NaN are left out.
    n_resamples, n_permutations : int
    confidence : float, default=0.95
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``difference``, ``ci_low``, ``ci_high``, ``pvalue``, ``n``.

    Examples
    --------
    >>> from sklearn_cgni.evaluation import paired_mean_difference
    >>> res = paired_mean_difference([0.30, 0.25, 0.40, 0.35], [0.10, 0.05, 0.20, 0.12], random_state=0)
    >>> round(res.difference, 3), res.ci_low > 0, res.pvalue
    (0.208, True, 0.125)
    """
    from ._stats import paired_permutation_test

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length; got {a.size} and {b.size}.")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if d.size < 2:
        raise ValueError(f"need at least 2 complete pairs; got {d.size}.")
    rng = check_random_state(random_state)
    boot = d[rng.randint(0, d.size, (n_resamples, d.size))].mean(axis=1)
    low, high = _percentile_interval(boot, confidence)
    p = paired_permutation_test(a[ok], b[ok], n_permutations=n_permutations, random_state=rng).pvalue
    return Bunch(difference=float(d.mean()), ci_low=low, ci_high=high, pvalue=float(p), n=int(d.size))


def holm_adjust(pvalues):
    """Holm's step-down adjustment of a family of p-values (family-wise error rate).

    Parameters
    ----------
    pvalues : array-like of shape (n_tests,)
        NaN entries are left out of the family and stay NaN.

    Returns
    -------
    adjusted : ndarray of shape (n_tests,)

    Examples
    --------
    >>> from sklearn_cgni.evaluation import holm_adjust
    >>> holm_adjust([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out
