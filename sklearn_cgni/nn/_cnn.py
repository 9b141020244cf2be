"""3D CNN for brain images: a reusable convolutional backbone plus heads.

The architecture is the seed paper's stage-1 network (after Peng et al., 2021, "Accurate
brain age prediction with lightweight deep neural networks"): five blocks of

    Conv3d(3x3x3, stride 1, no padding) -> BatchNorm3d -> MaxPool3d(2) -> ReLU

with 32, 64, 128, 256 and 256 channels, the output of the last block flattened, and a fully
connected head with dropout 0.2.

Feature size
------------
With ``global_pool=None`` (the paper's network) the feature size follows from the input
shape: at 128x141x128 the last block outputs 256 x 2 x 2 x 2 = **2048** values (the paper's
text says 1024 and 512 in places; 2048 is what the stated layers give).
:func:`backbone_output_shape` computes it without running the network. With
``global_pool="avg"`` or ``"max"`` the last block is pooled adaptively to 1x1x1 and the
feature size is fixed at ``channels[-1]`` whatever the input shape.

Small inputs
------------
Five unpadded blocks need at least about 94 voxels per axis (96 with the final size 2 per
axis at 128). Smaller inputs (unit tests, down-sampled images) must be adapted explicitly:
``padding=1`` keeps the size through each convolution, and ``pool_blocks=k`` pools only in the
first ``k`` blocks. An input that is still too small raises a ``ValueError`` naming the block
where the size reaches zero; nothing is changed silently.

This module imports torch only (no scikit-learn), so that other subpackages and other
projects can reuse it.
"""

from __future__ import annotations

import copy
import math
import torch
from torch import nn

from ._random import Dropout
from ._standardize import Standardize

__all__ = [
    "PAPER_CHANNELS",
    "ConvBlock3d",
    "CNNBackbone3d",
    "RegressionHead",
    "MultiOutputHead",
    "BrainCNN",
    "FoldedInferenceCNN",
    "RandomShift3d",
    "VoxelStandardize",
    "auto_pool_blocks",
    "backbone_output_shape",
    "conv_forward_flops",
    "recalibrate_batchnorm",
]

#: Channels of the five convolutional blocks in the paper.
PAPER_CHANNELS = (32, 64, 128, 256, 256)


def _check_padding(padding):
    if padding not in (0, 1):
        raise ValueError(
            f"padding must be 0 (the paper's unpadded convolutions) or 1 (size-preserving); "
            f"got {padding!r}."
        )


def auto_pool_blocks(input_shape, channels=PAPER_CHANNELS, padding=0, min_size=2):
    """The most leading pooling blocks that leave the last block at least ``min_size`` per axis.

    ``pool_blocks="auto"`` of the stage-1 estimators: the paper's ``h_v`` is the flattened
    last block with a spatial layout (256 x 2 x 2 x 2 at 128x141x128), and this keeps such a
    layout at any input shape instead of pooling it away. With the paper's network at
    128x141x128 it gives all five blocks, as the paper.

    Parameters
    ----------
    input_shape : tuple of 3 int
    channels : sequence of int, default=PAPER_CHANNELS
    padding : {0, 1}, default=0
    min_size : int, default=2
        Smallest spatial size per axis of the last block.

    Returns
    -------
    pool_blocks : int

    Raises
    ------
    ValueError
        If even without pooling the last block is smaller than ``min_size`` on some axis.

    Examples
    --------
    >>> auto_pool_blocks((128, 141, 128))
    5
    >>> auto_pool_blocks((24, 28, 24), channels=(8, 16, 32, 32), padding=1)
    3
    """
    n_blocks = len(channels)
    for k in range(n_blocks, -1, -1):
        try:
            shape = backbone_output_shape(input_shape, channels, padding, k)
        except ValueError:
            continue
        if min(shape[1:]) >= min_size:
            return k
    raise ValueError(
        f"Input shape {tuple(input_shape)} is too small for {n_blocks} convolutional blocks with "
        f"padding={padding}: even without pooling the last block is smaller than {min_size} voxels "
        f"on some axis. Use padding=1, fewer blocks (channels) or larger images.")


