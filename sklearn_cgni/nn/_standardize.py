"""``(x - mean) / scale`` with the statistics as buffers: the one standardising layer."""

import torch
from torch import nn

__all__ = ["Standardize"]


class Standardize(nn.Module):
    """``(x - mean) / scale`` with buffers of shape ``(1, *shape)``, broadcast over the batch.

    The statistics travel in the state dict, so every copy of a network that composes it
    (saved weights, attribution and occlusion modules) takes raw inputs.
    :class:`~sklearn_cgni.nn.VoxelStandardize` is its image form (one channel, voxel-wise).

    Parameters
    ----------
    shape : tuple of int
        Shape of one sample, e.g. ``(n_features,)``. ``mean`` is zeros and ``scale`` ones
        until :meth:`set_statistics` is called.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn import Standardize
    >>> z = Standardize((3,)).set_statistics([1.0, 2.0, 3.0], [1.0, 2.0, 0.5])
    >>> z(torch.tensor([[2.0, 2.0, 2.0]])).tolist()
    [[1.0, 0.0, -2.0]]
    """

    def __init__(self, shape):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        self.register_buffer("mean", torch.zeros(1, *shape))
        self.register_buffer("scale", torch.ones(1, *shape))

    def set_statistics(self, mean, scale):
        """Copy the mean and scale (arrays of the sample shape) into the buffers."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean.shape))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32).reshape(self.scale.shape))
        return self

    def forward(self, x):
        return (x - self.mean) / self.scale

    def extra_repr(self):
        return f"shape={tuple(self.mean.shape[1:])}"
