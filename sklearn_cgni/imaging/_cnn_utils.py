"""Data and weights helpers of the image CNN estimators (not public).

The training data loader, the check that images and targets are aligned, the voxel
statistics of the input standardisation and the copy of transferred backbone blocks.
"""

from __future__ import annotations

import numpy as np

from ..nn._cnn import BrainCNN


def _train_loader(dataset, batch_size=25, **kwargs):
    """skorch ``iterator_train``: a DataLoader that drops a final batch of one image.

    BatchNorm cannot train on one value per channel (the last blocks are 1x1x1 at small
    shapes); with shuffling, the dropped image differs per epoch.

    Under torchrun (:func:`~sklearn_cgni.utils._distributed.data_parallel`) the loader reads
    this process's share of the epoch order, drawn from the same generator
    (:class:`~sklearn_cgni.utils._distributed.GeneratorDistributedSampler`), ``batch_size``
    images per process and step.
    """
    from torch.utils.data import DataLoader

    from ..utils._distributed import GeneratorDistributedSampler, data_parallel

    n = len(dataset)
    if data_parallel():
        sampler = GeneratorDistributedSampler(dataset, generator=kwargs.get("generator"),
                                              shuffle=kwargs.pop("shuffle", False))
        kwargs["sampler"] = sampler
        n = len(sampler)
    drop_last = n > batch_size and n % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **kwargs)


def _check_aligned(X, y, caller):
    """If both X and y carry a pandas index, they must list the same participants in order."""
    xi, yi = getattr(X, "index", None), getattr(y, "index", None)
    if xi is None or yi is None or not hasattr(y, "to_numpy"):
        return
    if len(xi) == len(yi) and not xi.equals(yi):
        diff = [(a, b) for a, b in zip(xi, yi) if a != b][:3]
        raise ValueError(
            f"{caller}: the index of X and of y differ (first mismatches, X vs y: {diff}). "
            f"Align images and targets by participant ID first (e.g. y.loc[X.index])."
        )


def _voxel_statistics(source):
    """Voxel-wise mean and SD of the images of an ``ImageSource`` (one streamed pass, float64 sums).

    The SD has a floor of a tenth of the median positive SD, so that voxels outside the
    brain (constant) do not blow up after standardisation.
    """
    total = sq = None
    for i in range(len(source)):
        img = source.load(i).astype(np.float64)
        if total is None:
            total, sq = np.zeros_like(img), np.zeros_like(img)
        total += img
        sq += img * img
    n = len(source)
    mean = total / n
    sd = np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
    positive = sd[sd > 0]
    floor = 0.1 * (np.median(positive) if positive.size else 1.0)
    return mean.astype(np.float32), np.maximum(sd, floor).astype(np.float32)


def _transfer_blocks(module, source_state, n_blocks, freeze=False):
    """Copy the first ``n_blocks`` backbone blocks of ``source_state`` into ``module``.

    When both networks standardise their input voxel by voxel, the source's voxel mean and
    scale (its :class:`~sklearn_cgni.nn.VoxelStandardize`) are copied too: the transferred
    first block was trained on that input scale. ``freeze=True`` then freezes the copied
    blocks (:meth:`CNNBackbone3d.freeze_blocks`). When only one of the two standardises, the
    copied blocks would read input on another scale than they were trained on: a warning says so.
    """
    import warnings

    source_state = BrainCNN.upgrade_state_dict(source_state)
    src, own_std = BrainCNN.state_dict_standardizes(source_state), bool(getattr(module, "standardizes_input", False))
    if n_blocks and src != own_std:
        warnings.warn(
            f"The {n_blocks} transferred block(s) were trained on {'voxel-standardised' if src else 'raw'} images, "
            f"but this network {'standardises' if own_std else 'does not standardise'} its input voxel by voxel "
            f"(standardize_voxels={own_std}); set standardize_voxels={src} to give them the input they learnt from.",
            UserWarning, stacklevel=3)
    own = module.state_dict()
    prefixes = tuple(f"backbone.blocks.{b}." for b in range(n_blocks))
    for key in own:
        if key.startswith(prefixes) or (n_blocks and key.startswith("voxel.") and key in source_state):
            own[key] = source_state[key].clone()
    module.load_state_dict(own)
    if freeze:
        module.backbone.freeze_blocks(n_blocks)
    return module
