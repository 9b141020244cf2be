"""Gradient saliency of brain-genotype scores (second paper): where in the brain each score looks.

For every selected score (one per SNP) and every participant, captum computes an attribution
map on the input grid with one of

* ``"saliency"``: the gradient of the score with respect to the voxels (Simonyan et al.);
* ``"input_x_gradient"``: gradient times the voxel value;
* ``"integrated_gradients"``: the path integral of the gradient from a constant baseline image
  to the participant's image (Sundararajan et al.), ``n_steps`` Riemann steps;

the maps are averaged over participants (of their absolute values by default, so that
opposite signs in different participants do not cancel), written as NIfTI images on the
input grid and summarised per atlas region (mean attribution over the region's voxels; the
top regions per score).
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

__all__ = ["SaliencyExplainer"]

_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")


def _score_module(model, input_space):
    """``(module, snp names)`` from a fitted BrainGenotypeScorer or a torch module."""
    import torch

    if isinstance(model, torch.nn.Module):
        names = getattr(model, "snp_names", None)
        return model.eval(), (None if names is None else [str(s) for s in names])
    if hasattr(model, "score_module"):
        check_is_fitted(model, "net_")
        return model.score_module(input_space=input_space), [str(s) for s in model.snp_names_]
    raise TypeError(
        "SaliencyExplainer: model must be a fitted BrainGenotypeScorer (anything with "
        "score_module()) or a torch.nn.Module mapping images to (batch, n_scores); got "
        f"{type(model).__name__}.")


def _centroid(mag, ijk):
    """Sub-voxel peak: the centroid of ``mag`` over the 3x3x3 neighbourhood of voxel ``ijk``.

    Weights are the magnitudes less the neighbourhood's smallest finite one (so a flat
    background does not pull the estimate to the voxel centre); ``-inf`` (masked) voxels get
    none. Falls back to the voxel itself when every weight is zero.
    """
    lo = [max(c - 1, 0) for c in ijk]
    block = mag[tuple(slice(a, c + 2) for a, c in zip(lo, ijk))]
    finite = np.isfinite(block)
    w = np.where(finite, block - block[finite].min(), 0.0)
    if not w.sum() > 0:
        return np.asarray(ijk, dtype=float)
    grid = np.indices(block.shape).reshape(3, -1) + np.asarray(lo)[:, None]
    return grid @ w.ravel() / w.sum()


class SaliencyExplainer(BaseEstimator):
    """Gradient saliency maps of brain-genotype scores, averaged over participants.

    Parameters
    ----------
    model : BrainGenotypeScorer or torch.nn.Module
        A fitted scorer (its :meth:`~sklearn_cgni.imaging.BrainGenotypeScorer.score_module`
        is explained: expected dosage per SNP), or any module ``(batch, 1, X, Y, Z) ->
        (batch, n_scores)`` (an optional ``snp_names`` attribute names the scores).
    method : {"saliency", "input_x_gradient", "integrated_gradients"}, default="saliency"
        captum's ``Saliency``, ``InputXGradient`` or ``IntegratedGradients``.
    snps : sequence of str or int, default=None
        Scores to explain (SNP ids or column indices); ``None``: all. A SNP the model has no
        output for raises ``ValueError``.
    atlas : Bunch, nibabel image, path or None, default=None
        Regions for the summary: ``Bunch(img, labels)``, an image with ``atlas_labels``, or
        ``None`` for AAL2 resampled to the images (needs their affine). Resampled with a
        warning when on another grid.
    atlas_labels : path or DataFrame, default=None
    absolute : bool, default=True
        Average the absolute attributions (magnitude maps). ``False`` averages signed
        attributions (for ``input_x_gradient`` / ``integrated_gradients``: positive where
        more gray matter raises the score). For ``"saliency"`` the signed mean gradient keeps
        what is common to the participants and lets their noise cancel; the mean of
        ``integrated_gradients`` in the standardised input space tends to 0 when signed
        (the image's deviations from the mean change sign between participants), so keep it
        absolute.
    input_space : {"standardized", "raw"}, default="standardized"
        For a scorer that z-scores voxels (``standardize_voxels=True``): attribute with
        respect to the standardised image the network sees (per SD of each voxel, deviations
        from the training mean image; comparable across voxels whatever their variance), or
        with respect to raw gray-matter values (gradients are then divided by each voxel's
        SD, which favours low-variance voxels). For a scorer that reads raw images, the
        ``"saliency"`` maps are multiplied by each voxel's SD over the explained images, which
        gives the same per-SD gradient. The other methods stay in raw space. No effect for
        torch modules.
    baseline : float, default=0.0
        Baseline image value of integrated gradients (in ``input_space``: with
        ``"standardized"``, 0 is the training mean image).
    n_steps : int, default=32
        Integration steps of integrated gradients.
    batch_size : int, default=4
        Participants per backward pass.
    top_k : int, default=5
        Regions listed per score in ``top_regions_``.
    peak : {"centroid", "voxel"}, default="centroid"
        World coordinates of each map's peak in ``peaks_``: ``"voxel"``, the centre of the voxel
        of largest magnitude; ``"centroid"``, the magnitude-weighted centroid of its 3x3x3
        neighbourhood (each weight less the neighbourhood's minimum, voxels outside the atlas
        left out): a sub-voxel estimate, which matters when voxels are large against the
        effect (8 mm voxels at 24x28x24). Both are measured against planted centres in
        ``benchmarks/bench_brain_genotype_scores.py``.
    smoothing_fwhm : float or None, default=None
        Full width at half maximum, in mm, of a Gaussian that smooths each mean map
        (:func:`nilearn.image.smooth_img`) before its regions and peak are read; needs the
        images' affine. Gradients of a CNN with max-pooling are speckled at the scale of its
        pooling windows; a kernel about the size of the effect looked for (a matched filter)
        removes that. ``benchmarks/results/brain_genotype_scores.md`` measures it against
        planted focal clusters.

    Attributes
    ----------
    maps_ : ndarray of shape (n_scores, X, Y, Z), float32
        Mean attribution over participants per score.
    score_names_ : list of str
    affine_ : ndarray of shape (4, 4) or None
        Affine of the input grid (from NIfTI inputs or ``fit(..., affine=...)``).
    atlas_ : Bunch or None
    region_attributions_ : DataFrame of shape (n_regions, n_scores) or None
        Mean attribution over each region's voxels (index: region names).
    top_regions_ : DataFrame or None
        ``score``, ``rank`` (1 = strongest), ``region``, ``attribution`` and ``zscore``
        (of the region's attribution among all regions for that score).
    peaks_ : DataFrame
        One row per score: ``score``, the voxel ``i, j, k`` where the mean map's magnitude is
        largest (inside the atlas's regions when there is an atlas, so that edge artefacts
        outside the brain do not count), the peak's world coordinates ``x, y, z`` in mm (see
        ``peak``; NaN without an affine) and the map's ``value`` at that voxel. See
        :meth:`peak_distances`.
    n_participants_ : int

    Examples
    --------
    >>> import numpy as np, nibabel as nib, pandas as pd, torch
    >>> from sklearn.utils import Bunch
    >>> from sklearn_cgni.explain import SaliencyExplainer
    >>> lab = np.zeros((4, 4, 4), dtype=np.int16); lab[:2] = 1; lab[2:] = 2
    >>> atlas = Bunch(img=nib.Nifti1Image(lab, np.eye(4)),
    ...               labels=pd.DataFrame({"index": [1, 2], "name": ["A", "B"]}))
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.zero_(); _ = net[1].weight[0, :32].fill_(1.0)  # score 0 sees A
    >>> X = np.random.default_rng(0).normal(size=(6, 4, 4, 4)).astype("float32")
    >>> sal = SaliencyExplainer(net, atlas=atlas).fit(X, affine=np.eye(4))
    >>> sal.maps_.shape
    (2, 4, 4, 4)
    >>> sal.top_regions_.query("score == 'score0'")["region"].iloc[0]
    'A'
    >>> bool(sal.peaks_.loc[0, "i"] < 2)  # score 0's peak lies in region A (i < 2)
    True
    >>> sal.peak_distances({"score0": [[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]}).columns.tolist()
    ['score', 'distance_mm', 'nearest', 'x', 'y', 'z']
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "method": [StrOptions(set(_METHODS))],
        "snps": ["array-like", str, Integral, None],
        "atlas": "no_validation",
        "atlas_labels": [str, os.PathLike, pd.DataFrame, None],
        "absolute": ["boolean"],
        "input_space": [StrOptions({"standardized", "raw"})],
        "baseline": [Real],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "peak": [StrOptions({"centroid", "voxel"})],
        "smoothing_fwhm": [Interval(Real, 0, None, closed="left"), None],
    }

    def __init__(self, model, *, method="saliency", snps=None, atlas=None, atlas_labels=None,
                 absolute=True, input_space="standardized", baseline=0.0, n_steps=32, batch_size=4, top_k=5,
                 peak="centroid", smoothing_fwhm=None):
        self.model = model
        self.method = method
        self.snps = snps
        self.atlas = atlas
        self.atlas_labels = atlas_labels
        self.absolute = absolute
        self.input_space = input_space
        self.baseline = baseline
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.top_k = top_k
        self.peak = peak
        self.smoothing_fwhm = smoothing_fwhm

    # ------------------------------------------------------------------ helpers
    def _targets(self, names, n_out):
        snps = self.snps
        if snps is None:
            return list(range(n_out)), (names or [f"score{j}" for j in range(n_out)])
        if isinstance(snps, (str, Integral)):
            snps = [snps]
        snps = list(snps)
        if all(isinstance(s, (Integral, np.integer)) for s in snps):
            bad = [int(s) for s in snps if not 0 <= int(s) < n_out]
            if bad:
                raise ValueError(f"SaliencyExplainer: score indices {bad} are out of range; the "
                                 f"model has {n_out} outputs (SNPs its head was fitted for).")
            idx = [int(s) for s in snps]
            return idx, [(names[j] if names else f"score{j}") for j in idx]
        if names is None:
            raise ValueError("SaliencyExplainer: snps given by name but the model has no SNP "
                             "names; give column indices.")
        lookup = {n: j for j, n in enumerate(names)}
        missing = [s for s in snps if str(s) not in lookup]
        if missing:
            raise ValueError(f"SaliencyExplainer: {len(missing)} SNP(s) are not among the "
                             f"{len(names)} the model was fitted for: {missing[:10]}.")
        return [lookup[str(s)] for s in snps], [str(s) for s in snps]

    def _attributor(self, module):
        from captum.attr import InputXGradient, IntegratedGradients, Saliency

        if self.method == "saliency":
            sal = Saliency(module)
            return lambda x, t: sal.attribute(x, target=t, abs=False)
        if self.method == "input_x_gradient":
            ixg = InputXGradient(module)
            return lambda x, t: ixg.attribute(x, target=t)
        ig = IntegratedGradients(module)
        return lambda x, t: ig.attribute(x, baselines=float(self.baseline), target=t,
                                         n_steps=self.n_steps,
                                         internal_batch_size=max(self.batch_size, 1) * 4)

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, images, y=None, *, affine=None):
        """Compute the mean attribution map of each score over the given participants.

        Parameters
        ----------
        images : array (n, X, Y, Z) / (n, 1, X, Y, Z), or sequence / Series of NIfTI paths
            The images the scores are explained on (e.g. held-out participants).
        y : ignored
        affine : ndarray of shape (4, 4), optional
            Affine of array images (NIfTI inputs carry their own; a different one raises).

        Returns
        -------
        self
        """
        import torch

        from ..imaging._dataset import ImageDataset, make_loader
        from ..imaging._idp import _region_index, atlas_on_grid
        from ..io import check_images

        module, names = _score_module(self.model, self.input_space)
        to_input = getattr(module, "to_model_input", None) or (lambda x: x)
        source = check_images(images, caller=type(self).__name__)
        dataset = ImageDataset(source)
        shape = source.shape
        if source.affine is not None and affine is not None and not np.allclose(affine, source.affine, atol=1e-3):
            raise ValueError("SaliencyExplainer: the affine given to fit differs from the "
                             f"images' own ({source.describe(0)}); leave affine=None for NIfTI inputs.")
        self.affine_ = source.affine if source.affine is not None else \
            (None if affine is None else np.asarray(affine, dtype=float))
        if self.smoothing_fwhm and self.affine_ is None:  # refused before the gradients are computed
            raise ValueError("SaliencyExplainer: smoothing_fwhm is in mm and needs the images' affine; give NIfTI "
                             "images or fit(..., affine=...).")

        device = next(module.parameters()).device
        with torch.no_grad():  # the number of scores, from the shape alone (no image decoded twice)
            n_out = module(to_input(torch.zeros((1, 1, *shape), device=device))).shape[1]
        targets, self.score_names_ = self._targets(names, n_out)
        attribute = self._attributor(module)
        sums = np.zeros((len(targets), *shape), dtype=np.float64)
        # a raw-image scorer: per-SD gradients are the raw ones times each voxel's SD
        per_sd = (self.input_space == "standardized" and self.method == "saliency"
                  and hasattr(self.model, "score_module") and not getattr(module, "standardized_input", False))
        moments = np.zeros((2, *shape), dtype=np.float64)
        for xb, _ in make_loader(dataset, self.batch_size):
            with torch.no_grad():
                xb = to_input(xb.to(device))
            if per_sd:
                x64 = xb.detach()[:, 0].double().cpu().numpy()
                moments += (x64.sum(axis=0), (x64 * x64).sum(axis=0))
            xb = xb.detach().requires_grad_(True)
            for k, t in enumerate(targets):
                a = attribute(xb, t).detach()
                if self.absolute:
                    a = a.abs()
                sums[k] += a.sum(dim=0)[0].double().cpu().numpy()
        self.n_participants_ = len(dataset)
        mean_maps = sums / self.n_participants_
        if per_sd:
            m1, m2 = moments / self.n_participants_
            mean_maps *= np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
        self.maps_ = self._smoothed(mean_maps).astype(np.float32)

        self.atlas_ = self.region_attributions_ = self.top_regions_ = None
        self._set_peaks(None)
        if self.atlas is None and self.affine_ is None:
            warnings.warn("SaliencyExplainer: no atlas and no affine (array images without "
                          "fit(..., affine=...)), so no region summary was computed.",
                          UserWarning, stacklevel=2)
            return self
        self.atlas_ = atlas_on_grid(self.atlas, self.atlas_labels, shape, self.affine_,
                                    caller=type(self).__name__)
        pos, region_names, sizes = _region_index(self.atlas_, type(self).__name__)
        inside = pos >= 0
        self._set_peaks(inside.reshape(shape))
        flat = self.maps_.reshape(len(targets), -1)[:, inside].astype(np.float64)
        means = np.stack([np.bincount(pos[inside], weights=row, minlength=len(sizes)) / sizes
                          for row in flat], axis=1)
        self.region_attributions_ = pd.DataFrame(
            means, index=pd.Index(region_names, name="region"), columns=self.score_names_)
        rows = []
        for name in self.score_names_:
            col = self.region_attributions_[name]
            key = col if self.absolute else col.abs()
            sd = col.std()
            z = (col - col.mean()) / sd if sd > 0 else col * 0.0
            for rank, region in enumerate(key.sort_values(ascending=False).index[: self.top_k], 1):
                rows.append({"score": name, "rank": rank, "region": region,
                             "attribution": float(col[region]), "zscore": float(z[region])})
        self.top_regions_ = pd.DataFrame(rows)
        return self

    def _smoothed(self, maps):
        """Each mean map smoothed by ``smoothing_fwhm`` mm (nilearn), or as it is."""
        if not self.smoothing_fwhm:
            return maps
        import nibabel as nib
        from nilearn.image import smooth_img

        stack = nib.Nifti1Image(np.moveaxis(maps, 0, -1).astype(np.float64), self.affine_)
        return np.moveaxis(np.asarray(smooth_img(stack, self.smoothing_fwhm).dataobj), -1, 0)

    def _set_peaks(self, mask):
        """``peaks_``: the voxel of largest magnitude of each mean map (within ``mask`` if given)."""
        rows = []
        for name, m in zip(self.score_names_, self.maps_):
            mag = np.abs(m).astype(np.float64)
            if mask is not None and mask.any():
                mag = np.where(mask, mag, -np.inf)
            ijk = np.unravel_index(int(np.argmax(mag)), m.shape)
            pos = _centroid(mag, ijk) if self.peak == "centroid" else np.asarray(ijk, dtype=float)
            xyz = (self.affine_ @ np.r_[pos, 1.0])[:3] if self.affine_ is not None else [np.nan] * 3
            rows.append({"score": name, "i": int(ijk[0]), "j": int(ijk[1]), "k": int(ijk[2]),
                         "x": float(xyz[0]), "y": float(xyz[1]), "z": float(xyz[2]), "value": float(m[ijk])})
        self.peaks_ = pd.DataFrame(rows)

    def peak_distances(self, centers):
        """Distance in mm from each score's saliency peak to the nearest of its given centers.

        Parameters
        ----------
        centers : dict
            Score name -> array-like of shape (n_centers, 3) of world coordinates in mm (for
            example the planted clusters of a simulated cohort,
            ``ground_truth["focal_effects"]``). Scores not in the dict are left out.

        Returns
        -------
        distances : DataFrame
            ``score``, ``distance_mm`` (to the nearest center), ``nearest`` (its position in
            that score's list) and the peak's ``x, y, z``.
        """
        check_is_fitted(self, "maps_")
        if self.affine_ is None:
            raise ValueError("SaliencyExplainer: peak distances need world coordinates; the input grid's "
                             "affine is unknown (pass fit(..., affine=...) for array images).")
        rows = []
        peaks = self.peaks_.set_index("score")
        for name, c in centers.items():
            if str(name) not in peaks.index:
                continue
            c = np.atleast_2d(np.asarray(c, dtype=float))
            if c.shape[1] != 3:
                raise ValueError(f"peak_distances: centers of {name!r} must have 3 coordinates; got shape {c.shape}.")
            p = peaks.loc[str(name), ["x", "y", "z"]].to_numpy(dtype=float)
            d = np.linalg.norm(c - p, axis=1)
            rows.append({"score": str(name), "distance_mm": float(d.min()), "nearest": int(np.argmin(d)),
                         "x": p[0], "y": p[1], "z": p[2]})
        return pd.DataFrame(rows, columns=["score", "distance_mm", "nearest", "x", "y", "z"])

    # ------------------------------------------------------------------ output
    def _index(self, score):
        check_is_fitted(self, "maps_")
        if isinstance(score, (Integral, np.integer)):
            if not 0 <= int(score) < len(self.score_names_):
                raise ValueError(f"score index {score} out of range (0..{len(self.score_names_) - 1}).")
            return int(score)
        if str(score) not in self.score_names_:
            raise ValueError(f"{score!r} is not an explained score; explained: {self.score_names_[:10]}.")
        return self.score_names_.index(str(score))

    def to_nifti(self, score):
        """The mean attribution map of one score (name or position) as a NIfTI image."""
        import nibabel as nib

        k = self._index(score)
        if self.affine_ is None:
            raise ValueError("SaliencyExplainer: the input grid's affine is unknown (array "
                             "images): pass fit(..., affine=...) to write NIfTI maps.")
        return nib.Nifti1Image(self.maps_[k], self.affine_)

    def write_maps(self, output_dir, prefix="saliency_"):
        """Write one ``<prefix><score>.nii.gz`` per explained score; returns the paths."""
        import nibabel as nib

        os.makedirs(output_dir, exist_ok=True)
        paths = []
        for name in self.score_names_:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            path = os.path.join(os.fspath(output_dir), f"{prefix}{safe}.nii.gz")
            nib.save(self.to_nifti(name), path)
            paths.append(path)
        return paths

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags
