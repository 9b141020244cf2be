"""Stage 1 of CGNI: a 3D CNN trained on brain age, used as an image feature extractor."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from sklearn.base import RegressorMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from ..io import check_images
from ._base import _BaseImageCNN, _valid_metric_callback
from ._cnn_utils import _check_aligned

__all__ = ["BrainAgeCNNTransformer"]

_LOSSES = {"mse": torch.nn.MSELoss, "l1": torch.nn.L1Loss, "huber": torch.nn.HuberLoss}


def _check_ages(y, participant_ids, name="age"):
    if y is None:
        raise ValueError(f"fit needs y ({name} of each participant) unless frozen=True.")
    y = np.asarray(y, dtype=np.float64).reshape(-1) if not hasattr(y, "to_numpy") else \
        np.asarray(y.to_numpy(), dtype=np.float64).reshape(-1)
    if len(y) != len(participant_ids):
        raise ValueError(f"Got {len(participant_ids)} images but {len(y)} values of {name}.")
    bad = ~np.isfinite(y)
    if bad.any():
        who = [participant_ids[i] for i in np.flatnonzero(bad)[:10]]
        raise ValueError(f"{name} is NaN or infinite for {int(bad.sum())} participant(s): {who}"
                         f"{' ...' if bad.sum() > 10 else ''}. Drop them before fitting.")
    return y



def _scaled_mae(y_true, y_pred, scale):
    """Mean absolute error of standardized ages, in years (module level: picklable)."""
    return np.mean(np.abs(y_true - y_pred)) * scale

def _mean_predictor_mae(y_valid, scale):
    """MAE (years) of predicting the training mean age (0 in standardised units; picklable)."""
    return np.mean(np.abs(y_valid)) * scale


class BrainAgeCNNTransformer(TransformerMixin, RegressorMixin, _BaseImageCNN):
    """3D CNN brain-age regressor whose last convolutional block gives image features h_v.

    Stage 1 of CGNI (Suresh et al.): five blocks Conv3d(3x3x3, no padding) -> BatchNorm ->
    MaxPool(2) -> ReLU with 32, 64, 128, 256, 256 channels, flattened, then dropout 0.2 and
    a linear layer to the age. Trained with Adam on the mean squared error of standardised
    age (``loss``), in batches of 25, through skorch (so skorch callbacks work).

    Parameters
    ----------
    channels : tuple of int or None, default=None
        Channels of each block. ``None``: taken from ``weights`` if given, else the paper's
        ``(32, 64, 128, 256, 256)``.
    padding : {0, 1} or None, default=None
        Convolution padding. ``None``: from ``weights``, else 0 (the paper). Use 1 for
        images too small for five unpadded blocks (below ~94 voxels per axis); a too-small
        input raises an error saying so, it is never adapted silently.
    pool_blocks : int or None, default=None
        Number of leading blocks with a max-pool; ``None``: from ``weights``, else all.
    global_pool : {"avg", "max", "none"} or None, default=None
        Adaptive pooling of the last block to 1x1x1 so that h_v has ``channels[-1]`` values
        whatever the image size. ``None``: from ``weights``, else no pooling (the paper:
        h_v has 256 x 2 x 2 x 2 = 2048 values at 128x141x128).
    dropout : float, default=0.2
        Dropout before the fully connected layer.
    loss : {"mse", "l1", "huber"}, default="mse"
        Training loss on standardised age.
    max_epochs : int, default=20
    batch_size : int, default=25
        Images per training step. Under ``torchrun`` it is per process: N processes train
        with global batches of ``N * batch_size`` (see :mod:`sklearn_cgni.utils._distributed`).
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam weight decay.
    validation_fraction : float, default=0.1
        Held-out fraction for skorch's ``valid_loss`` (needed by EarlyStopping and
        Checkpoint callbacks). 0 trains on everything.
    early_stopping : bool, default=True
        Stop when the validation MAE (years, on ``validation_fraction`` of the training
        images) has not improved for ``n_iter_no_change`` epochs, and keep the weights of
        the best epoch; ``max_epochs`` is then a budget. ``False`` trains exactly
        ``max_epochs`` epochs and keeps the last.
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    lr_schedule : {"plateau", "plateau_floor", "none"}, default="plateau"
        ``"plateau"``: halve the learning rate when the validation metric has not improved
        for ``n_iter_no_change // 2`` epochs (``torch.optim.lr_scheduler.ReduceLROnPlateau``),
        down to ``lr / 16``. ``"plateau_floor"``: the same, and early stopping waits until the
        learning rate has reached ``lr / 16``.
    min_epochs : int, default=10
        Neither early stopping nor the learning-rate schedule acts before this many epochs, so a
        run that sits on the mean predictor's plateau for its first epochs is not ended there
        (the training recipe: ``sklearn_cgni.imaging._convergence``).
    warmup_epochs : int, default=2
        The learning rate rises linearly to ``lr`` over these first epochs.
    budget_growth : float, default=2.0
        With early stopping, ``max_epochs`` is a budget that grows (by half of ``max_epochs``
        at a time, up to ``max_epochs * budget_growth``) while the best epoch lies in its last
        10 %, so a run still improving at its end is not cut there. 1 keeps it fixed.
    max_restarts : int, default=1
        Restarts from a fresh initialisation (a seed derived from ``random_state``) when after
        ``min_epochs`` the best validation metric is not 10 % better than the constant
        predictor's (the training mean age; the class priors). ``n_restarts_`` says how many
        were used.
    standardize_voxels : bool, default=False
        z-score every voxel with the training images' voxel mean and SD (one streamed pass;
        stored as buffers of the network and in :meth:`save_weights` files, so ``predict``,
        ``transform`` and attribution take raw images). A transferred network
        (:class:`ImagingCNNClassifier`) copies these statistics with its first blocks. Off
        by default: on the simulated cohort of ``benchmarks/bench_stage1_convergence.py`` it
        made both brain age and the WM transfer worse (see
        ``benchmarks/results/stage1_convergence.md``).
    augment_shift : int, default=0
        Training-time augmentation: shift each image by up to this many voxels along each
        axis (:class:`sklearn_cgni.nn.RandomShift3d`); off at prediction time.
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        E.g. ``EarlyStopping``, ``Checkpoint``, ``LRScheduler``, ``ProgressBar``.
    num_workers : int, default=0
        DataLoader worker processes decoding NIfTI files in parallel with the network.
    cache_dir : str or path-like, default=None
        If given and images are paths, decode them once into a float16 memory map in this
        folder (reused across fits and transforms; see
        :func:`sklearn_cgni.imaging.build_float16_cache`). For GPU training, where gzip
        decoding is slower than the network.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
    weights : str or path-like, default=None
        A file written by :meth:`save_weights`. With ``frozen=False`` training starts from
        these weights; with ``frozen=True`` fit only loads them.
    frozen : bool, default=False
        ``fit`` loads ``weights`` and never trains (``y`` is ignored), so a
        ``GridSearchCV`` over later stages never retrains the CNN.
    transform_batch_size : int or None, default=4
        Batch size of ``transform``/``predict`` (``None``: ``batch_size``). On CPU the
        time per image does not improve with larger batches, while memory grows by about
        0.35 GB per image at 128x141x128 (the first block's activations), hence 4.
    inference_backend : {"auto", "eager", "mkldnn"}, default="auto"
        How ``transform``/``predict`` run the network. ``"mkldnn"``: a copy with BatchNorm
        folded into the convolutions on oneDNN's blocked layout (CPU only; about 2x faster
        than eager at 128x141x128, same outputs up to ~1e-6 relative; see
        ``benchmarks/results/stage1_cnn_throughput.md``). ``"eager"``: the fitted module
        as is. ``"auto"``: ``"mkldnn"`` on CPU when available, else ``"eager"``.
    recalibrate_bn : bool, default=True
        After training, re-estimate every trainable BatchNorm's running statistics with
        the final weights in one pass over the training images
        (:func:`sklearn_cgni.nn.recalibrate_batchnorm`). Without it, the exponential
        running averages lag behind the weights, which at small image shapes (a 1x1x1
        last block) can push eval-mode outputs to a constant prediction.
    memory_format : {"auto", "channels_last", "contiguous"}, default="auto"
        Tensor layout while training. ``"channels_last"`` (``torch.channels_last_3d``) lets
        oneDNN run the convolutions and their gradients without reordering: at 128x141x128
        a CPU training step took 1.8 s instead of 3.3 s (66 % instead of 36 % of the fp32
        matmul floor, ``benchmarks/results/cnn_training.md``); the numbers differ from
        ``"contiguous"`` only by summation order. ``"auto"``: channels_last on the CPU,
        contiguous on other devices (run ``benchmarks/bench_gpu.py`` to compare there). The
        fitted module is returned to the contiguous layout, so saved weights do not depend on it.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` trains under ``torch.autocast`` (convolutions in bfloat16, weights,
        loss and optimizer in float32); on CPUs with AVX-512 BF16 or AMX, and on GPUs, it is
        faster (see the benchmark above for the measured speed and brain-age MAE).
        Inference (``transform``/``predict``) stays in float32.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling, dropout, random shifts and the validation
        split, through generators of the fit's own: torch's global generator is neither
        read nor changed, so fits in threads of one process are reproducible too. On CPU
        with a fixed number of threads two fits give identical weights.
    verbose : int, default=0
        skorch's epoch log when > 0.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.history`` holds train/valid losses per epoch.
    module_ : sklearn_cgni.nn.BrainCNN
        The fitted torch module (``module_.backbone``, ``module_.head``).
    image_shape_ : tuple of 3 int
        Spatial shape the model was fitted on; other shapes raise ``ValueError``.
    n_features_out_ : int
        Length of h_v (``transform`` output width).
    arch_ : dict
        The resolved architecture (channels, padding, pool_blocks, global_pool).
    y_mean_, y_scale_ : float
        Standardisation of age used in training.
    n_epochs_ : int
        Epochs trained (at most ``max_epochs``).
    best_epoch_ : int
        The epoch whose weights were kept: the best validation MAE with early stopping,
        else the last.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` and, with a validation split, ``valid_loss``
        (standardised age) and ``valid_mae`` (years); ``lr`` with a schedule.
    budget_ : int
        The final epoch budget (``max_epochs``, or more where it grew).
    stop_reason_ : {"early_stopping", "budget", "stalled"} or None
        Why training ended (None without early stopping or a schedule).
    n_restarts_ : int
        Restarts from a fresh initialisation (``max_restarts``).
    device_ : str
        Resolved device.
    feature_names_in_ : ndarray of str
        The image column name, when fitted on a DataFrame.

    See Also
    --------
    ImagingCNNClassifier : the working-memory classifier initialised from this model.

    Notes
    -----
    A KeyboardInterrupt (Ctrl-C) during ``fit`` is raised again, not swallowed as skorch
    alone would, and leaves the estimator unfitted: a half-trained network never looks fitted.

    ``score`` is the coefficient of determination R^2 of the predicted age (scikit-learn's
    regressor convention); use ``scoring="neg_mean_absolute_error"`` for the paper's MAE.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.imaging import BrainAgeCNNTransformer
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(45, 80, size=20)
    >>> X = (rng.normal(size=(20, 16, 16, 16)) + age[:, None, None, None] / 40).astype("float32")
    >>> cnn = BrainAgeCNNTransformer(channels=(4, 4, 8, 8, 8), padding=1, pool_blocks=4,
    ...                              max_epochs=2, device="cpu", random_state=0).fit(X, age)
    >>> cnn.transform(X).shape
    (20, 8)
    >>> cnn.predict(X).shape
    (20,)
    """

    _parameter_constraints: dict = {
        **_BaseImageCNN._parameter_constraints,
        "loss": [StrOptions(set(_LOSSES))],
    }
    _kind = "regression"
    _monitor = ("valid_mae", True)

    def _monitor_callbacks(self):
        return [("valid_mae", _valid_metric_callback("valid_mae", partial(_scaled_mae, scale=self.y_scale_)))]

    def __init__(self, *, channels=None, padding=None, pool_blocks=None, global_pool=None,
                 dropout=0.2, loss="mse", max_epochs=20, batch_size=25, lr=1e-3,
                 weight_decay=0.0, validation_fraction=0.1, early_stopping=True, n_iter_no_change=10,
                 min_epochs=10, warmup_epochs=2, budget_growth=2.0, max_restarts=1,
                 lr_schedule="plateau", standardize_voxels=False, augment_shift=0, callbacks=None, num_workers=0,
                 cache_dir=None, device="auto", weights=None, frozen=False,
                 transform_batch_size=4, inference_backend="auto", recalibrate_bn=True,
                 memory_format="auto", precision="float32",
                 random_state=None, verbose=0):
        self.channels = channels
        self.padding = padding
        self.pool_blocks = pool_blocks
        self.global_pool = global_pool
        self.dropout = dropout
        self.loss = loss
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
        return 1

    def _baseline_metric(self):
        return partial(_mean_predictor_mae, scale=self.y_scale_)

    def _extra_state(self):
        return {"y_mean": float(self.y_mean_), "y_scale": float(self.y_scale_)}

    def _set_extra_state(self, state):
        self.y_mean_ = float(state["y_mean"])
        self.y_scale_ = float(state["y_scale"])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the brain-age CNN (or, with ``frozen=True``, load ``weights``).

        Parameters
        ----------
        X : array (n, X, Y, Z), or sequence / Series / one-column DataFrame of NIfTI paths
        y : array-like of shape (n,)
            Age in years. Ignored when ``frozen=True``.

        Returns
        -------
        self
        """
        if self.frozen:
            return self._fit(X, None, target_dtype=torch.float32, criterion=None,
                             stratify=False)
        images = check_images(X, caller=type(self).__name__)  # built once, handed down to _fit
        ids = images.participant_ids
        _check_aligned(X, y, type(self).__name__)
        ages = _check_ages(y, ids)
        self.y_mean_ = float(ages.mean())
        self.y_scale_ = float(ages.std()) or 1.0
        target = ((ages - self.y_mean_) / self.y_scale_).astype(np.float32)
        return self._fit(images, target, target_dtype=torch.float32, criterion=_LOSSES[self.loss],
                         stratify=False)

    def predict(self, X):
        """Predicted brain age (years), shape (n,)."""
        check_is_fitted(self, "net_")
        out = self._run(X, lambda m, xb: m(xb), ())
        return out.astype(np.float64) * self.y_scale_ + self.y_mean_