def backbone_output_shape(input_shape, channels=PAPER_CHANNELS, padding=0, pool_blocks=None,
                          global_pool=None):
    """Shape ``(C, X, Y, Z)`` of the last block's output for a spatial ``input_shape``.

    Parameters
    ----------
    input_shape : tuple of 3 int
        Spatial shape of one image (without batch or channel axes).
    channels : sequence of int, default=PAPER_CHANNELS
        Output channels of each block.
    padding : {0, 1}, default=0
        Convolution padding. 0 is the paper's network.
    pool_blocks : int or None, default=None
        Number of leading blocks with a max-pool; ``None`` means every block.
    global_pool : {None, "avg", "max"}, default=None
        Adaptive pooling of the last block to 1x1x1.

    Returns
    -------
    shape : tuple of 4 int

    Raises
    ------
    ValueError
        If the spatial size reaches zero in some block, naming the block and the
        parameters that would adapt the network.
    """
    _check_padding(padding)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must have 3 spatial axes; got {input_shape!r}.")
    n_blocks = len(channels)
    pool_blocks = n_blocks if pool_blocks is None else int(pool_blocks)
    if not 0 <= pool_blocks <= n_blocks:
        raise ValueError(f"pool_blocks must be in [0, {n_blocks}]; got {pool_blocks}.")
    size = list(input_shape)
    for b in range(n_blocks):
        conv = [s - 2 + 2 * padding for s in size]
        if min(conv) < 1:
            raise ValueError(
                f"Input shape {input_shape} is too small for {n_blocks} convolutional blocks "
                f"with padding={padding} and pool_blocks={pool_blocks}: the input to block "
                f"{b + 1} has spatial size {tuple(size)}, which a 3x3x3 convolution without "
                f"enough padding cannot take. Use padding=1 and/or fewer pooling blocks "
                f"(pool_blocks), or larger images."
            )
        size = [s // 2 for s in conv] if b < pool_blocks else conv
        if min(size) < 1:
            raise ValueError(
                f"Input shape {input_shape} is too small for {n_blocks} convolutional blocks "
                f"with padding={padding} and pool_blocks={pool_blocks}: the max-pool of block "
                f"{b + 1} gets spatial size {tuple(conv)} and would output zero voxels. "
                f"Use padding=1 and/or fewer pooling blocks (pool_blocks), or larger images."
            )
    if global_pool is not None:
        size = [1, 1, 1]
    return (int(channels[-1]), *size)


def conv_forward_flops(input_shape, channels=PAPER_CHANNELS, padding=0, pool_blocks=None,
                       in_channels=1):
    """Floating-point operations of the convolutions for one image (2 per multiply-add).

    BatchNorm, pooling, ReLU and the head add well under 1 % and are not counted. At
    128x141x128 with the paper's network this gives about 45.7 GFLOP.

    Returns
    -------
    flops : int
    per_block : list of int
    """
    _check_padding(padding)
    n_blocks = len(channels)
    pool_blocks = n_blocks if pool_blocks is None else int(pool_blocks)
    size = [int(s) for s in input_shape]
    c_in = in_channels
    per_block = []
    for b, c_out in enumerate(channels):
        conv = [s - 2 + 2 * padding for s in size]
        per_block.append(2 * math.prod(conv) * c_out * c_in * 27)
        size = [s // 2 for s in conv] if b < pool_blocks else conv
        c_in = c_out
    return sum(per_block), per_block


class ConvBlock3d(nn.Sequential):
    """Conv3d(3x3x3) -> BatchNorm3d -> MaxPool3d(2) (optional) -> ReLU."""

    def __init__(self, in_channels, out_channels, padding=0, pool=True):
        _check_padding(padding)
        layers = [
            nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=padding),
            nn.BatchNorm3d(out_channels),
        ]
        if pool:
            layers.append(nn.MaxPool3d(2))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class CNNBackbone3d(nn.Module):
    """The convolutional part: ``len(channels)`` blocks, output flattened.

    Parameters
    ----------
    in_channels : int, default=1
    channels : sequence of int, default=PAPER_CHANNELS
    padding : {0, 1}, default=0
        0 reproduces the paper. 1 keeps the spatial size through each convolution (for
        small images).
    pool_blocks : int or None, default=None
        Number of leading blocks that max-pool (``None``: all).
    global_pool : {None, "avg", "max"}, default=None
        ``None``: flatten the last block as is (feature size depends on the input shape).
        ``"avg"``/``"max"``: adaptive pooling to 1x1x1 first (feature size ``channels[-1]``).

    Attributes
    ----------
    blocks : nn.ModuleList of ConvBlock3d
    """

    def __init__(self, in_channels=1, channels=PAPER_CHANNELS, padding=0, pool_blocks=None,
                 global_pool=None):
        super().__init__()
        _check_padding(padding)
        if global_pool not in (None, "avg", "max"):
            raise ValueError(f"global_pool must be None, 'avg' or 'max'; got {global_pool!r}.")
        self.channels = tuple(int(c) for c in channels)
        if len(self.channels) == 0:
            raise ValueError("channels must name at least one block.")
        self.in_channels = int(in_channels)
        self.padding = padding
        n_blocks = len(self.channels)
        self.pool_blocks = n_blocks if pool_blocks is None else int(pool_blocks)
        if not 0 <= self.pool_blocks <= n_blocks:
            raise ValueError(f"pool_blocks must be in [0, {n_blocks}]; got {pool_blocks}.")
        self.global_pool = global_pool
        c_in = self.in_channels
        blocks = []
        for b, c_out in enumerate(self.channels):
            blocks.append(ConvBlock3d(c_in, c_out, padding=padding, pool=b < self.pool_blocks))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        if global_pool == "avg":
            self.pool = nn.AdaptiveAvgPool3d(1)
        elif global_pool == "max":
            self.pool = nn.AdaptiveMaxPool3d(1)
        else:
            self.pool = nn.Identity()
        self.n_frozen_blocks = 0

    def freeze_blocks(self, n_blocks):
        """Freeze the first ``n_blocks`` blocks: no gradients, BatchNorm kept in eval mode.

        Frozen blocks keep their running statistics during training (``train()`` leaves
        them in eval mode), so a transferred block computes exactly what it computed in the
        source network.
        """
        n_blocks = int(n_blocks)
        if not 0 <= n_blocks <= len(self.blocks):
            raise ValueError(f"n_blocks must be in [0, {len(self.blocks)}]; got {n_blocks}.")
        self.n_frozen_blocks = n_blocks
        for b, block in enumerate(self.blocks):
            for p in block.parameters():
                p.requires_grad_(b >= n_blocks)
        self.train(self.training)
        return self

    def train(self, mode=True):
        super().train(mode)
        for block in self.blocks[: getattr(self, "n_frozen_blocks", 0)]:
            block.eval()
        return self

    def output_shape(self, input_shape):
        """``(C, X, Y, Z)`` of the last block for a spatial ``input_shape`` (see module doc)."""
        return backbone_output_shape(input_shape, self.channels, self.padding,
                                     self.pool_blocks, self.global_pool)

    def n_features(self, input_shape):
        """Length of the flattened feature vector h_v for a spatial ``input_shape``."""
        return math.prod(self.output_shape(input_shape))

    def forward_blocks(self, x):
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x):
        return torch.flatten(self.forward_blocks(x), 1)


