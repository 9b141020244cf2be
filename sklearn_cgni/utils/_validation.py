"""Checks of hyperparameters that scikit-learn's parameter constraints cannot express."""

import numpy as np

from ..nn._checks import check_layer_sizes  # the torch modules check their sizes too: defined below them

__all__ = ["check_layer_sizes", "validate_numeric_data"]


def validate_numeric_data(estimator, X="no_validation", y="no_validation", *, method="fit", **kwargs):
    """scikit-learn's ``validate_data``; non-numeric input is refused naming the estimator, the method and X.

    ``validate_data`` would say only ``could not convert string to float: 'a'``. This says
    which estimator and method received it, and where in ``X`` the first such value is.
    """
    from sklearn.utils.validation import validate_data

    try:
        return validate_data(estimator, X, y, **kwargs)
    except ValueError as exc:
        if "could not convert" not in str(exc) or isinstance(X, str):
            raise
        where = ""
        try:
            cells = np.asarray(X, dtype=object)
            for pos, cell in np.ndenumerate(cells):
                try:
                    float(cell)
                except (TypeError, ValueError):
                    columns = getattr(X, "columns", None)
                    column = columns[pos[-1]] if columns is not None and len(pos) == 2 else pos[-1]
                    where = f" (e.g. {cell!r} in row {pos[0]}, column {column!r})" if len(pos) == 2 else \
                        f" (e.g. {cell!r} at {pos})"
                    break
        except Exception:  # noqa: BLE001 - the location is a courtesy
            where = ""
        raise ValueError(f"{type(estimator).__name__}.{method}: X holds non-numeric values{where}; it needs "
                         f"numbers (encode categories first). {exc}") from exc
