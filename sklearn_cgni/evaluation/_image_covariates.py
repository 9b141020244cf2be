"""Regress covariates out of every voxel of brain images, fitted on the training fold only.

:class:`CovariateRegressor` adjusts a feature table. A CNN that is fine-tuned on images has
no feature table to adjust before it: its input is the voxels. :class:`ImageCovariateRegressor`
fits, on the training participants only, one least-squares regression per voxel of the
image intensity on the covariates and returns the residual images (plus the training mean
image), ready for :class:`~sklearn_cgni.imaging.ImagingCNNClassifier`. This is the
"confound regression" of Snoek et al. (2019, NeuroImage 184:741) done inside each fold,
which they show removes the linear confound without the leakage of adjusting the whole
data set at once.

Images are read one at a time (two passes over the training images: coefficients, then
residuals), so memory holds the coefficient maps and the output, never a voxel matrix. The
output is an in-memory array, a float32 memory map on disk (``output_dir``), or, with
``lazy=True``, an :class:`~sklearn_cgni.io.ImageSource` that adjusts each image when a model
reads it (nothing stored: what ``sklearn-cgni run`` uses, reading its float16 image cache).
"""

import os
import uuid
from numbers import Integral
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import _fit_context
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ..io import check_images
from ._covariates import CovariateRegressor

__all__ = ["ImageCovariateRegressor", "adjusted_image_scores"]


