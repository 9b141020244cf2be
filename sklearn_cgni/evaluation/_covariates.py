"""Regress covariates (age, sex, site, ...) out of features, fitted on the training fold only.

How covariates travel with ``X``
--------------------------------
The covariate columns are carried **inside X** (named columns of a DataFrame, or column
positions of an array) and :class:`CovariateRegressor` removes them from its output (or
passes them through when ``passthrough=True``). The alternative, scikit-learn metadata
routing (``set_fit_request(age=True)`` ...), was checked against the installed
scikit-learn 1.9.1 and rejected:

* the adjustment needs the covariates of the *test* participants at ``transform`` time
  (``x_test - (c_test - mean_c_train) @ beta_train``), but scorers call
  ``estimator.predict(X)`` without any metadata (``sklearn/metrics/_scorer.py``,
  ``_Scorer._score``), so inside ``cross_validate`` / ``GridSearchCV`` scoring the
  transformer would never receive them;
* routing must be switched on globally (``sklearn.set_config(enable_metadata_routing=True)``)
  and every consumer must declare its requests, which users forget silently.

Carrying the columns in ``X`` works with ``Pipeline``, ``ColumnTransformer``,
``cross_validate``, ``GridSearchCV``, ``clone`` and every joblib backend unchanged, because
the covariates are split by the CV together with the rows they belong to. To adjust the
output of an earlier stage (CNN features, SNP embeddings), give that stage as
``transformer``: it is fitted on the non-covariate columns only and its output is adjusted,
so the stage itself never sees the covariates.
"""

import difflib
import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["CovariateRegressor"]


def _is_dataframe(X):
    return hasattr(X, "columns") and hasattr(X, "iloc")


def _row_names(X, rows):
    rows = np.asarray(rows)
    if _is_dataframe(X):
        names = [str(v) for v in X.index[rows]]
    else:
        names = [f"row {r}" for r in rows]
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


