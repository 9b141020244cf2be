"""Sparse canonical correlation analysis of the two encoders' outputs (z_v, z_g).

The seed paper (section II.F.1) relates the imaging and genetic representations of the
contrastive model with the iterative penalised least squares SCCA of Mai and Zhang (2019), as
implemented in cca-zoo, and chooses the number of components and each view's sparsity by
5-fold cross-validation. :class:`SparseCCA` does exactly that with
:class:`cca_zoo.sparse.IPLSCCA` (cca-zoo >= 4) and reports the canonical correlation of every
component on any split (the paper's Table 3) and, optionally, cca-zoo's permutation p-values.
"""

from __future__ import annotations

import itertools
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["SparseCCA", "canonical_correlations"]


def canonical_correlations(x_scores, y_scores):
    """Pearson correlation of each pair of canonical variates.

    Parameters
    ----------
    x_scores, y_scores : ndarray of shape (n_samples, n_components)

    Returns
    -------
    corr : ndarray of shape (n_components,)
        A component whose variate is constant (all-zero weights after a strong
        penalty) gets correlation 0 rather than NaN.
    """
    x = np.asarray(x_scores, dtype=float)
    y = np.asarray(y_scores, dtype=float)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denom = np.sqrt((x**2).sum(axis=0) * (y**2).sum(axis=0))
    num = (x * y).sum(axis=0)
    out = np.zeros(x.shape[1])
    ok = denom > 1e-12
    out[ok] = num[ok] / denom[ok]
    return out


def _candidates(value, name):
    """A parameter given once or as candidates, as a sorted list of unique values."""
    if np.ndim(value) == 0:
        return [value]
    values = list(value)
    if not values:
        raise ValueError(f"{name} must be a number or a non-empty list of candidates; got {value!r}.")
    return values


