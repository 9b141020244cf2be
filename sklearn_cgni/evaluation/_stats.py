"""Paired tests on per-fold cross-validation scores."""

import itertools
import numbers

import numpy as np
from scipy import stats
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = ["corrected_resampled_ttest", "paired_permutation_test"]


def _paired(scores_a, scores_b):
    a = np.asarray(scores_a, dtype=float).ravel()
    b = np.asarray(scores_b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length; got {a.size} and {b.size}.")
    if a.size < 2:
        raise ValueError(f"paired tests need at least 2 folds; got {a.size}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores contain NaN or inf.")
    return a, b


def _p_value(t, df, alternative):
    if alternative == "two-sided":
        return float(2 * stats.t.sf(abs(t), df))
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    return float(stats.t.cdf(t, df))


@validate_params(
    {
        "scores_a": ["array-like"],
        "scores_b": ["array-like"],
        "n_train": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_test": [Interval(numbers.Real, 0, None, closed="neither")],
        "alternative": [StrOptions({"two-sided", "greater", "less"})],
    },
    prefer_skip_nested_validation=True,
)
def corrected_resampled_ttest(scores_a, scores_b, n_train, n_test, *, alternative="two-sided"):
    """Corrected resampled t-test for paired per-fold scores (Nadeau & Bengio 2003).

    With ``d_j = a_j - b_j`` over the ``J`` folds (``J = r·k`` for ``r`` repetitions of
    ``k``-fold CV), the statistic is

    ``t = mean(d) / sqrt((1/J + n_test/n_train) · var(d))``,  ``df = J - 1``,

    the correction of Nadeau & Bengio (2003) as used by Bouckaert & Frank (2004). The
    plain paired t-test (the ``1/J`` term alone) ignores that training sets overlap
    between folds, so the fold scores are correlated and its type-I error is far above
    the nominal level; the ``n_test/n_train`` term accounts for that correlation.

    Parameters
    ----------
    scores_a, scores_b : array-like of shape (n_folds,)
        Scores of two models on the same folds, in the same order.
    n_train, n_test : float
        Training and test set sizes of a fold (the mean over folds if they differ).
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        ``"greater"``: model a scores higher than model b.

    Returns
    -------
    result : Bunch
        ``mean_difference``, ``sd_difference``, ``statistic`` (t), ``df``, ``pvalue``,
        ``n_folds``. When all differences are equal, ``statistic`` is ±inf (or NaN when
        they are all 0) and ``pvalue`` 0 (or 1).

    References
    ----------
    C. Nadeau and Y. Bengio, "Inference for the generalization error", Machine Learning 52,
    239–281 (2003). R. R. Bouckaert and E. Frank, "Evaluating the replicability of
    significance tests for comparing learning algorithms", PAKDD 2004.

    Examples
    --------
    >>> from sklearn_cgni.evaluation import corrected_resampled_ttest
    >>> res = corrected_resampled_ttest([0.80, 0.82, 0.79, 0.81, 0.83], [0.75, 0.78, 0.76, 0.74, 0.77],
    ...                                 n_train=800, n_test=200)
    >>> round(res.statistic, 2), res.df
    (4.71, 4)
    """
    a, b = _paired(scores_a, scores_b)
    d = a - b
    J = d.size
    var = float(np.var(d, ddof=1))
    mean = float(d.mean())
    if var == 0:
        t = np.nan if mean == 0 else np.copysign(np.inf, mean)
        if mean == 0:
            p = 1.0
        elif alternative == "two-sided" or (alternative == "greater") == (mean > 0):
            p = 0.0
        else:
            p = 1.0
    else:
        t = mean / np.sqrt((1.0 / J + n_test / n_train) * var)
        p = _p_value(t, J - 1, alternative)
    return Bunch(mean_difference=mean, sd_difference=float(np.sqrt(var)), statistic=float(t), df=J - 1,
                 pvalue=p, n_folds=J)


@validate_params(
    {
        "scores_a": ["array-like"],
        "scores_b": ["array-like"],
        "n_permutations": [Interval(numbers.Integral, 1, None, closed="left")],
        "alternative": [StrOptions({"two-sided", "greater", "less"})],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def paired_permutation_test(scores_a, scores_b, *, n_permutations=10000, alternative="two-sided",
                            random_state=None):
    """Sign-flip permutation test of the mean paired difference across folds.

    Under the null hypothesis that the two models are exchangeable, each fold's difference
    ``a_j - b_j`` is as likely to have either sign. The p-value is the fraction of sign
    assignments whose mean difference is at least as extreme as the observed one, counting
    the observed one (``(1 + #extreme) / (1 + n)``). All ``2**n_folds`` assignments are
    enumerated when that is at most ``n_permutations`` (exact test); otherwise
    ``n_permutations`` random ones are drawn.

    It makes no normality assumption, but like the plain paired t-test it treats folds as
    independent; with overlapping training sets it is anti-conservative, so prefer
    :func:`corrected_resampled_ttest` for k-fold scores and use this one as a check. With
    ``k`` folds the smallest attainable two-sided p-value is ``2 / 2**k`` (0.0625 for 5).

    Parameters
    ----------
    scores_a, scores_b : array-like of shape (n_folds,)
    n_permutations : int, default=10000
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``mean_difference``, ``pvalue``, ``n_permutations`` (assignments used),
        ``exact`` (bool), ``n_folds``.

    Examples
    --------
    >>> from sklearn_cgni.evaluation import paired_permutation_test
    >>> res = paired_permutation_test([0.80, 0.82, 0.79, 0.81, 0.83], [0.75, 0.78, 0.76, 0.74, 0.77])
    >>> res.exact, res.pvalue
    (True, 0.0625)
    """
    a, b = _paired(scores_a, scores_b)
    d = a - b
    J = d.size
    observed = d.mean()
    if 2**J <= n_permutations:
        signs = np.array(list(itertools.product([1.0, -1.0], repeat=J)))
        exact = True
    else:
        rng = check_random_state(random_state)
        signs = rng.choice([1.0, -1.0], size=(n_permutations, J))
        exact = False
    null = (signs * d).mean(axis=1)
    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "two-sided":
        extreme = np.abs(null) >= abs(observed) - tol
    elif alternative == "greater":
        extreme = null >= observed - tol
    else:
        extreme = null <= observed + tol
    if exact:  # the observed assignment is among the enumerated ones
        p = extreme.mean()
    else:
        p = (1 + extreme.sum()) / (1 + len(null))
    return Bunch(mean_difference=float(observed), pvalue=float(p), n_permutations=int(len(null)), exact=exact,
                 n_folds=J)
