"""Checks of the modules' sizes (plain Python: the torch modules and the estimators both use them)."""

from numbers import Integral

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
    >>> from sklearn_cgni.nn._checks import check_layer_sizes
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
