"""Private plumbing for thin scikit-learn estimators that hold a skorch net as ``net_``.

* :class:`InterruptibleNetMixin`: makes a ``skorch.NeuralNet`` re-raise a KeyboardInterrupt
  that skorch's ``fit`` would swallow, and :func:`train_net`, which leaves the estimator
  unfitted when training is interrupted: the one place where the package's nets train.
* :class:`SkorchNet`: a ``skorch.NeuralNet`` that adds ``module_.penalty()`` (L1) to the
  training loss when the module defines it.
* :class:`SkorchClassifierBase`: validation, label encoding, ``classes_``,
  ``predict_proba`` / ``decision_function`` / ``predict`` around a module built by
  ``_build_module``; subclasses only declare their parameters and their module.
* :class:`EpochProgressBar`: a skorch callback drawing one tqdm bar per training run.
* :func:`resolve_feature_split`: turns an ``image_features`` specification (count, prefix,
  names, indices, slice, boolean mask) into column indices for estimators whose ``X``
  carries both the imaging features ``h_v`` and the SNPs.
"""

import copy
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from skorch.callbacks import Callback

from ._device import fit_seed, resolve_device
from ._progress import progress_bar
from ._validation import check_layer_sizes, validate_numeric_data

__all__ = [
    "InterruptibleNetMixin", "StopTraining", "train_net", "forward64", "early_stopping_split", "early_stopping_callback",
    "SkorchNet", "SkorchClassifierBase", "resolve_feature_split", "to_float32", "clip_batch_size"]


class StopTraining(KeyboardInterrupt):
    """Raised by a callback to end training (skorch's convention is a KeyboardInterrupt).

    A subclass, so that code which must tell a requested stop from a user's Ctrl-C can.
    """


def _is_callback_stop(exc):
    """Whether a KeyboardInterrupt is a skorch callback ending training (``raise KeyboardInterrupt``).

    skorch's callbacks (``EarlyStopping`` and any written the same way) stop training by raising
    a KeyboardInterrupt themselves; Ctrl-C or the command line's SIGTERM interrupt whatever code
    runs. The raising frame tells them apart: a callback's method at a ``raise`` statement.
    """
    import linecache

    from skorch.callbacks import Callback

    if isinstance(exc, StopTraining):  # the package's own callbacks say so
        return True
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if not isinstance(frame.f_locals.get("self"), Callback):
        return False
    line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno).strip()
    return line.startswith("raise") or not line  # no source to read: trust the callback


class InterruptibleNetMixin:
    """Mixin for a ``skorch.NeuralNet``: a KeyboardInterrupt during training is re-raised.

    skorch's ``partial_fit`` (and so ``fit``) catches a KeyboardInterrupt, ends training and
    returns as if training had finished: a half-trained network would then look finished.
    skorch's own callbacks (``EarlyStopping``) end training by raising a KeyboardInterrupt too;
    those still end training normally.
    With this mixin the callbacks' ``on_train_end`` still runs (progress bars close, errors
    it raises on the partial history are ignored), then the interrupt (or its subclass, e.g.
    the command line's SIGTERM) is raised again.
    """

    _cgni_interrupt = None

    def fit_loop(self, *args, **kwargs):
        try:
            return super().fit_loop(*args, **kwargs)
        except KeyboardInterrupt as exc:
            if not _is_callback_stop(exc):  # EarlyStopping's way to end training is not an interrupt
                self._cgni_interrupt = exc
            raise

    def notify(self, method_name, **cb_kwargs):
        if method_name == "on_train_end" and self._cgni_interrupt is not None:
            try:
                super().notify(method_name, **cb_kwargs)
            except Exception:  # noqa: BLE001 - the interrupt is what the caller must see
                pass
            return
        return super().notify(method_name, **cb_kwargs)

    def partial_fit(self, *args, **kwargs):
        try:
            super().partial_fit(*args, **kwargs)
        finally:  # no trace of the interrupt is left on the net (it is pickled with the estimator)
            interrupt = self.__dict__.pop("_cgni_interrupt", None)
        if interrupt is not None:
            raise interrupt
        return self


