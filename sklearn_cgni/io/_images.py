"""Lazy access to gray-matter NIfTI images.

Images are referenced by path and decoded one at a time: nothing here ever holds more than
one volume in memory unless the caller asks for it.
"""

import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["check_image_headers", "load_image", "list_images", "images_from_template",
           "list_bids_images", "is_bids_root"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _describe(path, participant):
    who = f"participant {participant!r}, " if participant is not None else ""
    if _is_image_object(path):
        return f"{who}in-memory image" if who else "in-memory image"
    return f"{who}file {os.fspath(path)!r}"


def _is_image_object(x):
    """Whether ``x`` is an in-memory nibabel image (has a header, an affine and a data object)."""
    return hasattr(x, "dataobj") and hasattr(x, "affine") and hasattr(x, "shape")


#: Most image headers kept by :func:`_open` (a nibabel image without voxels is about 3.6 kB, so
#: at most about 15 MB whatever the cohort size; reading one header of a .nii.gz takes about
#: 0.3 ms, so a pass over a larger cohort re-reads each header once). At 50,000 it held 160 MB
#: more at 50,000 participants than at 10,000 (benchmarks/results/scale.md).
HEADER_CACHE_SIZE = 4096
_headers = OrderedDict()
_headers_lock = threading.Lock()


def clear_header_cache():
    """Forget every image header read so far in this process."""
    with _headers_lock:
        _headers.clear()


def _open(path, participant=None):
    """The nibabel image of ``path``, its header read once per process.

    Headers are kept in a least-recently-used cache keyed by ``(absolute path, size,
    modification time)``, so a rewritten file is read again. The cached image holds no voxels:
    callers decode with ``np.asarray(img.dataobj)`` (never ``get_fdata``, which would keep them).
    An in-memory nibabel image is returned as is.
    """
    if _is_image_object(path):
        return path
    path = Path(path)
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"Image not found: {_describe(path, participant)} does not exist.") from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"Expected a NIfTI file, got a directory: {_describe(path, participant)}.")
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    with _headers_lock:
        img = _headers.get(key)
        if img is not None:
            _headers.move_to_end(key)
            return img
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise OSError(
            f"Could not read NIfTI image for {_describe(path, participant)}: {exc}"
        ) from exc
    with _headers_lock:
        _headers[key] = img
        while len(_headers) > HEADER_CACHE_SIZE:
            _headers.popitem(last=False)
    return img


def _spatial_shape(img, path, participant):
    """The 3-D shape of ``img`` (a trailing axis of 1 dropped), or a ``ValueError``."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(
            f"Expected a 3-D gray-matter image for {_describe(path, participant)}; got shape {img.shape}."
        )
    return shape


def load_image(path, participant=None, *, expected_shape=None, dtype=np.float32, allow_nan=False):
    """Decode one 3-D NIfTI image into a NumPy array.

    Parameters
    ----------
    path : str, path-like or nibabel image
        Path to a ``.nii`` or ``.nii.gz`` file (its header is read once per process, see
        :func:`check_images`), or an in-memory nibabel image.
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
    shape = _spatial_shape(img, path, participant)
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
        shape = _spatial_shape(img, path, pid)
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


def _strip_nifti(name):
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def images_from_template(template, participant_ids):
    """Image paths from a template with ``{id}``, for the participants whose file exists.

    Parameters
    ----------
    template : str
        A path with one or more ``{id}`` placeholders, e.g.
        ``"derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz"`` (relative paths are
        taken from the current folder).
    participant_ids : sequence of str
        The participants to look for (e.g. those of the phenotype file).

    Returns
    -------
    paths : pandas.Series
        Index: participant ID (str), values: absolute paths of the images that exist, in the
        order of ``participant_ids``. Participants without a file are left out (and reported by
        :func:`~sklearn_cgni.io.align_cohort`).

    Raises
    ------
    ValueError
        If the template has no ``{id}``, or no participant has an image.
    """
    template = os.fspath(template)
    if "{id}" not in template:
        raise ValueError(f"Image path template {template!r} has no {{id}} placeholder.")
    found, ids = [], []
    for pid in dict.fromkeys(str(p) for p in participant_ids):
        path = Path(template.replace("{id}", pid))
        if path.is_file():
            found.append(os.fspath(path.resolve()))
            ids.append(pid)
    if not found:
        examples = [template.replace("{id}", str(p)) for p in list(participant_ids)[:2]]
        raise ValueError(
            f"No image found with the template {template!r} for any of the {len(participant_ids)} participant(s); "
            f"looked for e.g. {examples}."
        )
    return pd.Series(found, index=pd.Index(ids, name="participant_id"), name="image")