class SparseCCA(TransformerMixin, BaseEstimator):
    """Sparse CCA by iterative penalised least squares, tuned by cross-validation.

    Fits :class:`cca_zoo.sparse.IPLSCCA` (Mai and Zhang, 2019) to two views ``X`` (e.g. the
    imaging encoder's output z_v) and ``Y`` (the genetic encoder's output z_g). The number of
    components and the L1 penalty of each view may be given as lists of candidates: the
    combination with the best held-out score over ``cv`` folds is then refitted on all of the
    data, as ``GridSearchCV`` would (the seed paper's procedure, section II.F.1).

    Parameters
    ----------
    n_components : int or list of int, default=(1, 2, 3, 4, 5)
        Number of canonical components, or candidates for it. Components are fitted one at a
        time with deflation, so the first ``k`` components of a ``K``-component fit are those
        of a ``k``-component fit: each fold is fitted once with the largest candidate and every
        candidate is scored on its leading components.
    alpha_x, alpha_y : float or list of float, default=(0.01, 0.05, 0.1)
        Penalty strength of each view's penalised regression (``alpha`` of IPLSCCA for view
        0 and view 1), or candidates. 0 means no penalty (least squares).
    l1_ratio : float, default=1.0
        Share of the penalty that is L1 (1: Mai and Zhang's lasso).
    scale : bool, default=True
        Standardise each feature of both views (statistics of the training data) first.
    cv : int, cross-validation generator or iterable, default=5
        Folds used when candidates are given (unused for a single combination).
    scoring : {"sum", "mean"} or callable, default="sum"
        Score of a fitted model on held-out data from its per-component canonical
        correlations: ``"sum"`` adds them (more components win while each still correlates
        out of sample), ``"mean"`` averages them (cca-zoo's ``score``; favours one
        component). A callable receives the array of correlations and returns a float.
    n_permutations : int, default=0
        If positive, ``p_values_`` from cca-zoo's
        :func:`~cca_zoo.model_selection.permutation_test_significance` with the chosen
        parameters (rows of ``Y`` shuffled, model refitted). cca-zoo warns that only the first
        component's p-value is a valid test: later components are compared with the permuted
        fits' component of the same rank, not tested step-down.
    max_iter : int, default=200
        Maximum alternating iterations per component.
    tol : float, default=1e-3
        Convergence tolerance on the change of the weights. Looser than IPLSCCA's 1e-6:
        on 4,000 x 100 views the canonical correlations agree to three decimals while a fit
        takes about 3 s instead of 10 s, which matters for the folds x candidates fits.
    random_state : int, RandomState instance or None, default=None
        Seed of IPLSCCA's start and of the permutations.
    n_jobs : int or None, default=None
        Jobs (joblib) for the cross-validation fits and the permutation test.

    Attributes
    ----------
    model_ : cca_zoo.sparse.IPLSCCA
        The model refitted on all of the data with ``best_params_``.
    n_components_ : int
    x_weights_ : ndarray of shape (n_features_x, n_components_)
        Canonical weights of ``X`` (on standardised features when ``scale=True``).
    y_weights_ : ndarray of shape (n_features_y, n_components_)
    x_mean_, x_std_, y_mean_, y_std_ : ndarray
        Standardisation statistics (means 0 and stds 1 when ``scale=False``).
    canonical_correlations_ : ndarray of shape (n_components_,)
        Correlation of each pair of canonical variates on the training data.
    best_params_ : dict
        ``n_components``, ``alpha_x`` and ``alpha_y`` chosen.
    best_score_ : float or None
        Mean held-out score of ``best_params_`` (None when nothing was searched).
    cv_results_ : dict of ndarray or None
        Per candidate: ``param_*``, ``split{k}_test_score``, ``mean_test_score``,
        ``std_test_score``, ``rank_test_score`` and ``mean_test_correlations`` (held-out
        correlation per component). None when nothing was searched.
    p_values_ : ndarray of shape (n_components_,) or None
        Permutation p-value per component (see ``n_permutations``).
    n_iter_ : int
        Most iterations run by any component in the final fit.
    n_features_in_ : int

    See Also
    --------
    sklearn.cross_decomposition.CCA : Dense CCA (transform/score conventions followed here).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.explain import SparseCCA
    >>> rng = np.random.default_rng(0)
    >>> latent = rng.standard_normal((200, 2))
    >>> X = latent @ rng.standard_normal((2, 10)) + rng.standard_normal((200, 10))
    >>> Y = latent @ rng.standard_normal((2, 8)) + rng.standard_normal((200, 8))
    >>> scca = SparseCCA(n_components=[1, 2, 3], alpha_x=[0.0, 0.05], alpha_y=[0.0, 0.05],
    ...                  random_state=0).fit(X, Y)
    >>> scca.best_params_["n_components"] >= 2
    True
    >>> bool(scca.canonical_correlations_[0] > 0.5)
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "alpha_x": [Interval(Real, 0, None, closed="left"), "array-like"],
        "alpha_y": [Interval(Real, 0, None, closed="left"), "array-like"],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "scale": ["boolean"],
        "cv": ["cv_object"],
        "scoring": [StrOptions({"sum", "mean"}), callable],
        "n_permutations": [Interval(Integral, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        n_components=(1, 2, 3, 4, 5),
        *,
        alpha_x=(0.01, 0.05, 0.1),
        alpha_y=(0.01, 0.05, 0.1),
        l1_ratio=1.0,
        scale=True,
        cv=5,
        scoring="sum",
        n_permutations=0,
        max_iter=200,
        tol=1e-3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.alpha_x = alpha_x
        self.alpha_y = alpha_y
        self.l1_ratio = l1_ratio
        self.scale = scale
        self.cv = cv
        self.scoring = scoring
        self.n_permutations = n_permutations
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ helpers
    def _score_correlations(self, corr):
        corr = np.asarray(corr, dtype=float)
        if callable(self.scoring):
            return float(self.scoring(corr))
        return float(corr.sum() if self.scoring == "sum" else corr.mean())

    def _ipls(self, n_components, alpha_x, alpha_y):
        from cca_zoo.sparse import IPLSCCA

        seed = self.random_state if isinstance(self.random_state, (Integral, type(None))) else None
        return IPLSCCA(
            n_components=int(n_components),
            alpha=[float(alpha_x), float(alpha_y)],
            l1_ratio=float(self.l1_ratio),
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=seed,
        )

    @staticmethod
    def _scores(model, X, Y):
        return (X - model.means_[0]) @ model.weights_[0], (Y - model.means_[1]) @ model.weights_[1]

    def _standardize(self, X, Y):
        return (X - self.x_mean_) / self.x_std_, (Y - self.y_mean_) / self.y_std_

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Choose the parameters by cross-validation (if candidates are given) and fit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_x)
            First view, e.g. z_v.
        y : array-like of shape (n_samples, n_features_y) or (n_samples,)
            Second view, e.g. z_g (named ``y`` as in :class:`sklearn.cross_decomposition.CCA`).

        Returns
        -------
        self : SparseCCA
        """
        X, Y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64,
                             ensure_min_samples=2)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        if self.scale:
            self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
            sx, sy = X.std(axis=0, ddof=1), Y.std(axis=0, ddof=1)
            self.x_std_ = np.where(sx > 1e-12, sx, 1.0)
            self.y_std_ = np.where(sy > 1e-12, sy, 1.0)
        else:
            self.x_mean_, self.y_mean_ = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
            self.x_std_, self.y_std_ = np.ones(X.shape[1]), np.ones(Y.shape[1])
        Xs, Ys = self._standardize(X, Y)

        n_comp = [int(c) for c in _candidates(self.n_components, "n_components")]
        alphas_x = [float(a) for a in _candidates(self.alpha_x, "alpha_x")]
        alphas_y = [float(a) for a in _candidates(self.alpha_y, "alpha_y")]
        for name, vals in (("alpha_x", alphas_x), ("alpha_y", alphas_y)):
            if any(a < 0 for a in vals):
                raise ValueError(f"{name} candidates must be >= 0; got {vals}.")
        if any(c < 1 for c in n_comp):
            raise ValueError(f"n_components candidates must be >= 1; got {n_comp}.")
        max_rank = min(X.shape[1], Y.shape[1])
        too_many = [c for c in n_comp if c > max_rank]
        if too_many:
            raise ValueError(
                f"n_components candidate(s) {too_many} exceed {max_rank}, the number of "
                f"features of the narrower view (X has {X.shape[1]}, Y has {Y.shape[1]})."
            )
        n_comp = sorted(set(n_comp))
        searched = len(n_comp) * len(alphas_x) * len(alphas_y) > 1

        if searched:
            self._search(Xs, Ys, n_comp, alphas_x, alphas_y)
        else:
            self.best_params_ = {"n_components": n_comp[0], "alpha_x": alphas_x[0],
                                 "alpha_y": alphas_y[0]}
            self.best_score_ = None
            self.cv_results_ = None

        best = self.best_params_
        self.model_ = self._ipls(best["n_components"], best["alpha_x"], best["alpha_y"]).fit([Xs, Ys])
        self.n_components_ = int(self.model_.n_components_)
        self.x_weights_ = np.asarray(self.model_.weights_[0])
        self.y_weights_ = np.asarray(self.model_.weights_[1])
        self.n_iter_ = int(self.model_.n_iter_)
        self.canonical_correlations_ = canonical_correlations(*self._scores(self.model_, Xs, Ys))

        self.p_values_ = None
        if self.n_permutations > 0:
            from cca_zoo.model_selection import permutation_test_significance

            result = permutation_test_significance(
                self._ipls(best["n_components"], best["alpha_x"], best["alpha_y"]),
                [Xs, Ys],
                n_permutations=self.n_permutations,
                random_state=self.random_state,
                n_jobs=self.n_jobs,
            )
            self.p_values_ = np.asarray(result.p_values)
        return self

    def _search(self, Xs, Ys, n_comp, alphas_x, alphas_y):
        cv = check_cv(self.cv)
        splits = list(cv.split(Xs))
        max_c = max(n_comp)
        combos = list(itertools.product(n_comp, alphas_x, alphas_y))
        scores = np.zeros((len(combos), len(splits)))
        for train, test in splits:
            if len(train) < 2 or len(test) < 2:
                raise ValueError(
                    f"Each cross-validation fold needs at least 2 training and 2 test "
                    f"samples; got {len(train)} and {len(test)} with {Xs.shape[0]} samples."
                )
        pairs = list(itertools.product(alphas_x, alphas_y))
        tasks = [(ax, ay, train, test) for ax, ay in pairs for train, test in splits]
        got = Parallel(n_jobs=self.n_jobs)(
            delayed(self._fold_correlations)(Xs, Ys, max_c, ax, ay, train, test)
            for ax, ay, train, test in tasks
        )
        fold_corr = {pair: np.array(got[i * len(splits):(i + 1) * len(splits)])
                     for i, pair in enumerate(pairs)}
        for i, (c, ax, ay) in enumerate(combos):
            for f, corr in enumerate(fold_corr[(ax, ay)]):
                scores[i, f] = self._score_correlations(corr[:c])
        mean, std = scores.mean(axis=1), scores.std(axis=1)
        # Rank 1 is the best; ties go to fewer components, then larger penalties (sparser).
        order = sorted(range(len(combos)),
                       key=lambda i: (-round(mean[i], 12), combos[i][0], -combos[i][1], -combos[i][2]))
        rank = np.empty(len(combos), dtype=int)
        rank[order] = np.arange(1, len(combos) + 1)
        results = {
            "param_n_components": np.array([c for c, _, _ in combos]),
            "param_alpha_x": np.array([a for _, a, _ in combos]),
            "param_alpha_y": np.array([a for _, _, a in combos]),
            "params": [{"n_components": c, "alpha_x": ax, "alpha_y": ay} for c, ax, ay in combos],
            "mean_test_score": mean,
            "std_test_score": std,
            "rank_test_score": rank,
            "mean_test_correlations": [fold_corr[(ax, ay)][:, :c].mean(axis=0) for c, ax, ay in combos],
        }
        for f in range(len(splits)):
            results[f"split{f}_test_score"] = scores[:, f]
        self.cv_results_ = results
        best = order[0]
        self.best_params_ = dict(results["params"][best])
        self.best_score_ = float(mean[best])

    def _fold_correlations(self, Xs, Ys, max_c, ax, ay, train, test):
        with warnings.catch_warnings():
            # Convergence warnings of the fold fits would drown the final fit's.
            warnings.simplefilter("ignore")
            model = self._ipls(max_c, ax, ay).fit([Xs[train], Ys[train]])
        corr = np.zeros(max_c)
        got = canonical_correlations(*self._scores(model, Xs[test], Ys[test]))
        corr[: len(got)] = got
        return corr

    # ------------------------------------------------------------------ use
    def transform(self, X, y=None):
        """Canonical variates of ``X`` (and of ``y`` when given).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_x)
        y : array-like of shape (n_samples, n_features_y), optional
            The second view.

        Returns
        -------
        x_scores : ndarray of shape (n_samples, n_components_)
            Returned alone when ``y`` is None, else as ``(x_scores, y_scores)``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        x_scores = ((X - self.x_mean_) / self.x_std_ - self.model_.means_[0]) @ self.x_weights_
        if y is None:
            return x_scores
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        if Y.ndim != 2 or Y.shape[1] != self.y_weights_.shape[0]:
            raise ValueError(
                f"y (the second view) has shape {Y.shape}; SparseCCA was fitted with "
                f"{self.y_weights_.shape[0]} feature(s) in y."
            )
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {Y.shape[0]}.")
        if not np.isfinite(Y).all():
            raise ValueError("y (the second view) contains NaN or infinity.")
        y_scores = ((Y - self.y_mean_) / self.y_std_ - self.model_.means_[1]) @ self.y_weights_
        return x_scores, y_scores

    def score_components(self, X, y):
        """Canonical correlation of each component on ``(X, y)``.

        Returns
        -------
        corr : ndarray of shape (n_components_,)
        """
        return canonical_correlations(*self.transform(X, y))

    def score(self, X, y):
        """``scoring`` applied to :meth:`score_components` on ``(X, y)`` (higher is better)."""
        return self._score_correlations(self.score_components(X, y))

    def correlation_table(self, **splits):
        """Canonical correlations per component and split (the paper's Table 3).

        Parameters
        ----------
        **splits : tuple (X, Y)
            Named splits, e.g. ``train=(zv_tr, zg_tr), validation=(...), holdout=(...)``.

        Returns
        -------
        table : DataFrame
            Index ``component`` (1-based), one column per split, plus ``p_value`` when
            ``p_values_`` were computed.
        """
        check_is_fitted(self)
        if not splits:
            raise ValueError("Give at least one split, e.g. correlation_table(train=(X, Y)).")
        table = pd.DataFrame(
            {name: self.score_components(*xy) for name, xy in splits.items()},
            index=pd.RangeIndex(1, self.n_components_ + 1, name="component"),
        )
        if self.p_values_ is not None:
            table["p_value"] = self.p_values_
        return table

    def top_nodes(self):
        """Per component, the feature of each view with the largest |canonical weight|.

        The seed paper explains each component through these latent nodes (section II.F.1).

        Returns
        -------
        x_nodes, y_nodes : ndarray of int of shape (n_components_,)
        """
        check_is_fitted(self)
        return (np.abs(self.x_weights_).argmax(axis=0), np.abs(self.y_weights_).argmax(axis=0))
