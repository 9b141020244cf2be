"""The one gate for image input: :func:`check_images` and the :class:`ImageSource` it returns.

Every image consumer (the CNN estimators, regional means, QC, occlusion, saliency, image
covariates) calls :func:`check_images` on what the user gave, as nilearn checks every input
with ``check_niimg``. The result carries participant IDs, the common shape and affine and
decodes one image at a time; an :class:`ImageSource` passed in is returned as is, so a fit
builds it once and hands it to every step below.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._images import _describe, _is_image_object, _open, check_image_headers, list_images, load_image

__all__ = ["ImageSource", "NiftiImageSet", "check_images"]


def _is_pathlike(x):
    return isinstance(x, (str, os.PathLike))


class _MemmapFile:
    """What a pickled :class:`ImageSource` keeps of a memory map: the file and the layout, not the voxels."""

    def __init__(self, array):
        self.filename, self.offset = os.fspath(array.filename), int(array.offset)
        self.dtype, self.shape = array.dtype, array.shape
        self.order = "C" if array.flags.c_contiguous else "F"
        self.mode = "r" if array.mode == "r" else "r+"  # a map opened "w+" must not be truncated again

    @classmethod
    def of(cls, array):
        """A reference to ``array`` when it is a whole memory map whose voxels are in its file, else None.

        A copy-on-write map (``mode="c"``) may hold changes that are not in the file; a view of a map
        starts elsewhere than its offset says. Both pickle their values, as numpy does.
        """
        import mmap

        if (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename
                and array.mode != "c" and (array.flags.c_contiguous or array.flags.f_contiguous)):
            return cls(array)
        return None

    def open(self):
        return np.memmap(self.filename, dtype=self.dtype, mode=self.mode, offset=self.offset, shape=self.shape,
                         order=self.order)


class ImageSource(Sequence):
    """Images checked once: participant IDs, one shape, one affine and a lazy loader.

    Built by :func:`check_images`; not meant to be constructed directly. Paths are decoded on
    access, one image at a time (:func:`load_image`); an array is sliced one image at a time
    (a memory map stays on disk).

    Attributes
    ----------
    participant_ids : list of str
        One per image: the pandas index when the input had one, else the file name (paths)
        or ``"index <i>"`` (arrays). Every error names them.
    shape : tuple of 3 int
        The shape every image has.
    affine : ndarray of shape (4, 4) or None
        The affine every image has; ``None`` for arrays.
    kind : {"array", "paths"}
        ``"paths"`` for NIfTI files (or in-memory nibabel images), ``"array"`` for an array.
    paths : list of str or None
        The files (``None`` for arrays).
    index : pandas.Index or None
        The index of a Series/DataFrame input (to label outputs).
    feature_names : list of str or None
        The column of a one-column DataFrame input.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.io import check_images
    >>> source = check_images(np.zeros((3, 4, 5, 6), np.float32))
    >>> len(source), source.shape, source.kind, source.participant_ids[0]
    (3, (4, 5, 6), 'array', 'index 0')
    >>> source.load(1).shape
    (4, 5, 6)
    >>> source.subset([2, 0]).participant_ids
    ['index 2', 'index 0']
    """

    def __init__(self, *, participant_ids, shape, affine=None, paths=None, array=None, rows=None, index=None,
                 feature_names=None, offsets=None):
        self.participant_ids = list(participant_ids)
        self.shape = tuple(int(s) for s in shape)
        self.affine = None if affine is None else np.asarray(affine, dtype=float)
        self.paths = paths
        self._array = array
        self._rows = rows  # positions in _array of a subset (a memory map is not copied)
        self.index = index
        self.feature_names = feature_names
        self._offsets = offsets  # (maps (k, V) float32, weights (n, k) float32): image i minus weights[i] @ maps

    @property
    def kind(self):
        """``"paths"`` for NIfTI files, ``"array"`` for an in-memory array."""
        return "array" if self.paths is None else "paths"

    def __len__(self):
        return len(self.participant_ids)

    def describe(self, i):
        """``"participant '<id>', file '<path>'"`` of image ``i``, for messages."""
        if self.paths is not None:
            return _describe(self.paths[i], self.participant_ids[i])
        return f"participant {self.participant_ids[i]!r}"

    def load(self, i):
        """Image ``i`` decoded to float32 ``(X, Y, Z)``, checked (shape, finite values).

        Raises
        ------
        FileNotFoundError, OSError, ValueError
            Naming the participant and the file.
        """
        if self._array is None:
            img = load_image(self.paths[i], self.participant_ids[i], expected_shape=self.shape, dtype=np.float32)
        else:
            img = np.asarray(self._array[i if self._rows is None else self._rows[i]], dtype=np.float32)
            if not np.isfinite(img).all():
                raise ValueError(f"Image of {self.describe(i)} contains NaN or infinite voxels.")
        if self._offsets is not None:
            maps, weights = self._offsets
            img = img - (weights[i] @ maps).reshape(self.shape)
        return img

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        return self.load(i)

    def iter_arrays(self):
        """Yield ``(participant_id, array)`` pairs, one decoded image at a time."""
        for i in range(len(self)):
            yield self.participant_ids[i], self.load(i)

    def subset(self, indices):
        """The images at ``indices`` (no header is read again)."""
        indices = [int(i) for i in np.asarray(indices, dtype=np.intp).reshape(-1)]
        return self._replace(
            participant_ids=[self.participant_ids[i] for i in indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
            rows=None if self._array is None else [i if self._rows is None else self._rows[i] for i in indices],
            index=None if self.index is None else self.index[indices],
            offsets=None if self._offsets is None else (self._offsets[0], self._offsets[1][indices]))

    def __getstate__(self):
        # numpy pickles a memory map as an array of all its values: the run's image cache would travel
        # whole (185 GB at 40,000 participants of 128×141×128) to every process that receives this source
        # (a DataLoader worker under the "spawn" start method, a Dask task). The file is sent instead.
        state = self.__dict__.copy()
        ref = _MemmapFile.of(self._array)
        if ref is not None:
            state["_array"] = ref
        return state

    def __setstate__(self, state):
        if isinstance(state.get("_array"), _MemmapFile):
            state["_array"] = state["_array"].open()
        self.__dict__.update(state)

    def _replace(self, **changes):
        """A plain :class:`ImageSource` with this one's fields, ``changes`` replacing some of them."""
        fields = dict(participant_ids=self.participant_ids, shape=self.shape, affine=self.affine, paths=self.paths,
                      array=self._array, rows=self._rows, index=self.index, feature_names=self.feature_names,
                      offsets=self._offsets)
        return ImageSource(**{**fields, **changes})

    def minus(self, maps, weights):
        """The same images, each minus its own combination of ``maps``, computed when the image is read.

        Image ``i`` is read as ``load(i) - weights[i] @ maps`` (float32): what a voxel-wise regression
        removes from each image, with ``maps`` its coefficient maps and ``weights`` each participant's
        centered covariates (:class:`~sklearn_cgni.evaluation.ImageCovariateRegressor` with ``lazy=True``).
        Nothing is stored but the maps and weights, so a CNN reads adjusted images from the files or the
        float16 cache this source reads, with no adjusted copy in memory or on disk whatever the number of
        images. Applied to a source that already subtracts maps, the two are combined.

        Parameters
        ----------
        maps : array-like of shape (k, X, Y, Z)
            One map per weight, on the images' grid.
        weights : array-like of shape (n_images, k)
            The weight of each map for each image, in this source's order.

        Returns
        -------
        source : ImageSource
            Same participants, paths, affine and index.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_cgni.io import check_images
        >>> source = check_images(np.ones((2, 2, 2, 2), np.float32))
        >>> adjusted = source.minus(np.full((1, 2, 2, 2), 0.5, np.float32), [[1.0], [-2.0]])
        >>> float(adjusted.load(0)[0, 0, 0]), float(adjusted.load(1)[0, 0, 0])
        (0.5, 2.0)
        >>> float(adjusted.subset([1]).load(0).sum())
        16.0
        """
        maps = np.asarray(maps, dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if maps.ndim != 4 or tuple(maps.shape[1:]) != self.shape:
            raise ValueError(f"ImageSource.minus: maps must have shape (k, {', '.join(map(str, self.shape))}) "
                             f"to match the images; got {maps.shape}.")
        if weights.shape != (len(self), maps.shape[0]):
            raise ValueError(f"ImageSource.minus: weights must have shape ({len(self)}, {maps.shape[0]}) (one row "
                             f"per image, one column per map); got {weights.shape}.")
        if not (np.isfinite(maps).all() and np.isfinite(weights).all()):
            raise ValueError("ImageSource.minus: maps and weights must be finite.")
        maps = maps.reshape(maps.shape[0], -1)
        if self._offsets is not None:
            maps = np.vstack([self._offsets[0], maps])
            weights = np.hstack([self._offsets[1], weights])
        return self._replace(offsets=(maps, weights))

    def cached(self, cache_dir, *, n_threads=2):
        """The same images read from a float16 memory map in ``cache_dir`` (decoded once).

        See :func:`sklearn_cgni.io._cache.build_float16_cache` (re-exported as
        :func:`sklearn_cgni.imaging.build_float16_cache`). An array source, or NIfTI
        images held in memory, are returned as is.
        """
        if self._array is not None or any(not _is_pathlike(p) for p in self.paths):
            return self
        from ._cache import build_float16_cache

        array = build_float16_cache(self.paths, cache_dir, self.participant_ids, expected_shape=self.shape,
                                    n_threads=n_threads)
        return self.backed_by(array)

    def backed_by(self, array, rows=None):
        """The same images read from ``array`` (rows ``rows``, default all in order) instead of their files.

        ``array`` holds these images already decoded, e.g. the float16 memory map of
        :func:`~sklearn_cgni.io._cache.build_float16_cache`, possibly built for a larger set of
        images (``sklearn-cgni run`` builds one for every participant; each CNN reads its rows).
        The participant IDs, paths (for messages), affine and index stay those of this source.
        """
        rows = None if rows is None else [int(r) for r in np.asarray(rows, dtype=np.intp).reshape(-1)]
        n = array.shape[0] if rows is None else len(rows)
        if n != len(self) or tuple(array.shape[1:]) != self.shape:
            raise ValueError(f"backed_by: {len(self)} images of shape {self.shape}, but the array gives {n} of "
                             f"shape {tuple(array.shape[1:])}.")
        return self._replace(array=array, rows=rows)

    @classmethod
    def decoded(cls, paths, array, rows=None, *, affine):
        """The images ``paths`` read from rows ``rows`` of ``array``, where they were decoded earlier; no header
        is read.

        For images that have been through :func:`check_images` before, in another process or an earlier run
        (``sklearn-cgni run`` checks every header in its data stage, decodes the images that passed QC once into
        its image cache and then hands each CNN its rows): the result equals
        ``check_images(paths).backed_by(array, rows)`` without reading each file's header again, which at
        UK Biobank size is a pass over tens of thousands of gzip files per process.

        Parameters
        ----------
        paths : pandas.Series
            Image files indexed by participant ID (for messages, ``index`` and ``participant_ids``).
        array : array-like of shape (n, X, Y, Z)
            The decoded images, e.g. a float16 memory map.
        rows : sequence of int, optional
            The row of ``array`` of each path (default: the rows in order).
        affine : array-like of shape (4, 4)
            The images' common affine, as :func:`check_images` found it.

        Returns
        -------
        source : ImageSource

        Examples
        --------
        >>> import os, tempfile
        >>> import nibabel as nib, numpy as np, pandas as pd
        >>> from sklearn_cgni.io import ImageSource, check_images
        >>> d = tempfile.mkdtemp()
        >>> paths = pd.Series({pid: os.path.join(d, pid + ".nii.gz") for pid in ["sub-1", "sub-2"]})
        >>> for k, p in enumerate(paths):
        ...     nib.save(nib.Nifti1Image(np.full((4, 5, 6), k, "float32"), np.eye(4)), p)
        >>> decoded = np.stack([check_images(paths).load(i) for i in range(2)]).astype(np.float16)
        >>> source = ImageSource.decoded(paths.iloc[::-1], decoded, rows=[1, 0], affine=np.eye(4))
        >>> source.participant_ids, float(source.load(0).max())
        (['sub-2', 'sub-1'], 1.0)
        """
        if not isinstance(paths, pd.Series):
            raise TypeError(f"ImageSource.decoded: paths must be a pandas Series indexed by participant ID; got "
                            f"{type(paths).__name__}.")
        source = ImageSource(participant_ids=[str(i) for i in paths.index], shape=array.shape[1:], affine=affine,
                             paths=[os.fspath(p) for p in paths], index=paths.index)
        return source.backed_by(array, rows)

    def __repr__(self):
        return f"{type(self).__name__}(n_images={len(self)}, shape={self.shape}, kind={self.kind!r})"


class NiftiImageSet(ImageSource):
    """A lazy, indexable collection of same-grid NIfTI images.

    Only headers are read on construction (to check shape and affine, once per process);
    voxels are decoded on access, one image at a time. An :class:`ImageSource` of paths.

    Parameters
    ----------
    paths : sequence of path-like, or pandas.Series indexed by participant ID
        Image files.
    participant_ids : sequence of str, optional
        IDs in the order of ``paths``; taken from the Series index when ``paths`` is one.
    check : bool, default=True
        Check that every image has the shape and affine of the first.

    Raises
    ------
    ValueError
        A participant ID given twice (named), or images of different grids.

    Attributes
    ----------
    shape : tuple of int
        Shape of every image.
    affine : ndarray of shape (4, 4)
        Affine shared by every image.

    Examples
    --------
    >>> import nibabel as nib, numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for pid in ["s1", "s2"]:
    ...     nib.save(nib.Nifti1Image(np.ones((4, 5, 6), "float32"), np.eye(4)), os.path.join(d, pid + ".nii"))
    >>> images = NiftiImageSet.from_directory(d)
    >>> len(images), images.shape, images.participant_ids
    (2, (4, 5, 6), ['s1', 's2'])
    >>> float(images[0].sum())
    120.0
    """

    def __init__(self, paths, participant_ids=None, *, check=True):
        index = None
        if isinstance(paths, pd.Series):
            index = paths.index
            if participant_ids is None:
                participant_ids = [str(i) for i in paths.index]
            paths = paths.tolist()
        paths = [os.fspath(p) for p in paths]
        ids = [str(i) for i in participant_ids] if participant_ids is not None else \
            [os.path.basename(p) for p in paths]
        if len(ids) != len(paths):
            raise ValueError(f"Got {len(paths)} paths but {len(ids)} participant IDs.")
        dup = list(dict.fromkeys(i for i in ids if ids.count(i) > 1)) if len(set(ids)) < len(ids) else []
        if dup:
            raise ValueError(f"NiftiImageSet: duplicated participant ID(s) {dup[:10]}"
                             + (f" ({len(dup)} in all)" if len(dup) > 10 else "")
                             + "; each participant must have one image.")
        if check:
            shape, affine = check_image_headers(paths, ids)
        else:
            img = _open(paths[0], ids[0])
            shape, affine = tuple(int(s) for s in img.shape[:3]), img.affine
        super().__init__(participant_ids=ids, shape=shape, affine=affine, paths=paths, index=index)

    @classmethod
    def from_directory(cls, directory, pattern=None):
        """Collect every ``<participant_id>.nii[.gz]`` in ``directory``."""
        return cls(list_images(directory, pattern))

    def subset(self, indices):
        indices = [int(i) for i in np.asarray(indices, dtype=np.intp).reshape(-1)]
        out = NiftiImageSet.__new__(NiftiImageSet)
        ImageSource.__init__(out, participant_ids=[self.participant_ids[i] for i in indices], shape=self.shape,
                             affine=self.affine, paths=[self.paths[i] for i in indices],
                             index=None if self.index is None else self.index[indices])
        return out


def _paths_source(items, ids, caller, index, feature_names):
    if ids is None:
        ids = [os.path.basename(os.fspath(p)) if _is_pathlike(p) else f"index {i}" for i, p in enumerate(items)]
    paths = [os.fspath(p) if _is_pathlike(p) else p for p in items]
    shape, affine = check_image_headers(paths, ids)
    return ImageSource(participant_ids=ids, shape=shape, affine=affine, paths=paths, index=index,
                       feature_names=feature_names)


def _check_finite(array, ids, chunk=16):
    for start in range(0, array.shape[0], chunk):
        block = np.asarray(array[start:start + chunk])
        finite = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if not finite.all():
            bad = [ids[start + i] for i in np.flatnonzero(~finite)]
            raise ValueError(f"Images contain NaN or infinite voxels: participant(s) {bad}.")


def check_images(X, *, participant_ids=None, expected_shape=None, caller="estimator"):
    """Check image input once and return an :class:`ImageSource` (as nilearn's ``check_niimg``).

    Every image estimator, QC, occlusion and saliency goes through this gate, so they accept
    the same inputs and raise the same errors. For NIfTI paths every header is read (once per
    process: headers are cached by path, size and modification time) to check that all
    images share one 3-D shape and one affine; no voxel is decoded. Arrays are checked for
    NaN and infinite values.

    Parameters
    ----------
    X : ImageSource, array, sequence, pandas.Series or one-column DataFrame
        * an :class:`ImageSource` (e.g. a :class:`NiftiImageSet`): returned as is;
        * a numeric array of shape ``(n, X, Y, Z)`` or ``(n, 1, X, Y, Z)`` (or a torch tensor);
        * a sequence, 1-D array, Series or one-column DataFrame of NIfTI paths (a Series or
          DataFrame index gives the participant IDs), or a sequence of nibabel images.
    participant_ids : sequence of str, optional
        IDs in the order of ``X`` when ``X`` carries none (default: file names, or
        ``"index <i>"`` for arrays).
    expected_shape : tuple of 3 int, optional
        The shape every image must have.
    caller : str, default="estimator"
        Named in error messages (e.g. the estimator's class name).

    Returns
    -------
    source : ImageSource

    Raises
    ------
    TypeError, ValueError, FileNotFoundError, OSError
        Naming the caller, and for one image its participant and file.

    Examples
    --------
    >>> import os, tempfile
    >>> import nibabel as nib, numpy as np, pandas as pd
    >>> from sklearn_cgni.io import check_images
    >>> d = tempfile.mkdtemp()
    >>> paths = pd.Series({pid: os.path.join(d, pid + ".nii.gz") for pid in ["sub-1", "sub-2"]})
    >>> for p in paths:
    ...     nib.save(nib.Nifti1Image(np.ones((4, 5, 6), "float32"), np.eye(4)), p)
    >>> source = check_images(paths, caller="MyEstimator")
    >>> source.kind, source.shape, source.participant_ids
    ('paths', (4, 5, 6), ['sub-1', 'sub-2'])
    >>> float(source.load(0).sum())
    120.0
    >>> check_images(source) is source
    True
    >>> check_images(["/nonexistent/sub-3.nii.gz"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: Image not found: participant 'sub-3.nii.gz', file '/nonexistent/sub-3.nii.gz' does not exist.
    """
    if isinstance(X, ImageSource):
        source = X
    else:
        source = _build_source(X, participant_ids, caller)
    if expected_shape is not None and source.shape != tuple(expected_shape):
        raise ValueError(f"{caller} expects images of shape {tuple(expected_shape)}; the image of "
                         f"{source.describe(0)} has shape {source.shape}.")
    return source


def _build_source(X, ids, caller):
    import torch

    index = feature_names = None
    if ids is not None:
        ids = [str(i) for i in ids]
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"{caller} expects a DataFrame with exactly one column of NIfTI paths; got "
                f"columns {list(X.columns)}. Select the image column, e.g. X[['image']] or "
                f"ColumnTransformer([(..., {caller}, ['image'])])."
            )
        feature_names = [str(c) for c in X.columns]
        X = X.iloc[:, 0]
    if isinstance(X, pd.Series):
        index = X.index
        if ids is None:
            ids = [str(i) for i in X.index]
        X = X.tolist()
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS":
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"{caller} expects a 1-D array of NIfTI paths; got shape {X.shape}.")
        X = X.tolist()
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"{caller} expects a sequence of image paths, not a single path {X!r}.")
    if isinstance(X, (list, tuple)) or (isinstance(X, Sequence) and not isinstance(X, (str, bytes))):
        X = list(X)
        if len(X) == 0:
            raise ValueError(f"{caller} got no images (an empty input).")
        if ids is not None and len(ids) != len(X):
            raise ValueError(f"{caller} got {len(X)} images but {len(ids)} participant IDs.")
        if all(_is_pathlike(p) or _is_image_object(p) for p in X):
            return _paths_source(X, ids, caller, index, feature_names)
        bad = [i for i, p in enumerate(X) if _is_pathlike(p)]
        if bad:
            raise TypeError(f"{caller} got a mix of paths and non-path values (paths at "
                            f"positions {bad[:5]}...). Give all paths or one numeric array.")
        X = np.asarray(X)
    if not isinstance(X, np.ndarray):
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        else:
            raise TypeError(f"{caller} cannot read images from an object of type "
                            f"{type(X).__name__}; give NIfTI paths or an array (n, X, Y, Z).")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{caller} expects a numeric image array; got dtype {X.dtype}.")
    if X.ndim == 5 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 4:
        raise ValueError(
            f"{caller} expects images as an array of shape (n, X, Y, Z) or (n, 1, X, Y, Z), or a "
            f"sequence of NIfTI paths; got an array of shape {X.shape}."
        )
    if X.shape[0] == 0:
        raise ValueError(f"{caller} got no images (an array with 0 rows).")
    if ids is None:
        ids = [f"index {i}" for i in range(X.shape[0])]
    elif len(ids) != X.shape[0]:
        raise ValueError(f"{caller} got {X.shape[0]} images but {len(ids)} participant IDs.")
    _check_finite(X, ids)
    return ImageSource(participant_ids=ids, shape=X.shape[1:], array=X, index=index, feature_names=feature_names)