class ImageCovariateRegressor(CovariateRegressor, auto_wrap_output_keys=None):
    """Remove the linear effect of covariates from every voxel, learned on the training images.

    For every voxel ``v``, ``fit`` solves ``x_v = b0_v + C @ beta_v`` by least squares on
    the training participants, where ``C`` holds the covariates (continuous ones as they
    are, categorical ones one-hot encoded with the first level as reference).
    ``transform`` returns the images ``x - (C - mean_train(C)) @ beta``: the residual plus
    the training mean image, so intensities keep their scale and range. Coefficients never
    use the participants being transformed.

    Parameters
    ----------
    covariates : list of str, default=("age", "sex")
        Covariate columns of ``X``.
    categorical : list of str, optional
        Covariates to one-hot encode (e.g. ``"site"``); non-numeric columns are treated as
        categorical anyway.
    image_column : str, optional
        The column of ``X`` holding the NIfTI paths. By default the one column of ``X``
        that is not a covariate (more than one is an error).
    output_dir : str or path-like, optional
        Write each output as a float32 ``.npy`` memory map in this folder (one file per
        ``transform`` call; the files are not removed, the folder is the caller's) instead
        of returning an in-memory array. Use it when
        ``n_images * n_voxels * 4`` bytes do not fit in memory (5000 images at
        128×141×128 are 46 GB).
    n_jobs : int, optional
        Threads decoding images (gzip decoding releases the GIL).
    lazy : bool, default=False
        ``transform`` returns an :class:`~sklearn_cgni.io.ImageSource` (:meth:`~sklearn_cgni.io.ImageSource.minus`)
        that subtracts each image's covariate effect when the image is read, instead of an array of adjusted
        images: memory holds the coefficient maps only and nothing is written, whatever the number of images
        (an array takes 9.2 MB an image at 128×141×128). The image estimators of this package
        (e.g. :class:`~sklearn_cgni.imaging.ImagingCNNClassifier`) accept it; a model that needs an array does
        not. ``output_dir`` must then be None.

    Attributes
    ----------
    coef_ : ndarray of shape (n_design, X, Y, Z), float32
        Coefficient maps, one per design column (named in ``design_names_``): the change
        of intensity per unit of the covariate. Save with the affine of the inputs to view
        them as NIfTI.
    intercept_ : ndarray of shape (X, Y, Z), float32
        Voxel intensity at covariates 0.
    mean_image_ : ndarray of shape (X, Y, Z), float32
        Training mean image (the output at the training mean of the covariates).
    covariate_mean_ : ndarray of shape (n_design,)
    design_names_ : list of str
    categories_ : dict
        Levels of each categorical covariate seen in ``fit``.
    image_shape_ : tuple of int
        Shape every image must have.
    n_features_in_ : int
        Columns of ``X`` seen in ``fit`` (image column and covariates).
    feature_names_in_ : ndarray of str

    See Also
    --------
    CovariateRegressor : the same adjustment for a feature table.
    sklearn_cgni.evaluation.evaluate_confounds : pass a pipeline with this step as the
        adjusted variant of an image model (``adjust={name: pipeline}``).

    Notes
    -----
    The adjustment is linear in the covariates: a CNN can still learn a non-linear effect
    of age on the images from the residuals. Because age is drawn conditionally on the
    label in a confounded cohort, regressing it out also removes part of the signal that
    truly separates the groups, so adjusted scores are conservative.

    Examples
    --------
    >>> import numpy as np, pandas as pd, nibabel as nib, tempfile, os
    >>> from sklearn_cgni.evaluation import ImageCovariateRegressor
    >>> rng = np.random.default_rng(0)
    >>> d = tempfile.mkdtemp()
    >>> age = rng.uniform(40, 70, size=20)
    >>> paths = []
    >>> for i, a in enumerate(age):
    ...     img = 1.0 - 0.01 * a + 0.01 * rng.standard_normal((6, 7, 6))
    ...     paths.append(os.path.join(d, f"sub{i}.nii.gz"))
    ...     nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), paths[-1])
    >>> X = pd.DataFrame({"image": paths, "age": age})
    >>> adj = ImageCovariateRegressor(covariates=["age"]).fit(X)
    >>> adj.coef_.shape
    (1, 6, 7, 6)
    >>> bool(np.allclose(adj.coef_, -0.01, atol=0.002))
    True
    >>> adj.transform(X).shape
    (20, 6, 7, 6)

    The images can also be read from another source of the same files, e.g. a float16 cache
    (``images=``), and adjusted only when read (``lazy=True``):

    >>> from sklearn_cgni.io import check_images
    >>> cache = np.stack([img for _, img in check_images(X["image"]).iter_arrays()]).astype(np.float16)
    >>> source = check_images(X["image"]).backed_by(cache)
    >>> lazy = ImageCovariateRegressor(covariates=["age"], lazy=True).fit(X, images=source)
    >>> adjusted = lazy.transform(X, images=source)
    >>> type(adjusted).__name__, len(adjusted), adjusted.load(0).shape
    ('ImageSource', 20, (6, 7, 6))
    """

    _parameter_constraints = {
        "covariates": ["array-like"],
        "categorical": ["array-like", None],
        "image_column": [str, None],
        "output_dir": [str, os.PathLike, None],
        "n_jobs": [Interval(Integral, None, None, closed="neither"), None],
        "lazy": ["boolean"],
    }

    def __init__(self, covariates=("age", "sex"), *, categorical=None, image_column=None, output_dir=None,
                 n_jobs=None, lazy=False):
        self.covariates = covariates
        self.categorical = categorical
        self.image_column = image_column
        self.output_dir = output_dir
        self.n_jobs = n_jobs
        self.lazy = lazy

    # CovariateRegressor's _split/_design read these two; images are never wrapped or passed through
    transformer = None
    passthrough = False

    def _images(self, X, F, expected_shape=None, images=None):
        """The :class:`~sklearn_cgni.io.ImageSource` of the image column of X's non-covariate part F, or
        ``images`` checked against that column (same files, same order)."""
        from ._covariates import _is_dataframe

        if not _is_dataframe(X):
            raise ValueError("ImageCovariateRegressor: X must be a DataFrame with a column of NIfTI paths and the "
                             f"covariate columns {list(self.covariates)}.")
        columns = [str(c) for c in F.columns]
        if self.image_column is not None:
            if self.image_column not in columns:
                raise ValueError(f"ImageCovariateRegressor: image_column {self.image_column!r} is not a non-covariate "
                                 f"column of X (those are {columns[:10]}).")
            col = self.image_column
        elif len(columns) == 1:
            col = columns[0]
        else:
            raise ValueError(f"ImageCovariateRegressor: X has {len(columns)} columns besides the covariates "
                             f"({columns[:10]}); name the one holding the NIfTI paths with image_column.")
        name = F.columns[columns.index(col)]
        if images is not None:
            return self._aligned(check_images(images, caller="ImageCovariateRegressor",
                                              expected_shape=expected_shape), F[name])
        images = check_images(F[[name]], caller="ImageCovariateRegressor", expected_shape=expected_shape)
        if images.kind != "paths":  # pragma: no cover - a one-column DataFrame is always paths or an error
            raise TypeError(f"ImageCovariateRegressor: column {col!r} must hold NIfTI paths.")
        return images

    @staticmethod
    def _aligned(images, column):
        """``images`` (given to fit/transform) after checking that they are the files of X's image column."""
        if len(images) != len(column):
            raise ValueError(f"ImageCovariateRegressor: images holds {len(images)} images but X has {len(column)} "
                             "rows; give the images of X's rows, in X's order.")
        if images.paths is not None:
            given = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else p for p in column]
            for i, (a, b) in enumerate(zip(images.paths, given)):
                if a != b:
                    raise ValueError(f"ImageCovariateRegressor: images row {i} is {images.describe(i)}, but X's "
                                     f"image column names {b!r} there; give the images of X's rows, in X's order.")
        return images

    def _read_all(self, images):
        """Yield (position, image) for every image, decoded in n_jobs threads, in order."""
        chunk = max(1, 4 * (self.n_jobs or 1))
        par = Parallel(n_jobs=self.n_jobs, prefer="threads")
        for start in range(0, len(images), chunk):
            stop = min(start + chunk, len(images))
            imgs = par(delayed(images.load)(i) for i in range(start, stop))
            yield from zip(range(start, stop), imgs)

    def _fit(self, X, y, images=None):
        if self.lazy and self.output_dir is not None:
            raise ValueError("ImageCovariateRegressor: lazy=True returns images adjusted when read and writes "
                             f"nothing; output_dir={self.output_dir!r} must then be None.")
        X, F, C, self._cov_names, _ = self._split(X, reset=True)
        images = self._images(X, F, images=images)
        D, self.design_names_ = self._design(X, C, fit=True)
        self.covariate_mean_ = D.mean(axis=0)
        Dc = D - self.covariate_mean_
        self.image_shape_ = images.shape
        size = int(np.prod(images.shape))
        # Accumulate the mean image and Dc^T X over images, one image at a time (float64 sums).
        total = np.zeros(size)
        cross = np.zeros((D.shape[1], size))
        for i, img in self._read_all(images):
            v = img.ravel().astype(np.float64)
            total += v
            cross += np.outer(Dc[i], v)
        mean = total / len(images)
        # Sum_i Dc_i = 0, so the slope solves (Dc^T Dc) beta = Dc^T X; pinv copes with a
        # rank-deficient design (a site absent from the fold).
        beta = np.linalg.pinv(Dc.T @ Dc) @ cross if D.shape[1] else cross
        self.coef_ = beta.reshape((D.shape[1],) + self.image_shape_).astype(np.float32)
        self.mean_image_ = mean.reshape(self.image_shape_).astype(np.float32)
        self.intercept_ = (mean - self.covariate_mean_ @ beta).reshape(self.image_shape_).astype(np.float32)
        return X, images, Dc

    def _output(self, n):
        shape = (n,) + self.image_shape_
        if self.output_dir is None:
            return np.empty(shape, dtype=np.float32)
        folder = Path(self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"image_covariate_residuals_{uuid.uuid4().hex}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)

    def _adjust_images(self, images, Dc):
        adjusted = images.minus(self.coef_, Dc)  # each image minus its covariates' effect, when read
        if self.lazy:
            return adjusted
        out = self._output(len(images))
        for i, img in self._read_all(adjusted):
            out[i] = img
        if isinstance(out, np.memmap):
            out.flush()
        return out

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, images=None):
        """Learn the voxel-wise covariate coefficients on the training images.

        Parameters
        ----------
        X : DataFrame
            A column of NIfTI paths and the covariate columns, one row per participant.
        y : ignored
        images : ImageSource or anything :func:`~sklearn_cgni.io.check_images` accepts, optional
            The images of X's rows, read instead of decoding the files of the image column, e.g. an
            :class:`~sklearn_cgni.io.ImageSource` backed by a float16 cache of them. Its paths must be those
            of the image column, in order.

        Returns
        -------
        self : ImageCovariateRegressor
        """
        self._fit(X, y, images)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, images=None, **fit_params):
        """Fit, then return the adjusted training images.

        Parameters
        ----------
        X : DataFrame
        y : ignored
        images : ImageSource, optional
            As in :meth:`fit`.
        **fit_params : dict
            Not used; present for API compatibility.

        Returns
        -------
        images : ndarray of shape (n_samples, X, Y, Z), float32, or ImageSource
            An :class:`~sklearn_cgni.io.ImageSource` when ``lazy``.
        """
        _, images, Dc = self._fit(X, y, images)
        return self._adjust_images(images, Dc)

    def transform(self, X, images=None):
        """Adjust images with the coefficients learned in ``fit``.

        Parameters
        ----------
        X : DataFrame
            Same columns as in ``fit``; these participants' covariates are used to remove
            their (training-fold) effect.
        images : ImageSource, optional
            The images of X's rows, as in :meth:`fit`.

        Returns
        -------
        images : ndarray of shape (n_samples, X, Y, Z), float32, or ImageSource
            A ``numpy.memmap`` in ``output_dir`` when it is set; an
            :class:`~sklearn_cgni.io.ImageSource` that adjusts each image when read if ``lazy``.
        """
        check_is_fitted(self, "coef_")
        X, F, C, _, _ = self._split(X, reset=False)
        images = self._images(X, F, expected_shape=self.image_shape_, images=images)
        D, _ = self._design(X, C, fit=False)
        return self._adjust_images(images, D - self.covariate_mean_)

    @available_if(lambda self: False)  # images (n, X, Y, Z) have no feature names: hasattr is False
    def get_feature_names_out(self, input_features=None):
        """Not available: the output is a stack of images, not a feature table."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _fit_and_score_fold(pipe, scratch, X_train, y_train, X_test, y_test, images=None):
    """One fold of :func:`adjusted_image_scores`: ``(balanced accuracy, fitted pipeline)``.

    ``images``: ``(training, test)`` image sources read instead of the files of the image column.
    """
    import shutil

    from sklearn.metrics import balanced_accuracy_score

    try:
        if images is None:
            predicted = pipe.fit(X_train, y_train).predict(X_test)
        else:  # a Pipeline routes fit parameters to its steps, but not those of predict
            adjuster, model = pipe.named_steps["covariate_adjustment"], pipe.named_steps["model"]
            model.fit(adjuster.fit_transform(X_train, images=images[0]), y_train)
            predicted = model.predict(adjuster.transform(X_test, images=images[1]))
        return float(balanced_accuracy_score(y_test, predicted)), pipe
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def adjusted_image_scores(estimator, X, y, *, covariates, cv, categorical=None, image_column=None,
                          scratch_dir=None, max_memory=2**31, images=None, lazy=False, return_adjusters=False,
                          return_models=False, n_jobs=None):
    """Per-fold held-out balanced accuracy of an image model trained on covariate-adjusted images.

    For every ``(train, test)`` fold, an :class:`ImageCovariateRegressor` is fitted on the
    training participants, a fresh model is trained on their adjusted images, and it is
    scored on the test participants' images adjusted with the training coefficients: the
    "adjusted" score of an image model (e.g. a fine-tuned
    :class:`~sklearn_cgni.imaging.ImagingCNNClassifier`) in a confound table, whose input
    has no feature table to adjust.

    Parameters
    ----------
    estimator : estimator or callable
        The image model, cloned for every fold, or ``estimator(k)`` returning the unfitted
        model of fold ``k`` (e.g. one with a per-fold progress bar).
    X : DataFrame of shape (n_samples, 1 + n_covariates)
        The NIfTI paths (``image_column``) and the covariates.
    y : array-like of shape (n_samples,)
    covariates : list of str
        Covariate columns of ``X``.
    cv : iterable of (train, test) index arrays
    categorical : list of str, optional
        Covariates to one-hot encode (see :class:`ImageCovariateRegressor`).
    image_column : str, optional
        By default the one column of ``X`` that is not a covariate.
    scratch_dir : str or path-like, optional
        When a fold's adjusted training images take more than ``max_memory`` bytes, they are
        memory-mapped in ``scratch_dir/residuals_f<k>``, removed after the fold.
    max_memory : int, default=2**31
        Bytes of adjusted images (float32) held in memory before using ``scratch_dir``.
    images : ImageSource or anything :func:`~sklearn_cgni.io.check_images` accepts, optional
        The images of X's rows, read instead of decoding the files of ``image_column`` (its paths must
        be those files, in order), e.g. an :class:`~sklearn_cgni.io.ImageSource` backed by a float16
        cache of them (what ``sklearn-cgni run`` passes).
    lazy : bool, default=False
        The model reads each adjusted image when it needs it
        (:class:`ImageCovariateRegressor` with ``lazy=True``): no adjusted copy in memory or in
        ``scratch_dir``, whatever the number of images. The model must accept an
        :class:`~sklearn_cgni.io.ImageSource` (the image estimators of this package do).
    return_adjusters : bool, default=False
        Also return the fitted :class:`ImageCovariateRegressor` of every fold (their
        ``coef_`` maps are what was removed).
    return_models : bool, default=False
        Also return the fitted image model of every fold (e.g. to read how many epochs a
        CNN trained and which it kept).
    n_jobs : int, optional
        Folds fitted in parallel through joblib (``None``: one after another, in this
        process); under ``joblib.parallel_config(backend="dask")`` each fold is a task of the
        Dask cluster (``scratch_dir`` must then be on a file system the workers share).

    Returns
    -------
    scores : ndarray of shape (n_folds,)
        Balanced accuracy on each test fold.
    adjusters : list of ImageCovariateRegressor
        Only if ``return_adjusters``.
    models : list of estimators
        Only if ``return_models``: the model fitted on each fold's adjusted training images.

    Examples
    --------
    >>> import numpy as np, pandas as pd, nibabel as nib, tempfile, os
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import StratifiedKFold
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn_cgni.evaluation import adjusted_image_scores
    >>> rng = np.random.default_rng(0)
    >>> d = tempfile.mkdtemp()
    >>> y = np.tile([0, 1], 10)
    >>> age = rng.uniform(40, 70, size=20)
    >>> paths = []
    >>> for i in range(20):
    ...     img = 0.01 * age[i] + 0.5 * y[i] + 0.1 * rng.standard_normal((4, 4, 4))
    ...     paths.append(os.path.join(d, f"sub{i}.nii.gz"))
    ...     nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), paths[-1])
    >>> X = pd.DataFrame({"image": paths, "age": age})
    >>> flat = FunctionTransformer(lambda a: a.reshape(len(a), -1))
    >>> model = make_pipeline(flat, LogisticRegression())
    >>> folds = list(StratifiedKFold(2).split(X, y))
    >>> adjusted_image_scores(model, X, y, covariates=["age"], cv=folds).shape
    (2,)
    """
    import nibabel as nib
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    y = np.asarray(y)
    if image_column is None:
        others = [c for c in X.columns if c not in set(covariates)]
        if len(others) != 1:
            raise ValueError(f"adjusted_image_scores: X must hold one image column besides the covariates; "
                             f"got {others}. Pass image_column.")
        image_column = others[0]
    if images is not None:
        from ..io import check_images

        images = ImageCovariateRegressor._aligned(check_images(images, caller="adjusted_image_scores"),
                                                  X[image_column])
        n_voxels = int(np.prod(images.shape))
    else:
        n_voxels = int(np.prod(nib.load(X[image_column].iloc[0]).shape[:3]))

    def fold_pipeline(k, train):
        scratch = None
        if not lazy and scratch_dir is not None and len(train) * n_voxels * 4 > max_memory:
            scratch = Path(scratch_dir) / f"residuals_f{k}"
        adjuster = ImageCovariateRegressor(list(covariates), categorical=categorical, image_column=image_column,
                                           output_dir=scratch, lazy=lazy)
        model = estimator(k) if callable(estimator) and not hasattr(estimator, "fit") else clone(estimator)
        return Pipeline([("covariate_adjustment", adjuster), ("model", model)]), scratch

    def fold_images(train, test):
        return None if images is None else (images.subset(train), images.subset(test))

    cv = list(cv)
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score_fold)(*fold_pipeline(k, train), X.iloc[train], y[train], X.iloc[test], y[test],
                                     fold_images(train, test))
        for k, (train, test) in enumerate(cv))
    scores = np.asarray([score for score, _ in fitted])
    out = (scores,)
    if return_adjusters:
        out += ([pipe.named_steps["covariate_adjustment"] for _, pipe in fitted],)
    if return_models:
        out += ([pipe.named_steps["model"] for _, pipe in fitted],)
    return out if len(out) > 1 else scores
