"""The last blocks of a CNN backbone as a module of their own, for fine-tuning them elsewhere."""

import math

import torch
from torch import nn

from ._cnn import ConvBlock3d, _check_padding, backbone_output_shape

__all__ = ["CNNTail"]


class CNNTail(nn.Module):
    """The last blocks of a :class:`CNNBackbone3d`, on flattened activations: ``a -> h_v``.

    ``a`` is the output of the backbone's earlier blocks, flattened to ``(batch, C*X*Y*Z)``
    (what :meth:`~sklearn_cgni.imaging.ImagingCNNClassifier.transform_blocks` returns), so a
    tabular estimator can train the blocks further: the contrastive encoder fine-tunes them with
    ``ContrastiveSNPEncoder(image_tail=...)``. :meth:`from_backbone` copies the blocks of a
    fitted network; the constructor builds them at random.

    Parameters
    ----------
    in_shape : tuple of 4 int
        ``(C, X, Y, Z)`` of the activations entering the first tail block.
    channels : sequence of int
        Output channels of each tail block.
    padding : {0, 1}, default=0
    pool : sequence of bool or None, default=None
        Whether each tail block max-pools (``None``: all do).
    global_pool : {None, "avg", "max"}, default=None
        As in :class:`CNNBackbone3d`.

    Attributes
    ----------
    n_features_out : int
        Width of the output ``h_v``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn import CNNBackbone3d, CNNTail
    >>> backbone = CNNBackbone3d(channels=(4, 8, 8), padding=1, global_pool="avg").eval()
    >>> tail = CNNTail.from_backbone(backbone, 1, (12, 14, 12)).eval()
    >>> x = torch.randn(2, 1, 12, 14, 12)
    >>> a = backbone.blocks[1](backbone.blocks[0](x)).flatten(1)  # what the tail takes
    >>> torch.allclose(tail(a), backbone(x), atol=1e-6), tail.n_features_out
    (True, 8)
    """

    def __init__(self, in_shape, channels, padding=0, pool=None, global_pool=None):
        super().__init__()
        _check_padding(padding)
        self.in_shape = tuple(int(s) for s in in_shape)
        if len(self.in_shape) != 4:
            raise ValueError(f"in_shape must be (C, X, Y, Z); got {in_shape!r}.")
        self.channels = tuple(int(c) for c in channels)
        if not self.channels:
            raise ValueError("channels must name at least one block.")
        self.padding = int(padding)
        self.pool_flags = tuple(bool(p) for p in (pool if pool is not None else [True] * len(self.channels)))
        if len(self.pool_flags) != len(self.channels):
            raise ValueError(f"pool has {len(self.pool_flags)} entries for {len(self.channels)} blocks.")
        self.global_pool = global_pool
        c_in, blocks = self.in_shape[0], []
        for c_out, p in zip(self.channels, self.pool_flags):
            blocks.append(ConvBlock3d(c_in, c_out, padding=self.padding, pool=p))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.pool = {"avg": nn.AdaptiveAvgPool3d(1), "max": nn.AdaptiveMaxPool3d(1), None: nn.Identity()}[global_pool]
        size = list(self.in_shape[1:])
        for p in self.pool_flags:
            conv = [s - 2 + 2 * self.padding for s in size]
            size = [s // 2 for s in conv] if p else conv
            if min(size) < 1:
                raise ValueError(f"CNNTail: activations of shape {self.in_shape} are too small for "
                                 f"{len(self.channels)} block(s) with padding={self.padding}.")
        self.n_features_out = self.channels[-1] * (1 if global_pool else math.prod(size))

    @classmethod
    def from_backbone(cls, backbone, n_blocks, input_shape):
        """A copy of the last ``n_blocks`` blocks (and the global pool) of ``backbone``.

        Parameters
        ----------
        backbone : CNNBackbone3d
        n_blocks : int
            How many of the last blocks; at least 1 and at most all of them.
        input_shape : tuple of 3 int
            Spatial shape of the images the backbone reads.
        """
        n_all = len(backbone.blocks)
        first = n_all - int(n_blocks)
        tail = cls(cls.input_shape(backbone, n_blocks, input_shape), backbone.channels[first:], padding=backbone.padding,
                   pool=[b < backbone.pool_blocks for b in range(first, n_all)], global_pool=backbone.global_pool)
        for mine, theirs in zip(tail.blocks, backbone.blocks[first:]):
            mine.load_state_dict(theirs.state_dict())
        return tail

    @staticmethod
    def input_shape(backbone, n_blocks, input_shape):
        """``(C, X, Y, Z)`` of the activations entering the last ``n_blocks`` blocks of ``backbone``."""
        n_all = len(backbone.blocks)
        n_blocks = int(n_blocks)
        if not 1 <= n_blocks <= n_all:
            raise ValueError(f"n_blocks must be in [1, {n_all}] (the backbone has {n_all} blocks); got {n_blocks}.")
        first = n_all - n_blocks
        if not first:
            return (backbone.in_channels, *(int(s) for s in input_shape))
        return backbone_output_shape(input_shape, backbone.channels[:first], backbone.padding,
                                     min(backbone.pool_blocks, first), None)

    def config(self):
        """The constructor's arguments as plain values (saved with a fitted encoder's weights)."""
        return {"in_shape": list(self.in_shape), "channels": list(self.channels), "padding": self.padding,
                "pool": list(self.pool_flags), "global_pool": self.global_pool}

    def forward(self, a):
        x = a.reshape(a.shape[0], *self.in_shape)
        for block in self.blocks:
            x = block(x)
        return torch.flatten(self.pool(x), 1)
