"""``image_cache`` stage: every image that passed QC decoded once into a float16 memory map, read by the CNNs."""

from __future__ import annotations

import logging
import os

import numpy as np

from ._base import register

log = logging.getLogger("sklearn_cgni.cli")


@register("image_cache", config=("stage1.image_cache",), after=("data",),
          enabled=lambda run: bool(run.cfg["stage1"]["image_cache"]), cost=0.2)
def _stage_image_cache(run, folder):
    """Decode the images that passed QC once, into ``<hash>.f16`` in this stage's folder (``stage1.image_cache``).

    The CNNs of the run (brain age, the WM folds, the genotype scorer and occlusion) then read their rows of this
    map (:meth:`~._base.Run.images`) instead of decoding each gzip NIfTI file at every epoch: 0.9 ms an image at
    24×28×24 and 4.4 ms at 41×48×39 on this project's CPU machine, where a stage-1 epoch took 1.14× less time on
    one thread (``benchmarks/results/image_cache.md``); at 128×141×128 decoding is what a GPU waits for. float16
    keeps 11 significant bits (relative error ≤ 4.9e-4): the CNNs' numbers change in the 3rd-4th digit. Disk:
    participants × voxels × 2 bytes (4.6 MB a participant at 128×141×128).
    """
    from ...io import check_images
    from ...io._cache import build_float16_cache

    parts, _, _ = run.data()
    ok = parts.index[parts["image_qc_passed"].to_numpy()]
    paths = parts.loc[ok, "image"]
    # the data stage checked that every header has one shape and one affine: the first image's header gives
    # them (no second pass over the headers), and decoding checks each image's shape again
    first = check_images(paths.iloc[:1], caller="sklearn-cgni run")
    threads = int(run.cfg["run"]["threads"] or 0) or min(4, os.cpu_count() or 1)
    cache = build_float16_cache([os.fspath(p) for p in paths], folder, [str(i) for i in ok],
                                expected_shape=first.shape, n_threads=threads)
    (folder / "participants.txt").write_text("\n".join(map(str, ok)) + "\n")
    name = os.path.basename(cache.filename)
    log.info("image cache: %d images decoded once into %s (%.1f MB, float16)", len(ok), name, cache.nbytes / 1e6)
    return {"file": name, "shape": [int(s) for s in cache.shape], "n_images": len(ok),
            "bytes": int(cache.nbytes), "dtype": str(np.dtype(cache.dtype)), "affine": first.affine.tolist()}
