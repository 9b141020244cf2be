"""Cross-fitting a learned representation: out-of-fold transforms for the rows it is fitted on."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, TransformerMixin, _fit_context, clone
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

__all__ = ["CrossFitTransformer"]


class CrossFitTransformer(MetaEstimatorMixin, TransformerMixin, BaseEstimator):
    """Out-of-fold transforms of the training rows, a full refit for new rows.

    A representation learned on the same rows that a later stage is trained on looks better
    there than on new rows (a contrastive encoder can memorise its training participants).
    ``fit_transform(X, y)`` therefore returns, for every training row, the transform of a
    clone of ``transformer`` fitted on the *other* folds, as
    :class:`~sklearn.ensemble.StackingClassifier` does with ``cross_val_predict``; the
    transformer is then refitted on all rows (``transformer_``), and :meth:`transform` uses
    that refit. In a :class:`~sklearn.pipeline.Pipeline`, the next step is trained on
    representations of participants the transformer never saw, and predicts on the refit's.

    Parameters
    ----------
    transformer : estimator with ``fit`` and ``transform``
        Cloned for every fold and for the final refit. Its output width must not depend on
        the rows it is fitted on.
    cv : int, cross-validation generator or iterable, default=5
        Folds for the out-of-fold transforms (:func:`sklearn.model_selection.check_cv`):
        an integer gives stratified folds when ``y`` is a binary or multiclass label,
        plain K-fold otherwise. Must partition the rows (every row in exactly one test fold).

    Attributes
    ----------
    transformer_ : estimator
        ``transformer`` fitted on all rows passed to ``fit``/``fit_transform``.
    n_features_in_ : int
        From ``transformer_``, when it defines it.
    n_splits_ : int
        Folds used by the last ``fit_transform``.

    Notes
    -----
    ``fit_transform(X, y)`` is *not* ``fit(X, y).transform(X)``: the first gives out-of-fold
    transforms, the second the refit's in-sample ones. ``fit`` alone only refits (no folds).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_cgni.evaluation import CrossFitTransformer
    >>> X = np.random.default_rng(0).normal(size=(30, 4))
    >>> y = np.repeat([0, 1], 15)
    >>> cf = CrossFitTransformer(PCA(n_components=2), cv=3)
    >>> Z = cf.fit_transform(X, y)          # each row transformed by a PCA that never saw it
    >>> Z.shape, cf.transform(X[:5]).shape  # new rows: the PCA refitted on all 30
    ((30, 2), (5, 2))
    """

    _parameter_constraints: dict = {
        "transformer": [HasMethods(["fit", "transform"])],
        "cv": ["cv_object", Integral],
    }

    def __init__(self, transformer, *, cv=5):
        self.transformer = transformer
        self.cv = cv

    def _check_cv(self, y):
        classifier = y is not None and type_of_target(y) in ("binary", "multiclass")
        return check_cv(self.cv, y, classifier=classifier)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **fit_params):
        """Fit ``transformer`` on all rows (no folds); see :meth:`fit_transform`."""
        self.transformer_ = clone(self.transformer).fit(X, y, **fit_params)
        self._set_n_features()
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X, y=None, **fit_params):
        """Out-of-fold transforms of ``X``, then the refit on all rows.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
        **fit_params
            Passed to every ``transformer.fit``.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_out)
            Row ``i`` transformed by the clone fitted on the folds without ``i``.
        """
        cv = self._check_cv(y)
        splits = list(cv.split(X, y))
        n = _num_rows(X)
        seen = np.zeros(n, dtype=int)
        out = None
        for train, test in splits:
            seen[test] += 1
            est = clone(self.transformer).fit(_safe_indexing(X, train),
                                              None if y is None else _safe_indexing(y, train), **fit_params)
            part = np.asarray(est.transform(_safe_indexing(X, test)))
            if out is None:
                out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
            elif part.shape[1:] != out.shape[1:]:
                raise ValueError(
                    f"CrossFitTransformer: {type(self.transformer).__name__} gave {part.shape[1:]} output "
                    f"columns on one fold and {out.shape[1:]} on another; its output width must not depend "
                    f"on the rows it is fitted on.")
            out[test] = part
        if not (seen == 1).all():
            raise ValueError(f"CrossFitTransformer: cv must put every row in exactly one test fold; "
                             f"{int((seen != 1).sum())} of {n} rows are not (use K-fold-like splitters).")
        self.n_splits_ = len(splits)
        self.transformer_ = clone(self.transformer).fit(X, y, **fit_params)
        self._set_n_features()
        return out

    def _set_n_features(self):
        if hasattr(self.transformer_, "n_features_in_"):
            self.n_features_in_ = self.transformer_.n_features_in_
        if hasattr(self.transformer_, "feature_names_in_"):
            self.feature_names_in_ = self.transformer_.feature_names_in_

    def transform(self, X):
        """Transform new rows with the refit on all training rows (``transformer_``)."""
        check_is_fitted(self, "transformer_")
        return self.transformer_.transform(X)

    def get_feature_names_out(self, input_features=None):
        """The refit's output feature names."""
        check_is_fitted(self, "transformer_")
        return self.transformer_.get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = clone(self.transformer).__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.target_tags.required = inner.target_tags.required
        return tags


def _num_rows(X):
    return X.shape[0] if hasattr(X, "shape") else len(X)
