"""Fully connected modules of the CGNI paper (plain torch, no scikit-learn).

* :class:`MLP`: ``in -> hidden... -> out`` with ReLU after every hidden layer, an optional
  L1 penalty on the hidden and/or output weights, :meth:`MLP.embed` giving the last hidden
  activation (the paper's ``h_g`` for the sparse genetic NN).
* :class:`Encoder`: an MLP whose output is L2-normalised (``e_v`` and ``e_g``).
* :class:`ContrastiveEncoders`: the pair ``(e_v, e_g)`` of stage 2, ``forward(h_v, x_g) ->
  (z_v, z_g)``.

Paper sizes (the defaults of the builder functions below):

=============================  ==============================================
imaging encoder ``e_v``         h_v -> 250 -> 200 -> 150 -> 100
genetic encoder ``e_g``         SNPs -> 400 -> 600 -> 400 -> 300 -> 150 -> 100
CGNI classifier (stage 3)       z_g + h_v -> 250 -> 200 -> 150 -> 2
sparse genetic NN               SNPs -> 800 -> 600 -> 400 -> 2  (h_g = 400 units)
imaging-genetic NN              h_v + h_g -> 500 -> 200 -> 2
=============================  ==============================================
"""

import torch
from torch import nn
from torch.nn import functional as F

from ._random import Dropout, dropout
from ._standardize import Standardize

__all__ = [
    "MLP",
    "Encoder",
    "ContrastiveEncoders",
    "image_encoder",
    "genetic_encoder",
    "IMAGE_ENCODER_SIZES",
    "GENETIC_ENCODER_SIZES",
    "CGNI_CLASSIFIER_SIZES",
    "SPARSE_GENETIC_SIZES",
    "IMAGING_GENETIC_SIZES",
]

IMAGE_ENCODER_SIZES = (250, 200, 150)
GENETIC_ENCODER_SIZES = (400, 600, 400, 300, 150)
CGNI_CLASSIFIER_SIZES = (250, 200, 150)
SPARSE_GENETIC_SIZES = (800, 600, 400)
IMAGING_GENETIC_SIZES = (500, 200)

