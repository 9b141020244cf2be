"""scikit-learn's linear models as the package uses them."""

from __future__ import annotations

__all__ = ["l2_logistic_cv", "l2_only", "ridge_cv"]


def l2_only():
    """Keyword arguments for an L2 LogisticRegressionCV without scikit-learn 1.8+'s FutureWarnings."""
    from sklearn.linear_model import LogisticRegressionCV

    if "use_legacy_attributes" in LogisticRegressionCV().get_params():
        return {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return {}  # scikit-learn < 1.8: L2 is the default penalty


def l2_logistic_cv(*, Cs, cv, class_weight):
    """The package's L2 logistic regression with C chosen by inner cross-validation on balanced accuracy.

    Table 1's classical rows and the image CNN's refitted head (``refit_head="logistic"``) both use it.
    """
    from sklearn.linear_model import LogisticRegressionCV

    return LogisticRegressionCV(Cs=int(Cs), cv=cv, scoring="balanced_accuracy", class_weight=class_weight,
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
