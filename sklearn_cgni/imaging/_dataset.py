"""Torch datasets and loaders over brain images given as NIfTI paths or an in-memory array.

Images are decoded one at a time (in DataLoader workers when ``num_workers > 0``), so memory
stays flat whatever the number of participants. When gzip decoding is slower than the
network consumes images (a GPU forward pass), :func:`build_float16_cache` decodes every image
once into a float16 memory map; later epochs and later ``transform`` calls read the map.

Every error names the participant and the file (or the array index).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "ImageDataset",
    "build_float16_cache",
    "check_image_input",
    "make_loader",
    "read_image",
]

_F16_MAX = float(np.finfo(np.float16).max)


def _describe(participant, path=None):
    parts = []
    if participant is not None:
        parts.append(f"participant {participant!r}")
    if path is not None:
        parts.append(f"file {os.fspath(path)!r}")
    return ", ".join(parts) if parts else "image"


def _fallback_load_image(path, participant=None, *, expected_shape=None, dtype=np.float32,
                         allow_nan=False):
    """Minimal nibabel loader used only when ``sklearn_cgni.io.load_image`` is unavailable."""
    import nibabel as nib

    path = Path(path)
    where = _describe(participant, path)
    if not path.exists():
        raise FileNotFoundError(f"Image not found: {where} does not exist.")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise OSError(f"Could not read NIfTI image for {where}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"Expected a 3-D image for {where}; got shape {data.shape}.")
    if expected_shape is not None and data.shape != tuple(expected_shape):
        raise ValueError(f"Image shape {data.shape} of {where} differs from the expected "
                         f"shape {tuple(expected_shape)}.")
    if not allow_nan and not np.isfinite(data).all():
        raise ValueError(f"Image of {where} contains NaN or infinite voxels.")
    return data


def read_image(path, participant=None, expected_shape=None):
    """Decode one NIfTI image to float32 ``(X, Y, Z)`` with errors naming participant/file.

    Uses :func:`sklearn_cgni.io.load_image` (the package's one NIfTI reader) when available.
    """
    try:
        from ..io import load_image
    except ImportError:  # pragma: no cover - io not importable in a partial checkout
        load_image = _fallback_load_image
    return load_image(path, participant, expected_shape=expected_shape, dtype=np.float32)


def _is_pathlike(x):
    return isinstance(x, (str, os.PathLike))


def check_image_input(X, *, caller="estimator"):
    """Normalise the image inputs users have into ``(images, participant_ids, kind)``.

    Accepted ``X``:

    * a numeric array of shape ``(n, X, Y, Z)`` or ``(n, 1, X, Y, Z)`` (in memory);
    * a sequence, 1-D array, pandas Series or one-column DataFrame of NIfTI paths (the
      Series/DataFrame index gives participant IDs, used in error messages);
    * an object with ``paths`` and ``participant_ids`` (e.g. ``sklearn_cgni.io.NiftiImageSet``).

    Returns
    -------
    images : ndarray (n, X, Y, Z) or list of str
    participant_ids : list of str
    kind : {"array", "paths"}
    """
    ids = None
    if hasattr(X, "paths") and hasattr(X, "participant_ids") and not hasattr(X, "columns"):
        paths = [os.fspath(p) for p in X.paths]
        ids = [str(i) if i is not None else os.path.basename(p)
               for i, p in zip(X.participant_ids, paths)]
        X = paths
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"{caller} expects a DataFrame with exactly one column of NIfTI paths; got "
                f"columns {list(X.columns)}. Select the image column, e.g. X[['image']] or "
                f"ColumnTransformer([(..., {caller}, ['image'])])."
            )
        ids = [str(i) for i in X.index]
        X = X.iloc[:, 0]
    if pd is not None and isinstance(X, pd.Series):
        if ids is None:
            ids = [str(i) for i in X.index]
        X = X.tolist()
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS":
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"{caller} expects a 1-D array of NIfTI paths; got shape {X.shape}.")
        X = X.tolist()
    if isinstance(X, (list, tuple)) or (isinstance(X, Sequence) and not isinstance(X, (str, bytes))):
        X = list(X)
        if len(X) == 0:
            raise ValueError(f"{caller} got no images (an empty input).")
        if all(_is_pathlike(p) for p in X):
            paths = [os.fspath(p) for p in X]
            if ids is None:
                ids = [os.path.basename(p) for p in paths]
            return paths, ids, "paths"
        bad = [i for i, p in enumerate(X) if _is_pathlike(p)]
        if bad:
            raise TypeError(f"{caller} got a mix of paths and non-path values (paths at "
                            f"positions {bad[:5]}...). Give all paths or one numeric array.")
        X = np.asarray(X)
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"{caller} expects a sequence of image paths, not a single path {X!r}.")
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
            f"{caller} expects images as an array of shape (n_images, X, Y, Z) or a sequence of "
            f"NIfTI paths; got an array of shape {X.shape}."
        )
    if X.shape[0] == 0:
        raise ValueError(f"{caller} got no images (an array with 0 rows).")
    if ids is None:
        ids = [f"index {i}" for i in range(X.shape[0])]
    return X, ids, "array"


def _check_finite_array(images, participant_ids, chunk=16):
    for start in range(0, images.shape[0], chunk):
        block = np.asarray(images[start:start + chunk])
        finite = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if not finite.all():
            bad = [participant_ids[start + i] for i in np.flatnonzero(~finite)]
            raise ValueError(f"Images contain NaN or infinite voxels: participant(s) {bad}.")


def _file_key(paths):
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build_float16_cache(paths, cache_dir, participant_ids=None, *, expected_shape=None,
                        n_threads=2):
    """Decode NIfTI images once into a float16 memory map and return it (read-only).

    The map is named after a hash of the absolute paths, sizes and modification times, so a
    second call on the same files reuses it, and a changed file gives a new map.
    float16 keeps 11 significant bits (relative error <= 4.9e-4), ample for gray-matter
    densities in [0, 1]; values beyond +-65504 raise ``ValueError``.

    Parameters
    ----------
    paths : sequence of path-like
    cache_dir : path-like
        Folder for ``<hash>.f16`` and ``<hash>.json``.
    participant_ids : sequence of str, optional
        For error messages.
    expected_shape : tuple of 3 int, optional
        Shape every image must have; default: the first image's.
    n_threads : int, default=2
        Decoding threads (zlib releases the GIL).

    Returns
    -------
    cache : numpy.memmap of shape (n, X, Y, Z), dtype float16, mode "r"
    """
    paths = [os.fspath(p) for p in paths]
    ids = list(participant_ids) if participant_ids is not None else [None] * len(paths)
    for p, pid in zip(paths, ids):
        if not os.path.exists(p):
            raise FileNotFoundError(f"Image not found: {_describe(pid, p)} does not exist.")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _file_key(paths)
    data_file, meta_file = cache_dir / f"{key}.f16", cache_dir / f"{key}.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        shape = tuple(meta["shape"])
        if expected_shape is not None and shape[1:] != tuple(expected_shape):
            raise ValueError(f"Cached images in {os.fspath(data_file)!r} have shape {shape[1:]}, "
                             f"expected {tuple(expected_shape)}.")
        return np.memmap(data_file, dtype=np.float16, mode="r", shape=shape)
    first = read_image(paths[0], ids[0], expected_shape)
    shape = (len(paths), *first.shape)
    tmp = cache_dir / f"{key}.f16.partial"
    out = np.memmap(tmp, dtype=np.float16, mode="w+", shape=shape)

    def work(i):
        img = first if i == 0 else read_image(paths[i], ids[i], shape[1:])
        if np.abs(img).max() > _F16_MAX:
            raise ValueError(f"Image of {_describe(ids[i], paths[i])} has values beyond the "
                             f"float16 range (+-{_F16_MAX}); do not use the float16 cache.")
        out[i] = img

    with ThreadPoolExecutor(max(1, int(n_threads))) as pool:
        list(pool.map(work, range(len(paths))))
    out.flush()
    del out
    os.replace(tmp, data_file)
    meta_file.write_text(json.dumps({"shape": list(shape), "paths": paths}))
    return np.memmap(data_file, dtype=np.float16, mode="r", shape=shape)


class ImageDataset(Dataset):
    """A torch Dataset of ``(image, target)`` pairs.

    Parameters
    ----------
    images : ndarray (n, X, Y, Z) (float32/float16/memmap) or sequence of path-like
        Arrays are sliced one image at a time (a memory map stays on disk); paths are
        decoded on access with :func:`read_image`.
    targets : array-like of shape (n,), optional
        Returned as the second element; ``0.0`` when omitted (prediction).
    participant_ids : sequence of str, optional
        Used in error messages.
    expected_shape : tuple of 3 int, optional
        Every image must have this shape; a mismatch raises ``ValueError`` naming the
        participant and file.
    target_dtype : torch dtype, default=torch.float32

    Items are ``(tensor (1, X, Y, Z) float32, target tensor)``.
    """

    def __init__(self, images, targets=None, participant_ids=None, expected_shape=None,
                 target_dtype=torch.float32):
        self.images = images
        self.is_paths = not isinstance(images, np.ndarray)
        n = len(images)
        self.participant_ids = (list(participant_ids) if participant_ids is not None
                                else [f"index {i}" for i in range(n)])
        if len(self.participant_ids) != n:
            raise ValueError(f"Got {n} images but {len(self.participant_ids)} participant IDs.")
        if targets is not None:
            targets = np.asarray(targets)
            if len(targets) != n:
                raise ValueError(f"Got {n} images but {len(targets)} targets.")
        self.targets = targets
        self.expected_shape = tuple(expected_shape) if expected_shape is not None else None
        self.target_dtype = target_dtype

    def __len__(self):
        return len(self.images)

    def load(self, i):
        """Image ``i`` as a float32 array ``(X, Y, Z)``, checked."""
        pid = self.participant_ids[i]
        if self.is_paths:
            return read_image(self.images[i], pid, self.expected_shape)
        img = np.asarray(self.images[i], dtype=np.float32)
        if self.expected_shape is not None and img.shape != self.expected_shape:
            raise ValueError(f"Image of {_describe(pid)} has shape {img.shape}; the model "
                             f"expects {self.expected_shape}.")
        if not np.isfinite(img).all():
            raise ValueError(f"Image of {_describe(pid)} contains NaN or infinite voxels.")
        return img

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.load(i))).unsqueeze(0)
        y = 0.0 if self.targets is None else self.targets[i]
        return x, torch.as_tensor(y, dtype=self.target_dtype)


def _worker_init(worker_id):  # keep each worker on one thread: decoding is the work
    torch.set_num_threads(1)


def make_loader(dataset, batch_size=25, *, shuffle=False, num_workers=0, seed=None,
                pin_memory=False, drop_last=False, prefetch_factor=None):
    """A DataLoader over ``dataset`` that is reproducible given ``seed``.

    ``num_workers > 0`` decodes images in worker processes (each limited to one torch
    thread), overlapping decoding with the network. A loader without shuffling draws
    nothing from torch's global generator (its workers' base seed comes from ``seed``, 0
    when not given).
    """
    generator = None
    if seed is None and not shuffle:
        seed = 0
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    kwargs = {}
    if num_workers > 0:
        kwargs["worker_init_fn"] = _worker_init
        kwargs["persistent_workers"] = False
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, pin_memory=pin_memory, drop_last=drop_last, **kwargs)