_L1_ON = ("hidden", "all", "input", "none")


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU hidden layers and a linear output layer.

    Parameters
    ----------
    in_features : int
    hidden_sizes : sequence of int
        Sizes of the hidden layers (may be empty: a linear model).
    out_features : int
    dropout : float, default=0.0
        Dropout after every hidden ReLU (the paper uses none in these MLPs).
    l1 : float, default=0.0
        Strength of the L1 penalty returned by :meth:`penalty`: ``l1 * sum |W|`` over the
        weight matrices selected by ``l1_on`` (biases are not penalised).
    l1_on : {"hidden", "all", "input", "none"}, default="hidden"
        ``"hidden"``: the layers producing hidden activations (the paper's sparse genetic
        NN); ``"all"``: every layer, the output one included (the imaging-genetic NN);
        ``"input"``: the first layer only, the one reading the input features (sparse input
        weights, as the contrastive encoder's ``genetic_l1``).

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn import MLP
    >>> net = MLP(10, (8, 4), 2, l1=1e-3)
    >>> net(torch.randn(3, 10)).shape, net.embed(torch.randn(3, 10)).shape
    (torch.Size([3, 2]), torch.Size([3, 4]))
    """

    #: dropout masks come from this generator when set (:func:`~sklearn_cgni.nn._random.set_generators`)
    generator = None

    def __init__(self, in_features, hidden_sizes, out_features, dropout=0.0, l1=0.0, l1_on="hidden"):
        super().__init__()
        from ._checks import check_layer_sizes

        if l1_on not in _L1_ON:
            raise ValueError(f"l1_on must be one of {_L1_ON}; got {l1_on!r}.")
        sizes = [int(in_features), *check_layer_sizes(hidden_sizes, "hidden_sizes", type(self).__name__)]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = nn.Linear(sizes[-1], int(out_features))
        self.dropout = float(dropout)
        self.l1 = float(l1)
        self.l1_on = l1_on

    def embed(self, x):
        """Activation of the last hidden layer (the input itself if there is none)."""
        for layer in self.hidden:
            x = F.relu(layer(x))
            if self.dropout:
                x = dropout(x, self.dropout, self.training, self.generator)
        return x

    def forward(self, x):
        return self.output(self.embed(x))

    def penalty(self):
        """``l1 * sum |W|`` over the penalised weight matrices (a 0-d tensor)."""
        if self.l1 == 0 or self.l1_on == "none":
            return self.output.weight.new_zeros(())
        if self.l1_on == "input":
            layers = [self.hidden[0] if len(self.hidden) else self.output]
        else:
            layers = list(self.hidden) + ([self.output] if self.l1_on == "all" else [])
        if not layers:
            return self.output.weight.new_zeros(())
        return self.l1 * sum(layer.weight.abs().sum() for layer in layers)


class Encoder(MLP):
    """An :class:`MLP` whose output is L2-normalised (unit-norm embedding ``z``).

    The contrastive losses compare cosine similarities, so the encoder returns the
    embedding the loss actually sees; ``transform`` and occlusion analyses then work on the
    same vectors. ``normalize=False`` returns the raw last-layer output. ``standardize=True``
    z-scores the input first (a :class:`Standardize` layer, ``standardize``, whose statistics
    the caller sets); ``input_dropout`` drops input features in training, after that.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn import Encoder
    >>> z = Encoder(6, (5,), 3)(torch.randn(2, 6))
    >>> torch.allclose(z.norm(dim=1), torch.ones(2))
    True
    """

    def __init__(self, in_features, hidden_sizes, out_features, dropout=0.0, normalize=True, standardize=False,
                 input_dropout=0.0, l1=0.0, l1_on="hidden"):
        super().__init__(in_features, hidden_sizes, out_features, dropout=dropout, l1=l1, l1_on=l1_on)
        self.normalize = bool(normalize)
        # z-scores of the input (statistics set by the estimator, saved in the state dict) and
        # dropout on the input, after standardising (a dropped feature is at its mean)
        self.standardize = Standardize((int(in_features),)) if standardize else None
        self.input_dropout = Dropout(input_dropout) if input_dropout else None

    def forward(self, x):
        # getattr: encoders pickled before these layers existed have neither attribute
        if getattr(self, "standardize", None) is not None:
            x = self.standardize(x)
        if getattr(self, "input_dropout", None) is not None:
            x = self.input_dropout(x)
        z = super().forward(x)
        return F.normalize(z, dim=1) if self.normalize else z


def image_encoder(in_features, hidden_sizes=IMAGE_ENCODER_SIZES, out_features=100, **kwargs):
    """Imaging encoder ``e_v``: h_v -> 250 -> 200 -> 150 -> 100 by default."""
    return Encoder(in_features, hidden_sizes, out_features, **kwargs)


def genetic_encoder(in_features, hidden_sizes=GENETIC_ENCODER_SIZES, out_features=100, **kwargs):
    """Genetic encoder ``e_g``: SNPs -> 400 -> 600 -> 400 -> 300 -> 150 -> 100 by default."""
    return Encoder(in_features, hidden_sizes, out_features, **kwargs)


class ContrastiveEncoders(nn.Module):
    """The two encoders of stage 2: ``forward(h_v, x_g) -> (z_v, z_g)``.

    Parameters
    ----------
    n_image_features, n_genetic_features : int
        Widths of ``h_v`` and of the SNP vector.
    image_hidden, genetic_hidden : sequence of int
        Hidden sizes of ``e_v`` and ``e_g`` (paper: (250, 200, 150) and
        (400, 600, 400, 300, 150)).
    n_components : int, default=100
        Size of ``z_v`` and ``z_g``.
    dropout : float, default=0.0
        Dropout after each hidden layer of both encoders.
    snp_dropout : float, default=0.0
        Dropout on the SNP vector itself in training (each SNP of each participant zeroed
        with this probability and the rest scaled by ``1 / (1 - p)``), so that ``e_g`` cannot
        lean on a few SNPs to identify a participant. Identity in eval mode.
    normalize : bool, default=True
        L2-normalise ``z_v`` and ``z_g``.
    standardize : bool, default=False
        Each encoder z-scores its input first (a :class:`Standardize` layer whose statistics
        the estimator sets from its training rows; they travel in the state dict).
    image_tail : torch.nn.Module or None, default=None
        A module applied to the image input before ``e_v`` and trained with it (for example a
        :class:`~sklearn_cgni.nn.CNNTail`, the last CNN blocks on their input activations):
        ``z_v = e_v(image_tail(a))``. ``n_image_features`` is then its output width.
    genetic_l1 : float, default=0.0
        L1 penalty on ``e_g``'s input layer (its SNP weights), returned by :meth:`penalty`.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn import ContrastiveEncoders
    >>> enc = ContrastiveEncoders(12, 30, n_components=8)
    >>> z_v, z_g = enc(torch.randn(4, 12), torch.randn(4, 30))
    >>> z_v.shape, z_g.shape
    (torch.Size([4, 8]), torch.Size([4, 8]))
    """

    def __init__(
        self,
        n_image_features,
        n_genetic_features,
        image_hidden=IMAGE_ENCODER_SIZES,
        genetic_hidden=GENETIC_ENCODER_SIZES,
        n_components=100,
        dropout=0.0,
        normalize=True,
        snp_dropout=0.0,
        standardize=False,
        image_tail=None,
        genetic_l1=0.0,
    ):
        super().__init__()
        self.image_tail = image_tail
        self.image_encoder = image_encoder(
            n_image_features, image_hidden, n_components, dropout=dropout, normalize=normalize,
            standardize=standardize
        )
        # SNP dropout is the genetic encoder's input dropout (after its standardisation, if any)
        self.genetic_encoder = genetic_encoder(
            n_genetic_features, genetic_hidden, n_components, dropout=dropout, normalize=normalize,
            standardize=standardize, input_dropout=snp_dropout, l1=genetic_l1, l1_on="input"
        )

    def penalty(self):
        """``genetic_l1 * sum |W|`` of ``e_g``'s input layer (its SNP weights), added to the training loss."""
        return self.genetic_encoder.penalty()

    def embed_image(self, x_v):
        """``z_v`` of the image input (through ``image_tail`` first, when there is one)."""
        tail = getattr(self, "image_tail", None)  # encoders pickled before image_tail existed
        return self.image_encoder(x_v if tail is None else tail(x_v))

    def forward(self, h_v, x_g):  # skorch passes the inputs by these names
        return self.embed_image(h_v), self.genetic_encoder(x_g)

