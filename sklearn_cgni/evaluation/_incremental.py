"""Nested test of what a model's predictions add to the covariates.

Accuracy gains over a covariate-only model compare two non-nested models, and "adjusted"
scores depend on the adjustment removing *all* covariate information from the features,
which a linear regression does not guarantee for non-linear models (see the Notes of
:class:`CovariateRegressor`). The test here avoids both problems (Dinga et al., 2020,
"Controlling for effects of confounding variables on machine learning predictions",
bioRxiv 2020.08.17.255034): the label is regressed on the covariates with and without the
model's out-of-fold prediction, and a likelihood-ratio test asks whether the prediction
explains anything the covariates do not.
"""

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.utils import Bunch

__all__ = ["incremental_value"]


def _proba_logit(proba):
    """Logit of probabilities, clipped to [1e-7, 1 - 1e-7] so that 0 and 1 stay finite."""
    from scipy.special import logit

    return logit(np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7))


def _design(covariates, categorical):
    """Standardised numeric covariates and one-hot categorical ones (first level dropped)."""
    cols = []
    for name in covariates.columns:
        col = covariates[name]
        if name in categorical or not pd.api.types.is_numeric_dtype(col):
            cols.append(pd.get_dummies(col.astype("category"), prefix=str(name), drop_first=True, dtype=float))
        else:
            v = col.to_numpy(float)
            sd = v.std()
            cols.append(pd.DataFrame({str(name): (v - v.mean()) / (sd if sd > 0 else 1.0)}, index=covariates.index))
    return pd.concat(cols, axis=1) if cols else pd.DataFrame(index=covariates.index)


def _residualize(prediction, covariates, categorical=None):
    """Part of ``prediction`` not linearly explained by the covariates, standardised (zeros if none)."""
    r = _orthogonal_part(prediction, _design(covariates, set(categorical or [])).to_numpy(float))
    return np.zeros(len(prediction)) if r is None else r


