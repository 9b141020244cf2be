"""Lazy access to gray-matter NIfTI images.

Images are referenced by path and decoded one at a time: nothing here ever holds more than
one volume in memory unless the caller asks for it.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["NiftiImageSet", "check_image_headers", "load_image", "list_images"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _describe(path, participant):
    who = f"participant {participant!r}, " if participant is not None else ""
    return f"{who}file {os.fspath(path)!r}"


def _open(path, participant=None):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Image not found: {_describe(path, participant)} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"Expected a NIfTI file, got a directory: {_describe(path, participant)}.")
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise OSError(
            f"Could not read NIfTI image for {_describe(path, participant)}: {exc}"
        ) from exc


def load_image(path, participant=None, *, expected_shape=None, dtype=np.float32, allow_nan=False):
    """Decode one 3-D NIfTI image into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        Path to a ``.nii`` or ``.nii.gz`` file.
    participant : str, optional
        Participant ID, used only in error messages.
    expected_shape : tuple of int, optional
        If given, the image must have exactly this shape.
    dtype : numpy dtype, default=np.float32
        Output dtype.
    allow_nan : bool, default=False
        Whether NaN or infinite voxels are accepted. By default they raise ``ValueError``.

    Returns
    -------
    data : ndarray of shape (X, Y, Z)

    Raises
    ------
    FileNotFoundError, OSError, ValueError
        With a message naming the participant and the file.
    """
    img = _open(path, participant)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(
            f"Expected a 3-D gray-matter image for {_describe(path, participant)}; got shape {img.shape}."
        )
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ValueError(
            f"Image shape {shape} of {_describe(path, participant)} differs from the expected "
            f"shape {tuple(expected_shape)}."
        )
    try:
        data = np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    except Exception as exc:  # truncated / corrupt gzip streams surface here
        raise OSError(f"Could not decode image data of {_describe(path, participant)}: {exc}") from exc
    if not allow_nan and not np.isfinite(data).all():
        n_bad = int(np.size(data) - np.isfinite(data).sum())
        raise ValueError(f"Image of {_describe(path, participant)} contains {n_bad} NaN or infinite voxels.")
    return data


def check_image_headers(paths, participant_ids=None, *, atol=1e-3):
    """Check that all images share one shape and one affine, reading headers only.

    Parameters
    ----------
    paths : sequence of path-like
        Image files.
    participant_ids : sequence of str, optional
        IDs used in error messages (same order as ``paths``).
    atol : float, default=1e-3
        Absolute tolerance (mm) when comparing affines.

    Returns
    -------
    shape : tuple of int
        The common 3-D shape.
    affine : ndarray of shape (4, 4)
        The common affine (of the first image).

    Raises
    ------
    ValueError
        Naming the first participant/file whose shape or affine differs.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("No images were given: expected at least one NIfTI path.")
    ids = list(participant_ids) if participant_ids is not None else [None] * len(paths)
    if len(ids) != len(paths):
        raise ValueError(f"Got {len(paths)} image paths but {len(ids)} participant IDs.")
    ref_shape = ref_affine = None
    for path, pid in zip(paths, ids):
        img = _open(path, pid)
        shape = tuple(int(s) for s in img.shape[:3])
        if len(img.shape) not in (3, 4) or (len(img.shape) == 4 and img.shape[3] != 1):
            raise ValueError(f"Expected a 3-D image for {_describe(path, pid)}; got shape {img.shape}.")
        if ref_shape is None:
            ref_shape, ref_affine, ref_desc = shape, img.affine, _describe(path, pid)
            continue
        if shape != ref_shape:
            raise ValueError(
                f"Images differ in shape: {_describe(path, pid)} has shape {shape}, "
                f"but {ref_desc} has {ref_shape}. Resample all images to one grid first."
            )
        if not np.allclose(img.affine, ref_affine, atol=atol):
            raise ValueError(
                f"Images differ in affine: {_describe(path, pid)} is not on the grid of {ref_desc}.\n"
                f"affine:\n{np.round(img.affine, 4)}\nexpected:\n{np.round(ref_affine, 4)}"
            )
    return ref_shape, np.asarray(ref_affine, dtype=float)


def list_images(directory, pattern=None):
    """Find NIfTI images in a folder, keyed by participant ID (the file name without suffix).

    Parameters
    ----------
    directory : path-like
        Folder holding one ``<participant_id>.nii[.gz]`` file per participant.
    pattern : str, optional
        Glob pattern; by default all ``*.nii`` and ``*.nii.gz`` files.

    Returns
    -------
    paths : pandas.Series
        Index: participant ID (str), values: absolute path (str), sorted by ID.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Image folder {os.fspath(directory)!r} does not exist.")
    files = sorted(directory.glob(pattern)) if pattern else sorted(
        p for p in directory.iterdir() if p.name.endswith(_NIFTI_SUFFIXES)
    )
    if not files:
        raise ValueError(f"No NIfTI images (*.nii, *.nii.gz) found in {os.fspath(directory)!r}.")
    ids = []
    for f in files:
        name = f.name
        for suffix in _NIFTI_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        ids.append(name)
    series = pd.Series([os.fspath(f.resolve()) for f in files], index=pd.Index(ids, name="participant_id"))
    dup = series.index[series.index.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Several image files map to the same participant ID(s): {dup} in {os.fspath(directory)!r}.")
    return series.rename("image")


class NiftiImageSet(Sequence):
    """A lazy, indexable collection of same-grid NIfTI images.

    Only headers are read on construction (to check shape and affine); voxels are decoded
    on access, one image at a time.

    Parameters
    ----------
    paths : sequence of path-like, or pandas.Series indexed by participant ID
        Image files.
    participant_ids : sequence of str, optional
        IDs in the order of ``paths``; taken from the Series index when ``paths`` is one.
    check : bool, default=True
        Check shapes and affines on construction.

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
        if isinstance(paths, pd.Series):
            if participant_ids is None:
                participant_ids = [str(i) for i in paths.index]
            paths = paths.tolist()
        self.paths = [os.fspath(p) for p in paths]
        self.participant_ids = (
            [str(i) for i in participant_ids] if participant_ids is not None else [None] * len(self.paths)
        )
        if len(self.participant_ids) != len(self.paths):
            raise ValueError(f"Got {len(self.paths)} paths but {len(self.participant_ids)} participant IDs.")
        if check:
            self.shape, self.affine = check_image_headers(self.paths, self.participant_ids)
        else:
            img = _open(self.paths[0], self.participant_ids[0])
            self.shape, self.affine = tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, float)

    @classmethod
    def from_directory(cls, directory, pattern=None):
        """Collect every ``<participant_id>.nii[.gz]`` in ``directory``."""
        series = list_images(directory, pattern)
        return cls(series)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return NiftiImageSet(self.paths[index], self.participant_ids[index], check=False)
        return load_image(self.paths[index], self.participant_ids[index], expected_shape=self.shape)

    def __repr__(self):
        return f"NiftiImageSet(n_images={len(self)}, shape={self.shape})"

    def iter_arrays(self):
        """Yield ``(participant_id, array)`` pairs, one decoded image at a time."""
        for i in range(len(self)):
            yield self.participant_ids[i], self[i]
