"""Baselines of the CGNI paper (Table 1): sparse genetic NN, imaging-genetic SVM and NN.

The imaging CNN baseline is stage 1 itself (:mod:`sklearn_cgni.imaging`).

How ``h_g`` is obtained without leakage
---------------------------------------
``h_g`` is the 400-unit last hidden layer of a :class:`SparseGeneticNN` trained on the SNPs
and the labels. :class:`ImagingGeneticSVM` and :class:`ImagingGeneticNN` take ``X = h_v ⊕
SNPs`` and fit a clone of their ``genetic_encoder`` *inside their own* ``fit``, on the
training rows only; at predict time the held-out SNPs go through that fitted net. Inside a
``Pipeline`` / ``GridSearchCV`` / ``cross_validate`` the genetic net therefore never sees a
validation or holdout participant. (The training rows' ``h_g`` is in-sample, as in the
paper: the genetic net was trained on them. Cross-fitting it, as ``StackingClassifier``
does, is not possible here because hidden units of nets trained on different folds are not
aligned.) The same composition can be written by hand as
``make_pipeline(ColumnTransformer([("img", "passthrough", img), ("snp", SparseGeneticNN(),
snp)]), LinearSVC())`` since :class:`SparseGeneticNN` is also a transformer.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context, clone
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..utils._validation import validate_numeric_data
from ..utils._skorch import SkorchClassifierBase, forward64, resolve_feature_split

__all__ = ["SparseGeneticNN", "ImagingGeneticSVM", "ImagingGeneticNN"]


class SparseGeneticNN(TransformerMixin, SkorchClassifierBase):
    """Sparse genetic classifier: SNPs -> 800 -> 600 -> 400 -> n_classes, L1 on hidden layers.

    ReLU hidden layers; ``l1 * sum |W|`` over the three hidden weight matrices is added to
    the cross-entropy, and Adam's ``weight_decay`` adds the L2 part (the paper: "L1
    sparsity explicitly and L2 via the weight decay of Adam"). ``transform`` returns
    ``h_g``, the activation of the last hidden layer (400 units), for the imaging-genetic
    baselines.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(800, 600, 400)
    l1 : float, default=1e-5
        L1 strength (on the sum, not the mean, of absolute weights).
    weight_decay : float, default=1e-4
    lr : float, default=1e-3
    max_epochs : int, default=50
    batch_size : int, default=75
    class_weight : "balanced", dict or None, default=None
        Weights of the cross-entropy by class label (``"balanced"``: inverse class frequency, for the
        unequal working-memory groups; the paper does not say it weighted).
    early_stopping : bool, default=False
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=10
        Early stopping on a held-out split, as in :class:`~sklearn_cgni.classification.CGNIClassifier`
        (the paper trains a fixed number of epochs).
    device : str, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_, net_, n_iter_, loss_curve_, validation_loss_curve_, best_epoch_,
    n_features_in_, feature_names_in_
        As :class:`~sklearn_cgni.classification.CGNIClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.classification import SparseGeneticNN
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 3, size=(80, 30)).astype(float)
    >>> y = (X[:, 0] > 1).astype(int)
    >>> net = SparseGeneticNN(hidden_layer_sizes=(20, 10), max_epochs=3, random_state=0)
    >>> net.fit(X, y).transform(X).shape  # h_g
    (80, 10)
    """

    _allow_no_hidden_layer = False  # h_g is the last hidden layer

    _parameter_constraints = {
        **SkorchClassifierBase._parameter_constraints,
        "hidden_layer_sizes": [tuple, list],
        "l1": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(800, 600, 400),
        l1=1e-5,
        weight_decay=1e-4,
        lr=1e-3,
        max_epochs=50,
        batch_size=75,
        class_weight=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l1 = l1
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _build_module(self, n_features, n_classes):
        from ..nn._mlp import MLP

        return MLP(n_features, self.hidden_layer_sizes, n_classes, l1=self.l1, l1_on="hidden")

    def transform(self, X):
        """Return ``h_g``, the last hidden layer's ReLU activation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        h_g : ndarray of shape (n_samples, hidden_layer_sizes[-1])
        """
        check_is_fitted(self)
        X = validate_numeric_data(self, X, method="transform", reset=False, dtype=[np.float64, np.float32])
        return forward64(self.net_.module_, X, method="embed").astype(X.dtype, copy=False)

    def get_feature_names_out(self, input_features=None):
        """``h_g0 .. h_g{k-1}``."""
        check_is_fitted(self)
        return np.asarray([f"h_g{i}" for i in range(self.hidden_layer_sizes[-1])], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class _ImagingGeneticMixin:
    """Split ``X`` into ``h_v`` and SNPs, fit the genetic net on the SNPs, return h_v ⊕ h_g."""

    def _genetic_net(self):
        est = SparseGeneticNN() if self.genetic_encoder is None else self.genetic_encoder
        est = clone(est)
        params = est.get_params(deep=False)
        if "random_state" in params and params["random_state"] is None and self.random_state is not None:
            rs = check_random_state(self.random_state)
            est.set_params(random_state=int(rs.randint(np.iinfo(np.int32).max)))
        return est

    def _fit_features(self, X, y):
        self.image_indices_, self.genetic_indices_ = resolve_feature_split(
            self.image_features,
            X.shape[1],
            getattr(self, "feature_names_in_", None),
            owner=type(self).__name__,
        )
        self.genetic_encoder_ = self._genetic_net().fit(X[:, self.genetic_indices_], y)
        return self._features(X)

    def _features(self, X):
        h_g = self.genetic_encoder_.transform(X[:, self.genetic_indices_])
        return np.hstack([X[:, self.image_indices_], np.asarray(h_g, dtype=X.dtype)])


_SPLIT_CONSTRAINTS = {
    "image_features": [Interval(numbers.Integral, 1, None, closed="left"), str, slice, "array-like"],
    "genetic_encoder": [HasMethods(["fit", "transform"]), None],
}


class ImagingGeneticSVM(_ImagingGeneticMixin, ClassifierMixin, BaseEstimator):
    """Linear SVM on ``h_v ⊕ h_g`` (the paper's imaging-genetic linear baseline).

    ``X`` holds ``h_v`` and the SNPs (split by ``image_features``). ``fit`` trains a clone
    of ``genetic_encoder`` on the SNPs to get ``h_g`` (training rows only, see the module
    notes on leakage), standardises ``h_v ⊕ h_g`` and fits :class:`~sklearn.svm.LinearSVC`.

    Parameters
    ----------
    image_features : int, str, slice, list or bool array, default="image__"
        The ``h_v`` columns (see :class:`sklearn_cgni.genetics.ContrastiveSNPEncoder`).
    genetic_encoder : estimator with fit/transform or None, default=None
        Produces ``h_g`` from the SNPs; ``None`` means ``SparseGeneticNN()``. Tunable with
        ``genetic_encoder__<param>``.
    C : float, default=1.0
    standardize : bool, default=True
        Standardise ``h_v ⊕ h_g`` before the SVM.
    class_weight : "balanced", dict or None, default=None
        Passed to :class:`~sklearn.svm.LinearSVC`.
    max_iter : int, default=10000
    random_state : int, RandomState instance or None, default=None
        Seeds the genetic net (when its own ``random_state`` is None) and the SVM.

    Attributes
    ----------
    classes_, genetic_encoder_, svm_, scaler_, image_indices_, genetic_indices_,
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.classification import ImagingGeneticSVM, SparseGeneticNN
    >>> rng = np.random.default_rng(0)
    >>> X = np.hstack([rng.normal(size=(60, 5)), rng.integers(0, 3, size=(60, 12))])
    >>> y = (X[:, 0] > 0).astype(int)
    >>> svm = ImagingGeneticSVM(image_features=5, random_state=0,
    ...     genetic_encoder=SparseGeneticNN(hidden_layer_sizes=(8,), max_epochs=2))
    >>> svm.fit(X, y).decision_function(X).shape
    (60,)
    """

    _parameter_constraints = {
        **_SPLIT_CONSTRAINTS,
        "C": [Interval(numbers.Real, 0, None, closed="neither")],
        "standardize": ["boolean"],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        image_features="image__",
        genetic_encoder=None,
        C=1.0,
        standardize=True,
        class_weight=None,
        max_iter=10000,
        random_state=None,
    ):
        self.image_features = image_features
        self.genetic_encoder = genetic_encoder
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the genetic net, then the SVM on ``h_v ⊕ h_g``.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        X, y = validate_numeric_data(self, X, y, method="fit", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; y holds only "
                f"one class: {classes[0]!r}."
            )
        F = self._fit_features(X, y)
        self.scaler_ = StandardScaler().fit(F) if self.standardize else None
        if self.scaler_ is not None:
            F = self.scaler_.transform(F)
        self.svm_ = LinearSVC(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.random_state
        ).fit(F, y)
        self.classes_ = self.svm_.classes_
        self.n_iter_ = self.svm_.n_iter_
        return self

    def _svm_input(self, X):
        check_is_fitted(self)
        X = validate_numeric_data(self, X, method="predict", reset=False, dtype=[np.float64, np.float32])
        F = self._features(X)
        return self.scaler_.transform(F) if self.scaler_ is not None else F

    def decision_function(self, X):
        """Signed distance to the hyperplane(s), as :class:`~sklearn.svm.LinearSVC`.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features_in_)

        Returns
        -------
        scores : ndarray
        """
        F = self._svm_input(X)
        return self.svm_.decision_function(F)

    def predict(self, X):
        """Predicted class.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features_in_)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        F = self._svm_input(X)
        return self.svm_.predict(F)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class ImagingGeneticNN(_ImagingGeneticMixin, SkorchClassifierBase):
    """Fully connected NN on ``h_v ⊕ h_g`` (500 -> 200 -> n_classes), L1 on all layers.

    As :class:`ImagingGeneticSVM` for the inputs and ``h_g``; the classifier is an
    :class:`sklearn_cgni.nn.MLP` with ReLU hidden layers, ``l1 * sum |W|`` over every weight
    matrix (output layer included) and Adam.

    Parameters
    ----------
    image_features : int, str, slice, list or bool array, default="image__"
    genetic_encoder : estimator with fit/transform or None, default=None
        ``None`` means ``SparseGeneticNN()``.
    hidden_layer_sizes : tuple of int, default=(500, 200)
    l1 : float, default=1e-5
    weight_decay : float, default=0.0
    lr : float, default=1e-3
    max_epochs : int, default=50
    batch_size : int, default=75
    class_weight : "balanced", dict or None, default=None
        Weights of the cross-entropy by class label (``"balanced"``: inverse class frequency, for the
        unequal working-memory groups; the paper does not say it weighted).
    early_stopping : bool, default=False
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=10
        Early stopping on a held-out split, as in :class:`~sklearn_cgni.classification.CGNIClassifier`
        (the paper trains a fixed number of epochs).
    device : str, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_, net_, genetic_encoder_, image_indices_, genetic_indices_, n_iter_, loss_curve_,
    validation_loss_curve_, best_epoch_, n_features_in_, feature_names_in_
        As :class:`~sklearn_cgni.classification.CGNIClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.classification import ImagingGeneticNN, SparseGeneticNN
    >>> rng = np.random.default_rng(0)
    >>> X = np.hstack([rng.normal(size=(60, 5)), rng.integers(0, 3, size=(60, 12))])
    >>> y = (X[:, 0] > 0).astype(int)
    >>> nn = ImagingGeneticNN(image_features=5, hidden_layer_sizes=(8,), max_epochs=2,
    ...     genetic_encoder=SparseGeneticNN(hidden_layer_sizes=(8,), max_epochs=2),
    ...     random_state=0)
    >>> nn.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **SkorchClassifierBase._parameter_constraints,
        **_SPLIT_CONSTRAINTS,
        "hidden_layer_sizes": [tuple, list],
        "l1": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        image_features="image__",
        genetic_encoder=None,
        hidden_layer_sizes=(500, 200),
        l1=1e-5,
        weight_decay=0.0,
        lr=1e-3,
        max_epochs=50,
        batch_size=75,
        class_weight=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.image_features = image_features
        self.genetic_encoder = genetic_encoder
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l1 = l1
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _build_module(self, n_features, n_classes):
        from ..nn._mlp import MLP

        return MLP(n_features, self.hidden_layer_sizes, n_classes, l1=self.l1, l1_on="all")

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the genetic net, then the NN on ``h_v ⊕ h_g``.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._check_params()
        X, y_enc = self._validate_fit_data(X, y)
        F = self._fit_features(X, y_enc)
        return self._fit_net(F, y_enc)

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_numeric_data(self, X, method="predict", reset=False, dtype=[np.float64, np.float32])
        return forward64(self.net_.module_, self._features(X))