def _bids_candidates(root):
    """``(participant label, file)`` for every ``sub-*/[ses-*/]anat/*.nii[.gz]`` under ``root``."""
    out = []
    for sub in sorted(root.glob("sub-*")):
        if not sub.is_dir():
            continue
        label = sub.name[len("sub-"):]
        for anat in [sub / "anat", *sorted(sub.glob("ses-*/anat"))]:
            if anat.is_dir():
                out += [(label, f) for f in sorted(anat.iterdir()) if f.name.endswith(_NIFTI_SUFFIXES)]
    return out


def is_bids_root(directory):
    """Whether ``directory`` holds ``sub-<label>/[ses-<label>/]anat/`` folders (a BIDS (derivatives) tree)."""
    directory = Path(directory)
    return directory.is_dir() and any(
        (sub / "anat").is_dir() or any(sub.glob("ses-*/anat")) for sub in directory.glob("sub-*") if sub.is_dir()
    )


def list_bids_images(root, *, suffix=None, space=None, participant_ids=None):
    """Find one image per participant in a BIDS derivatives tree.

    Looks at ``<root>/sub-<label>/anat/*.nii[.gz]`` (and ``sub-<label>/ses-*/anat/``); the
    participant ID is ``<label>`` (``sub-1234567`` -> ``"1234567"``).

    Parameters
    ----------
    root : path-like
        The derivatives folder, e.g. ``derivatives/cat12`` or ``derivatives/fmriprep``.
    suffix : str, optional
        Text the file name must contain, e.g. ``"mwp1"`` (CAT12's modulated gray-matter maps),
        ``"label-GM_probseg"`` (fMRIPrep) or ``"_T1w"``.
    space : str, optional
        The BIDS ``space-<label>`` entity the file name must carry, e.g. ``"MNI152NLin2009cAsym"``.
    participant_ids : sequence of str, optional
        Only these participants (e.g. those of the phenotype file); by default every subject.

    Returns
    -------
    paths : pandas.Series
        Index: participant ID (str), values: absolute paths, sorted by ID. Participants with no
        matching file are left out (and reported by :func:`~sklearn_cgni.io.align_cohort`).

    Raises
    ------
    ValueError
        If a participant has more than one matching file (naming the participant and the
        files; narrow the filter with ``suffix`` / ``space``), or no file matches at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS folder {os.fspath(root)!r} does not exist.")
    wanted = None if participant_ids is None else set(str(p) for p in participant_ids)
    space_re = re.compile(rf"(^|_)space-{re.escape(space)}(_|$)") if space else None
    matches = {}
    for label, f in _bids_candidates(root):
        if wanted is not None and label not in wanted:
            continue
        stem = _strip_nifti(f.name)
        if suffix and suffix not in stem:
            continue
        if space_re is not None and not space_re.search(stem):
            continue
        matches.setdefault(label, []).append(f)
    several = {k: v for k, v in matches.items() if len(v) > 1}
    if several:
        pid, files = next(iter(several.items()))
        raise ValueError(
            f"Participant {pid!r} has {len(files)} images matching in BIDS folder {os.fspath(root)!r}: "
            f"{[os.fspath(f.relative_to(root)) for f in files]}; narrow the choice with the file-name filter "
            f"(suffix={suffix!r}, space={space!r}; data.image_suffix / data.image_space in sklearn-cgni run)"
            + (f" ({len(several)} participants have several)." if len(several) > 1 else ".")
        )
    if not matches:
        raise ValueError(
            f"No image in BIDS folder {os.fspath(root)!r} matches sub-*/[ses-*/]anat/*.nii[.gz]"
            + (f" containing {suffix!r}" if suffix else "") + (f" in space {space!r}" if space else "")
            + (f" for the {len(wanted)} participant(s) asked for" if wanted is not None else "") + "."
        )
    ids = sorted(matches)
    return pd.Series([os.fspath(matches[i][0].resolve()) for i in ids], index=pd.Index(ids, name="participant_id"),
                     name="image")
