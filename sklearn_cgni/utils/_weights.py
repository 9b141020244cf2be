"""Weight files that hold only tensors, numbers, strings and lists (read without unpickling)."""

import os

__all__ = ["load_weights_file"]


def load_weights_file(path, fmt, owner, what="weights file"):
    """Read a weights file with ``torch.load(weights_only=True)`` and check its ``format``.

    Parameters
    ----------
    path : str or path-like
    fmt : str
        The ``"format"`` entry the file must hold.
    owner : str
        Who reads it, for the messages (e.g. ``"ImagingCNNClassifier"``).
    what : str, default="weights file"
        What the file is to the reader, for the messages (e.g. ``"brain_age_model"``).

    Returns
    -------
    state : dict
    """
    import torch

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{owner}: {what} {path!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OSError(f"{owner}: could not load {what} {path!r} with "
                      f"torch.load(weights_only=True): {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ValueError(f"{owner}: {what} {path!r} is not a weights file written by save_weights "
                         f"(format {fmt!r}).")
    return state
