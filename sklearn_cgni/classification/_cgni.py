"""Stage 3 of CGNI: working-memory classifier on ``z_g ⊕ h_v``."""

import numbers

from sklearn.utils._param_validation import Interval

from ..utils._skorch import SkorchClassifierBase

__all__ = ["CGNIClassifier"]


class CGNIClassifier(SkorchClassifierBase):
    """MLP classifier of the CGNI paper's stage 3 (250 -> 200 -> 150 -> n_classes).

    Takes any 2-D input; in the method it is the output of
    :class:`sklearn_cgni.genetics.ContrastiveSNPEncoder` (``z_g ⊕ h_v``). ReLU hidden
    layers, one logit per class, cross-entropy, Adam, batches of 75 (the paper's).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(250, 200, 150)
    dropout : float, default=0.0
        Dropout after each hidden layer (the paper uses none).
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam weight decay.
    max_epochs : int, default=50
    batch_size : int, default=75
        Clipped, with a warning, to the number of samples.
    class_weight : "balanced", dict or None, default=None
        Weights of the cross-entropy by class label (``"balanced"``: inverse class frequency, for the
        unequal working-memory groups; the paper does not say it weighted).
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the rows, stop when their
        cross-entropy has not improved for ``n_iter_no_change`` epochs and keep the best
        epoch's weights (``max_epochs`` is then a budget). The paper trains a fixed number of
        epochs (False).
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=10
    device : str, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    net_ : skorch.NeuralNet
        Holds the trained :class:`sklearn_cgni.nn.MLP` as ``net_.module_``.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_loss_curve_ : list of float or None
        Held-out cross-entropy per epoch (``early_stopping`` only).
    best_epoch_ : int
        Epoch (1-based) whose weights were kept: the last one without ``early_stopping``.
    n_features_in_, feature_names_in_
        As usual.

    Notes
    -----
    A KeyboardInterrupt (Ctrl-C) during ``fit`` is raised again, not swallowed as skorch
    alone would, and leaves the estimator unfitted: a half-trained network never looks fitted.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn_cgni.classification import CGNIClassifier
    >>> X, y = make_classification(n_samples=100, n_features=10, random_state=0)
    >>> clf = CGNIClassifier(hidden_layer_sizes=(16,), max_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> clf = CGNIClassifier(hidden_layer_sizes=(64,), lr=1e-2, max_epochs=300, early_stopping=True,
    ...                      random_state=0).fit(X, y)
    >>> clf.best_epoch_ < clf.n_iter_ < 300  # stopped on the held-out 10 %, best epoch kept
    True
    """

    _parameter_constraints = {
        **SkorchClassifierBase._parameter_constraints,
        "hidden_layer_sizes": [tuple, list],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(250, 200, 150),
        dropout=0.0,
        lr=1e-3,
        weight_decay=0.0,
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
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
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

        return MLP(n_features, self.hidden_layer_sizes, n_classes, dropout=self.dropout)
