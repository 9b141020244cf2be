"""The paper's "Imaging CNN": working-memory classifier transferred from the brain-age CNN."""

from __future__ import annotations

from functools import partial
from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassifierMixin, TransformerMixin, _fit_context
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..io import check_images
from ..utils import fit_seed
from ..utils._linear import l2_logistic_cv
from ._base import _BaseImageCNN, _valid_metric_callback
from ._cnn_utils import _check_aligned, _transfer_blocks

__all__ = ["ImagingCNNClassifier"]



def _balanced_accuracy_of_logits(y_true, logits):
    """Balanced accuracy of the arg-max class (module level: picklable)."""
    return balanced_accuracy_score(y_true, logits.argmax(1))

def _constant_predictor_loss(y_valid, balanced):
    """Cross-entropy of the best constant prediction on the validation codes (picklable)."""
    from ._convergence import constant_predictor_loss

    weight = compute_class_weight("balanced", classes=np.unique(y_valid), y=y_valid) if balanced else None
    return constant_predictor_loss(np.unique(y_valid, return_inverse=True)[1], weight)


def _constant_predictor_bacc(y_valid):
    """Balanced accuracy of a constant prediction: one over the number of classes (picklable)."""
    return 1.0 / len(np.unique(y_valid))


class ImagingCNNClassifier(ClassifierMixin, TransformerMixin, _BaseImageCNN):
    """3D CNN classifier (e.g. working-memory group) initialised from a brain-age CNN.

    The paper's "Imaging CNN" baseline: the network of :class:`BrainAgeCNNTransformer`
    with a classification head; the first ``n_transfer_blocks`` convolutional blocks are
    copied from a fitted brain-age model (the paper transferred two), optionally frozen, the
    remaining blocks and the head are initialised afresh, and everything not frozen is
    fine-tuned on the labels with Adam and cross-entropy.

    Parameters
    ----------
    brain_age_model : BrainAgeCNNTransformer, FrozenEstimator, str or path-like, default=None
        Source of the transferred blocks: a fitted model, a
        ``sklearn.frozen.FrozenEstimator`` wrapping one, or a weights file written by
        ``save_weights``. Prefer a file or a FrozenEstimator inside ``GridSearchCV``:
        ``clone`` returns an *unfitted* copy of a plain estimator parameter (which then
        raises a clear error). ``None`` trains from scratch.
    n_transfer_blocks : int, default=2
        Number of leading convolutional blocks copied from ``brain_age_model``.
    freeze_transferred : bool, default=False
        Keep the transferred blocks fixed (no gradient, BatchNorm statistics frozen)
        instead of fine-tuning them.
    class_weight : "balanced" or None, default=None
        Weights of the cross-entropy loss (``"balanced"``: inverse class frequency).
    scoring : {"loss", "balanced_accuracy"}, default="loss"
        What early stopping and the learning-rate schedule watch on the validation split:
        its cross-entropy (``valid_loss``) or its balanced accuracy (``valid_bacc``, the
        paper's metric). Both are recorded. The loss is the default: on a validation split of
        a few dozen participants the balanced accuracy moves in coarse steps and often peaks
        by chance in the first epochs; on the cpu-preset cohort selecting on the loss gave
        80.9 % validation balanced accuracy against 77.8 % (``benchmarks/results/
        stage1_convergence.md``).
    refit_head : {"logistic", "none"}, default="logistic"
        After training (best epoch kept), refit the linear output layer as an L2 logistic
        regression on the network's own features ``h_v`` of all training participants:
        features standardized, C chosen among 10 values (1e-4 ... 1e4) by 5 stratified inner
        folds on balanced accuracy, ``class_weight`` as above; the standardization is folded
        into the layer, so ``predict`` is the network alone. The head trained by gradient
        descent together with the blocks is a worse linear classifier on the same features: on
        the paper-size cohort at n = 1,000 it scored 57.4 % where a logistic regression on its
        features scored 64.6 % (``benchmarks/results/stage1_reliability.md``). ``"none"``
        keeps the trained head.
    channels, padding, pool_blocks, global_pool : default=None
        Architecture; ``None`` takes it from ``weights``, else from ``brain_age_model``,
        else the paper's. An explicit value that differs from the source raises an error.
    dropout, max_epochs, batch_size, lr, weight_decay, validation_fraction, callbacks, \
num_workers, cache_dir, device, weights, frozen, transform_batch_size, inference_backend, \
recalibrate_bn, memory_format, precision, random_state, verbose
        As in :class:`BrainAgeCNNTransformer`. ``validation_fraction`` here gives a
        stratified split and ``net_.history[:, "valid_bacc"]``. ``weights`` is this
        classifier's own saved file (warm start, or ``frozen=True`` to only load it).
    early_stopping, n_iter_no_change, lr_schedule, min_epochs, warmup_epochs, budget_growth, \
max_restarts, standardize_voxels, augment_shift
        As in :class:`BrainAgeCNNTransformer` (the constant predictor of ``max_restarts`` is
        the class priors, weighted as the loss); early stopping and the schedule watch the
        (stratified) validation split's ``scoring``. With
        ``standardize_voxels=True`` and transferred blocks, the source's voxel statistics
        are used (the first block was trained on them).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    net_, module_, image_shape_, n_features_out_, arch_, device_
        As in :class:`BrainAgeCNNTransformer`.
    n_epochs_, best_epoch_, history_, budget_, stop_reason_, n_restarts_
        As in :class:`BrainAgeCNNTransformer`; the history also records ``valid_bacc``.
    n_transferred_blocks_ : int
        Blocks actually copied (0 without a source or when loading ``weights``).
    head_C_ : float or None
        The C of the refitted head (``refit_head="logistic"``), else None.

    Notes
    -----
    A KeyboardInterrupt (Ctrl-C) during ``fit`` is raised again, not swallowed as skorch
    alone would, and leaves the estimator unfitted: a half-trained network never looks fitted.

    ``score`` returns the **balanced accuracy** (the paper's metric for the imbalanced
    working-memory groups), not scikit-learn's default plain accuracy.
    ``transform`` returns h_v from this fine-tuned network (shape ``(n, n_features_out_)``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(24, 16, 16, 16)).astype("float32")
    >>> age, wm = rng.uniform(45, 80, 24), np.repeat([0, 1], 12)
    >>> X[wm == 1, 4:8, 4:8, 4:8] += 1.0
    >>> arch = dict(channels=(4, 4, 8, 8, 8), padding=1, pool_blocks=4)
    >>> src = BrainAgeCNNTransformer(**arch, max_epochs=1, device="cpu", random_state=0)
    >>> src = src.fit(X, age)
    >>> clf = ImagingCNNClassifier(brain_age_model=src, max_epochs=2, device="cpu",
    ...                            random_state=0).fit(X, wm)
    >>> clf.predict_proba(X).shape, clf.classes_.tolist()
    ((24, 2), [0, 1])
    """

    _parameter_constraints: dict = {
        **_BaseImageCNN._parameter_constraints,
        "brain_age_model": "no_validation",  # path, fitted estimator or FrozenEstimator
        "n_transfer_blocks": [Interval(Integral, 0, None, closed="left")],
        "freeze_transferred": ["boolean"],
        "class_weight": [StrOptions({"balanced"}), None],
        "scoring": [StrOptions({"balanced_accuracy", "loss"})],
        "refit_head": [StrOptions({"logistic", "none"})],
    }
    _kind = "classification"

    @property
    def _monitor(self):
        return ("valid_bacc", False) if self.scoring == "balanced_accuracy" else ("valid_loss", True)

    def _monitor_callbacks(self):
        return [("valid_bacc", _valid_metric_callback("valid_bacc", _balanced_accuracy_of_logits))]

    def __init__(self, brain_age_model=None, *, n_transfer_blocks=2, freeze_transferred=False,
                 class_weight=None, scoring="loss", refit_head="logistic", channels=None, padding=None, pool_blocks=None,
                 global_pool=None, dropout=0.2, max_epochs=20, batch_size=25, lr=1e-3,
                 weight_decay=0.0, validation_fraction=0.1, early_stopping=True, n_iter_no_change=10,
                 min_epochs=10, warmup_epochs=2, budget_growth=2.0, max_restarts=1,
                 lr_schedule="plateau", standardize_voxels=False, augment_shift=0, callbacks=None, num_workers=0,
                 cache_dir=None, device="auto", weights=None, frozen=False,
                 transform_batch_size=4, inference_backend="auto", recalibrate_bn=True,
                 memory_format="auto", precision="float32",
                 random_state=None, verbose=0):
        self.brain_age_model = brain_age_model
        self.n_transfer_blocks = n_transfer_blocks
        self.freeze_transferred = freeze_transferred
        self.class_weight = class_weight
        self.scoring = scoring
        self.refit_head = refit_head
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
        self.standardize_voxels = standardize_voxels
        self.augment_shift = augment_shift
        self.callbacks = callbacks
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.device = device
        self.weights = weights
        self.frozen = frozen
        self.transform_batch_size = transform_batch_size
        self.inference_backend = inference_backend
        self.recalibrate_bn = recalibrate_bn
        self.memory_format = memory_format
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    def _n_outputs(self):
        return len(self.classes_)

    def _baseline_metric(self):
        if self.scoring == "balanced_accuracy":
            return _constant_predictor_bacc
        return partial(_constant_predictor_loss, balanced=self.class_weight == "balanced")

    def _extra_state(self):
        return {"classes": self.classes_.tolist()}

    def _set_extra_state(self, state):
        self.classes_ = np.asarray(state["classes"])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fine-tune on class labels (or, with ``frozen=True``, load ``weights``).

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths
        y : array-like of shape (n,)
            Class labels (e.g. working-memory group 0/1). NaN labels raise an error naming
            the participants. Ignored when ``frozen=True``.

        Returns
        -------
        self
        """
        if self.frozen:
            return self._fit(X, None, target_dtype=torch.int64, criterion=None, stratify=False)
        images = check_images(X, caller=type(self).__name__)  # built once, handed down to _fit
        ids = images.participant_ids
        if y is None:
            raise ValueError("fit needs y (class labels) unless frozen=True.")
        _check_aligned(X, y, type(self).__name__)
        y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y).reshape(-1)
        if len(y) != len(ids):
            raise ValueError(f"Got {len(ids)} images but {len(y)} labels.")
        if y.dtype.kind == "f":
            bad = ~np.isfinite(y)
            if bad.any():
                who = [ids[i] for i in np.flatnonzero(bad)[:10]]
                raise ValueError(f"Labels are NaN for {int(bad.sum())} participant(s): {who}. "
                                 f"Exclude them (e.g. participants outside both WM groups).")
        check_classification_targets(y)  # refuses continuous targets (e.g. ages), as scikit-learn's classifiers do
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"fit needs at least two classes; got only {self.classes_.tolist()}.")
        codes = codes.astype(np.int64)
        net_kwargs = {}
        if self.class_weight == "balanced":
            w = compute_class_weight("balanced", classes=np.arange(len(self.classes_)), y=codes)
            net_kwargs["criterion__weight"] = torch.as_tensor(w, dtype=torch.float32)

        source = self._transfer_source() if self.weights is None else None
        self.n_transferred_blocks_ = 0

        def prepare(module, arch):
            if source is None:
                if self.freeze_transferred and self.n_transfer_blocks:
                    raise ValueError("freeze_transferred=True needs a brain_age_model to transfer from.")
                return
            k = self.n_transfer_blocks
            if k > len(arch["channels"]):
                raise ValueError(f"n_transfer_blocks={k} but the network has only "
                                 f"{len(arch['channels'])} blocks.")
            _transfer_blocks(module, source[1], k, freeze=self.freeze_transferred)
            self.n_transferred_blocks_ = k

        self._fit(
            images, codes, target_dtype=torch.int64, criterion=torch.nn.CrossEntropyLoss,
            stratify=True, source_arch=source[0] if source else None,
            source_name=source[2] if source else None, prepare_module=prepare, **net_kwargs,
        )
        self.head_C_ = None
        if self.refit_head == "logistic" and self.max_epochs > 0:
            self._refit_head(images, codes)
        return self

    def _refit_head(self, images, codes):
        """Replace the output layer by a logistic regression on ``h_v`` (see ``refit_head``)."""
        from sklearn.model_selection import StratifiedKFold

        H = self.transform(images).astype(np.float64)  # LogisticRegressionCV works in float64
        mean, scale = H.mean(0), H.std(0)
        scale[scale == 0] = 1.0
        H -= mean  # standardised in place: the same values as (H - mean) / scale without a second copy, which at
        H /= scale  # 27,000 training images had made this the adjusted CNN stage's peak (scale.md, stop 37)
        n_folds = int(min(5, np.bincount(codes).min()))
        if n_folds < 2:
            return  # too few participants of a class for inner folds: the trained head is kept
        lr = l2_logistic_cv(
            Cs=10, cv=StratifiedKFold(n_folds, shuffle=True, random_state=fit_seed(self.random_state)),
            class_weight=self.class_weight,
        ).fit(H, codes)
        coef, intercept = lr.coef_ / scale, lr.intercept_ - (lr.coef_ / scale) @ mean
        if coef.shape[0] == 1:  # binary: logit of class 1 against a zero logit of class 0
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
        layer = self.module_.head[-1]
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(coef, dtype=layer.weight.dtype))
            layer.bias.copy_(torch.as_tensor(intercept, dtype=layer.bias.dtype))
        self.head_C_ = float(np.ravel(lr.C_)[0])

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        check_is_fitted(self, "net_")
        return self._run(X, lambda m, xb: torch.softmax(m(xb), dim=1), (len(self.classes_),))

    def predict(self, X):
        """Most probable class per image."""
        check_is_fitted(self, "net_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X, y, sample_weight=None):
        """Balanced accuracy of ``predict(X)`` against ``y`` (the paper's metric)."""
        return float(balanced_accuracy_score(y, self.predict(X), sample_weight=sample_weight))
