"""scikit-learn's linear models as the package uses them."""

from __future__ import annotations

__all__ = ["l2_only"]


def l2_only():
    """Keyword arguments for an L2 LogisticRegressionCV without scikit-learn 1.8+'s FutureWarnings."""
    from sklearn.linear_model import LogisticRegressionCV

    if "use_legacy_attributes" in LogisticRegressionCV().get_params():
        return {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return {}  # scikit-learn < 1.8: L2 is the default penalty
