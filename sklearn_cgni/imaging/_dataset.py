"""Torch datasets and loaders over brain images given as NIfTI paths or an in-memory array.

Images are decoded one at a time (in DataLoader workers when ``num_workers > 0``), so memory
stays flat whatever the number of participants. When gzip decoding is slower than the
network consumes images (a GPU forward pass), :func:`build_float16_cache` (of the io layer,
re-exported here) decodes every image once into a float16 memory map; later epochs and later
``transform`` calls read the map.

Every error names the participant and the file (or the array index).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io import check_images
from ..io._cache import build_float16_cache

__all__ = [
    "ImageDataset",
    "build_float16_cache",
    "make_loader",
]

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
                pin_memory=False, drop_last=False, prefetch_factor=None, sampler=None):
    """A DataLoader over ``dataset`` that is reproducible given ``seed``.

    ``num_workers > 0`` decodes images in worker processes (each limited to one torch
    thread), overlapping decoding with the network. A loader without shuffling draws
    nothing from torch's global generator (its workers' base seed comes from ``seed``, 0
    when not given). ``sampler`` (e.g. a process's share under torchrun) replaces the order;
    then ``shuffle`` must be False.
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
    if sampler is not None:
        kwargs["sampler"] = sampler
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, pin_memory=pin_memory, drop_last=drop_last, **kwargs)