def train_net(estimator, net, *args, method="partial_fit", **kwargs):
    """Train ``net`` for ``estimator``; an interrupt leaves ``estimator`` unfitted and propagates.

    ``net`` must include :class:`InterruptibleNetMixin`. On a KeyboardInterrupt every fitted
    attribute of ``estimator`` (a name ending in ``_``, as scikit-learn's ``check_is_fitted``
    reads them) is removed before the interrupt is raised again, so a half-trained network
    is never mistaken for a fitted one.
    """
    if not isinstance(net, InterruptibleNetMixin):  # pragma: no cover - programming error
        raise TypeError(f"{type(net).__name__} does not re-raise interrupts; add InterruptibleNetMixin.")
    try:
        return getattr(net, method)(*args, **kwargs)
    except KeyboardInterrupt:
        for name in [v for v in vars(estimator) if v.endswith("_") and not v.startswith("__")]:
            delattr(estimator, name)
        raise


class SkorchNet(InterruptibleNetMixin, NeuralNet):
    """skorch ``NeuralNet`` whose training loss adds ``module_.penalty()`` when defined."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and hasattr(self.module_, "penalty"):
            loss = loss + self.module_.penalty()
        return loss


def _silent(*args, **kwargs):
    """EarlyStopping's message sink: say nothing (module level, so a fitted net pickles)."""


def early_stopping_split(y_enc, validation_fraction, seed, owner):
    """Stratified ``(fit_rows, valid_rows)`` held out for early stopping, sorted.

    The one place where the package's tabular nets (the contrastive encoder, the stage-3 and
    baseline MLPs) choose their validation rows. Refuses, naming ``owner``, a split that would
    leave a class without a sample on either side.
    """
    import math

    from sklearn.model_selection import train_test_split

    n = y_enc.size
    counts = np.bincount(y_enc)
    n_valid = math.ceil(validation_fraction * n)
    if n_valid < counts.size or n - n_valid < 2 * counts.size or counts.min() < 2:
        raise ValueError(
            f"{owner}: early_stopping holds out validation_fraction={validation_fraction} of {n} samples "
            f"({n_valid}), too few to hold out and keep every class (class counts {counts.tolist()}) on both "
            "sides. Use more samples, a larger validation_fraction, or early_stopping=False."
        )
    fit_rows, valid_rows = train_test_split(np.arange(n), test_size=n_valid, stratify=y_enc, random_state=seed)
    return np.sort(fit_rows), np.sort(valid_rows)


def early_stopping_callback(monitor, patience, *, lower_is_better=True):
    """``("early_stopping", EarlyStopping)`` of the tabular nets: stop after ``patience`` epochs without any
    improvement of ``monitor`` and restore the best epoch's weights."""
    from skorch.callbacks import EarlyStopping

    return ("early_stopping", EarlyStopping(monitor=monitor, lower_is_better=lower_is_better, patience=patience,
                                            threshold=0.0, threshold_mode="abs", load_best=True, sink=_silent))


def forward64(module, X, method="forward", chunk_size=8192):
    """Run ``module`` (or one of its methods) on ``X`` in float64, without gradients.

    Training happens in float32, but float32 matrix products depend on how many rows are
    multiplied together (BLAS blocking), so a sample's output would change in the 7th digit
    with the batch it is predicted in. Inference on a float64 copy of the module makes
    predictions independent of batch composition (scikit-learn's subset-invariance check).
    """
    import torch

    device = next(module.parameters()).device
    module64 = copy.deepcopy(module).double().eval()
    fn = getattr(module64, method)
    X = np.asarray(X, dtype=np.float64)
    out = []
    with torch.no_grad():
        for start in range(0, X.shape[0], chunk_size):
            out.append(fn(torch.as_tensor(X[start : start + chunk_size], device=device)).cpu().numpy())
    return np.concatenate(out) if out else None


def to_float32(X):
    """C-contiguous, writeable float32 copy-if-needed of ``X`` (torch refuses read-only)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not X.flags.writeable:
        X = X.copy()
    return X


def clip_batch_size(batch_size, n_samples, owner):
    """scikit-learn's MLP convention: a batch larger than the data is clipped, with a warning."""
    if batch_size > n_samples:
        warnings.warn(
            f"{owner}: batch_size={batch_size} is larger than the {n_samples} training "
            f"samples; clipping it to {n_samples}.",
            UserWarning,
            stacklevel=3,
        )
        return n_samples
    return batch_size


