"""Stage 2 of CGNI: imaging-guided SNP representations by contrastive learning."""

import numbers
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from skorch.dataset import Dataset
from skorch.helper import predefined_split


from ..utils._device import fit_seed, resolve_device
from ._contrastive_parts import (  # noqa: F401 (re-exported: saved files name these here)
    StratifiedBatchSampler,
    _check_finite,
    _ContrastiveNet,
    _ValidMatching,
    matching_score,
)
from ..utils._validation import validate_numeric_data
from ..utils._skorch import (
    clip_batch_size,
    early_stopping_callback,
    early_stopping_split,
    forward64,
    resolve_feature_split,
    to_float32,
    train_net,
)

__all__ = ["ContrastiveSNPEncoder", "StratifiedBatchSampler", "matching_score"]

WEIGHTS_FORMAT = "sklearn_cgni.ContrastiveSNPEncoder/1"


class ContrastiveSNPEncoder(TransformerMixin, BaseEstimator):
    """Imaging-guided SNP encoder trained with the CGNI contrastive loss (stage 2).

    Two MLP encoders, ``e_v`` on the imaging features ``h_v`` and ``e_g`` on the SNPs, are
    trained jointly with ``lambda_vg L(v,g) + sigma_gv L(g,v) + gamma_vv L(v,v) +
    theta_gg L(g,g)`` (equation (5), see :mod:`sklearn_cgni.nn.losses`), with Adam and
    batches that always contain every working-memory group. ``transform`` returns
    ``z_g ⊕ h_v``, the paper's stage-3 input.

    ``X`` carries both modalities; ``image_features`` says which columns are ``h_v``, every
    other column is a SNP (dosage 0/1/2, already imputed: NaN is refused with an error).

    Parameters
    ----------
    image_features : int, str, slice, list of str or int, or bool array, default="image__"
        The ``h_v`` columns: the first ``n`` columns (int), the columns whose name starts
        with this prefix (str, the naming of ``ColumnTransformer``), names, indices, a slice
        or a boolean mask.
    n_components : int, default=100
        Size of ``z_v`` and ``z_g``.
    image_hidden : tuple of int, default=(250, 200, 150)
        Hidden layers of ``e_v``; ``()`` makes ``e_v`` linear.
    genetic_hidden : tuple of int, default=(400, 600, 400, 300, 150)
        Hidden layers of ``e_g``; ``()`` makes ``e_g`` linear (with few participants per SNP,
        a linear encoder can generalise where the paper's five layers memorise; see
        ``benchmarks/results/paper_size.md``).
    lambda_vg, sigma_gv, gamma_vv, theta_gg : float in [0, 1], default=0.7, 0.3, 0.0, 0.4
        Weights of L(v,g), L(g,v), L(v,v), L(g,g); the defaults are the paper's best. All
        four zero is an error.
    temperature : float, default=0.1
        ``tau``. Embeddings are L2-normalised, so similarities are cosines.
    denominator : {"paper", "infonce"}, default="paper"
        Cross-modal denominator over ``j != i`` (paper) or over all ``j`` (InfoNCE).
    reduction : {"mean", "sum"}, default="mean"
        Per-batch reduction over anchors (``"sum"`` is the paper's).
    batch_size : int, default=50
        Clipped, with a warning, to the number of samples.
    min_per_class : int, default=1
        Samples of each class in every batch.
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam weight decay.
    dropout : float in [0, 1), default=0.0
        Dropout after every hidden layer of ``e_v`` and ``e_g`` (training only).
    genetic_l1 : float >= 0, default=0.0
        L1 penalty on the SNP weights (the first linear layer of ``e_g``): ``genetic_l1 *
        sum(|W|)`` is added to the training loss, so most SNPs get weights near zero and the
        encoder estimates fewer weights from few participants per SNP, as sparse CCA does. The
        paper has none (0). ``benchmarks/results/ground_truth_recovery_findings.md`` measures it.
    snp_dropout : float in [0, 1), default=0.0
        Dropout on the SNP input of ``e_g`` (training only): each participant's SNPs are
        zeroed at random, so the encoder cannot identify a training participant from a few
        rare genotypes (one way stage 2 memorises). With ``standardize=True`` a dropped SNP is
        set to its training mean.
    standardize : bool, default=False
        Z-score ``h_v`` and the SNPs with the training rows' mean and SD inside each encoder
        (a :class:`~sklearn_cgni.nn.Standardize` layer, so saved weights and occlusion keep
        it); :meth:`transform` then returns the z-scored ``h_v`` too. The paper does not say
        it scaled its inputs (False).
    image_tail : sklearn_cgni.nn.CNNTail or None, default=None
        Fine-tune the last CNN blocks with the contrastive loss (as ContIG trains its image
        encoder): the image columns of ``X`` are then the activations entering those blocks
        (:meth:`~sklearn_cgni.imaging.ImagingCNNClassifier.transform_blocks`), a copy of
        ``image_tail`` (:meth:`~sklearn_cgni.imaging.ImagingCNNClassifier.last_blocks`) turns
        them into ``h_v`` and is trained with ``e_v`` (same ``lr``), and :meth:`transform`
        returns the fine-tuned ``h_v``. ``None`` (the paper): ``h_v`` is fixed.
    max_epochs : int, default=50
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the training samples, evaluate
        ``scoring`` on them after every epoch, stop when it has not improved for
        ``n_iter_no_change`` epochs and keep the weights of the best epoch. The paper trains
        for a fixed number of epochs (False). With label-supervised terms (``theta_gg``,
        ``gamma_vv`` > 0) and few participants per SNP, the encoders can memorise the training
        labels; early stopping on held-out participants limits that.
    scoring : {"loss", "matching"}, default="loss"
        What early stopping watches on the held-out samples: the contrastive loss (one batch,
        ``valid_loss``) or :func:`matching_score` of their ``z_v`` and ``z_g``
        (``valid_matching``, higher is better; needs no labels, as :meth:`score`). Both
        are recorded when ``early_stopping``.
    validation_fraction : float in (0, 1), default=0.1
        Share of the samples held out when ``early_stopping`` (stratified by ``y``).
    n_iter_no_change : int, default=10
        Patience, in epochs, of ``early_stopping``.
    device : str, default="auto"
    random_state : int, RandomState instance or None, default=None
        Seeds weights, batches and the validation split (torch's global generator is
        neither read nor changed).
    verbose : int, default=0
        skorch's per-epoch log when > 0.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is a :class:`sklearn_cgni.nn.ContrastiveEncoders`.
    image_encoder_, genetic_encoder_ : torch.nn.Module
        ``e_v`` and ``e_g`` in eval mode (outputs L2-normalised, as in ``transform``); with
        ``image_tail``, ``image_encoder_`` is the fine-tuned tail followed by ``e_v``.
    image_indices_, genetic_indices_ : ndarray of int
        Columns of ``X`` read as ``h_v`` and as SNPs.
    classes_ : ndarray
        Labels seen in ``fit``.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_loss_curve_ : list of float
        Held-out loss per epoch (``early_stopping`` only, else None).
    validation_matching_curve_ : list of float
        Held-out :func:`matching_score` per epoch (``early_stopping`` only, else None).
    best_epoch_ : int
        Epoch (1-based) whose weights were kept: the last one without ``early_stopping``.
    n_iter_ : int
        Epochs run.
    n_features_in_, feature_names_in_
        As usual.

    Notes
    -----
    A KeyboardInterrupt (Ctrl-C) during ``fit`` is raised again, not swallowed as skorch
    alone would, and leaves the estimator unfitted: a half-trained network never looks fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.genetics import ContrastiveSNPEncoder
    >>> rng = np.random.default_rng(0)
    >>> h_v = rng.normal(size=(60, 8))
    >>> snps = rng.integers(0, 3, size=(60, 20)).astype(float)
    >>> y = np.tile([0, 1], 30)
    >>> enc = ContrastiveSNPEncoder(image_features=8, n_components=4, image_hidden=(16,),
    ...                             genetic_hidden=(16,), batch_size=20, max_epochs=2,
    ...                             random_state=0)
    >>> enc.fit_transform(np.hstack([h_v, snps]), y).shape  # z_g (4) + h_v (8)
    (60, 12)
    >>> import os, tempfile
    >>> path = enc.save_weights(os.path.join(tempfile.mkdtemp(), "encoder.pt"))
    >>> loaded = ContrastiveSNPEncoder.from_weights(path)
    >>> bool(np.array_equal(loaded.transform(np.hstack([h_v, snps])), enc.transform(np.hstack([h_v, snps]))))
    True
    """

    _parameter_constraints = {
        "image_features": [Interval(numbers.Integral, 1, None, closed="left"), str, slice, "array-like"],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "image_hidden": [tuple, list],
        "genetic_hidden": [tuple, list],
        "lambda_vg": [Interval(numbers.Real, 0, None, closed="left")],
        "sigma_gv": [Interval(numbers.Real, 0, None, closed="left")],
        "gamma_vv": [Interval(numbers.Real, 0, None, closed="left")],
        "theta_gg": [Interval(numbers.Real, 0, None, closed="left")],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "denominator": [StrOptions({"paper", "infonce"})],
        "reduction": [StrOptions({"mean", "sum"})],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "min_per_class": [Interval(numbers.Integral, 1, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "genetic_l1": [Interval(numbers.Real, 0, None, closed="left")],
        "snp_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "standardize": ["boolean"],
        "image_tail": "no_validation",  # a CNNTail or None, checked in fit
        "early_stopping": ["boolean"],
        "scoring": [StrOptions({"loss", "matching"})],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        image_features="image__",
        n_components=100,
        image_hidden=(250, 200, 150),
        genetic_hidden=(400, 600, 400, 300, 150),
        lambda_vg=0.7,
        sigma_gv=0.3,
        gamma_vv=0.0,
        theta_gg=0.4,
        temperature=0.1,
        denominator="paper",
        reduction="mean",
        batch_size=50,
        min_per_class=1,
        lr=1e-3,
        weight_decay=0.0,
        dropout=0.0,
        genetic_l1=0.0,
        snp_dropout=0.0,
        standardize=False,
        image_tail=None,
        max_epochs=50,
        early_stopping=False,
        scoring="loss",
        validation_fraction=0.1,
        n_iter_no_change=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.image_features = image_features
        self.n_components = n_components
        self.image_hidden = image_hidden
        self.genetic_hidden = genetic_hidden
        self.lambda_vg = lambda_vg
        self.sigma_gv = sigma_gv
        self.gamma_vv = gamma_vv
        self.theta_gg = theta_gg
        self.temperature = temperature
        self.denominator = denominator
        self.reduction = reduction
        self.batch_size = batch_size
        self.min_per_class = min_per_class
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.genetic_l1 = genetic_l1
        self.snp_dropout = snp_dropout
        self.standardize = standardize
        self.image_tail = image_tail
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def _check_params(self):
        """Checks that the parameter constraints cannot express, run by ``fit`` after them.

        ``sklearn-cgni run`` also runs them (with the constraints) when it loads a config.
        """
        from ..nn.losses import _check_weights
        from ..utils._validation import check_layer_sizes

        owner = type(self).__name__
        check_layer_sizes(self.image_hidden, "image_hidden", owner)
        check_layer_sizes(self.genetic_hidden, "genetic_hidden", owner)
        _check_weights(self.lambda_vg, self.sigma_gv, self.gamma_vv, self.theta_gg)
        if self.image_tail is not None:
            from ..nn import CNNTail

            if not isinstance(self.image_tail, CNNTail):
                raise TypeError(f"{owner}: image_tail must be a sklearn_cgni.nn.CNNTail (for example "
                                f"ImagingCNNClassifier.last_blocks(1)) or None; got {type(self.image_tail).__name__}.")

    def _loss_kwargs(self):
        return dict(
            lambda_vg=float(self.lambda_vg),
            sigma_gv=float(self.sigma_gv),
            gamma_vv=float(self.gamma_vv),
            theta_gg=float(self.theta_gg),
            temperature=float(self.temperature),
            denominator=self.denominator,
            reduction=self.reduction,
        )

    def _net_kwargs(self, n_image_features, n_genetic_features):
        """The encoders and the loss of the net: the skorch arguments that fit and from_weights share."""
        import copy

        from ..nn._mlp import ContrastiveEncoders
        from ..nn.losses import CGNIContrastiveLoss

        tail = None
        if self.image_tail is not None:  # trained as a copy: the parameter stays as given
            tail = copy.deepcopy(self.image_tail)
            n_image_features = tail.n_features_out
        return dict(
            module=ContrastiveEncoders,
            module__image_tail=tail,
            module__n_image_features=n_image_features,
            module__n_genetic_features=n_genetic_features,
            module__image_hidden=tuple(self.image_hidden),
            module__genetic_hidden=tuple(self.genetic_hidden),
            module__n_components=self.n_components,
            module__dropout=self.dropout,
            module__snp_dropout=self.snp_dropout,
            module__standardize=bool(self.standardize),
            module__genetic_l1=float(self.genetic_l1),
            criterion=CGNIContrastiveLoss,
            **{f"criterion__{k}": v for k, v in self._loss_kwargs().items()},
        )

    def _split(self, X):
        return to_float32(X[:, self.image_indices_]), to_float32(X[:, self.genetic_indices_])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train ``e_v`` and ``e_g``.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_image_features + n_snps)
            ``h_v`` and SNP dosages, split by ``image_features``. No missing values.
        y : array-like of shape (n_samples,)
            Working-memory group (any two or more labels).

        Returns
        -------
        self
        """
        import torch

        owner = type(self).__name__
        self._check_params()
        index = getattr(X, "index", None)
        X, y = validate_numeric_data(self, X, y, method="fit", dtype=[np.float64, np.float32],
                                     ensure_all_finite=False)
        _check_finite(X, owner, getattr(self, "feature_names_in_", None), index)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if self.classes_.size < 2:
            raise ValueError(
                f"{owner} needs both working-memory groups (at least 2 classes) to build "
                f"contrastive batches; y holds only one class: {self.classes_[0]!r}."
            )
        y_enc = encoder.transform(y).astype(np.int64)
        self.image_indices_, self.genetic_indices_ = resolve_feature_split(
            self.image_features,
            X.shape[1],
            getattr(self, "feature_names_in_", None),
            owner=owner,
        )
        seed = fit_seed(self.random_state)
        fit_rows, valid_rows = np.arange(X.shape[0]), None
        extra = {"train_split": None}
        if self.early_stopping:
            fit_rows, valid_rows, extra = self._validation_split(y_enc, seed, owner)
        batch_size = clip_batch_size(self.batch_size, fit_rows.size, owner)
        sampler = StratifiedBatchSampler(
            y[fit_rows], batch_size, min_per_class=self.min_per_class, random_state=seed
        )
        h_v, x_g = self._split(X)
        if valid_rows is not None:
            extra["train_split"] = predefined_split(
                Dataset({"h_v": h_v[valid_rows], "x_g": x_g[valid_rows]}, y_enc[valid_rows]))
            extra["callbacks"].insert(0, ("valid_matching", _ValidMatching(h_v[valid_rows], x_g[valid_rows])))
            h_v, x_g, y_enc = h_v[fit_rows], x_g[fit_rows], y_enc[fit_rows]
        self.net_ = _ContrastiveNet(
            **self._net_kwargs(h_v.shape[1], x_g.shape[1]),
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=batch_size,
            iterator_train__batch_size=1,  # DataLoader rule when a batch_sampler is given
            iterator_train__shuffle=False,
            iterator_train__batch_sampler=sampler,
            # DataLoaders draw their workers' base seed from a generator: never from torch's global one
            iterator_train__generator=torch.Generator().manual_seed(seed),
            iterator_valid__generator=torch.Generator().manual_seed(seed),
            device=resolve_device(self.device),
            verbose=self.verbose,
            **extra,
        )
        from ..nn._random import seeded_init, set_generators

        with seeded_init(seed):  # the encoders' initial weights, from this fit's seed only
            self.net_.initialize()
        if self.standardize:  # z-scores from the rows the encoders train on (a constant column keeps scale 1)
            h = h_v if self.image_tail is None else forward64(self.net_.module_.image_tail, h_v)
            for enc, data in ((self.net_.module_.image_encoder, h), (self.net_.module_.genetic_encoder, x_g)):
                sd = data.std(axis=0, dtype=np.float64)
                enc.standardize.set_statistics(data.mean(axis=0, dtype=np.float64), np.where(sd > 0, sd, 1.0))
        trained = self.net_.module_  # train_net removes net_ when interrupted
        set_generators(trained, seed, self.net_.device)
        try:
            train_net(self, self.net_, {"h_v": h_v, "x_g": x_g}, y_enc)
        finally:
            set_generators(trained, None)
        self.net_.module_.eval()
        self.loss_curve_ = [float(v) for v in self.net_.history[:, "train_loss"]]
        self.validation_loss_curve_ = self.validation_matching_curve_ = None
        self.best_epoch_ = len(self.loss_curve_)
        if valid_rows is not None:
            self.validation_loss_curve_ = [float(v) for v in self.net_.history[:, "valid_loss"]]
            self.validation_matching_curve_ = [float(v) for v in self.net_.history[:, "valid_matching"]]
            self.best_epoch_ = (int(np.argmin(self.validation_loss_curve_)) if self.scoring == "loss"
                                else int(np.argmax(self.validation_matching_curve_))) + 1
        if not np.all(np.isfinite(self.loss_curve_)):  # pragma: no cover - defensive
            raise FloatingPointError(f"{owner}: the contrastive loss became non-finite.")
        self.n_iter_ = len(self.loss_curve_)
        self._n_features_out = self.n_components + self._n_image_out()
        return self

    def _n_image_out(self):
        """Width of the ``h_v`` part of :meth:`transform`."""
        return self.image_indices_.size if self.image_tail is None else self.net_.module_.image_tail.n_features_out

    def _validation_split(self, y_enc, seed, owner):
        """Stratified (fit rows, held-out rows, skorch arguments) for early stopping."""
        fit_rows, valid_rows = early_stopping_split(y_enc, self.validation_fraction, seed, owner)
        monitor = "valid_loss" if self.scoring == "loss" else "valid_matching"
        extra = {"callbacks": [early_stopping_callback(monitor, self.n_iter_no_change,
                                                       lower_is_better=self.scoring == "loss")],
                 "iterator_valid__batch_size": int(valid_rows.size)}  # the whole held-out set, one batch
        return fit_rows, valid_rows, extra

    # ------------------------------------------------------------ transform
    @property
    def image_encoder_(self):
        """Fitted imaging encoder ``e_v`` (eval mode): ``h_v -> z_v`` (with ``image_tail``: activations -> z_v)."""
        check_is_fitted(self)
        module = self.net_.module_
        if getattr(module, "image_tail", None) is None:
            return module.image_encoder
        import torch

        return torch.nn.Sequential(module.image_tail, module.image_encoder).eval()  # shares the parameters

    @property
    def genetic_encoder_(self):
        """Fitted genetic encoder ``e_g`` (eval mode): SNPs -> ``z_g``."""
        check_is_fitted(self)
        return self.net_.module_.genetic_encoder

    def _validated(self, X):
        check_is_fitted(self)
        index = getattr(X, "index", None)
        X = validate_numeric_data(self, X, method="transform", reset=False, dtype=[np.float64, np.float32],
                                  ensure_all_finite=False)
        _check_finite(X, type(self).__name__, getattr(self, "feature_names_in_", None), index)
        return X

    def _encode(self, module, data, dtype):
        if data.shape[0] == 0:
            return np.empty((0, self.n_components), dtype=dtype)
        return forward64(module, data).astype(dtype, copy=False)

    def transform(self, X):
        """Return ``z_g ⊕ h_v`` (the stage-3 input).

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features_in_)
            Same layout as in ``fit``.

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_components + n_image_features)
            The L2-normalised genetic embedding ``z_g`` followed by ``h_v`` (z-scored with the
            training rows' statistics when ``standardize=True``, as the encoders see it; the
            fine-tuned tail's output with ``image_tail``).
        """
        X = self._validated(X)
        x_v, x_g = self._split(X)
        z_g = self._encode(self.genetic_encoder_, x_g, X.dtype)
        h_v = X[:, self.image_indices_]
        if self.image_tail is not None:  # the fine-tuned h_v
            h_v = (forward64(self.net_.module_.image_tail, x_v) if X.shape[0] else
                   np.empty((0, self._n_image_out()))).astype(X.dtype, copy=False)
        if self.standardize:
            z = self.net_.module_.image_encoder.standardize
            h_v = ((h_v - z.mean.cpu().numpy()[0]) / z.scale.cpu().numpy()[0]).astype(X.dtype, copy=False)
        return np.hstack([z_g, h_v])

    def transform_image(self, X):
        """Imaging embedding ``z_v = e_v(h_v)`` (L2-normalised), shape (n, n_components)."""
        X = self._validated(X)
        h_v, _ = self._split(X)
        return self._encode(self.image_encoder_, h_v, X.dtype)

    def transform_genetic(self, X):
        """Genetic embedding ``z_g = e_g(x_g)`` (L2-normalised), shape (n, n_components)."""
        X = self._validated(X)
        _, x_g = self._split(X)
        return self._encode(self.genetic_encoder_, x_g, X.dtype)

    def score(self, X, y=None):
        """Held-out cross-modal :func:`matching_score` of ``z_v`` and ``z_g`` (higher is better).

        A label-free objective for model selection: ``GridSearchCV(encoder, grid)`` without a
        ``scoring`` tunes the encoder for how well participants it never saw are matched
        across modalities, which is what the cross-modal loss terms train for.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features_in_)
            Same layout as in ``fit``; at least 2 rows.
        y : ignored

        Returns
        -------
        score : float in [0, 1] (0.5 = chance)
        """
        X = self._validated(X)
        h_v, x_g = self._split(X)
        return matching_score(self._encode(self.image_encoder_, h_v, np.float64),
                              self._encode(self.genetic_encoder_, x_g, np.float64))

    # ------------------------------------------------------------ persistence
    def save_weights(self, path):
        """Write the parameters, the fitted attributes and the encoders' weights to ``path``.

        The file (a torch file) holds only tensors, numbers, strings and lists, so it is
        read back with ``torch.load(weights_only=True)``: nothing is unpickled. Rebuild
        the fitted encoder with :meth:`from_weights`. The optimizer state is not saved.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        path : str or path-like
            ``path``, as given.
        """
        import torch

        check_is_fitted(self)
        params = self.get_params()
        params.update(image_features=self.image_indices_.tolist(), image_hidden=list(self.image_hidden),
                      image_tail=None if self.image_tail is None else self.image_tail.config(),
                      genetic_hidden=list(self.genetic_hidden),
                      random_state=self.random_state if isinstance(self.random_state, numbers.Integral) else None)
        names = getattr(self, "feature_names_in_", None)
        curves = ("loss_curve_", "validation_loss_curve_", "validation_matching_curve_")
        state = {
            "format": WEIGHTS_FORMAT,
            "params": params,
            "classes": self.classes_.tolist(),
            "genetic_indices": self.genetic_indices_.tolist(),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else [str(n) for n in names],
            "fitted": {**{c: getattr(self, c) for c in curves}, "best_epoch_": int(self.best_epoch_),
                       "n_iter_": int(self.n_iter_)},
            "state_dict": {k: v.detach().cpu() for k, v in self.net_.module_.state_dict().items()},
        }
        torch.save(state, os.fspath(path))
        return path

    @classmethod
    def from_weights(cls, path, *, device="cpu"):
        """The fitted encoder written by :meth:`save_weights`, ready to ``transform``.

        Parameters
        ----------
        path : str or path-like
        device : str, default="cpu"
            Where the encoders run (``"auto"``, ``"cpu"``, ``"cuda"``...).

        Returns
        -------
        encoder : ContrastiveSNPEncoder
            Fitted: same parameters, weights and fitted attributes as the saved one.
        """
        from ..utils._weights import load_weights_file

        state = load_weights_file(path, WEIGHTS_FORMAT, cls.__name__)
        params = dict(state["params"], device=device)
        params["image_hidden"], params["genetic_hidden"] = tuple(params["image_hidden"]), tuple(params["genetic_hidden"])
        if params.get("image_tail") is not None:  # its architecture; the weights are in the state dict
            from ..nn import CNNTail

            params["image_tail"] = CNNTail(**params["image_tail"])
        est = cls(**params)
        est.image_indices_ = np.asarray(params["image_features"], dtype=np.intp)
        est.genetic_indices_ = np.asarray(state["genetic_indices"], dtype=np.intp)
        est.classes_ = np.asarray(state["classes"])
        est.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            est.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        for name, value in state["fitted"].items():
            setattr(est, name, value)
        est.net_ = _ContrastiveNet(**est._net_kwargs(est.image_indices_.size, est.genetic_indices_.size),
                                   device=resolve_device(device)).initialize()
        est.net_.module_.load_state_dict(state["state_dict"])
        est.net_.module_.eval()
        est._n_features_out = est.n_components + est._n_image_out()
        return est

    def get_feature_names_out(self, input_features=None):
        """``z_g0 .. z_g{k-1}`` followed by the names of the ``h_v`` columns."""
        check_is_fitted(self)
        names = _check_feature_names_in(self, input_features)
        z_names = [f"z_g{i}" for i in range(self.n_components)]
        if self.image_tail is not None:
            return np.asarray(z_names + [f"h_v{i}" for i in range(self._n_image_out())], dtype=object)
        return np.asarray(z_names + [str(n) for n in names[self.image_indices_]], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
