"""Device selection and seeding shared by the torch-based estimators."""

import numpy as np
from sklearn.utils import check_random_state


def resolve_device(device="auto"):
    """Return the torch device string to use.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        ``"auto"`` picks ``"cuda"`` when a CUDA device is available and ``"cpu"``
        otherwise. Any other string (``"cuda:1"``, ``"mps"``) is passed through after
        checking that the backend is available.

    Returns
    -------
    device : str
        Under ``torchrun`` with more than one process, ``"cuda"`` (given or picked by
        ``"auto"``) is this process's GPU, ``"cuda:LOCAL_RANK"``.
    """
    import os

    import torch

    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            return device
    if (device == "cuda" and torch.cuda.is_available() and torch.distributed.is_available()
            and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda'; got {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch reports no CUDA device "
            f"(torch {torch.__version__}). Use device='cpu' or 'auto'."
        )
    return device


def fit_seed(random_state):
    """Derive a fit's integer seed from ``random_state`` (torch's global generator is not touched).

    The torch-based estimators seed their own generators with it
    (:mod:`sklearn_cgni.nn._random`): weight initialization, batch order, dropout.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        As everywhere in scikit-learn. ``None`` draws a fresh seed.

    Returns
    -------
    seed : int

    Examples
    --------
    >>> from sklearn_cgni.utils import fit_seed
    >>> fit_seed(0) == fit_seed(0)
    True
    """
    rng = check_random_state(random_state)
    return int(rng.randint(np.iinfo(np.int32).max))


def torch_seed(random_state):
    """Derive an integer seed from ``random_state`` and seed torch's global generator with it.

    .. deprecated:: 0.1
        The estimators no longer seed torch's global generator; use :func:`fit_seed` and a
        ``torch.Generator``. ``torch_seed`` will be removed.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        As everywhere in scikit-learn. ``None`` draws a fresh seed.

    Returns
    -------
    seed : int
        The seed given to :func:`torch.manual_seed`.
    """
    import warnings

    import torch

    warnings.warn("torch_seed is deprecated and will be removed: it reseeds torch's global generator. "
                  "Use sklearn_cgni.utils.fit_seed and a torch.Generator.", FutureWarning, stacklevel=2)
    seed = fit_seed(random_state)
    torch.manual_seed(seed)
    return seed
