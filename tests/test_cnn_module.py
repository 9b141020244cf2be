"""The plain torch CNN (sklearn_cgni.nn._cnn): shapes, FLOPs, explicit small-shape adaptation."""

import inspect

import pytest
import torch

from sklearn_cgni.nn import _cnn
from sklearn_cgni.nn import (
    PAPER_CHANNELS,
    BrainCNN,
    CNNBackbone3d,
    MultiOutputHead,
    backbone_output_shape,
    conv_forward_flops,
)

TINY = (4, 4, 8, 8, 8)


def test_paper_feature_size_is_2048_at_full_resolution():
    assert backbone_output_shape((128, 141, 128)) == (256, 2, 2, 2)
    assert CNNBackbone3d().n_features((128, 141, 128)) == 2048


def test_forward_flops_match_the_issue_figure():
    total, per_block = conv_forward_flops((128, 141, 128), PAPER_CHANNELS)
    # 2 * out_voxels * C_out * C_in * 27 per block; block 1: 126*139*126 voxels x 32 x 1.
    assert per_block[0] == 2 * 126 * 139 * 126 * 32 * 1 * 27
    assert per_block[4] == 2 * 4 * 4 * 4 * 256 * 256 * 27
    assert 45.6e9 < total < 45.8e9


def test_too_small_shape_is_an_explicit_error():
    with pytest.raises(ValueError, match=r"too small.*block 4.*padding=1.*pool_blocks"):
        backbone_output_shape((24, 28, 24))
    with pytest.raises(ValueError, match="too small"):
        BrainCNN.build((24, 28, 24))
    # padding=1 alone still pools 24 -> 0 in block 5: also an error, naming the pool
    with pytest.raises(ValueError, match="max-pool of block 5"):
        backbone_output_shape((24, 28, 24), padding=1)
    assert backbone_output_shape((24, 28, 24), padding=1, pool_blocks=4) == (256, 1, 1, 1)


@pytest.mark.parametrize("bad", [2, -1, "same"])
def test_padding_is_validated(bad):
    with pytest.raises(ValueError, match="padding"):
        CNNBackbone3d(padding=bad)


def test_global_pool_fixes_feature_size():
    for shape in [(24, 28, 24), (32, 30, 26)]:
        net = CNNBackbone3d(1, TINY, padding=1, pool_blocks=3, global_pool="avg")
        assert net.n_features(shape) == TINY[-1]
        out = net(torch.zeros(2, 1, *shape))
        assert out.shape == (2, TINY[-1])


def test_brain_cnn_shapes_and_features():
    torch.manual_seed(0)
    shape = (24, 28, 24)
    net = BrainCNN.build(shape, n_outputs=1, channels=TINY, padding=1, pool_blocks=4, squeeze=True)
    net.eval()
    x = torch.randn(3, *shape)
    assert net(x).shape == (3,)
    assert net(x.unsqueeze(1)).shape == (3,)
    h = net.features(x)
    assert h.shape == (3, net.backbone.n_features(shape))
    # head applied to features == forward (eval mode: dropout off)
    torch.testing.assert_close(net.head(h)[:, 0], net(x))


def test_multi_output_head_reuses_backbone():
    shape = (24, 28, 24)
    backbone = CNNBackbone3d(1, TINY, padding=1, pool_blocks=4)
    n = backbone.n_features(shape)
    snps = BrainCNN(backbone, MultiOutputHead(n, n_tasks=7, n_classes=3, hidden=16))
    x = torch.randn(2, 1, *shape)
    assert snps(x).shape == (2, 7, 3)
    one_logit = BrainCNN(backbone, MultiOutputHead(n, n_tasks=5))
    assert one_logit(x).shape == (2, 5)
    assert one_logit.backbone is snps.backbone


def test_freeze_blocks_stops_gradients_and_bn_updates():
    net = BrainCNN.build((24, 28, 24), channels=TINY, padding=1, pool_blocks=4)
    net.backbone.freeze_blocks(2)
    net.train()
    assert not net.backbone.blocks[0][1].training and not net.backbone.blocks[1][1].training
    assert net.backbone.blocks[2][1].training
    before = net.backbone.blocks[0][1].running_mean.clone()
    net(torch.randn(4, 24, 28, 24)).sum().backward()
    assert all(p.grad is None for p in net.backbone.blocks[0].parameters())
    assert all(p.grad is not None for p in net.backbone.blocks[2].parameters())
    torch.testing.assert_close(net.backbone.blocks[0][1].running_mean, before)
    with pytest.raises(ValueError, match="n_blocks"):
        net.backbone.freeze_blocks(9)


def test_nn_module_does_not_import_sklearn():
    src = inspect.getsource(_cnn)
    assert "import sklearn" not in src and "from sklearn" not in src


