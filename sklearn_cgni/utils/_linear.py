"""scikit-learn's linear models as the package uses them."""

from __future__ import annotations

__all__ = ["l2_logistic_cv", "l2_only"]


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
