"""scikit-learn's linear models as the package uses them."""

from __future__ import annotations

__all__ = ["balanced_accuracy_scorer", "l2_logistic_cv", "l2_only", "ridge_cv"]


def l2_only():
    """Keyword arguments for an L2 LogisticRegressionCV without scikit-learn 1.8+'s FutureWarnings."""
    from sklearn.linear_model import LogisticRegressionCV

    if "use_legacy_attributes" in LogisticRegressionCV().get_params():
        return {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return {}  # scikit-learn < 1.8: L2 is the default penalty


def balanced_accuracy_scorer(estimator, X, y):
    """Balanced accuracy of ``estimator.predict(X)``: the value of scikit-learn's ``"balanced_accuracy"`` scorer.

    The mean over the classes present in ``y`` of the fraction predicted right, computed as scikit-learn computes it
    (the same divisions, in the same class order, so the same float), without its input validation and confusion
    matrix on every call: :func:`l2_logistic_cv` scores 10 Cs on 5 inner folds per fit, and on small folds that
    overhead took over half of each fit.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn_cgni.utils._linear import balanced_accuracy_scorer
    >>> X, y = np.zeros((6, 1)), np.array([0, 1, 0, 0, 1, 0])
    >>> balanced_accuracy_scorer(DummyClassifier().fit(X, y), X, y)  # always class 0
    0.5
    """
    import numpy as np

    y = np.asarray(y)
    classes, index = np.unique(y, return_inverse=True)
    right = np.bincount(index, weights=np.asarray(estimator.predict(X)) == y, minlength=len(classes))
    return float(np.mean(right / np.bincount(index, minlength=len(classes))))


def l2_logistic_cv(*, Cs, cv, class_weight):
    """The package's L2 logistic regression with C chosen by inner cross-validation on balanced accuracy.

    Table 1's classical rows and the image CNN's refitted head (``refit_head="logistic"``) both use it.
    """
    from sklearn.linear_model import LogisticRegressionCV

    return LogisticRegressionCV(Cs=int(Cs), cv=cv, scoring=balanced_accuracy_scorer, class_weight=class_weight,
                                max_iter=5000, **l2_only())


def ridge_cv():
    """The package's classical regression: standardised features, then a ridge whose penalty is chosen
    by efficient leave-one-out cross-validation over 33 values from 1e-3 to 1e5.

    The brain-age stage's classical row (regional means -> ridge, the model a reviewer would try first
    against a brain-age CNN) uses it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.utils._linear import ridge_cv
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 5))
    >>> y = X @ [1.0, 0.5, 0.0, 0.0, -1.0] + 0.1 * rng.normal(size=60)
    >>> model = ridge_cv().fit(X, y)
    >>> bool(np.mean(np.abs(model.predict(X) - y)) < 0.2)
    True
    """
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 5, 33)))