@pytest.mark.parametrize("backend", ["eager", "mkldnn"])
def test_folded_inference_copy_matches_eval_forward(backend):
    from sklearn_cgni.nn import FoldedInferenceCNN

    if backend == "mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN not available")
    torch.manual_seed(0)
    net = BrainCNN.build((24, 28, 24), channels=TINY, padding=1, pool_blocks=4, squeeze=True)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    fast = FoldedInferenceCNN(net, backend=backend)
    x = torch.randn(3, 24, 28, 24)
    with torch.no_grad():
        torch.testing.assert_close(fast.features(x), net.features(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)


def test_recalibrate_batchnorm_uses_final_weights_and_skips_frozen_blocks():
    from sklearn_cgni.nn import recalibrate_batchnorm

    torch.manual_seed(0)
    net = BrainCNN.build((24, 28, 24), channels=TINY, padding=1, pool_blocks=4)
    net.backbone.freeze_blocks(1)
    frozen_before = net.backbone.blocks[0][1].running_mean.clone()
    bn1 = net.backbone.blocks[1][1]
    bn1.running_mean.fill_(5.0)
    x = torch.randn(6, 1, 24, 28, 24)
    recalibrate_batchnorm(net, [(x[:3], 0), (x[3:], 0)])
    net.eval()
    with torch.no_grad():
        h0 = net.backbone.blocks[0](x)
        expected = net.backbone.blocks[1][0](h0).mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(bn1.running_mean, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.backbone.blocks[0][1].running_mean, frozen_before)
    assert bn1.momentum == 0.1 and not net.training


def test_random_shift_moves_each_image_in_training_only():
    from sklearn_cgni.nn import RandomShift3d

    torch.manual_seed(0)
    x = torch.zeros(8, 1, 9, 10, 11)
    x[:, :, 4, 5, 5] = 1.0  # one bright voxel per image
    shift = RandomShift3d(2)
    out = shift(x)
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3, 4)) == 1)  # nothing wraps around
    where = [tuple(torch.nonzero(o[0])[0].tolist()) for o in out]
    offsets = {(a - 4, b - 5, c - 5) for a, b, c in where}
    assert all(max(abs(d) for d in o) <= 2 for o in offsets) and len(offsets) > 1
    assert torch.equal(shift.eval()(x), x) and torch.equal(RandomShift3d(0)(x), x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift3d(-1)


def test_voxel_standardisation_is_part_of_the_network_and_its_copies():
    from sklearn_cgni.nn import FoldedInferenceCNN

    torch.manual_seed(0)
    shape = (12, 14, 12)
    net = BrainCNN.build(shape, channels=(4, 8), padding=1, pool_blocks=2, standardize_voxels=True)
    plain = BrainCNN.build(shape, channels=(4, 8), padding=1, pool_blocks=2)
    assert net.standardizes_input and not plain.standardizes_input
    assert {"voxel.mean", "voxel.scale"} <= set(net.state_dict()) and "voxel.mean" not in plain.state_dict()
    x = torch.rand(5, *shape) + 2.0
    mean, scale = x.mean(0), x.std(0)
    net.set_voxel_statistics(mean.numpy(), scale.numpy())
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("voxel.")})
    net.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.features(x), plain.features((x - mean) / scale))
        torch.testing.assert_close(FoldedInferenceCNN(net, backend="eager")(x), net(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="does not standardise"):
        plain.set_voxel_statistics(mean, scale)


def test_state_dicts_with_the_former_voxel_keys_still_load():
    """Weights saved before VoxelStandardize kept ``voxel_mean``/``voxel_scale`` at the top level."""
    from sklearn_cgni.nn import FoldedInferenceCNN, VoxelStandardize

    torch.manual_seed(0)
    shape = (12, 14, 12)
    net = BrainCNN.build(shape, channels=(4, 8), padding=1, pool_blocks=2, standardize_voxels=True)
    assert isinstance(net.voxel, VoxelStandardize)
    x = torch.rand(3, *shape) + 1.0
    net.set_voxel_statistics(x.mean(0).numpy(), x.std(0).numpy())
    old = {("voxel_" + k[len("voxel."):] if k.startswith("voxel.") else k): v for k, v in net.state_dict().items()}
    assert "voxel_mean" in old and BrainCNN.state_dict_standardizes(old)
    fresh = BrainCNN.build(shape, channels=(4, 8), padding=1, pool_blocks=2, standardize_voxels=True)
    fresh.load_state_dict(old)  # strict: every key maps
    torch.testing.assert_close(fresh.voxel_mean, net.voxel_mean)
    assert BrainCNN.upgrade_state_dict(old).keys() == net.state_dict().keys()
    net.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x))
        folded = FoldedInferenceCNN(fresh, backend="eager")
        assert isinstance(folded.voxel, VoxelStandardize)  # the copy keeps the standardisation
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
