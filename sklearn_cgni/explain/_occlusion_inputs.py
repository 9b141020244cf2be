"""Model access and input checks of :class:`~sklearn_cgni.explain.OcclusionExplainer` (not public).

Torch modules from fitted estimators, the canonical weights of a fitted CCA, the image grid
and loader, and the genotype checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------- model access
def _as_module(obj, attr, what):
    """A torch module from a module, or from a fitted estimator's attribute/method."""
    import torch

    if obj is None:
        return None
    if isinstance(obj, torch.nn.Module):
        return obj
    if attr is not None and hasattr(obj, attr):
        got = getattr(obj, attr)
        got = got() if callable(got) and not isinstance(got, torch.nn.Module) else got
        if isinstance(got, torch.nn.Module):
            return got
    raise TypeError(
        f"OcclusionExplainer: {what} must be a torch.nn.Module or a fitted estimator with "
        f"{attr!r}; got {type(obj).__name__}."
    )


def _device_of(module):
    try:
        return next(module.parameters()).device
    except StopIteration:
        import torch

        return torch.device("cpu")


def _canonical_weights(cca):
    """Imaging and genetic weights, each (n_latent, n_components), and the latent scales.

    The canonical variate of a view is ``((z - mean) / scale) @ weights``; ``scale`` is the
    standardisation of :class:`SparseCCA` (``x_std_``, ``y_std_``) and 1 otherwise.
    """
    sx = sy = None
    if isinstance(cca, (tuple, list)) and len(cca) == 2 and all(np.ndim(w) in (1, 2) for w in cca):
        wx, wy = (np.asarray(w, dtype=float) for w in cca)
    elif hasattr(cca, "x_weights_") and hasattr(cca, "y_weights_"):
        wx, wy = np.asarray(cca.x_weights_, dtype=float), np.asarray(cca.y_weights_, dtype=float)
        sx, sy = getattr(cca, "x_std_", None), getattr(cca, "y_std_", None)
    elif hasattr(cca, "weights_") and len(cca.weights_) == 2:
        wx, wy = (np.asarray(w, dtype=float) for w in cca.weights_)
    else:
        raise TypeError(
            "OcclusionExplainer: cca must be a fitted SparseCCA, a fitted two-view cca-zoo model "
            "(weights_), or a pair (imaging_weights, genetic_weights); got "
            f"{type(cca).__name__}. Is the CCA fitted?"
        )
    wx = wx.reshape(wx.shape[0], -1)
    wy = wy.reshape(wy.shape[0], -1)
    if wx.shape[1] != wy.shape[1]:
        raise ValueError(
            f"The imaging and genetic canonical weights have {wx.shape[1]} and {wy.shape[1]} "
            "components; they must match."
        )
    sx = np.ones(wx.shape[0]) if sx is None else np.asarray(sx, dtype=float)
    sy = np.ones(wy.shape[0]) if sy is None else np.asarray(sy, dtype=float)
    return wx, wy, sx, sy


# ---------------------------------------------------------------------- inputs
def _image_grid_and_loader(images, affine):
    """Shape, affine (or None) and a function returning images[a:b] as float32 (b-a, X, Y, Z).

    The images go through :func:`sklearn_cgni.io.check_images` (an ImageSource is used as is).
    """
    from ..io import check_images

    source = check_images(images, caller="OcclusionExplainer")
    if source.affine is not None and affine is not None and not np.allclose(affine, source.affine, atol=1e-3):
        raise ValueError(
            "OcclusionExplainer: the affine given to fit differs from the images' own affine "
            f"({source.describe(0)}); leave affine=None for NIfTI inputs."
        )

    def load(a, b):
        return np.stack([source.load(i) for i in range(a, b)])

    return source.shape, source.affine if source.affine is not None else affine, load, len(source)


def _expected_snp_names(encoder):
    """SNP names a fitted ContrastiveSNPEncoder-like estimator was trained on, else None."""
    names = getattr(encoder, "feature_names_in_", None)
    idx = getattr(encoder, "genetic_indices_", None)
    if names is None or idx is None:
        return None
    return [str(n) for n in np.asarray(names)[np.asarray(idx)]]


def _check_genotypes(genotypes):
    if isinstance(genotypes, pd.DataFrame):
        names = [str(c) for c in genotypes.columns]
        ids = [str(i) for i in genotypes.index]
        X = np.array(genotypes.to_numpy(dtype=np.float32, na_value=np.nan), copy=True)
    else:
        X = np.asarray(genotypes, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"OcclusionExplainer: genotypes must be 2-D (participants x SNPs); got shape {X.shape}.")
        names = [f"snp{j}" for j in range(X.shape[1])]
        ids = [str(i) for i in range(X.shape[0])]
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"OcclusionExplainer: genotypes has shape {X.shape}; need participants and SNPs.")
    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        pairs = [f"{ids[r]}/{names[c]}" for r, c in zip(rows[:10], cols[:10])]
        raise ValueError(
            f"OcclusionExplainer: genotypes hold {int(bad.sum())} missing call(s) (participant/SNP: "
            f"{pairs}{' ...' if bad.sum() > 10 else ''}). Impute first, e.g. with "
            "sklearn_cgni.genetics.SNPQualityFilter, as the encoder was trained on imputed dosages."
        )
    return X, names