def _logit_deviance(y, design):
    """Deviance of an unpenalised logistic regression with an intercept (statsmodels)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, HessianInversionWarning, PerfectSeparationWarning

    D = sm.add_constant(np.asarray(design, dtype=float), has_constant="add")
    with warnings.catch_warnings():
        for w in (PerfectSeparationWarning, ConvergenceWarning, HessianInversionWarning, RuntimeWarning):
            warnings.simplefilter("ignore", w)
        fit = None
        try:
            fit = sm.Logit(y, D).fit(disp=0, method="newton", maxiter=100)
        except (np.linalg.LinAlgError, ValueError):
            pass
        if fit is None or not fit.mle_retvals.get("converged", False) or not np.isfinite(fit.llf):
            # quasi-separation: the likelihood keeps rising as coefficients grow; keep the
            # deviance of the best fit found (it approaches the infimum from above)
            fit = sm.Logit(y, D).fit(disp=0, method="lbfgs", maxiter=2000)
    return -2.0 * float(fit.llf), np.asarray(fit.params)


def _orthogonal_part(prediction, design):
    """Standardised part of ``prediction`` orthogonal to [1, design]; None when there is none."""
    prediction = np.asarray(prediction, dtype=float)
    D = np.column_stack([np.ones(len(prediction)), design])
    resid = prediction - D @ np.linalg.lstsq(D, prediction, rcond=None)[0]
    sd = prediction.std()
    return None if sd == 0 or resid.std() < 1e-5 * sd else resid / resid.std()


def _signed_root(yb, design, r):
    """Signed root of the likelihood-ratio statistic of ``r`` added to ``design``.

    ``r`` is the prediction's standardised part orthogonal to the covariates, or None when
    it has none. Returns (z, statistic, coef, deviance of the covariate model, its params).
    """
    dev_cov, params_cov = _logit_deviance(yb, design)
    if r is None:
        return 0.0, 0.0, 0.0, dev_cov, params_cov
    dev_full, params = _logit_deviance(yb, np.column_stack([design, r]))
    lr, coef = max(dev_cov - dev_full, 0.0), float(params[-1])
    return float(np.sign(coef) * np.sqrt(lr)), lr, coef, dev_cov, params_cov


def _batch_signed_root(Y, design, r, n_iter=30):
    """:func:`_signed_root` for many label vectors at once (rows of ``Y``), by vectorised Newton.

    Used for the bootstrap, where thousands of small fits through statsmodels would
    dominate the run time. A ridge of 1e-8 keeps the Hessian invertible under
    quasi-separation; the deviances are then those after ``n_iter`` steps.
    """
    from scipy.special import expit

    def deviance(X):
        B, (n, k) = Y.shape[0], X.shape
        beta = np.zeros((B, k))
        for _ in range(n_iter):
            eta = np.clip(beta @ X.T, -30, 30)
            mu = expit(eta)
            grad = (Y - mu) @ X
            H = np.einsum("bn,ni,nj->bij", mu * (1 - mu), X, X) + 1e-8 * np.eye(k)
            step = np.linalg.solve(H, grad[..., None])[..., 0]
            beta = beta + np.clip(step, -5, 5)
        mu = np.clip(expit(np.clip(beta @ X.T, -30, 30)), 1e-15, 1 - 1e-15)
        return -2 * (Y * np.log(mu) + (1 - Y) * np.log1p(-mu)).sum(axis=1), beta

    X0 = np.column_stack([np.ones(len(design)), design])
    dev_cov, _ = deviance(X0)
    dev_full, beta = deviance(np.column_stack([X0, r]))
    lr = np.maximum(dev_cov - dev_full, 0.0)
    return np.sign(beta[:, -1]) * np.sqrt(lr)


def _null_draws(design, params, n_bootstrap, random_state):
    """Labels drawn from the fitted covariate-only model: (n_bootstrap, n_samples) of 0/1."""
    from scipy.special import expit
    from sklearn.utils import check_random_state

    mu = expit(np.column_stack([np.ones(len(design)), design]) @ params)
    return (check_random_state(random_state).random_sample((n_bootstrap, len(mu))) < mu).astype(float)


def _bootstrap_p(observed, null, alternative):
    null = np.asarray(null)
    extreme = np.abs(null) >= abs(observed) - 1e-12 if alternative == "two-sided" else null >= observed - 1e-12
    return float((1 + extreme.sum()) / (1 + len(null)))


def incremental_value(y, prediction, covariates, *, categorical=None, alternative="two-sided", n_bootstrap=0,
                      random_state=None):
    """Likelihood-ratio test of what a model's predictions add to the covariates.

    Two logistic regressions of the label are fitted by maximum likelihood (statsmodels):
    one on the covariates, one on the covariates and the model's prediction. Twice the
    gain in log-likelihood follows a chi-squared distribution with one degree of freedom
    when the prediction carries no information about the label beyond the covariates.
    Unlike a difference in accuracy, the two models are nested; unlike scoring the model
    on covariate-adjusted features, nothing depends on removing the covariates from the
    features first. Use predictions of participants the model was not fitted on (a
    prediction fitted on the same participants is optimistic) and of *one* fitted model:
    the out-of-fold predictions of several fold models, pooled, differ from fold to fold
    in a way that is anti-correlated with the held-out labels (the negative bias of
    cross-validation), which the test would count as information.
    :func:`evaluate_confounds` therefore removes the covariates' linear part from each
    fold model's predictions on its own test fold before pooling them.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary labels.
    prediction : array-like of shape (n_samples,)
        A continuous score of the positive class (the larger of the two labels), e.g. the
        logit of ``predict_proba`` or ``decision_function``. Hard 0/1 predictions work too
        but carry less information.
    covariates : DataFrame of shape (n_samples, n_covariates)
        E.g. ``phenotypes[["age", "sex"]]``. Numeric columns enter linearly (add
        ``age**2`` or spline columns for curved effects); non-numeric columns and those in
        ``categorical`` are one-hot encoded.
    categorical : list of str, optional
    alternative : {"two-sided", "greater"}, default="two-sided"
        ``"greater"``: only a prediction positively associated with the positive class
        counts (one-sided test on the signed root of the statistic).
    n_bootstrap : int, default=0
        0: p-value from the asymptotic chi-squared distribution, slightly liberal with a
        few hundred participants and a strong covariate effect (see
        ``benchmarks/results/incremental_calibration.md``). ``B > 0``: parametric
        bootstrap instead: ``B`` label vectors drawn from the fitted covariate-only model
        (the null hypothesis), the statistic recomputed on each with the same prediction,
        ``p = (1 + #{null >= observed}) / (1 + B)``.
    random_state : int, RandomState instance or None, default=None
        For the bootstrap.

    Returns
    -------
    result : Bunch
        ``statistic`` (likelihood-ratio chi-squared, 1 df), ``pvalue``, ``coef`` (the
        coefficient of the part of the prediction not linearly explained by the
        covariates, per standard deviation of that part; its sign is the prediction's),
        ``d2_covariates`` and ``d2_full`` (fraction of the null deviance explained by
        the covariates, then by covariates and prediction), ``partial_d2`` (fraction of
        the deviance left by the covariates that the prediction explains) and ``n``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_cgni.evaluation import incremental_value
    >>> rng = np.random.default_rng(0)
    >>> age = rng.normal(50, 8, 400)
    >>> y = (age + 8 * rng.standard_normal(400) < 50).astype(int)  # younger: more often 1
    >>> cov = pd.DataFrame({"age": age})
    >>> brain_age = -age + 3 * rng.standard_normal(400)  # a prediction that only knows age
    >>> bool(incremental_value(y, brain_age, cov).pvalue > 0.01)
    True
    """
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"incremental_value: alternative must be 'two-sided' or 'greater'; got {alternative!r}.")
    if not hasattr(covariates, "columns"):
        raise ValueError("incremental_value: `covariates` must be a DataFrame (columns such as 'age', 'sex').")
    y = np.asarray(y).ravel()
    prediction = np.asarray(prediction, dtype=float).ravel()
    if not len(y) == len(prediction) == len(covariates):
        raise ValueError(f"incremental_value: y ({len(y)}), prediction ({len(prediction)}) and covariates "
                         f"({len(covariates)}) must have the same number of rows.")
    classes = np.unique(y)
    if len(classes) != 2:
        raise ValueError(f"incremental_value: y must have two classes; got {list(classes)}.")
    bad = ~np.isfinite(prediction)
    if bad.any():
        raise ValueError(f"incremental_value: predictions are missing or infinite for participants "
                         f"{list(covariates.index[bad][:10])}.")
    miss = covariates.columns[covariates.isna().any().to_numpy()]
    if len(miss):
        raise ValueError(f"incremental_value: covariates {list(miss)} have missing values.")
    yb = (y == classes[1]).astype(float)
    design = _design(covariates, set(categorical or []))
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 0):
        raise ValueError(f"incremental_value: n_bootstrap must be a non-negative int; got {n_bootstrap!r}.")
    dev_null, _ = _logit_deviance(yb, np.empty((len(yb), 0)))
    # a prediction that is a linear function of the covariates (a covariate-only model) adds
    # nothing: the statistic is 0 rather than the result of a singular fit. Otherwise the
    # prediction enters as its part orthogonal to the covariates: the same model, better
    # conditioned when the prediction is close to a function of age
    Dc = design.to_numpy(float)
    r = _orthogonal_part(prediction, Dc)
    signed, lr, coef, dev_cov, params_cov = _signed_root(yb, Dc, r)
    dev_full = dev_cov - lr
    if n_bootstrap and r is not None:
        null = _batch_signed_root(_null_draws(Dc, params_cov, n_bootstrap, random_state), Dc, r)
        p = _bootstrap_p(signed, null, alternative)
    elif alternative == "two-sided":
        p = float(stats.chi2.sf(lr, df=1))
    else:
        p = float(stats.norm.sf(signed))
    return Bunch(statistic=float(lr), pvalue=p, coef=coef, d2_covariates=float(1 - dev_cov / dev_null),
                 d2_full=float(1 - dev_full / dev_null), partial_d2=float(lr / dev_cov) if dev_cov > 0 else np.nan,
                 n=int(len(yb)))
