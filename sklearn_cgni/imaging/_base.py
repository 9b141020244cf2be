"""Shared machinery of the image CNN estimators (not public).

Input checking, building and training the skorch net, batched inference with flat memory,
weights-only persistence and the frozen mode live here; :class:`BrainAgeCNNTransformer` and
:class:`ImagingCNNClassifier` are thin subclasses.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..nn._cnn import (
    PAPER_CHANNELS,
    BrainCNN,
    FoldedInferenceCNN,
    auto_pool_blocks,
    backbone_output_shape,
    recalibrate_batchnorm,
)
from ..nn._random import seeded_init, set_generators
from ..utils import fit_seed, resolve_device
from ..utils._distributed import global_batchnorm, init_distributed, rank_seed
from ..utils._skorch import InterruptibleNetMixin, train_net
from ..io import check_images
from ._cnn_utils import _train_loader, _voxel_statistics
from ._dataset import ImageDataset, make_loader

WEIGHTS_FORMAT = "sklearn_cgni.BrainCNN/1"
_ARCH_PARAMS = ("channels", "padding", "pool_blocks", "global_pool")
_ARCH_DEFAULTS = {"channels": PAPER_CHANNELS, "padding": 0, "pool_blocks": None,
                  "global_pool": None}


class _ValidMetric(Callback):
    """A skorch callback recording ``name`` = ``metric(y_true, y_pred)`` on the validation split.

    ``y_pred`` is the network's output over the whole validation split (numpy), ``y_true``
    the targets as the net received them. A module-level class (and ``metric`` a module-level
    function), so that a fitted estimator holding it can be pickled.
    """

    def __init__(self, name, metric):
        self.name = name
        self.metric = metric

    def on_epoch_begin(self, net, **kwargs):
        self._y, self._p = [], []

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if not training and y_pred is not None:
            self._y.append(batch[1].detach().cpu().numpy())
            self._p.append(y_pred.detach().float().cpu().numpy())

    def on_epoch_end(self, net, **kwargs):
        if self._y:
            net.history.record(self.name, float(self.metric(np.concatenate(self._y), np.concatenate(self._p))))


def _valid_metric_callback(name, metric):
    """A :class:`_ValidMetric` callback recording ``name`` = ``metric(y_true, y_pred)``."""
    return _ValidMetric(name, metric)


class _RecalibratingNet(InterruptibleNetMixin, NeuralNet):
    """skorch ``NeuralNet`` whose validation pass sees exact BatchNorm statistics.

    With ``recalibrate_bn=True``, the running statistics of every training BatchNorm are
    re-estimated with the current weights on the training batches
    (:func:`~sklearn_cgni.nn.recalibrate_batchnorm`) before each validation pass, so the
    validation metrics that early stopping and the LR schedule watch are those of the
    network as it will predict. Without it, the lagging exponential averages can make
    eval-mode outputs of a small-shape network arbitrary in early epochs. The cost is one
    forward pass over the training images per epoch.
    """

    def __init__(self, *args, recalibrate_bn=True, channels_last=False, bfloat16=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.recalibrate_bn = recalibrate_bn
        self.channels_last = channels_last
        self.bfloat16 = bfloat16

    _ddp = None  # the DistributedDataParallel wrapper while training data-parallel
    _swapped_bn = None

    def initialize_module(self):
        super().initialize_module()
        if self.channels_last:  # before the optimizer sees the parameters
            self.module_.to(memory_format=torch.channels_last_3d)
        return self

    def on_train_begin(self, *args, **kwargs):
        """Under torchrun: global-batch BatchNorm and a DistributedDataParallel wrapper for training.

        Both share the module's parameters, so the optimizer and every callback keep working on
        ``module_``; DDP starts every process from rank 0's weights.
        """
        from ..utils._distributed import convert_batchnorm, data_parallel

        if data_parallel():
            from torch.nn.parallel import DistributedDataParallel

            self.__dict__["_swapped_bn"] = convert_batchnorm(self.module_, self.device)
            device = torch.device(self.device)
            ddp = DistributedDataParallel(
                self.module_, device_ids=[device.index or 0] if device.type == "cuda" else None)
            self.__dict__["_ddp"] = ddp  # skorch's setattr allows torch modules only in initialize_*
        return super().on_train_begin(*args, **kwargs)

    def infer(self, x, **fit_params):
        """The module's output, on channels_last_3d input and under bfloat16 autocast if asked.

        Training steps under torchrun go through the DistributedDataParallel wrapper (gradient
        all-reduce); validation and inference call the module itself.
        """
        from skorch.utils import to_tensor

        x = to_tensor(x, device=self.device)
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        device_type = x.device.type if x.device.type in ("cpu", "cuda") else "cpu"
        training = self._ddp is not None and self.module_.training and torch.is_grad_enabled()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bfloat16):
            out = (self._ddp if training else self.module_)(x, **fit_params)
        return out.float() if self.bfloat16 else out

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if training:
            self.train_iterator_ = iterator
        elif iterator is not None and self.recalibrate_bn and getattr(self, "train_iterator_", None) is not None:
            recalibrate_batchnorm(self.module_, self.train_iterator_, self.device)
        return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)

    def on_train_end(self, *args, **kwargs):
        self.train_iterator_ = None  # do not keep the training data reachable from the fitted net
        if self._swapped_bn is not None:  # plain BatchNorm again: the fitted net is an ordinary one
            from ..utils._distributed import restore_batchnorm

            restore_batchnorm(self._swapped_bn)
        # no trace on the fitted net (skorch and skops rebuild a net from its attributes)
        self.__dict__.pop("_ddp", None)
        self.__dict__.pop("_swapped_bn", None)
        return super().on_train_end(*args, **kwargs)


def _restart_seed(seed, restart):
    """The initialisation seed of restart number ``restart`` (>= 1) of a fit seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(restart)]).generate_state(1)[0])


