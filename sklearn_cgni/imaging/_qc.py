"""Gray-matter image quality control: correlation of each image with the mean image."""

import numpy as np
import pandas as pd

from ..io._images import NiftiImageSet

__all__ = ["image_quality_control"]


def _as_image_source(images, participant_ids):
    """Return (n, getter, ids) for an array, a NiftiImageSet, a Series of paths or a list of paths."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"An in-memory image array must have shape (n, X, Y, Z); got {images.shape}.")
        ids = list(participant_ids) if participant_ids is not None else [str(i) for i in range(len(images))]
        return len(images), (lambda i: np.asarray(images[i], dtype=np.float64)), ids
    if not isinstance(images, NiftiImageSet):
        images = NiftiImageSet(images, participant_ids)
    ids = [pid if pid is not None else images.paths[i] for i, pid in enumerate(images.participant_ids)]
    return len(images), (lambda i: images[i].astype(np.float64)), ids


def image_quality_control(images, participant_ids=None, *, threshold=0.9, mask=None):
    """Flag gray-matter images whose correlation with the mean image is below a threshold.

    The reference study kept images correlating above 0.9 with the average gray-matter image.
    Images are read one at a time (two passes: the mean, then each correlation), so memory
    stays at a few volumes whatever the cohort size.

    Parameters
    ----------
    images : ndarray (n, X, Y, Z), NiftiImageSet, pandas.Series of paths or list of paths
        The images. A Series' index gives the participant IDs.
    participant_ids : sequence of str, optional
        IDs for an array or a list of paths.
    threshold : float, default=0.9
        Minimum Pearson correlation with the mean image.
    mask : ndarray of bool (X, Y, Z), optional
        Voxels over which the correlation is computed (default: all voxels).

    Returns
    -------
    report : DataFrame
        Indexed by participant ID, with columns ``correlation`` and ``passed``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.random((6, 7, 8))
    >>> imgs = np.stack([base + 0.05 * rng.random(base.shape) for _ in range(5)] + [rng.random(base.shape)])
    >>> image_quality_control(imgs)["passed"].tolist()
    [True, True, True, True, True, False]
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}.")
    n, get, ids = _as_image_source(images, participant_ids)
    if n < 2:
        raise ValueError(f"Image QC compares each image with the mean image and needs at least 2 images; got {n}.")
    mean = None
    for i in range(n):
        x = get(i)
        if mask is not None:
            x = x[mask]
        mean = x.copy() if mean is None else mean + x
    mean /= n
    mc = mean.ravel() - mean.mean()
    mnorm = np.linalg.norm(mc)
    corr = np.empty(n)
    for i in range(n):
        x = get(i)
        if mask is not None:
            x = x[mask]
        xc = x.ravel() - x.mean()
        denom = np.linalg.norm(xc) * mnorm
        corr[i] = float(xc @ mc / denom) if denom > 0 else 0.0
    return pd.DataFrame({"correlation": corr, "passed": corr >= threshold},
                        index=pd.Index(ids, name="participant_id"))