def resolve_feature_split(spec, n_features, feature_names=None, *, owner="estimator", param="image_features"):
    """Return ``(image_idx, genetic_idx)``: column indices of ``h_v`` and of the SNPs.

    Parameters
    ----------
    spec : int, str, slice, sequence of str or int, or boolean array
        * ``int`` n: the first ``n`` columns are imaging features, the rest SNPs;
        * ``str``: prefix of the imaging column names (e.g. ``"image__"``, as
          ``ColumnTransformer`` names them); needs ``X`` with column names;
        * ``slice``, sequence of int / str or boolean mask: the imaging columns.
        Every other column is a SNP.
    n_features : int
    feature_names : ndarray of str or None
        ``feature_names_in_`` when ``X`` was a DataFrame.
    """
    all_idx = np.arange(n_features)
    names = None if feature_names is None else [str(f) for f in feature_names]
    if isinstance(spec, numbers.Integral) and not isinstance(spec, (bool, np.bool_)):
        if not 0 < spec < n_features:
            raise ValueError(
                f"{owner}: {param}={spec} must leave at least one imaging and one genetic "
                f"column, but X has {n_features} feature(s)."
            )
        image_idx = all_idx[:spec]
    elif isinstance(spec, str):
        if names is None:
            raise ValueError(
                f"{owner}: {param}={spec!r} is a column-name prefix but X has no column "
                f"names (X has {n_features} feature(s)); pass a DataFrame, or an int / slice "
                "/ list of column indices."
            )
        image_idx = np.array([i for i, n in enumerate(names) if n.startswith(spec)], dtype=int)
        if image_idx.size == 0:
            raise ValueError(
                f"{owner}: no column of X starts with {param}={spec!r}; the first columns "
                f"are {names[:5]}."
            )
    elif isinstance(spec, slice):
        image_idx = all_idx[spec]
    else:
        spec = np.asarray(spec)
        if spec.dtype == bool:
            if spec.shape != (n_features,):
                raise ValueError(
                    f"{owner}: boolean {param} has {spec.shape[0]} entries but X has "
                    f"{n_features} feature(s)."
                )
            image_idx = all_idx[spec]
        elif spec.dtype.kind in "iu":
            if spec.size and (spec.min() < 0 or spec.max() >= n_features):
                raise ValueError(f"{owner}: {param} has column indices outside [0, {n_features}).")
            image_idx = np.unique(spec)
        elif spec.dtype.kind in "UO":
            if names is None:
                raise ValueError(
                    f"{owner}: {param} lists column names but X has no column names."
                )
            missing = [s for s in spec.tolist() if s not in names]
            if missing:
                raise ValueError(f"{owner}: {param} names columns absent from X: {missing[:10]}.")
            lookup = {n: i for i, n in enumerate(names)}
            image_idx = np.array(sorted(lookup[s] for s in spec.tolist()), dtype=int)
        else:
            raise TypeError(f"{owner}: cannot interpret {param}={spec!r}.")
    genetic_idx = np.setdiff1d(all_idx, image_idx)
    if image_idx.size == 0 or genetic_idx.size == 0:
        raise ValueError(
            f"{owner}: {param} selects {image_idx.size} imaging and {genetic_idx.size} "
            f"genetic column(s) out of {n_features} feature(s); both must be non-empty."
        )
    return np.asarray(image_idx, dtype=int), genetic_idx


