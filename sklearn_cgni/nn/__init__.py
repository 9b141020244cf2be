"""Plain PyTorch modules and losses (no scikit-learn in here).

Each module adds its own import line below.
"""
from ._standardize import Standardize  # noqa: E402,F401
from ._mlp import MLP, ContrastiveEncoders, Encoder, genetic_encoder, image_encoder  # noqa: E402,F401
from .losses import (  # noqa: E402,F401
    CGNIContrastiveLoss,
    cgni_contrastive_loss,
    cross_modal_contrastive_loss,
    supervised_contrastive_loss,
)
from ._cnn import (  # noqa: E402,F401
    PAPER_CHANNELS,
    BrainCNN,
    CNNBackbone3d,
    ConvBlock3d,
    FoldedInferenceCNN,
    MultiOutputHead,
    RandomShift3d,
    VoxelStandardize,
    RegressionHead,
    backbone_output_shape,
    conv_forward_flops,
    recalibrate_batchnorm,
)
from ._cnn_tail import CNNTail  # noqa: E402,F401
