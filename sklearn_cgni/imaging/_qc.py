"""Gray-matter image quality control: correlation of each image with the mean image."""

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..io import check_images

__all__ = ["image_quality_control"]


def image_quality_control(images, participant_ids=None, *, threshold=0.9, mask=None):
    """Flag gray-matter images whose correlation with the mean image is below a threshold.

    The reference study kept images correlating above 0.9 with the average gray-matter image.
    Images are read one at a time (two passes: the mean, then each correlation; each image is
    decoded once per pass and its header read once per process), so memory stays at a few
    volumes whatever the cohort size. The per-image dot products run on one BLAS thread: they are
    memory-bound, and OpenBLAS's threaded level-1 kernels made them ~20x slower on a loaded
    2-core machine (benchmarks/results/stage_costs.md).

    Parameters
    ----------
    images : ImageSource, ndarray (n, X, Y, Z), NiftiImageSet, pandas.Series of paths or list of paths
        The images (anything :func:`~sklearn_cgni.io.check_images` accepts). A Series' index
        gives the participant IDs.
    participant_ids : sequence of str, optional
        IDs for an array or a list of paths (default: the file names, or ``"index <i>"``).
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
    if participant_ids is None and isinstance(images, np.ndarray):  # the report's index: 0 .. n-1
        participant_ids = [str(i) for i in range(len(images))]
    source = check_images(images, participant_ids=participant_ids, caller="image_quality_control")
    n, ids = len(source), source.participant_ids

    def get(i):
        return source.load(i).astype(np.float64)

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
    with threadpool_limits(limits=1, user_api="blas"):
        _correlations(get, n, mask, mc, mnorm, corr)
    return pd.DataFrame({"correlation": corr, "passed": corr >= threshold},
                        index=pd.Index(ids, name="participant_id"))


def _correlations(get, n, mask, mc, mnorm, corr):
    """Pearson correlation of each image with the centred mean image ``mc`` (norm ``mnorm``), into ``corr``."""
    for i in range(n):
        x = get(i)
        if mask is not None:
            x = x[mask]
        xc = x.ravel() - x.mean()
        denom = np.linalg.norm(xc) * mnorm
        corr[i] = float(xc @ mc / denom) if denom > 0 else 0.0