class CovariateRegressor(TransformerMixin, BaseEstimator):
    """Remove the linear effect of covariates from features, learned on the training data.

    For every feature ``x`` (a column of ``X`` that is not a covariate, or a column of the
    output of ``transformer``), ``fit`` solves the least-squares problem
    ``x = b0 + C @ beta`` on the training rows, where ``C`` holds the covariates
    (continuous ones as they are, categorical ones one-hot encoded with the first level as
    reference). ``transform`` returns ``x - (C - mean_train(C)) @ beta``: the residual plus
    the training mean of the feature, so features keep their scale and an
    all-positive feature (gray-matter density) stays interpretable. Coefficients never use
    the rows being transformed, so inside cross-validation the test fold's covariates are
    only *applied*, never learned from. See the module docstring for why covariates travel
    as columns of ``X`` rather than through metadata routing.

    Parameters
    ----------
    covariates : list of str or list of int, default=("age", "sex")
        The covariate columns of ``X``: column names (``X`` must then be a DataFrame) or
        column positions.
    categorical : list of str or int, optional
        Covariates to one-hot encode (e.g. an integer ``site``). Covariates with a
        non-numeric dtype (object, string, category) are treated as categorical anyway.
        Levels are learned in ``fit``; a level unseen in ``fit`` is encoded as the
        reference level, with a warning naming the participants.
    transformer : estimator with ``fit`` and ``transform``, optional
        A stage whose *output* is adjusted (e.g. a CNN feature extractor, a SNP encoder or a
        ``Pipeline`` of several stages). A clone is fitted on the non-covariate columns of
        ``X`` (as a DataFrame when ``X`` is one, so column-selecting stages work) with ``y``.
        If None, the non-covariate columns of ``X`` themselves are adjusted and must be
        numeric.
    passthrough : bool, default=False
        Append the covariate columns (unchanged) to the output, so that a later
        ``CovariateRegressor`` or a model can use them. Non-numeric covariates need
        ``set_output(transform="pandas")``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features_out, n_design)
        Covariate coefficients per adjusted feature (``n_design`` columns after one-hot
        encoding, named in ``design_names_``).
    intercept_ : ndarray of shape (n_features_out,)
    covariate_mean_ : ndarray of shape (n_design,)
        Training means of the design columns.
    design_names_ : list of str
        Names of the design columns, e.g. ``["age", "sex", "site=1", "site=2"]``.
    categories_ : dict
        Levels of each categorical covariate seen in ``fit`` (first = reference).
    transformer_ : estimator or None
        The fitted clone of ``transformer``.
    n_features_in_ : int
        Columns of ``X`` seen in ``fit``, covariates included.
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    See Also
    --------
    sklearn_cgni.evaluation.evaluate_confounds : uses this transformer for the "adjusted" rows.

    Notes
    -----
    Missing feature values (NaN, e.g. missing genotype calls) are allowed: each such
    feature's coefficients are fitted on the rows where it is observed, and missing
    values stay missing in the output (for a later imputer). Covariates must be complete.

    The adjustment is linear. Add columns such as ``age**2`` to ``X`` for curved effects.
    It removes what a *linear* model can learn about the covariates from the features, not
    what a non-linear one can: where a feature has a point mass (a ReLU feature at 0, a
    genotype at 0/1/2, a voxel outside the brain in some participants), the residual of
    those participants is ``-beta * (age - mean age)``, an exact function of age. A
    gradient-boosting model recovers age from such adjusted features with R^2 = 0.9
    where it could from none of their Gaussian counterparts (see
    ``test_linear_adjustment_leaves_age_in_zero_inflated_features_for_nonlinear_models``);
    on the brain-age CNN features of ``benchmarks/bench_confounds.py`` it predicts age
    *better* after adjustment than before. For non-linear models judge the incremental
    value of the predictions instead (:func:`incremental_value`, the ``incremental_*``
    columns of :func:`evaluate_confounds`) or score them on a matched subset.
    With categorical covariates and no intercept problem, the design can still be rank
    deficient inside a fold (e.g. a site missing from it); the minimum-norm least-squares
    solution is used.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_cgni.evaluation import CovariateRegressor
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(40, 70, size=100)
    >>> X = pd.DataFrame({"gm": 1.0 - 0.01 * age + 0.01 * rng.standard_normal(100),
    ...                   "age": age, "sex": rng.integers(0, 2, size=100)})
    >>> adj = CovariateRegressor(covariates=["age", "sex"]).fit(X)
    >>> Xt = adj.transform(X)
    >>> Xt.shape
    (100, 1)
    >>> bool(abs(np.corrcoef(Xt[:, 0], age)[0, 1]) < 1e-6)
    True
    """

    _parameter_constraints = {
        "covariates": ["array-like"],
        "categorical": ["array-like", None],
        "transformer": [HasMethods(["fit", "transform"]), None],
        "passthrough": ["boolean"],
    }

    def __init__(self, covariates=("age", "sex"), *, categorical=None, transformer=None, passthrough=False):
        self.covariates = covariates
        self.categorical = categorical
        self.transformer = transformer
        self.passthrough = passthrough

    # ------------------------------------------------------------------ column handling
    def _covariate_positions(self, X):
        """Positions of the covariate columns in X (names resolved against its columns)."""
        covs = list(self.covariates)
        if len(covs) == 0:
            raise ValueError("CovariateRegressor: `covariates` is empty; name at least one column.")
        is_int = [isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in covs]
        n_cols = X.shape[1]
        if all(is_int):
            pos = [int(c) for c in covs]
            bad = [c for c in pos if not -n_cols <= c < n_cols]
            if bad:
                raise ValueError(
                    f"CovariateRegressor: covariate positions {bad} are out of range for X with {n_cols} columns."
                )
            pos = [c % n_cols for c in pos]
        elif all(isinstance(c, str) for c in covs):
            if not _is_dataframe(X):
                raise ValueError(
                    f"CovariateRegressor: covariates are given by name ({covs}) but X is not a DataFrame; "
                    "pass a DataFrame or give column positions."
                )
            columns = [str(c) for c in X.columns]
            pos = []
            for c in covs:
                if c not in columns:
                    close = difflib.get_close_matches(c, columns, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ValueError(
                        f"CovariateRegressor: covariate column {c!r} is not in X (columns: "
                        f"{columns[:10]}{' ...' if len(columns) > 10 else ''}).{hint}"
                    )
                pos.append(columns.index(c))
        else:
            raise ValueError(
                f"CovariateRegressor: `covariates` must be all column names or all positions; got {covs!r}."
            )
        if len(set(pos)) != len(pos):
            raise ValueError(f"CovariateRegressor: `covariates` lists a column twice: {covs!r}.")
        return pos

    def _categorical_set(self):
        if self.categorical is None:
            return set()
        cats = set(self.categorical)
        unknown = cats - set(self.covariates)
        if unknown:
            raise ValueError(
                f"CovariateRegressor: `categorical` entries {sorted(map(str, unknown))} are not in "
                f"`covariates` {list(self.covariates)}."
            )
        return cats

    def _split(self, X, reset):
        """Validate X; return (feature part, list of covariate Series, covariate names)."""
        if not _is_dataframe(X):
            X = check_array(X, dtype=None, ensure_all_finite=False, accept_sparse=False)
        validate_data(self, X, reset=reset, skip_check_array=True)
        if X.shape[0] < 1:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        pos = self._covariate_positions(X)
        n_feat = X.shape[1] - len(pos)
        if n_feat == 0:
            raise ValueError(
                f"CovariateRegressor: X has {X.shape[1]} feature(s) and all of them are covariates "
                f"({list(self.covariates)}); there is nothing to adjust."
            )
        keep = [j for j in range(X.shape[1]) if j not in set(pos)]
        if _is_dataframe(X):
            F = X.iloc[:, keep]
            C = [X.iloc[:, j] for j in pos]
            names = [str(X.columns[j]) for j in pos]
        else:
            F = X[:, keep]
            C = [pd.Series(X[:, j]) for j in pos]
            names = [f"x{j}" for j in pos]
        return X, F, C, names, keep

    def _is_categorical(self, k, series):
        cats = self._categorical_set()
        key = self.covariates[k]
        if key in cats:
            return True
        if pd.api.types.is_numeric_dtype(series.dtype):
            return False
        if series.dtype == object:  # object arrays of numbers are numeric; of strings categorical
            return bool(len(series)) and all(isinstance(v, str) for v in series.to_numpy())
        return True  # string, category, ... dtypes

    def _design(self, X, C, fit):
        """Design matrix of the covariates (no intercept)."""
        cols, names = [], []
        if fit:
            self.categories_ = {}
        for k, (series, name) in enumerate(zip(C, self._cov_names)):
            values = series.to_numpy()
            if self._is_categorical(k, series):
                missing = np.flatnonzero(pd.isna(values))
                if missing.size:
                    raise ValueError(
                        f"CovariateRegressor: covariate {name!r} is missing for participants {_row_names(X, missing)}."
                    )
                if fit:
                    levels = sorted(pd.unique(values).tolist(), key=lambda v: (str(type(v)), v))
                    self.categories_[name] = levels
                levels = self.categories_[name]
                unseen = ~np.isin(values, levels)
                if unseen.any():
                    warnings.warn(
                        f"CovariateRegressor: covariate {name!r} has levels unseen in fit "
                        f"{sorted(map(str, set(values[unseen])))} for participants {_row_names(X, np.flatnonzero(unseen))}; "
                        f"they are encoded as the reference level {levels[0]!r}.",
                        UserWarning,
                    )
                for lev in levels[1:]:
                    cols.append((values == lev).astype(float))
                    names.append(f"{name}={lev}")
            else:
                col = np.asarray(values, dtype=float)  # TypeError for non-numbers, e.g. dicts
                bad = np.flatnonzero(~np.isfinite(col))
                if bad.size:
                    raise ValueError(
                        f"CovariateRegressor: covariate {name!r} is NaN or inf (missing or not finite) for participants "
                        f"{_row_names(X, bad)}."
                    )
                cols.append(col)
                names.append(name)
        D = np.column_stack(cols) if cols else np.zeros((X.shape[0], 0))
        return D, names

    def _check_features(self, T, X):
        what = f"the output of {type(self.transformer_).__name__}" if self.transformer_ is not None else "X"
        try:
            return check_array(T, dtype=[np.float64, np.float32], accept_sparse=False, input_name="X",
                               ensure_all_finite="allow-nan")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"CovariateRegressor: the features to adjust ({what}) must be numeric and finite: {exc}")

    # ------------------------------------------------------------------ fit / transform
    def _fit(self, X, y):
        X, F, C, self._cov_names, keep = self._split(X, reset=True)
        self.transformer_ = None
        if self.transformer is not None:
            self.transformer_ = clone(self.transformer)
            T = self.transformer_.fit_transform(F, y)
        else:
            T = F
        T = self._check_features(T, X)
        D, self.design_names_ = self._design(X, C, fit=True)
        self.covariate_mean_ = D.mean(axis=0)
        Dc = D - self.covariate_mean_
        beta = np.zeros((D.shape[1], T.shape[1]))
        b0 = np.zeros(T.shape[1])
        missing = np.isnan(T)
        complete = ~missing.any(axis=0)
        if complete.any():  # one least-squares solve for all fully observed features
            T_mean = T[:, complete].mean(axis=0, dtype=np.float64)
            if D.shape[1]:
                beta[:, complete] = np.linalg.lstsq(Dc, T[:, complete] - T_mean, rcond=None)[0]
            b0[complete] = T_mean
        A = np.column_stack([np.ones(len(D)), Dc])
        for j in np.flatnonzero(~complete):  # features with missing values: fit on observed rows
            obs = ~missing[:, j]
            if obs.sum() == 0:
                raise ValueError(f"CovariateRegressor: feature {j} is missing (NaN) for every training row.")
            sol = np.linalg.lstsq(A[obs], T[obs, j].astype(np.float64), rcond=None)[0]
            b0[j], beta[:, j] = sol[0], sol[1:]
        self.coef_ = beta.T
        self.intercept_ = b0 - self.covariate_mean_ @ beta
        self._n_features_out = T.shape[1]
        self._feature_positions = keep
        return X, T, D, C

    def _adjust(self, X, T, D, C):
        out = T - ((D - self.covariate_mean_) @ self.coef_.T).astype(T.dtype, copy=False)
        if not self.passthrough:
            return out
        if _get_output_config("transform", self)["dense"] == "pandas":
            frame = pd.DataFrame(out, columns=self._feature_names_out_core(),
                                 index=X.index if _is_dataframe(X) else None)
            for series, name in zip(C, self._cov_names):
                frame[name] = series.to_numpy()
            return frame
        try:
            cov = np.column_stack([np.asarray(s.to_numpy(), dtype=float) for s in C])
        except (TypeError, ValueError):
            raise ValueError(
                "CovariateRegressor: passthrough=True with non-numeric covariates needs DataFrame output; "
                "call set_output(transform='pandas')."
            ) from None
        return np.hstack([out, cov.astype(out.dtype)])

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Learn the covariate coefficients (and fit ``transformer``) on the training rows.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)
            Features and covariate columns.
        y : array-like of shape (n_samples,), optional
            Passed to ``transformer``; otherwise ignored.

        Returns
        -------
        self : CovariateRegressor
        """
        self._fit(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return the adjusted training features (``transformer`` runs once).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)
        y : array-like of shape (n_samples,), optional
        **fit_params : dict
            Not used; present for API compatibility.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
        """
        X, T, D, C = self._fit(X, y)
        return self._adjust(X, T, D, C)

    def transform(self, X):
        """Adjust features with the coefficients learned in ``fit``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_columns)
            Same columns as in ``fit``; the covariates of these rows are used to remove
            their (training-fold) effect.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
            Adjusted features (followed by the covariates if ``passthrough``).
        """
        check_is_fitted(self, "coef_")
        X, F, C, _, _ = self._split(X, reset=False)
        T = self.transformer_.transform(F) if self.transformer_ is not None else F
        T = self._check_features(T, X)
        if T.shape[1] != self._n_features_out:
            raise ValueError(
                f"CovariateRegressor: {T.shape[1]} features to adjust, but {self._n_features_out} in fit."
            )
        D, _ = self._design(X, C, fit=False)
        return self._adjust(X, T, D, C)

    def _feature_names_out_core(self):
        if self.transformer_ is not None:
            if hasattr(self.transformer_, "get_feature_names_out"):
                try:
                    return np.asarray(self.transformer_.get_feature_names_out(), dtype=object)
                except Exception:  # noqa: BLE001 - inner stage without usable names
                    pass
            prefix = type(self.transformer_).__name__.lower()
            return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)
        if hasattr(self, "feature_names_in_"):
            names = self.feature_names_in_
        else:
            names = np.asarray([f"x{j}" for j in range(self.n_features_in_)], dtype=object)
        return np.asarray([names[j] for j in self._feature_positions], dtype=object)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns (adjusted features, then covariates if ``passthrough``).

        Parameters
        ----------
        input_features : array-like of str, optional
            Ignored except for validation against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "coef_")
        if input_features is not None and hasattr(self, "feature_names_in_"):
            if list(input_features) != list(self.feature_names_in_):
                raise ValueError("input_features is not equal to feature_names_in_")
        names = list(self._feature_names_out_core())
        if self.passthrough:
            names += list(self._cov_names)
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = True  # in features, not in covariates
        return tags