class _FeatureExtractor(torch.nn.Module):
    """``x -> h_v`` sharing the parameters of a fitted :class:`BrainCNN`."""

    def __init__(self, cnn):
        super().__init__()
        self.cnn = cnn

    def forward(self, x):
        return self.cnn.features(x)


class _BaseImageCNN(BaseEstimator):
    """Base class; see :class:`BrainAgeCNNTransformer` for the parameters."""

    _parameter_constraints: dict = {
        "channels": ["array-like", None],
        "padding": [Options(Integral, {0, 1}), None],
        "pool_blocks": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"}), None],
        "global_pool": [StrOptions({"avg", "max", "none"}), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [StrOptions({"plateau", "plateau_floor", "none"})],
        "min_epochs": [Interval(Integral, 0, None, closed="left")],
        "warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "budget_growth": [Interval(Real, 1, None, closed="left")],
        "max_restarts": [Interval(Integral, 0, None, closed="left")],
        "standardize_voxels": ["boolean"],
        "augment_shift": [Interval(Integral, 0, None, closed="left")],
        "callbacks": [list, None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "cache_dir": [str, os.PathLike, None],
        "device": [str],
        "weights": [str, os.PathLike, None],
        "frozen": ["boolean"],
        "transform_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "inference_backend": [StrOptions({"auto", "eager", "mkldnn"})],
        "recalibrate_bn": ["boolean"],
        "channels_last": ["boolean"],  # used by subclasses that predate inference_backend
        "memory_format": [StrOptions({"auto", "channels_last", "contiguous"})],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ------------------------------------------------------------------ hooks
    _kind = None  # "regression" | "classification"
    #: (history key, lower is better) that early stopping and the LR schedule watch
    _monitor = ("valid_loss", True)

    def _monitor_callbacks(self):
        """``(name, callback)`` pairs recording validation metrics besides skorch's valid_loss."""
        return []

    def _n_outputs(self):
        raise NotImplementedError

    def _baseline_metric(self):
        """``f(y_valid)``: the monitored metric of the constant predictor (None: no restarts)."""
        return None

    def _extra_state(self):
        return {}

    def _set_extra_state(self, state):
        pass

    # ------------------------------------------------------------------ helpers
    def _check_params(self):
        """Checks that the parameter constraints cannot express, run by ``fit`` after them.

        ``sklearn-cgni run`` also runs them (with the constraints) when it loads a config.
        """
        from ..utils._validation import check_layer_sizes

        if self.channels is not None:
            check_layer_sizes(self.channels, "channels", type(self).__name__, allow_empty=False)

    def _requested_arch(self):
        """Architecture parameters given explicitly (None = not given)."""
        arch = {}
        for name in _ARCH_PARAMS:
            value = getattr(self, name)
            if name == "channels" and value is not None:
                value = tuple(int(c) for c in value)
            if name == "global_pool" and value == "none":
                value = None
            arch[name] = value
        return arch

    def _resolve_arch(self, source_arch=None, source_name="weights"):
        """Explicit parameters, else ``source_arch`` (a weights file), else the paper's."""
        arch = {}
        requested = self._requested_arch()
        for name in _ARCH_PARAMS:
            given = getattr(self, name)
            if source_arch is not None:
                src = source_arch[name]
                src = tuple(src) if name == "channels" and src is not None else src
                if given is not None and requested[name] != src and not (name == "pool_blocks" and given == "auto"):
                    raise ValueError(
                        f"{type(self).__name__}: {name}={given!r} differs from the architecture "
                        f"stored in {source_name} ({name}={src!r}). Leave {name}=None to take "
                        f"it from {source_name}."
                    )
                arch[name] = src
            else:
                arch[name] = requested[name] if given is not None else _ARCH_DEFAULTS[name]
        if len(arch["channels"]) == 0:
            raise ValueError("channels must list at least one block.")
        return arch

    def _check_X(self, X, *, reset):
        """The :class:`~sklearn_cgni.io.ImageSource` of ``X`` (built once; one given is used as is).

        With ``cache_dir``, NIfTI images are read from the float16 memory map (decoded once).
        """
        source = check_images(X, caller=type(self).__name__)
        if reset:
            if source.feature_names is not None:
                self.feature_names_in_ = np.asarray(source.feature_names, dtype=object)
                self.n_features_in_ = 1
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
                del self.n_features_in_
        else:
            expected = tuple(self.image_shape_)
            if source.shape != expected:
                raise ValueError(
                    f"{type(self).__name__} was fitted on images of shape {expected}; the image "
                    f"of participant {source.participant_ids[0]!r} has shape {source.shape}."
                )
        if self.cache_dir is not None:
            source = source.cached(self.cache_dir, n_threads=max(1, self.num_workers))
        return source

    def _build_module(self, image_shape, arch, standardize_voxels=None):
        if standardize_voxels is None:
            standardize_voxels = self.standardize_voxels
        return BrainCNN.build(
            image_shape, n_outputs=self._n_outputs(), channels=arch["channels"],
            padding=arch["padding"], pool_blocks=arch["pool_blocks"],
            global_pool=arch["global_pool"], dropout=self.dropout,
            squeeze=self._kind == "regression", standardize_voxels=standardize_voxels,
            augment_shift=self.augment_shift,
        )

    def _convergence_control(self):
        """The training recipe (:class:`~sklearn_cgni.imaging._convergence.ConvergenceControl`), or None.

        Warm-up, the floored plateau schedule, restarts, early stopping and the growing budget:
        see that module. None when nothing watches a validation split and there is no warm-up.
        """
        from ._convergence import ConvergenceControl

        watches = self.early_stopping or self.lr_schedule != "none"
        if not (watches or self.warmup_epochs):
            return None
        if watches and self.validation_fraction <= 0:
            raise ValueError(
                f"{type(self).__name__}: early_stopping=True and lr_schedule={self.lr_schedule!r} "
                f"watch a validation split; set validation_fraction > 0 (got "
                f"{self.validation_fraction}) or early_stopping=False and lr_schedule='none'.")
        monitor, lower = self._monitor
        return ConvergenceControl(
            monitor if watches else None, lower, self.max_epochs, early_stopping=self.early_stopping and watches,
            patience=self.n_iter_no_change, min_epochs=self.min_epochs, warmup_epochs=self.warmup_epochs,
            lr_schedule=self.lr_schedule if watches else "none", budget_growth=self.budget_growth,
            baseline=self._baseline_metric(), restart=getattr(self, "n_restarts_", 0) < self.max_restarts)

    def _record_training(self):
        """``n_epochs_``, ``best_epoch_``, ``history_``, ``budget_`` and ``stop_reason_`` from the net."""
        history = self.net_.history
        self.n_epochs_ = len(history)
        control = self._control()
        self.budget_ = int(control.budget_) if control is not None else int(self.max_epochs)
        self.stop_reason_ = control.stop_reason_ if control is not None else None
        monitor, lower = self._monitor
        keys = {"train_loss": "train_loss", "valid_loss": "valid_loss",
                **{name: name for name, _ in self._monitor_callbacks()}, "event_lr": "lr"}
        self.history_ = [{"epoch": int(e["epoch"])} | {name: float(e[k]) for k, name in keys.items() if k in e}
                         for e in history]
        values = [e.get(monitor) for e in self.history_]
        if self.n_epochs_ and all(v is not None for v in values):
            best = int(np.argmin(values) if lower else np.argmax(values))
            self.best_epoch_ = int(self.history_[best]["epoch"]) if self.early_stopping else self.n_epochs_
        else:
            self.best_epoch_ = self.n_epochs_

    def _transfer_source(self):
        """``(arch, state_dict, description)`` of ``brain_age_model``, the transfer source, or None.

        A weights path written by :meth:`save_weights`, a fitted image CNN, or a
        ``sklearn.frozen.FrozenEstimator`` of one (used by :class:`ImagingCNNClassifier` and
        :class:`BrainGenotypeScorer`).
        """
        src = self.brain_age_model
        if src is None:
            return None
        if isinstance(src, (str, os.PathLike)):
            state = self._load_weights_file(src, what="brain_age_model", kind=None)
            return state["config"], state["state_dict"], repr(os.fspath(src))
        if type(src).__name__ == "FrozenEstimator" and hasattr(src, "estimator"):
            src = src.estimator
        if not isinstance(src, _BaseImageCNN):
            raise TypeError(f"brain_age_model must be a fitted BrainAgeCNNTransformer, a "
                            f"FrozenEstimator of one, or a weights path; got {type(src).__name__}.")
        if not hasattr(src, "net_"):
            raise ValueError(
                "brain_age_model is not fitted. clone() (used by GridSearchCV, cross_validate and "
                "cross_fit_scores) returns unfitted copies of estimator parameters: pass the path "
                "of its save_weights() file or sklearn.frozen.FrozenEstimator(model).")
        state = {k: v.detach().cpu() for k, v in src.module_.state_dict().items()}
        return src.arch_, state, f"brain_age_model ({type(src).__name__})"

    def _load_weights_file(self, path=None, *, what="weights file", kind="own"):
        """The package's one weights loader for CNNs: a :meth:`save_weights` file, checked.

        ``path`` defaults to ``weights``; ``kind="own"`` requires a network of this
        estimator's kind, ``None`` accepts any (a transfer source). Old state dicts (voxel
        statistics at the top level) are upgraded.
        """
        from ..utils._weights import load_weights_file

        path = os.fspath(self.weights if path is None else path)
        state = load_weights_file(path, WEIGHTS_FORMAT, type(self).__name__, what=what)
        if kind == "own" and state["kind"] != self._kind:
            raise ValueError(f"{path!r} holds a {state['kind']} network; "
                             f"{type(self).__name__} needs a {self._kind} network.")
        state["state_dict"] = BrainCNN.upgrade_state_dict(state["state_dict"])
        return state

    def _train_channels_last(self):
        """Whether training runs on channels_last_3d tensors (``memory_format``; auto: on the CPU)."""
        if self.memory_format == "auto":
            return str(self.device_).startswith("cpu")
        return self.memory_format == "channels_last"

    def _make_net(self, module, criterion, seed, stratify, extra_callbacks=(), init_seed=None, **kwargs):
        from skorch.dataset import ValidSplit

        train_split = None
        if self.validation_fraction > 0:
            train_split = ValidSplit(self.validation_fraction, stratified=stratify,
                                     random_state=seed)
        generator = torch.Generator()
        generator.manual_seed(seed if init_seed is None else init_seed)
        loader_kwargs = {}
        if self.num_workers > 0:
            from ._dataset import _worker_init

            loader_kwargs = {"num_workers": self.num_workers, "worker_init_fn": _worker_init}
        monitors = list(self._monitor_callbacks()) if train_split is not None else []
        control = self._convergence_control()
        callbacks = list(self.callbacks or []) + list(extra_callbacks) + monitors
        if control is not None:
            callbacks.append(("convergence", control))
        return _RecalibratingNet(
            module=module,
            criterion=criterion,
            recalibrate_bn=self.recalibrate_bn,
            channels_last=self._train_channels_last(),
            bfloat16=self.precision == "bfloat16",
            optimizer=torch.optim.Adam,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            iterator_train=_train_loader,
            max_epochs=self.max_epochs if control is None else control.epoch_cap(),
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
            # DataLoaders draw their workers' base seed from a generator: never from torch's global one
            iterator_valid__generator=torch.Generator().manual_seed(seed),
            **{f"iterator_train__{k}": v for k, v in loader_kwargs.items()},
            **{f"iterator_valid__{k}": v for k, v in loader_kwargs.items()},
            train_split=train_split,
            callbacks=callbacks or None,
            device=self.device_,
            verbose=self.verbose,
            **kwargs,
        )

    def _fit(self, X, y, *, target_dtype, criterion, stratify, source_arch=None,
             source_name=None, prepare_module=None, extra_callbacks=(), **net_kwargs):
        """Common fit: frozen loading or training. ``y`` already validated (or None).

        ``source_arch``: architecture of a transfer source (used when no ``weights``);
        ``prepare_module(module)``: called after building (transfer of blocks, freezing).
        """
        self._check_params()
        init_distributed(device=self.device)  # under torchrun: train data-parallel (nothing otherwise)
        self.device_ = resolve_device(self.device)
        images = self._check_X(X, reset=True)
        shape = images.shape
        if self.frozen:
            if self.weights is None:
                raise ValueError(f"{type(self).__name__}(frozen=True) needs weights=<path> "
                                 f"written by save_weights().")
            self._load_frozen(shape)
            return self
        seed = fit_seed(self.random_state)
        source = self._load_weights_file() if self.weights is not None else None
        if source is not None:
            source_arch, source_name = source["config"], repr(os.fspath(self.weights))
        arch = self._resolve_arch(source_arch, source_name=source_name)
        if arch["pool_blocks"] == "auto":
            arch["pool_blocks"] = auto_pool_blocks(shape, arch["channels"], arch["padding"])
        self.image_shape_ = shape
        self.arch_ = arch
        self.n_features_out_ = int(np.prod(backbone_output_shape(
            shape, arch["channels"], arch["padding"], arch["pool_blocks"], arch["global_pool"])))
        dataset = ImageDataset(images, y, target_dtype=target_dtype)
        voxel_stats = None
        self.n_restarts_ = 0
        while True:  # a run that never leaves the constant predictor's level restarts (max_restarts)
            init_seed = seed if not self.n_restarts_ else _restart_seed(seed, self.n_restarts_)
            with seeded_init(init_seed):  # initial weights from this fit's seed; torch's global generator is untouched
                module = self._build_module(shape, arch)
            if source is not None:
                module.load_state_dict(source["state_dict"])
            else:
                if module.standardizes_input:
                    voxel_stats = voxel_stats or _voxel_statistics(images)
                    module.set_voxel_statistics(*voxel_stats)
                if prepare_module is not None:
                    prepare_module(module, arch)
            # the validation split stays the seed's: the restarts are compared on the same participants
            self.net_ = self._make_net(module, criterion, seed, stratify, extra_callbacks,
                                       init_seed=init_seed, **net_kwargs)
            self.net_.initialize()
            if self.max_epochs <= 0:
                break
            trained = self.module_  # train_net removes net_ when interrupted
            # dropout masks and random shifts: a stream of its own on every process under torchrun
            set_generators(trained, rank_seed(init_seed), self.device_)
            try:
                train_net(self, self.net_, dataset, y)
            finally:
                set_generators(trained, None)
            control = self._control()
            if control is None or not control.restart_requested_ or self.n_restarts_ >= self.max_restarts:
                break
            self.n_restarts_ += 1
        if self.max_epochs > 0:
            set_generators(self.module_, rank_seed(init_seed), self.device_)
            try:
                self.module_.to(memory_format=torch.contiguous_format)  # inference and saved weights: the default
                if self.recalibrate_bn:  # a train-mode pass: dropout draws from the generators too
                    # under torchrun: each process its share of the batches, statistics of the global batch
                    with global_batchnorm(self.module_, dataset, self.device_) as sampler:
                        loader = make_loader(dataset, self.batch_size, num_workers=self.num_workers,
                                             sampler=sampler)
                        recalibrate_batchnorm(self.module_, loader, self.device_)
            finally:
                set_generators(trained, None)
        self._record_training()
        self.module_.eval()
        return self

    def _control(self):
        """The fitted net's :class:`ConvergenceControl`, or None."""
        return dict(self.net_.callbacks_).get("convergence")

    def _load_frozen(self, shape):
        state = self._load_weights_file()
        arch = self._resolve_arch(state["config"], source_name=repr(os.fspath(self.weights)))
        trained_shape = tuple(state["image_shape"])
        if arch["global_pool"] is None and trained_shape != tuple(shape):
            raise ValueError(
                f"The weights in {os.fspath(self.weights)!r} were trained on images of shape "
                f"{trained_shape}; the given images have shape {tuple(shape)}."
            )
        self._set_extra_state(state["extra"])
        module = self._build_module(shape, arch, standardize_voxels=BrainCNN.state_dict_standardizes(state["state_dict"]))
        module.load_state_dict(state["state_dict"])
        self.image_shape_ = tuple(shape)
        self.arch_ = arch
        self.n_features_out_ = int(np.prod(backbone_output_shape(
            shape, arch["channels"], arch["padding"], arch["pool_blocks"], arch["global_pool"])))
        self.net_ = NeuralNet(module=module, criterion=torch.nn.MSELoss, max_epochs=0,
                              batch_size=self.batch_size, device=self.device_, train_split=None,
                              verbose=0)
        self.net_.initialize()
        self.module_.eval()

    # ------------------------------------------------------------------ inference
    @property
    def module_(self):
        """The fitted :class:`sklearn_cgni.nn.BrainCNN` (backbone + head)."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    def feature_extractor(self):
        """The fitted network's ``x -> h_v`` part as a torch module in eval mode.

        It shares parameters with :attr:`module_` (no copy). Input: ``(batch, X, Y, Z)``
        or ``(batch, 1, X, Y, Z)`` float32 on :attr:`device_`; output ``(batch,
        n_features_out_)``. For attribution methods (occlusion, saliency) that need a
        torch callable.
        """
        return _FeatureExtractor(self.module_).eval()

    def _run(self, X, fn, n_out):
        """Apply ``fn(module, batch)`` over X in batches; memory stays flat in len(X)."""
        check_is_fitted(self, "net_")
        dataset = ImageDataset(self._check_X(X, reset=False))
        loader = make_loader(dataset, self.transform_batch_size or self.batch_size,
                             num_workers=self.num_workers)
        module = self._inference_module()
        channels_last = getattr(self, "channels_last", False) and isinstance(module, BrainCNN)
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        if channels_last:
            module.to(memory_format=memory_format)
        out = np.empty((len(dataset), *n_out), dtype=np.float32)
        start = 0
        try:
            with torch.inference_mode():
                for xb, _ in loader:
                    xb = xb.to(self.device_, memory_format=memory_format)
                    res = fn(module, xb).float().cpu().numpy()
                    out[start:start + len(res)] = res
                    start += len(res)
        finally:
            if channels_last:
                module.to(memory_format=torch.contiguous_format)
        return out

    def _inference_module(self):
        """The fitted module in eval mode, or its BN-folded oneDNN copy on CPU."""
        module = self.module_.eval()
        backend = getattr(self, "inference_backend", "auto")
        if getattr(self, "channels_last", False):
            backend = "eager"
        on_cpu = str(self.device_).startswith("cpu")
        if backend == "auto":
            backend = "mkldnn" if on_cpu and torch.backends.mkldnn.is_available() else "eager"
        if backend == "mkldnn":
            if not on_cpu:
                raise ValueError("inference_backend='mkldnn' runs on the CPU only; "
                                 f"device_ is {self.device_!r}.")
            return FoldedInferenceCNN(module, backend="mkldnn")
        return module

    def transform(self, X):
        """Image features h_v: the flattened output of the last convolutional block.

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths

        Returns
        -------
        h_v : ndarray of shape (n, n_features_out_), float32
            ``n_features_out_`` is 2048 for the paper's network at 128x141x128 (256 channels
            x 2x2x2), ``channels[-1]`` with a global pool; see ``sklearn_cgni.nn``.
        """
        check_is_fitted(self, "net_")
        return self._run(X, lambda m, xb: m.features(xb), (self.n_features_out_,))

    def _check_n_last_blocks(self, n_last_blocks):
        n_all = len(self.arch_["channels"])
        if not isinstance(n_last_blocks, Integral) or not 1 <= n_last_blocks <= n_all:
            raise ValueError(f"{type(self).__name__}: n_last_blocks must be an int in [1, {n_all}] (the network "
                             f"has {n_all} convolutional blocks); got {n_last_blocks!r}.")
        return n_all - int(n_last_blocks)

    def transform_blocks(self, X, n_last_blocks=1):
        """The activations entering the last ``n_last_blocks`` blocks, flattened.

        With :meth:`last_blocks`, this splits the fitted network in two: ``last_blocks(k)``
        applied to ``transform_blocks(X, k)`` gives :meth:`transform`'s ``h_v``. A tabular
        estimator can then train the last blocks further on these activations (CGNI's stage 2
        with ``ContrastiveSNPEncoder(image_tail=last_blocks(k))``) without reading the images
        again.

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths
        n_last_blocks : int, default=1

        Returns
        -------
        activations : ndarray of shape (n, C*X'*Y'*Z'), float32
        """
        from ..nn import CNNTail

        check_is_fitted(self, "net_")
        first = self._check_n_last_blocks(n_last_blocks)
        module = self.module_.eval()
        blocks = module.backbone.blocks[:first]
        shape = CNNTail.input_shape(module.backbone, n_last_blocks, self.image_shape_)

        def head(_, xb):
            x = module.standardize(xb)
            for block in blocks:
                x = block(x)
            return torch.flatten(x, 1)

        return self._run(X, head, (int(np.prod(shape)),))

    def last_blocks(self, n_last_blocks=1):
        """A trainable copy of the last ``n_last_blocks`` blocks: a :class:`sklearn_cgni.nn.CNNTail`.

        It maps :meth:`transform_blocks` ``(X, n_last_blocks)`` to ``h_v``; the fitted network is
        not changed when the copy is trained.
        """
        from ..nn import CNNTail

        check_is_fitted(self, "net_")
        self._check_n_last_blocks(n_last_blocks)
        return CNNTail.from_backbone(self.module_.backbone, n_last_blocks, self.image_shape_).eval()

    def get_feature_names_out(self, input_features=None):
        """``h_v0 ... h_v{n_features_out_-1}``."""
        check_is_fitted(self, "net_")
        return np.asarray([f"h_v{i}" for i in range(self.n_features_out_)], dtype=object)

    # ------------------------------------------------------------------ persistence
    def save_weights(self, path):
        """Write architecture, weights and target scaling to ``path`` (a torch file).

        The file holds only tensors, numbers, strings and lists, so it is read back with
        ``torch.load(weights_only=True)``: nothing is unpickled. Use it with
        ``weights=path`` (``frozen=True`` to load without training) or :meth:`from_weights`.
        """
        check_is_fitted(self, "net_")
        arch = dict(self.arch_)
        arch["channels"] = list(arch["channels"])
        state = {
            "format": WEIGHTS_FORMAT,
            "kind": self._kind,
            "config": arch,
            "dropout": float(self.dropout),
            "image_shape": list(self.image_shape_),
            "n_features_out": int(self.n_features_out_),
            "state_dict": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
            "extra": self._extra_state(),
        }
        torch.save(state, os.fspath(path))
        return path

    @classmethod
    def from_weights(cls, path, X=None, **params):
        """A frozen estimator over the weights in ``path``.

        The architecture comes from the file. If ``X`` (images) is given the estimator is
        fitted on it (which only loads the weights and checks the image shape); otherwise
        it is returned unfitted, ready for a Pipeline or GridSearchCV where ``fit`` never
        retrains the CNN.
        """
        est = cls(weights=path, frozen=True, **params)
        if X is not None:
            est.fit(X)
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags
