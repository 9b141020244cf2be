"""Brain-genotype scores: a multi-task 3D CNN predicting many SNPs from one gray-matter image.

The second seed paper ("An Explainable Deep Learning Framework for Imaging Genetics: Deriving
Brain-Genotype Scores From MRI"): a 3D CNN of the stage-1 family is trained on gray-matter
images to predict the genotypes of many SNPs at once (one output per SNP, or three class
logits per SNP). Its *held-out* predictions, obtained by cross-fitting
(:func:`cross_fit_scores`), are continuous brain-genotype scores that are then tested against
cognition (:func:`sklearn_cgni.explain.association_table`) and explained with gradient
saliency (:class:`sklearn_cgni.explain.SaliencyExplainer`).
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..io import check_images
from ..nn._cnn import BrainCNN, CNNBackbone3d, MultiOutputHead
from ._base import _BaseImageCNN, _valid_metric_callback
from ._cnn_utils import _transfer_blocks
from ._cross_fit_scores import cross_fit_scores  # noqa: F401 (re-exported)
from ._genotype_targets import _MISSING_CLASS, check_genotype_targets, per_snp_correlation  # noqa: F401

__all__ = ["BrainGenotypeScorer", "cross_fit_scores", "check_genotype_targets"]

# ---------------------------------------------------------------------- targets

# ---------------------------------------------------------------------- torch parts
class _MaskedMultiSNPLoss(torch.nn.Module):
    """Mean loss over the observed (participant, SNP) calls of a batch.

    ``task="classes"``: cross-entropy of ``(B, S, 3)`` logits against ``(B, S)`` int64 classes,
    missing calls = -100 (ignored). ``task="dosage"``: squared error of ``(B, S)`` outputs
    against standardised dosages, NaN = missing (ignored).
    """

    def __init__(self, task="classes"):
        super().__init__()
        self.task = task

    def forward(self, y_pred, y_true):
        if self.task == "classes":
            n_obs = (y_true != _MISSING_CLASS).sum().clamp_min(1)
            loss = torch.nn.functional.cross_entropy(
                y_pred.reshape(-1, y_pred.shape[-1]), y_true.reshape(-1),
                ignore_index=_MISSING_CLASS, reduction="sum")
            return loss / n_obs
        mask = ~torch.isnan(y_true)
        diff = torch.where(mask, y_pred - torch.nan_to_num(y_true), torch.zeros_like(y_pred))
        return (diff ** 2).sum() / mask.sum().clamp_min(1)


class GenotypeScoreModule(torch.nn.Module):
    """``image -> (batch, n_snps)`` brain-genotype scores of a fitted multi-task CNN.

    The expected minor-allele count ``sum_k k * softmax(logits)_k`` per SNP in class mode, or
    the predicted dosage (on the dosage scale) in dosage mode. Differentiable, for captum.

    ``input_space="standardized"`` (networks with voxel standardisation only): the module
    takes voxel-wise z-scored images, as the network's first layer sees them; convert raw
    images with :meth:`to_model_input`. Attributions are then per SD of each voxel, and a
    zero baseline is the training mean image.
    """

    def __init__(self, cnn, task, y_mean=None, y_scale=None, input_space="raw"):
        super().__init__()
        self.cnn = cnn
        self.task = task
        self.standardized_input = input_space == "standardized" and getattr(cnn, "standardizes_input", False)
        if task == "dosage":
            self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32))
            self.register_buffer("y_scale", torch.as_tensor(y_scale, dtype=torch.float32))
        self.register_buffer("levels", torch.tensor([0.0, 1.0, 2.0]))

    def to_model_input(self, x):
        """Raw images ``(batch, [1,] X, Y, Z)`` -> this module's input space."""
        return self.cnn.standardize(x) if self.standardized_input else self.cnn._as_5d(x)

    def forward(self, x):
        if self.standardized_input:
            out = self.cnn.head(self.cnn.backbone(self.cnn._as_5d(x)))
        else:
            out = self.cnn(x)
        if self.task == "classes":
            return torch.softmax(out, dim=-1) @ self.levels
        return out * self.y_scale + self.y_mean


# ---------------------------------------------------------------------- estimator
class BrainGenotypeScorer(TransformerMixin, _BaseImageCNN):
    """Multi-task 3D CNN predicting many SNPs from a gray-matter image: brain-genotype scores.

    The backbone is the stage-1 network family (:class:`sklearn_cgni.nn.CNNBackbone3d`, same
    architecture parameters as :class:`BrainAgeCNNTransformer`) with a
    :class:`sklearn_cgni.nn.MultiOutputHead` giving, per SNP, either three class logits
    (genotype 0/1/2, cross-entropy per SNP) or one value (additive dosage, mean squared
    error of the standardised dosage). Missing calls (NaN) are masked out of the loss. The
    backbone can be initialised from a fitted brain-age CNN.

    ``transform`` returns one brain-genotype score per SNP: the expected minor-allele count
    (``sum_k k p_k``) in class mode, the predicted dosage in dosage mode. Scores of the
    training participants are optimistic: use :func:`cross_fit_scores` for held-out scores.

    Parameters
    ----------
    task : {"classes", "dosage"}, default="classes"
        Per-SNP genotype classes with cross-entropy, or additive dosage with MSE.
    brain_age_model : BrainAgeCNNTransformer, FrozenEstimator, str or path-like, default=None
        Source of the initial backbone weights: a fitted stage-1 model, a
        ``sklearn.frozen.FrozenEstimator`` of one, or its ``save_weights`` file. ``None``:
        random initialisation. ``clone`` (used by :func:`cross_fit_scores`) keeps a
        FrozenEstimator or a path usable; a plain fitted estimator is cloned unfitted, which
        raises a clear error.
    n_transfer_blocks : int or None, default=None
        Leading backbone blocks copied from ``brain_age_model`` (``None``: all).
    freeze_transferred : bool, default=False
        Keep the copied blocks fixed (no gradient, BatchNorm statistics frozen).
    hidden : int or None, default=None
        Width of an optional shared hidden layer of the head (Linear + ReLU).
    standardize_voxels : bool, default=True
        z-score every voxel with the training images' voxel mean and SD (computed in one
        streamed pass, stored as buffers of the network, so ``transform`` and saliency take
        raw images). A trade-off, measured on simulated cohorts
        (``benchmarks/results/brain_genotype_scores.md``). Raw images (False) give better
        scores: held-out r 0.59 vs 0.48 on focal effects, and whole-region effects read
        instead of missed. z-scored voxels give saliency peaks that find the effect: 94 % vs
        71 % within 10 mm. With ``brain_age_model``, use the source's setting, so that the
        transferred blocks read the input scale they were trained on (a warning says when
        they differ). ``sklearn-cgni run`` does.
    channels, padding, pool_blocks, global_pool : default=None
        Architecture (see :class:`BrainAgeCNNTransformer`). ``None`` takes it from
        ``weights``, else from ``brain_age_model``, else the paper's (32, 64, 128, 256, 256),
        unpadded, pooled in every block.
    dropout : float, default=0.2
    max_epochs : int, default=20
    batch_size : int, default=25
        Images per training step. Under ``torchrun`` it is per process: N processes train
        with global batches of ``N * batch_size`` (see :mod:`sklearn_cgni.utils._distributed`).
    lr : float, default=1e-3
    weight_decay : float, default=0.0
    validation_fraction : float, default=0.1
        Held-out fraction of the training participants on which ``valid_loss`` and
        ``valid_r`` are recorded every epoch (0 trains on everything). ``valid_r`` is the mean
        over SNPs of the correlation of the scores with the observed genotypes on that split
        (SNPs constant there are left out): the quantity the scores are for.
    early_stopping : bool, default=False
        Stop when ``valid_r`` has not improved for ``n_iter_no_change`` epochs and keep the
        best epoch's weights (``best_epoch_``), as in :class:`BrainAgeCNNTransformer`;
        ``max_epochs`` is then a budget. Off by default because it did not help in
        ``benchmarks/bench_brain_genotype_scores.py`` (500 participants, 98 SNPs): at the
        default budget of 20 epochs, early stopping with ``lr_schedule="plateau"`` gave a lower
        mean held-out r for the causal SNPs than 20 plain epochs (region effects 0.30 vs 0.37,
        focal 0.53 vs 0.55), and at a budget of 60 it was slightly better on region effects
        (0.44 vs 0.42) and worse on focal ones (0.69 vs 0.74), while saving time. With most
        SNPs null and a small validation split, ``valid_r`` is a noisy signal.
    n_iter_no_change : int, default=10
    lr_schedule : {"plateau", "plateau_floor", "none"}, default="none"
        ``"plateau"`` halves the learning rate when ``valid_r`` has not improved for
        ``n_iter_no_change // 2`` epochs; ``"plateau_floor"`` also keeps early stopping waiting
        until the learning rate is at its floor (as in :class:`BrainAgeCNNTransformer`).
    min_epochs, warmup_epochs, budget_growth, max_restarts
        The training recipe, as in :class:`BrainAgeCNNTransformer`. A scorer is never
        restarted: most SNPs have no effect on the image, so a ``valid_r`` near 0 is no sign
        of a stalled run.
    augment_shift : int, default=0
        Random shifts of up to this many voxels per axis in training.
    callbacks, num_workers, cache_dir, device, transform_batch_size, channels_last, memory_format, \
precision, verbose
        As in :class:`BrainAgeCNNTransformer` (``channels_last`` runs inference eagerly on the
        channels_last_3d layout; ``memory_format`` is the layout while training).
    inference_backend : {"auto", "eager", "mkldnn"}, default="auto"
        How ``transform``/``predict`` run the network, as in
        :class:`BrainAgeCNNTransformer` (the voxel standardisation is kept in every backend).
    recalibrate_bn : bool, default=True
        Re-estimate the BatchNorm running statistics with the final weights after training,
        as in :class:`BrainAgeCNNTransformer` (without it, eval-mode scores of a short fit
        can be shifted by the lagging running averages).
    weights : str or path-like, default=None
        A file written by this class's :meth:`save_weights` (warm start, or ``frozen=True``
        to only load it). Its head must have as many SNPs as ``G`` has columns.
    frozen : bool, default=False
        ``fit`` only loads ``weights`` (``G`` may be None).
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    snp_names_ : ndarray of str of shape (n_snps_,)
        SNP ids (``G``'s columns, or ``snp0 ...``); the score columns.
    n_snps_ : int
        SNPs the head was fitted for.
    y_mean_, y_scale_ : ndarray of shape (n_snps_,)
        Standardisation of the dosages (dosage mode; mean 0, scale 1 in class mode).
    class_counts_ : ndarray of shape (n_snps_, 3)
        Observed genotype counts per SNP in training (class mode; zeros otherwise).
    n_missing_ : int
        Missing calls masked out of the training loss.
    n_transferred_blocks_ : int
    n_epochs_, best_epoch_ : int
        Epochs run, and the epoch whose weights were kept (the best ``valid_r`` with early
        stopping, else the last).
    history_ : list of dict
        Per epoch: ``train_loss`` and, with a validation split, ``valid_loss``, ``valid_r``
        and ``lr``.
    budget_, stop_reason_, n_restarts_
        As in :class:`BrainAgeCNNTransformer`.
    net_, module_, image_shape_, n_features_out_, arch_, device_
        As in :class:`BrainAgeCNNTransformer`.

    See Also
    --------
    cross_fit_scores : held-out scores for every participant.
    sklearn_cgni.imaging.IDPGenotypeScorer : the regional-mean (IDP) baseline.
    sklearn_cgni.explain.SaliencyExplainer : gradient saliency of each score.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.imaging import BrainGenotypeScorer
    >>> rng = np.random.default_rng(0)
    >>> G = rng.integers(0, 3, size=(24, 5)).astype(float)
    >>> X = rng.normal(size=(24, 12, 12, 12)).astype("float32")
    >>> X[:, 2:6, 2:6, 2:6] += G[:, :1, None, None]           # SNP 0 changes one block
    >>> scorer = BrainGenotypeScorer(channels=(4, 8), padding=1, global_pool="avg",
    ...                              max_epochs=2, device="cpu", random_state=0).fit(X, G)
    >>> scorer.transform(X).shape
    (24, 5)
    """

    _parameter_constraints: dict = {
        **_BaseImageCNN._parameter_constraints,
        "task": [StrOptions({"classes", "dosage"})],
        "brain_age_model": "no_validation",
        "n_transfer_blocks": [Interval(Integral, 0, None, closed="left"), None],
        "freeze_transferred": ["boolean"],
        "hidden": [Interval(Integral, 1, None, closed="left"), None],
        "standardize_voxels": ["boolean"],
    }
    _kind = "genotype_scores"
    _monitor = ("valid_r", False)

    def _monitor_callbacks(self):
        return [("valid_r", _valid_metric_callback("valid_r", self._validation_r))]

    def _validation_r(self, y_true, y_pred):
        """Mean over SNPs of the held-out correlation of the scores with the genotypes.

        ``y_true`` as the net receives it (class codes with -100 for a missing call, or
        standardised dosages with NaN), ``y_pred`` the raw outputs. SNPs without variation in
        the validation split (or with constant scores) are left out; 0.0 if none is left.
        """
        if self.task == "classes":
            y = np.where(y_true == _MISSING_CLASS, np.nan, y_true).astype(np.float64)
            z = y_pred - y_pred.max(axis=-1, keepdims=True)
            p = np.exp(z)
            scores = (p / p.sum(axis=-1, keepdims=True)) @ np.array([0.0, 1.0, 2.0])
        else:
            y, scores = y_true.astype(np.float64), y_pred.astype(np.float64)
        r = per_snp_correlation(scores.reshape(len(scores), -1), y.reshape(len(y), -1))
        return float(np.mean(r[np.isfinite(r)])) if np.isfinite(r).any() else 0.0

    def __init__(self, task="classes", *, brain_age_model=None, n_transfer_blocks=None,
                 freeze_transferred=False, hidden=None, standardize_voxels=True, channels=None, padding=None,
                 pool_blocks=None, global_pool=None, dropout=0.2, max_epochs=20, batch_size=25,
                 lr=1e-3, weight_decay=0.0, validation_fraction=0.1, early_stopping=False,
                 n_iter_no_change=10, lr_schedule="none", min_epochs=10, warmup_epochs=2,
                 budget_growth=2.0, max_restarts=1, augment_shift=0, callbacks=None,
                 num_workers=0, cache_dir=None, device="auto", weights=None, frozen=False,
                 transform_batch_size=None, channels_last=False, inference_backend="auto", recalibrate_bn=True,
                 memory_format="auto", precision="float32",
                 random_state=None, verbose=0):
        self.task = task
        self.brain_age_model = brain_age_model
        self.n_transfer_blocks = n_transfer_blocks
        self.freeze_transferred = freeze_transferred
        self.hidden = hidden
        self.standardize_voxels = standardize_voxels
        self.channels = channels
        self.padding = padding
        self.pool_blocks = pool_blocks
        self.global_pool = global_pool
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.lr_schedule = lr_schedule
        self.min_epochs = min_epochs
        self.warmup_epochs = warmup_epochs
        self.budget_growth = budget_growth
        self.max_restarts = max_restarts
        self.augment_shift = augment_shift
        self.callbacks = callbacks
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.device = device
        self.weights = weights
        self.frozen = frozen
        self.transform_batch_size = transform_batch_size
        self.channels_last = channels_last
        self.inference_backend = inference_backend
        self.recalibrate_bn = recalibrate_bn
        self.memory_format = memory_format
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ base hooks
    def _n_classes(self):
        return 3 if self.task == "classes" else 1

    def _build_module(self, image_shape, arch, standardize_voxels=None):
        if standardize_voxels is None:
            standardize_voxels = self.standardize_voxels
        backbone = CNNBackbone3d(1, arch["channels"], arch["padding"], arch["pool_blocks"],
                                 arch["global_pool"])
        head = MultiOutputHead(backbone.n_features(image_shape), self.n_snps_,
                               n_classes=self._n_classes(), hidden=self.hidden,
                               dropout=self.dropout)
        return BrainCNN(backbone, head, voxel_shape=tuple(image_shape) if standardize_voxels else None,
                        augment_shift=self.augment_shift)

    def _extra_state(self):
        return {"task": self.task, "snp_names": [str(s) for s in self.snp_names_],
                "y_mean": [float(v) for v in self.y_mean_],
                "y_scale": [float(v) for v in self.y_scale_],
                "hidden": 0 if self.hidden is None else int(self.hidden),
                "standardize_voxels": bool(self.standardize_voxels)}

    def _check_saved_config(self, state):
        for name in ("task", "standardize_voxels"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(f"{type(self).__name__}({name}={getattr(self, name)!r}): the "
                                 f"weights file {os.fspath(self.weights)!r} was saved with "
                                 f"{name}={state[name]!r}.")

    def _set_extra_state(self, state):
        self._check_saved_config(state)
        if state["task"] != self.task:
            raise ValueError(f"{type(self).__name__}(task={self.task!r}): the weights file "
                             f"{os.fspath(self.weights)!r} holds a task={state['task']!r} network.")
        saved_hidden = int(state.get("hidden", 0)) or None
        if saved_hidden != self.hidden:
            raise ValueError(f"{type(self).__name__}(hidden={self.hidden!r}): the weights file "
                             f"{os.fspath(self.weights)!r} has hidden={saved_hidden!r}.")
        self.snp_names_ = np.asarray(state["snp_names"], dtype=object)
        self.n_snps_ = len(self.snp_names_)
        self.y_mean_ = np.asarray(state["y_mean"], dtype=np.float64)
        self.y_scale_ = np.asarray(state["y_scale"], dtype=np.float64)
        self.class_counts_ = np.zeros((self.n_snps_, 3), dtype=np.int64)
        self.n_missing_ = 0
        self.n_transferred_blocks_ = 0

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the multi-task CNN on images and genotypes.

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths
        y : DataFrame or array-like of shape (n, n_snps)
            Genotypes G (0/1/2 for ``task="classes"``, dosages for ``task="dosage"``); NaN =
            missing call, masked out of the loss. SNPs with no variation raise an error.
            Ignored when ``frozen=True``.

        Returns
        -------
        self
        """
        if self.frozen:
            return self._fit(X, None, target_dtype=torch.float32, criterion=None,
                             stratify=False)
        images = check_images(X, caller=type(self).__name__)  # built once, handed down to _fit
        ids = images.participant_ids
        G = y
        values, names = check_genotype_targets(G, ids, task=self.task, caller=type(self).__name__)
        if values.shape[0] != len(ids):
            raise ValueError(f"Got {len(ids)} images but genotypes for {values.shape[0]} participants.")
        if isinstance(G, pd.DataFrame) and isinstance(X, (pd.Series, pd.DataFrame)):
            if not X.index.equals(G.index):
                raise ValueError("The participant IDs (index) of X and G differ; align them first "
                                 "(sklearn_cgni.io.align_cohort).")
        self.snp_names_ = names
        self.n_snps_ = len(names)
        observed = ~np.isnan(values)
        self.n_missing_ = int((~observed).sum())
        if self.task == "classes":
            target = np.where(observed, np.nan_to_num(values), _MISSING_CLASS).astype(np.int64)
            self.class_counts_ = np.stack([(values == k).sum(axis=0) for k in range(3)], axis=1)
            self.y_mean_ = np.zeros(self.n_snps_)
            self.y_scale_ = np.ones(self.n_snps_)
            target_dtype = torch.int64
        else:
            self.y_mean_ = np.nanmean(values, axis=0)
            self.y_scale_ = np.nanstd(values, axis=0)
            target = ((values - self.y_mean_) / self.y_scale_).astype(np.float32)
            self.class_counts_ = np.zeros((self.n_snps_, 3), dtype=np.int64)
            target_dtype = torch.float32

        if self.weights is not None:
            saved = self._load_weights_file()
            self._check_saved_config(saved["extra"])
            n_saved = len(saved["extra"]["snp_names"])
            if n_saved != self.n_snps_:
                raise ValueError(
                    f"{type(self).__name__}: the weights file {os.fspath(self.weights)!r} has a "
                    f"head for {n_saved} SNPs but G has {self.n_snps_} columns.")
        source = self._transfer_source() if self.weights is None else None
        self.n_transferred_blocks_ = 0

        def prepare(module, arch):
            if source is None:
                if self.freeze_transferred:
                    raise ValueError("freeze_transferred=True needs a brain_age_model.")
                return
            n_blocks = len(arch["channels"])
            k = n_blocks if self.n_transfer_blocks is None else self.n_transfer_blocks
            if k > n_blocks:
                raise ValueError(f"n_transfer_blocks={k} but the network has only {n_blocks} blocks.")
            _transfer_blocks(module, source[1], k, freeze=self.freeze_transferred)
            self.n_transferred_blocks_ = k

        return self._fit(images, target, target_dtype=target_dtype,
                         criterion=_MaskedMultiSNPLoss, criterion__task=self.task,
                         stratify=False, source_arch=source[0] if source else None,
                         source_name=source[2] if source else None, prepare_module=prepare)

    # ------------------------------------------------------------------ inference
    def score_module(self, input_space="raw"):
        """The fitted network as a torch module ``image -> (batch, n_snps_)`` scores (eval mode).

        Shares parameters with :attr:`module_`; used by
        :class:`~sklearn_cgni.explain.SaliencyExplainer`. ``input_space="standardized"``:
        the module takes voxel-wise z-scored images (see :class:`GenotypeScoreModule`).
        """
        check_is_fitted(self, "net_")
        if input_space not in ("raw", "standardized"):
            raise ValueError(f"input_space must be 'raw' or 'standardized'; got {input_space!r}.")
        mod = GenotypeScoreModule(self.module_, self.task, self.y_mean_, self.y_scale_,
                                  input_space=input_space)
        return mod.to(self.device_).eval()

    def _snp_index(self, snps):
        if snps is None:
            return np.arange(self.n_snps_)
        if isinstance(snps, (str, Integral)):
            snps = [snps]
        snps = list(snps)
        if all(isinstance(s, (Integral, np.integer)) for s in snps):
            bad = [int(s) for s in snps if not 0 <= int(s) < self.n_snps_]
            if bad:
                raise ValueError(f"SNP indices {bad[:10]} are out of range: the head was fitted "
                                 f"for {self.n_snps_} SNPs.")
            return np.asarray(snps, dtype=int)
        lookup = {str(s): i for i, s in enumerate(self.snp_names_)}
        missing = [s for s in snps if str(s) not in lookup]
        if missing:
            raise ValueError(
                f"{len(missing)} requested SNP(s) are not among the {self.n_snps_} SNPs the "
                f"head was fitted for: {missing[:10]}{' ...' if len(missing) > 10 else ''}. "
                f"Refit with these SNPs in G.")
        return np.asarray([lookup[str(s)] for s in snps], dtype=int)

    def transform(self, X, snps=None):
        """Brain-genotype scores: one per SNP (expected dosage in class mode).

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths
        snps : sequence of str or int, optional
            Subset of the fitted SNPs (ids or column indices). SNPs the head was not fitted
            for raise ``ValueError``.

        Returns
        -------
        scores : ndarray of shape (n, n_snps_) (or ``len(snps)``), float64
        """
        check_is_fitted(self, "net_")
        idx = self._snp_index(snps)
        if self.task == "classes":
            proba = self.predict_proba(X)
            out = proba @ np.array([0.0, 1.0, 2.0])
        else:
            out = self._run(X, lambda m, xb: m(xb), (self.n_snps_,)).astype(np.float64)
            out = out * self.y_scale_ + self.y_mean_
        return out[:, idx]

    def predict_proba(self, X):
        """Genotype class probabilities, shape (n, n_snps_, 3) (``task="classes"`` only)."""
        check_is_fitted(self, "net_")
        if self.task != "classes":
            raise AttributeError("predict_proba is only available with task='classes'.")
        out = self._run(X, lambda m, xb: torch.softmax(m(xb), dim=-1), (self.n_snps_, 3))
        return out.astype(np.float64)

    def predict(self, X):
        """Most probable genotype (class mode) or predicted dosage (dosage mode), (n, n_snps_)."""
        if self.task == "classes":
            return self.predict_proba(X).argmax(axis=-1).astype(np.float64)
        return self.transform(X)

    def score(self, X, G, sample_weight=None):
        """Mean over SNPs of the Pearson correlation between scores and observed genotypes."""
        scores = self.transform(X)
        values, _ = check_genotype_targets(G, task="dosage", caller=type(self).__name__)
        if values.shape[1] != self.n_snps_:
            raise ValueError(f"G has {values.shape[1]} SNPs; the head was fitted for {self.n_snps_}.")
        return float(np.nanmean(per_snp_correlation(scores, values)))

    def get_feature_names_out(self, input_features=None):
        """The SNP ids: one brain-genotype score per SNP."""
        check_is_fitted(self, "net_")
        return np.asarray(self.snp_names_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        return tags