class RegressionHead(nn.Sequential):
    """Dropout -> Linear(n_features, n_outputs): the paper's fully connected layer."""

    def __init__(self, n_features, n_outputs=1, dropout=0.2):
        super().__init__(Dropout(dropout), nn.Linear(int(n_features), int(n_outputs)))


class MultiOutputHead(nn.Module):
    """Many tasks on one feature vector: image -> ``n_tasks`` outputs of ``n_classes`` each.

    Output shape is ``(batch, n_tasks)`` when ``n_classes == 1`` (regression or one logit per
    task) and ``(batch, n_tasks, n_classes)`` otherwise (e.g. ``n_classes=3`` for genotype
    0/1/2 per SNP). Intended for the multi-task brain-genotype CNN (many SNPs from one image).

    Parameters
    ----------
    n_features : int
    n_tasks : int
    n_classes : int, default=1
    hidden : int or None, default=None
        Optional shared hidden layer (Linear + ReLU) before the task outputs.
    dropout : float, default=0.2
    """

    def __init__(self, n_features, n_tasks, n_classes=1, hidden=None, dropout=0.2):
        super().__init__()
        self.n_tasks = int(n_tasks)
        self.n_classes = int(n_classes)
        layers = [Dropout(dropout)]
        d = int(n_features)
        if hidden:
            layers += [nn.Linear(d, int(hidden)), nn.ReLU(inplace=True), Dropout(dropout)]
            d = int(hidden)
        layers.append(nn.Linear(d, self.n_tasks * self.n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, h):
        out = self.net(h)
        if self.n_classes == 1:
            return out
        return out.view(out.shape[0], self.n_tasks, self.n_classes)


class RandomShift3d(nn.Module):
    """Training-time augmentation: shift each image by up to ``max_shift`` voxels per axis.

    Every image of a batch gets its own integer offsets, drawn uniformly in
    ``[-max_shift, max_shift]`` from its ``generator`` (torch's global one when None, see
    :func:`~sklearn_cgni.nn._random.set_generators`); the voxels moved in are
    ``fill`` (0: the mean image once the input is voxel-wise standardised). Inactive in eval
    mode and with ``max_shift=0``, so inference is unchanged. It has no parameters or
    buffers: a state dict is the same with or without it.

    Parameters
    ----------
    max_shift : int, default=0
    fill : float, default=0.0
    """

    generator = None
    generator_device = "cpu"  # the offsets are used on the host

    def __init__(self, max_shift=0, fill=0.0):
        super().__init__()
        if int(max_shift) != max_shift or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer; got {max_shift!r}.")
        self.max_shift = int(max_shift)
        self.fill = float(fill)

    def forward(self, x):
        m = self.max_shift
        if not self.training or m == 0:
            return x
        spatial = x.shape[2:]
        padded = nn.functional.pad(x, (m, m) * 3, value=self.fill)
        offsets = torch.randint(0, 2 * m + 1, (x.shape[0], 3), generator=self.generator).tolist()
        out = torch.empty_like(x)
        for i, (a, b, c) in enumerate(offsets):
            out[i] = padded[i, :, a:a + spatial[0], b:b + spatial[1], c:c + spatial[2]]
        return out

    def extra_repr(self):
        return f"max_shift={self.max_shift}"


class VoxelStandardize(Standardize):
    """Voxel-wise z-scores: ``(x - mean) / scale`` with buffers of shape ``(1, 1, X, Y, Z)``.

    The one place the package standardises image voxels (the image form of
    :class:`~sklearn_cgni.nn.Standardize`). :class:`BrainCNN` composes it (as ``voxel``), so
    the statistics travel in the state dict and every copy of the network
    (:class:`FoldedInferenceCNN`, attribution modules) takes raw images.

    Parameters
    ----------
    shape : tuple of 3 int
        The spatial image shape. ``mean`` is zeros and ``scale`` ones until
        :meth:`set_statistics` is called (e.g. with the training images' voxel mean and SD).

    Examples
    --------
    >>> import torch
    >>> z = VoxelStandardize((2, 2, 2)).set_statistics(torch.full((2, 2, 2), 1.0), torch.full((2, 2, 2), 2.0))
    >>> z(torch.full((1, 1, 2, 2, 2), 5.0)).unique().tolist()
    [2.0]
    """

    def __init__(self, shape):
        super().__init__((1, *(int(s) for s in shape)))

    def extra_repr(self):
        return f"shape={tuple(self.mean.shape[2:])}"


#: State-dict keys of the voxel statistics before :class:`VoxelStandardize` (weights files
#: written then keep loading).
_OLD_VOXEL_KEYS = {"voxel_mean": "voxel.mean", "voxel_scale": "voxel.scale"}


class BrainCNN(nn.Module):
    """Backbone + head. ``features(x)`` gives h_v, ``forward(x)`` the head's output.

    Parameters
    ----------
    backbone : CNNBackbone3d
    head : nn.Module
        Takes the flattened features, e.g. :class:`RegressionHead` (brain age: one output;
        classification: one logit per class) or :class:`MultiOutputHead`.
    squeeze : bool, default=False
        Return shape ``(batch,)`` instead of ``(batch, 1)`` for a one-output head.
    voxel_shape : tuple of 3 int or None, default=None
        If given, the input is first z-scored voxel by voxel by a :class:`VoxelStandardize`
        module ``voxel`` (state-dict keys ``voxel.mean`` and ``voxel.scale``; zeros and ones
        until set with :meth:`set_voxel_statistics`, e.g. from the training images). They are
        saved in the state dict, so every copy of the network (inference, attribution) takes
        raw images. State dicts with the former top-level keys ``voxel_mean`` and
        ``voxel_scale`` still load.
    augment_shift : int, default=0
        Random shifts of up to this many voxels per axis in training mode
        (:class:`RandomShift3d`, applied after standardisation).

    Input is ``(batch, X, Y, Z)`` or ``(batch, 1, X, Y, Z)``.
    """

    def __init__(self, backbone, head, squeeze=False, voxel_shape=None, augment_shift=0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.squeeze = squeeze
        self.augment = RandomShift3d(augment_shift)
        self.voxel = VoxelStandardize(voxel_shape) if voxel_shape is not None else nn.Identity()

    @property
    def standardizes_input(self):
        """Whether the input is z-scored voxel by voxel (a :class:`VoxelStandardize` module)."""
        return isinstance(self.voxel, VoxelStandardize)

    @property
    def voxel_mean(self):
        """The voxel-wise mean buffer ``(1, 1, X, Y, Z)`` (``voxel.mean``)."""
        return self.voxel.mean

    @property
    def voxel_scale(self):
        """The voxel-wise scale buffer ``(1, 1, X, Y, Z)`` (``voxel.scale``)."""
        return self.voxel.scale

    @staticmethod
    def upgrade_state_dict(state_dict):
        """A state dict with the former top-level ``voxel_mean``/``voxel_scale`` keys renamed."""
        if not any(k in state_dict for k in _OLD_VOXEL_KEYS):
            return state_dict
        return {_OLD_VOXEL_KEYS.get(k, k): v for k, v in state_dict.items()}

    @staticmethod
    def state_dict_standardizes(state_dict):
        """Whether a (possibly old) state dict holds voxel statistics."""
        return "voxel.mean" in state_dict or "voxel_mean" in state_dict

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in _OLD_VOXEL_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _as_5d(x):
        return x.unsqueeze(1) if x.dim() == 4 else x

    def standardize(self, x):
        """Raw images -> the backbone's input space (voxel z-scores when standardising)."""
        return self.voxel(self._as_5d(x))

    def set_voxel_statistics(self, mean, scale):
        """Copy the voxel-wise mean and scale (arrays of the image shape) into the buffers."""
        if not self.standardizes_input:
            raise ValueError("This BrainCNN was built without voxel_shape: it does not standardise.")
        self.voxel.set_statistics(mean, scale)
        return self

    def features(self, x):
        return self.backbone(self.augment(self.standardize(x)))

    def forward(self, x):
        out = self.head(self.features(x))
        if self.squeeze and out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    @classmethod
    def build(cls, input_shape, n_outputs=1, channels=PAPER_CHANNELS, padding=0,
              pool_blocks=None, global_pool=None, dropout=0.2, in_channels=1, squeeze=False,
              standardize_voxels=False, augment_shift=0):
        """Backbone sized for ``input_shape`` with a :class:`RegressionHead` of ``n_outputs``.

        ``standardize_voxels=True`` adds the voxel-wise standardisation buffers (see the
        class parameters). Raises ``ValueError`` (see :func:`backbone_output_shape`) when
        ``input_shape`` is too small for the requested blocks.
        """
        backbone = CNNBackbone3d(in_channels, channels, padding, pool_blocks, global_pool)
        n_features = backbone.n_features(input_shape)
        return cls(backbone, RegressionHead(n_features, n_outputs, dropout), squeeze=squeeze,
                   voxel_shape=tuple(input_shape) if standardize_voxels else None,
                   augment_shift=augment_shift)


class FoldedInferenceCNN(nn.Module):
    """Inference-only copy of a :class:`BrainCNN` with BatchNorm folded into the convolutions.

    Same outputs as ``cnn.eval()`` up to float rounding (relative ~1e-6). With
    ``backend="mkldnn"`` the convolutional blocks run on oneDNN's blocked tensor layout
    (``torch.utils.mkldnn``), the fastest CPU path measured in
    ``benchmarks/bench_cnn_throughput.py`` (about 2x the plain eager forward). The copy
    does not track later changes to ``cnn``. A network that standardises its input voxel
    by voxel first (a :class:`VoxelStandardize` module, as the brain-genotype scorer's)
    keeps doing so: the copy holds a copy of that module.

    Parameters
    ----------
    cnn : BrainCNN
    backend : {"eager", "mkldnn"}, default="mkldnn"
    """

    def __init__(self, cnn, backend="mkldnn"):
        super().__init__()
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        if backend not in ("eager", "mkldnn"):
            raise ValueError(f"backend must be 'eager' or 'mkldnn'; got {backend!r}.")
        blocks = []
        for block in cnn.backbone.blocks:
            conv, bn, *rest = [copy.deepcopy(m) for m in block]
            blocks.append(nn.Sequential(fuse_conv_bn_eval(conv.eval(), bn.eval()), *rest))
        body = nn.Sequential(*blocks).eval()
        if backend == "mkldnn":
            import warnings

            with warnings.catch_warnings():  # torch.utils.mkldnn uses torch.jit.script_method
                warnings.simplefilter("ignore", DeprecationWarning)
                from torch.utils import mkldnn

                body = mkldnn.to_mkldnn(body)
        self.body = body
        self.pool = copy.deepcopy(cnn.backbone.pool)
        self.head = copy.deepcopy(cnn.head).eval()
        self.squeeze = cnn.squeeze
        self.backend = backend
        self.voxel = copy.deepcopy(cnn.voxel)
        self.eval()

    def features(self, x):
        x = self.voxel(x.unsqueeze(1) if x.dim() == 4 else x)
        if self.backend == "mkldnn":
            x = self.body(x.float().contiguous().to_mkldnn()).to_dense()
        else:
            x = self.body(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x):
        out = self.head(self.features(x))
        if self.squeeze and out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out


@torch.no_grad()
def recalibrate_batchnorm(module, loader, device="cpu"):
    """Re-estimate BatchNorm running statistics for the final weights (exact averages).

    During training the running statistics are exponential averages over batches seen
    with *earlier* weights; when a block's output varies little between images (e.g. a
    1x1x1 last block at small shapes) that lag shifts eval-mode outputs by several standard
    deviations. This pass resets the statistics of every BatchNorm that is in training use
    and averages them over ``loader`` with the final weights (cumulative average,
    ``momentum=None``), as ``torch.optim.swa_utils.update_bn`` does, but leaves BatchNorms
    that stay in eval mode (blocks frozen with :meth:`CNNBackbone3d.freeze_blocks`)
    untouched. Augmentation (:class:`RandomShift3d`) is off during the pass.

    Parameters
    ----------
    module : nn.Module
    loader : iterable of tensors or (tensor, target) pairs
    device : str or torch.device
    """
    was_training = module.training
    module.train()
    for m in module.modules():  # the statistics describe real images, not augmented ones
        if isinstance(m, RandomShift3d):
            m.eval()
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.training and m.track_running_stats]
    if not bns:
        module.train(was_training)
        return module
    momenta = {}
    for bn in bns:
        momenta[bn] = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if len(x) < 2:
            continue
        module(x.to(device))
    for bn in bns:
        bn.momentum = momenta[bn]
    module.train(was_training)
    return module
