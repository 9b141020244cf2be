"""Checks of hyperparameters that scikit-learn's parameter constraints cannot express."""

from numbers import Integral

import numpy as np

__all__ = ["check_layer_sizes"]


def check_layer_sizes(sizes, name, owner, *, allow_empty=True):
    """Refuse layer sizes that are not a sequence of positive integers.

    Parameters
    ----------
    sizes : object
        The value of the parameter, e.g. ``hidden_layer_sizes``.
    name : str
        The parameter's name, for the error message.
    owner : str
        The estimator's or module's name, for the error message.
    allow_empty : bool, default=True
        Whether no layer at all (a linear model) is allowed.

    Returns
    -------
    sizes : tuple of int

    Raises
    ------
    ValueError
        Naming ``name``, when a size is not an integer >= 1 or the sequence is empty
        and ``allow_empty`` is False.

    Examples
    --------
    >>> from sklearn_cgni.utils._validation import check_layer_sizes
    >>> check_layer_sizes([16, 8], "hidden_layer_sizes", "MLP")
    (16, 8)
    >>> check_layer_sizes((0,), "hidden_layer_sizes", "MLP")
    Traceback (most recent call last):
    ...
    ValueError: MLP: hidden_layer_sizes must list integers >= 1 (layer widths); got (0,).
    """
    try:
        items = list(sizes)
    except TypeError:
        raise ValueError(f"{owner}: {name} must be a tuple or list of integers >= 1; got {sizes!r}.") from None
    if isinstance(sizes, str) or not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in items
    ):
        raise ValueError(f"{owner}: {name} must list integers >= 1 (layer widths); got {sizes!r}.")
    if not items and not allow_empty:
        raise ValueError(f"{owner}: {name} must list at least one layer; got {sizes!r}.")
    return tuple(int(s) for s in items)


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
