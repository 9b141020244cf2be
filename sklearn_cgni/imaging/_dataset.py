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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io import check_images, load_image
from ..io._images import _describe

__all__ = [
    "ImageDataset",
    "build_float16_cache",
    "make_loader",
]

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
        from ..io import check_images

        expected_shape = check_images(paths, participant_ids=participant_ids).shape  # headers only
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


class ImageDataset(Dataset):
    """A torch Dataset of ``(image, target)`` pairs over an :class:`~sklearn_cgni.io.ImageSource`.

    Parameters
    ----------
    images : ImageSource, or anything :func:`~sklearn_cgni.io.check_images` accepts
        An array (float32/float16/memmap) is sliced one image at a time (a memory map stays
        on disk); paths are decoded on access (:meth:`ImageSource.load`).
    targets : array-like of shape (n,), optional
        Returned as the second element; ``0.0`` when omitted (prediction).
    participant_ids : sequence of str, optional
        Used in error messages (when ``images`` is not an ImageSource).
    expected_shape : tuple of 3 int, optional
        Every image must have this shape; a mismatch raises ``ValueError`` naming the
        participant and file.
    target_dtype : torch dtype, default=torch.float32

    Items are ``(tensor (1, X, Y, Z) float32, target tensor)``.
    """

    def __init__(self, images, targets=None, participant_ids=None, expected_shape=None,
                 target_dtype=torch.float32):
        self.source = check_images(images, participant_ids=participant_ids, expected_shape=expected_shape,
                                   caller=type(self).__name__)
        n = len(self.source)
        if targets is not None:
            targets = np.asarray(targets)
            if len(targets) != n:
                raise ValueError(f"Got {n} images but {len(targets)} targets.")
        self.targets = targets
        self.target_dtype = target_dtype

    @property
    def participant_ids(self):
        return self.source.participant_ids

    def __len__(self):
        return len(self.source)

    def load(self, i):
        """Image ``i`` as a float32 array ``(X, Y, Z)``, checked."""
        return self.source.load(i)

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
