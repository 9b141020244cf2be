"""The float16 memory-map cache of decoded NIfTI images (``ImageSource.cached``, ``cache_dir=``).

Part of the io layer: the estimators above read it through
:meth:`~sklearn_cgni.io.ImageSource.cached`.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ._images import _describe, check_image_headers, load_image

__all__ = ["build_float16_cache"]

_F16_MAX = float(np.finfo(np.float16).max)


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
            raise FileNotFoundError(f"Image not found: {_describe(p, pid)} does not exist.")
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
    if expected_shape is None:
        expected_shape = check_image_headers(paths, participant_ids)[0]  # headers only
    shape = (len(paths), *expected_shape)
    tmp = cache_dir / f"{key}.f16.partial"
    out = np.memmap(tmp, dtype=np.float16, mode="w+", shape=shape)

    def work(i):
        img = load_image(paths[i], ids[i], expected_shape=shape[1:])
        if np.abs(img).max() > _F16_MAX:
            raise ValueError(f"Image of {_describe(paths[i], ids[i])} has values beyond the "
                             f"float16 range (+-{_F16_MAX}); do not use the float16 cache.")
        out[i] = img

    with ThreadPoolExecutor(max(1, int(n_threads))) as pool:
        list(pool.map(work, range(len(paths))))
    out.flush()
    del out
    os.replace(tmp, data_file)
    meta_file.write_text(json.dumps({"shape": list(shape), "paths": paths}))
    return np.memmap(data_file, dtype=np.float16, mode="r", shape=shape)