class SkorchClassifierBase(ClassifierMixin, BaseEstimator):
    """Shared fit / predict for classifiers wrapping one torch module in a skorch net.

    Subclasses define ``__init__`` (explicit parameters, stored unchanged) and
    ``_build_module(n_features, n_classes)``; they must have the parameters ``lr``,
    ``max_epochs``, ``batch_size``, ``weight_decay``, ``device``, ``random_state`` and
    ``verbose``, ``class_weight``, ``early_stopping``, ``validation_fraction`` and
    ``n_iter_no_change``. Labels are encoded with a ``LabelEncoder``; the module outputs one
    logit per class and is trained with cross-entropy and Adam. Missing values are refused.

    With ``early_stopping``, a stratified ``validation_fraction`` of the rows is held out,
    its (class-weighted) cross-entropy is computed after every epoch, training stops when it
    has not improved for ``n_iter_no_change`` epochs and the best epoch's weights are kept.
    Fitted curves: ``loss_curve_``, ``validation_loss_curve_`` (None without early stopping),
    ``best_epoch_`` (1-based) and ``n_iter_`` (epochs run).

    A KeyboardInterrupt during ``fit`` propagates (skorch alone would swallow it and return a
    half-trained net) and leaves the estimator unfitted (see :func:`train_net`).
    """

    _parameter_constraints = {
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    #: whether ``hidden_layer_sizes`` may be empty (a linear model on the inputs)
    _allow_no_hidden_layer = True

    def _build_module(self, n_features, n_classes):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_params(self):
        """Checks that the parameter constraints cannot express, run by ``fit`` after them.

        ``sklearn-cgni run`` also runs them (with the constraints) when it loads a config.
        """
        if hasattr(self, "hidden_layer_sizes"):
            check_layer_sizes(self.hidden_layer_sizes, "hidden_layer_sizes", type(self).__name__,
                              allow_empty=self._allow_no_hidden_layer)

    def _validate_fit_data(self, X, y):
        X, y = validate_numeric_data(self, X, y, method="fit", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if self.classes_.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; y holds only "
                f"one class: {self.classes_[0]!r}."
            )
        return X, self._label_encoder.transform(y)

    def _fit_net(self, X, y_enc):
        import torch

        from ..nn._random import seeded_init, set_generators

        device = resolve_device(self.device)
        seed = fit_seed(self.random_state)
        with seeded_init(seed):
            module = self._build_module(X.shape[1], len(self.classes_))
        set_generators(module, seed, device)
        criterion_kwargs = {}
        if self.class_weight is not None:
            weight = compute_class_weight(self.class_weight, classes=self.classes_, y=self.classes_[y_enc])
            criterion_kwargs["criterion__weight"] = torch.as_tensor(weight, dtype=torch.float32)
        owner = type(self).__name__
        extra = {"train_split": None}
        if self.early_stopping:
            from skorch.dataset import Dataset
            from skorch.helper import predefined_split

            fit_rows, valid_rows = early_stopping_split(y_enc, self.validation_fraction, seed, owner)
            extra = {
                "train_split": predefined_split(Dataset(to_float32(X[valid_rows]), y_enc[valid_rows].astype(np.int64))),
                "callbacks": [early_stopping_callback("valid_loss", self.n_iter_no_change)],
                "iterator_valid__batch_size": int(valid_rows.size),  # the whole held-out set, one batch
            }
            X, y_enc = X[fit_rows], y_enc[fit_rows]
        batch_size = clip_batch_size(self.batch_size, X.shape[0], owner)
        self.net_ = SkorchNet(
            module=module,
            criterion=torch.nn.CrossEntropyLoss,
            **criterion_kwargs,
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=batch_size,
            iterator_train__shuffle=True,
            iterator_train__generator=torch.Generator().manual_seed(seed),
            iterator_valid__generator=torch.Generator().manual_seed(seed),
            device=device,
            verbose=self.verbose,
            **extra,
        )
        try:
            train_net(self, self.net_, to_float32(X), y_enc.astype(np.int64), method="fit")
        finally:
            set_generators(module, None)
        self.net_.module_.eval()
        history = self.net_.history
        self.n_iter_ = len(history)
        self.loss_curve_ = [float(v) for v in history[:, "train_loss"]]
        self.validation_loss_curve_ = None
        self.best_epoch_ = self.n_iter_
        if self.early_stopping:
            self.validation_loss_curve_ = [float(v) for v in history[:, "valid_loss"]]
            self.best_epoch_ = int(np.argmin(self.validation_loss_curve_)) + 1
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._check_params()
        X, y_enc = self._validate_fit_data(X, y)
        return self._fit_net(X, y_enc)

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_numeric_data(self, X, method="predict", reset=False, dtype=[np.float64, np.float32])
        return forward64(self.net_.module_, X)

    def decision_function(self, X):
        """Class scores: ``logit[1] - logit[0]`` for two classes, else the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self._logits(X)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class EpochProgressBar(Callback):
    """A skorch callback drawing one tqdm bar per training run, advanced once per epoch with the training loss.

    Defined at module level (not inside a function) so that an estimator holding it in ``callbacks`` pickles;
    the bar itself is not pickled.

    Parameters
    ----------
    desc : str
        The bar's label.
    total : int
        Epochs expected (the budget; a growing budget runs past it).
    enabled : bool, default=True
        False draws nothing.
    """

    def __init__(self, desc="", total=0, enabled=True):
        self.desc = desc
        self.total = total
        self.enabled = enabled

    def on_train_begin(self, net, **kwargs):
        self.bar_ = progress_bar(total=self.total, desc=self.desc, unit="epoch", leave=False, enabled=self.enabled,
                                 position=1)

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1].get("train_loss")
        if loss is not None:
            self.bar_.set_postfix(loss=f"{loss:.4g}")
        self.bar_.update(1)

    def on_train_end(self, net, **kwargs):
        self.bar_.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("bar_", None)
        return state

