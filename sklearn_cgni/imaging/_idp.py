"""The IDP baseline of brain-genotype scores: regional mean gray matter -> one linear model per SNP.

Imaging-derived phenotypes (IDPs) are the mean gray-matter density in each atlas region,
computed one image at a time (memory flat in the number of participants). A ridge regression
(dosage) or a multinomial logistic regression (genotype class) per SNP turns them into
scores, which go through the same cross-fitting (:func:`cross_fit_scores`) and association
analysis as the CNN's brain-genotype scores.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ..io import check_images
from ._genotype_scorer import check_genotype_targets

__all__ = ["RegionalMeans", "IDPGenotypeScorer", "make_idp_scorer", "atlas_on_grid"]


def atlas_on_grid(atlas, atlas_labels, shape, affine, *, caller="estimator"):
    """A labelled atlas on an image grid: ``Bunch(img, labels, name)``.

    ``atlas``: ``Bunch(img, labels)`` (as :func:`sklearn_cgni.io.load_atlas` and
    ``make_cohort`` return), a nibabel image or path (with ``atlas_labels``), or ``None``
    (AAL2, resampled to the images, which needs ``affine``). An atlas on another grid is
    resampled (nearest neighbour, with a warning) when ``affine`` is known, else an error.
    """
    import nibabel as nib

    from ..io import load_atlas

    if atlas is None:
        if atlas_labels is not None:
            raise ValueError(f"{caller}: atlas_labels were given without an atlas.")
        if affine is None:
            raise ValueError(
                f"{caller}: the default AAL atlas must be resampled to the images, which needs "
                f"their affine: give NIfTI paths, pass affine=..., or give an atlas on the image grid.")
        return load_atlas(target_img=(tuple(shape), affine))
    labels = atlas_labels
    if hasattr(atlas, "img") and hasattr(atlas, "labels"):
        img = atlas.img
        labels = atlas.labels if labels is None else labels
    else:
        img = nib.load(os.fspath(atlas)) if isinstance(atlas, (str, os.PathLike)) else atlas
        if labels is None:
            raise ValueError(f"{caller}: an atlas image needs atlas_labels (a table with columns "
                             f"'index' and 'name'), or pass a Bunch(img=..., labels=...).")
    if not hasattr(img, "affine"):
        raise TypeError(f"{caller}: atlas must be a labelled NIfTI image; got {type(img).__name__}.")
    same_shape = tuple(img.shape[:3]) == tuple(shape)
    same_affine = affine is None or np.allclose(img.affine, affine, atol=1e-3)
    name = getattr(atlas, "name", None) if hasattr(atlas, "labels") else None
    if same_shape and same_affine:
        return _named(load_atlas(img=img, labels=labels), name)
    if affine is None:
        raise ValueError(
            f"{caller}: the atlas grid {tuple(img.shape[:3])} differs from the images' "
            f"{tuple(shape)} and the images' affine is unknown, so the atlas cannot be resampled. "
            f"Pass affine=... or an atlas on the image grid.")
    warnings.warn(f"{caller}: the atlas grid (shape {tuple(img.shape[:3])}) differs from the "
                  f"images' (shape {tuple(shape)}); resampling the atlas (nearest neighbour).",
                  UserWarning, stacklevel=3)
    return _named(load_atlas(img=img, labels=labels, target_img=(tuple(shape), affine)), name)


def _named(result, name):
    """Keep the name of a given atlas Bunch (e.g. a cohort's ``atlas.name``)."""
    result.name = name or getattr(result, "name", None)
    return result


def _region_index(atlas, caller):
    """Flat voxel -> region position (-1 outside), region names and voxel counts."""
    data = np.asarray(atlas.img.dataobj).reshape(-1).astype(np.int64)
    labels = atlas.labels
    values = labels["index"].to_numpy().astype(np.int64)
    names = labels["name"].astype(str).to_numpy()
    pos = np.full(data.shape, -1, dtype=np.int64)
    lookup = {v: i for i, v in enumerate(values)}
    present = np.unique(data[data != 0])
    for v in present:
        if v in lookup:
            pos[data == v] = lookup[v]
    counts = np.bincount(pos[pos >= 0], minlength=len(values))
    empty = counts == 0
    if empty.all():
        raise ValueError(f"{caller}: no atlas region has a voxel on the image grid.")
    if empty.any():
        warnings.warn(f"{caller}: {int(empty.sum())} atlas region(s) have no voxel on the image "
                      f"grid and are left out: {names[empty].tolist()[:10]}.", UserWarning,
                      stacklevel=3)
        keep = np.flatnonzero(~empty)
        remap = np.full(len(values), -1)
        remap[keep] = np.arange(len(keep))
        pos = np.where(pos >= 0, remap[np.maximum(pos, 0)], -1)
        names, counts = names[keep], counts[keep]
    return pos, names, counts


class RegionalMeans(TransformerMixin, BaseEstimator):
    """Mean gray matter per atlas region (IDPs), streamed one image at a time.

    Parameters
    ----------
    atlas : Bunch, nibabel image, path or None, default=None
        ``Bunch(img, labels)`` (e.g. ``make_cohort(...).atlas``), a labelled image or path
        (with ``atlas_labels``), or ``None`` for AAL2 resampled to the images (needs their
        affine: NIfTI paths or ``affine``).
    atlas_labels : path or DataFrame, default=None
        Label table (``index``, ``name``) for an atlas given as an image.
    affine : ndarray of shape (4, 4), default=None
        Affine of array images (NIfTI paths carry their own).

    Attributes
    ----------
    atlas_ : Bunch
        The atlas on the image grid.
    region_names_ : ndarray of str
    region_sizes_ : ndarray of int
        Voxels per region.
    image_shape_ : tuple of 3 int

    Examples
    --------
    >>> import numpy as np, nibabel as nib, pandas as pd
    >>> from sklearn.utils import Bunch
    >>> from sklearn_cgni.imaging import RegionalMeans
    >>> lab = np.zeros((4, 4, 4), dtype=np.int16); lab[:2] = 1; lab[2:] = 2
    >>> atlas = Bunch(img=nib.Nifti1Image(lab, np.eye(4)),
    ...               labels=pd.DataFrame({"index": [1, 2], "name": ["A", "B"]}))
    >>> X = np.stack([np.full((4, 4, 4), v, dtype="float32") for v in (0.2, 0.5)])
    >>> RegionalMeans(atlas).fit_transform(X).round(2).tolist()
    [[0.2, 0.2], [0.5, 0.5]]
    """

    _parameter_constraints: dict = {
        "atlas": "no_validation",
        "atlas_labels": [str, os.PathLike, pd.DataFrame, None],
        "affine": ["array-like", None],
    }

    def __init__(self, atlas=None, *, atlas_labels=None, affine=None):
        self.atlas = atlas
        self.atlas_labels = atlas_labels
        self.affine = affine

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Put the atlas on the images' grid (reads image headers, decodes no voxel)."""
        images = check_images(X, caller=type(self).__name__)
        shape, affine = images.shape, images.affine
        if affine is None and self.affine is not None:
            affine = np.asarray(self.affine, dtype=float)
        self.atlas_ = atlas_on_grid(self.atlas, self.atlas_labels, shape, affine,
                                    caller=type(self).__name__)
        self._pos, self.region_names_, self.region_sizes_ = _region_index(
            self.atlas_, type(self).__name__)
        self.image_shape_ = shape
        self.n_features_out_ = len(self.region_names_)
        return self

    def transform(self, X):
        """Regional means, shape (n, n_regions), float64 (a DataFrame for Series/DataFrame input)."""
        check_is_fitted(self, "atlas_")
        images = check_images(X, expected_shape=self.image_shape_, caller=type(self).__name__)
        inside = self._pos >= 0
        pos = self._pos[inside]
        out = np.empty((len(images), self.n_features_out_))
        for i in range(len(images)):
            img = images.load(i).reshape(-1)[inside].astype(np.float64)
            out[i] = np.bincount(pos, weights=img, minlength=self.n_features_out_) / self.region_sizes_
        if isinstance(X, (pd.Series, pd.DataFrame)):
            return pd.DataFrame(out, index=X.index, columns=self.region_names_)
        return out

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "atlas_")
        return np.asarray(self.region_names_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


class IDPGenotypeScorer(TransformerMixin, BaseEstimator):
    """One linear model per SNP on 2-D features (IDPs): the baseline brain-genotype scores.

    Ridge regression of the dosage (``task="dosage"``) or multinomial logistic regression of
    the genotype class (``task="classes"``; the score is the expected minor-allele count
    ``sum_k k p_k``), each fitted on the participants with an observed call for that SNP
    (missing calls, NaN, are left out per SNP, as the CNN masks them out of its loss).

    Parameters
    ----------
    task : {"dosage", "classes"}, default="dosage"
    alpha : float, default=1.0
        Ridge penalty (dosage).
    C : float, default=1.0
        Inverse L2 penalty of the logistic regression (classes).
    max_iter : int, default=1000
        Logistic regression iterations.

    Attributes
    ----------
    snp_names_ : ndarray of str
    n_snps_ : int
    estimators_ : list of fitted Ridge or LogisticRegression, one per SNP
    n_iter_ : int
        Most solver iterations over the per-SNP logistic regressions (1 for ridge).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.imaging import IDPGenotypeScorer
    >>> rng = np.random.default_rng(0)
    >>> G = rng.integers(0, 3, size=(100, 3)).astype(float)
    >>> idp = rng.normal(size=(100, 10)); idp[:, 0] += G[:, 0]
    >>> scorer = IDPGenotypeScorer().fit(idp, G)
    >>> scorer.transform(idp).shape
    (100, 3)
    """

    _parameter_constraints: dict = {
        "task": [StrOptions({"dosage", "classes"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, task="dosage", *, alpha=1.0, C=1.0, max_iter=1000):
        self.task = task
        self.alpha = alpha
        self.C = C
        self.max_iter = max_iter

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit one model per SNP on the participants with an observed call.

        Parameters
        ----------
        X : array-like of shape (n, n_features)
            IDPs (e.g. :class:`RegionalMeans` output, standardised).
        y : DataFrame or array-like of shape (n, n_snps) or (n,)
            Genotypes G; NaN = missing call. SNPs with no variation raise an error.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=np.float64)
        values, names = check_genotype_targets(y, None, task=self.task, caller=type(self).__name__)
        if values.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but G has {values.shape[0]}.")
        self.snp_names_ = names
        self.n_snps_ = len(names)
        self.estimators_ = []
        n_iter = [1]
        for j in range(self.n_snps_):
            ok = ~np.isnan(values[:, j])
            if self.task == "dosage":
                est = Ridge(alpha=self.alpha)
                est.fit(X[ok], values[ok, j])
            else:
                est = LogisticRegression(C=self.C, max_iter=self.max_iter)
                est.fit(X[ok], values[ok, j].astype(int))
                n_iter.append(int(np.max(est.n_iter_)))
            self.estimators_.append(est)
        self.n_iter_ = max(n_iter)
        return self

    def transform(self, X):
        """Scores, shape (n, n_snps_): predicted dosage or expected minor-allele count."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.empty((X.shape[0], self.n_snps_))
        for j, est in enumerate(self.estimators_):
            if self.task == "dosage":
                out[:, j] = est.predict(X)
            else:
                out[:, j] = est.predict_proba(X) @ est.classes_.astype(np.float64)
        return out

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "estimators_")
        return np.asarray(self.snp_names_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        return tags


def make_idp_scorer(atlas=None, task="dosage", *, atlas_labels=None, affine=None, alpha=1.0,
                    C=1.0):
    """The IDP baseline as one estimator: images -> regional means -> scaling -> per-SNP model.

    ``fit(images, G)`` / ``transform(images)`` like :class:`BrainGenotypeScorer`, so
    :func:`cross_fit_scores` treats both the same way.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
    """
    return Pipeline([
        ("idp", RegionalMeans(atlas, atlas_labels=atlas_labels, affine=affine)),
        ("scale", StandardScaler()),
        ("model", IDPGenotypeScorer(task, alpha=alpha, C=C)),
    ])

