"""Checks of hyperparameters that scikit-learn's parameter constraints cannot express."""

from ..nn._checks import check_layer_sizes  # the torch modules check their sizes too: defined below them

__all__ = ["check_layer_sizes"]
