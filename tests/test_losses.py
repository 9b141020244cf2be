"""Equations (1)-(5) of the CGNI paper against a literal (looped) transcription."""

import math

import pytest
import torch
from torch.nn import functional as F

from sklearn_cgni.nn.losses import (
    CGNIContrastiveLoss,
    cgni_contrastive_loss,
    cross_modal_contrastive_loss,
    supervised_contrastive_loss,
)


def _literal_cross(z_a, z_b, tau, denominator):
    """Equation (1) summed over anchors, written with loops exactly as printed."""
    b = z_a.shape[0]
    total = 0.0
    for i in range(b):
        num = math.exp(float(z_a[i] @ z_b[i]) / tau)
        den = sum(
            math.exp(float(z_a[i] @ z_b[j]) / tau) for j in range(b) if denominator == "infonce" or j != i
        )
        total += -math.log(num / den)
    return total


def _literal_supervised(z, y, tau):
    """Equation (3) summed over anchors with a positive; returns (sum, n_anchors_with_pos)."""
    b = z.shape[0]
    total, n = 0.0, 0
    for i in range(b):
        pos = [p for p in range(b) if p != i and y[p] == y[i]]
        if not pos:
            continue
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(b) if j != i)
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / den) for p in pos) / len(pos)
        n += 1
    return total, n


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z_v = torch.randn(12, 5, generator=g, dtype=torch.float64)
    z_g = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 2])  # class 2: a single sample
    return z_v, z_g, y


@pytest.mark.parametrize("denominator", ["paper", "infonce"])
@pytest.mark.parametrize("normalize", [True, False])
def test_cross_modal_matches_literal_equation(batch, denominator, normalize):
    z_v, z_g, _ = batch
    tau = 0.5
    a, b = (F.normalize(z_v, dim=1), F.normalize(z_g, dim=1)) if normalize else (z_v, z_g)
    expected = _literal_cross(a, b, tau, denominator)
    got = cross_modal_contrastive_loss(
        z_v, z_g, temperature=tau, denominator=denominator, reduction="sum", normalize=normalize
    )
    assert got.item() == pytest.approx(expected, rel=1e-10)
    mean = cross_modal_contrastive_loss(z_v, z_g, temperature=tau, denominator=denominator, normalize=normalize)
    assert mean.item() == pytest.approx(expected / 12, rel=1e-10)
    # equation (2) is (1) with the roles swapped
    expected_gv = _literal_cross(b, a, tau, denominator)
    got_gv = cross_modal_contrastive_loss(
        z_g, z_v, temperature=tau, denominator=denominator, reduction="sum", normalize=normalize
    )
    assert got_gv.item() == pytest.approx(expected_gv, rel=1e-10)


def test_infonce_is_cross_entropy_and_paper_excludes_positive(batch):
    z_v, z_g, _ = batch
    logits = F.normalize(z_v, dim=1) @ F.normalize(z_g, dim=1).T / 0.1
    ce = F.cross_entropy(logits, torch.arange(12))
    assert cross_modal_contrastive_loss(z_v, z_g, denominator="infonce").item() == pytest.approx(ce.item())
    # the paper's form is smaller (its denominator lacks the positive) and may be negative
    z = torch.eye(12, dtype=torch.float64)
    assert cross_modal_contrastive_loss(z, z, denominator="paper").item() < 0
    assert cross_modal_contrastive_loss(z, z, denominator="infonce").item() >= 0


@pytest.mark.parametrize("normalize", [True, False])
def test_supervised_matches_literal_equation_and_skips_empty_positives(batch, normalize):
    z_v, _, y = batch
    tau = 0.3
    z = F.normalize(z_v, dim=1) if normalize else z_v
    expected_sum, n = _literal_supervised(z, y.tolist(), tau)
    assert n == 11  # the single sample of class 2 has no positive
    got = supervised_contrastive_loss(z_v, y, temperature=tau, reduction="sum", normalize=normalize)
    assert got.item() == pytest.approx(expected_sum, rel=1e-10)
    got_mean = supervised_contrastive_loss(z_v, y, temperature=tau, normalize=normalize)
    assert got_mean.item() == pytest.approx(expected_sum / n, rel=1e-10)
    per_anchor = supervised_contrastive_loss(z_v, y, temperature=tau, reduction="none", normalize=normalize)
    assert per_anchor[-1].item() == 0.0 and torch.all(per_anchor[:-1] > 0)


def test_no_positive_anywhere_gives_zero_not_nan():
    z = torch.randn(4, 3, requires_grad=True)
    loss = supervised_contrastive_loss(z, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_combined_is_weighted_sum_and_skips_zero_weights(batch):
    z_v, z_g, y = batch
    kw = dict(temperature=0.2)
    loss, terms = cgni_contrastive_loss(
        z_v, z_g, y, lambda_vg=0.7, sigma_gv=0.3, gamma_vv=0.2, theta_gg=0.4, return_terms=True, **kw
    )
    expected = (
        0.7 * cross_modal_contrastive_loss(z_v, z_g, **kw)
        + 0.3 * cross_modal_contrastive_loss(z_g, z_v, **kw)
        + 0.2 * supervised_contrastive_loss(z_v, y, **kw)
        + 0.4 * supervised_contrastive_loss(z_g, y, **kw)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    _, terms = cgni_contrastive_loss(z_v, z_g, y, gamma_vv=0.0, sigma_gv=0.0, return_terms=True)
    assert sorted(terms) == ["L_gg", "L_vg"]
    # cross-modal terms alone need no labels
    assert torch.isfinite(cgni_contrastive_loss(z_v, z_g, None, theta_gg=0.0))


def test_gradients_finite_at_extreme_temperature():
    g = torch.Generator().manual_seed(1)
    z_v = torch.randn(50, 8, generator=g, requires_grad=True)
    z_g = torch.randn(50, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 2, (50,), generator=g)
    loss = cgni_contrastive_loss(z_v, z_g, y, gamma_vv=1.0, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_v.grad).all() and torch.isfinite(z_g.grad).all()


def test_all_weights_zero_is_a_clear_error(batch):
    z_v, z_g, y = batch
    with pytest.raises(ValueError, match="all four loss weights"):
        cgni_contrastive_loss(z_v, z_g, y, lambda_vg=0, sigma_gv=0, gamma_vv=0, theta_gg=0)
    with pytest.raises(ValueError, match="all four loss weights"):
        CGNIContrastiveLoss(lambda_vg=0, sigma_gv=0, gamma_vv=0, theta_gg=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_vg": -0.1}, "lambda_vg must be"),
        ({"theta_gg": float("nan")}, "theta_gg must be"),
        ({"temperature": 0.0}, "temperature"),
        ({"denominator": "clip"}, "denominator"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_parameters(batch, kwargs, match):
    z_v, z_g, y = batch
    with pytest.raises(ValueError, match=match):
        cgni_contrastive_loss(z_v, z_g, y, **kwargs)


def test_bad_shapes(batch):
    z_v, z_g, y = batch
    with pytest.raises(ValueError, match="at least 2 samples"):
        cross_modal_contrastive_loss(z_v[:1], z_g[:1])
    with pytest.raises(ValueError, match="same participants"):
        cross_modal_contrastive_loss(z_v, z_g[:5])
    with pytest.raises(ValueError, match="labels must have shape"):
        supervised_contrastive_loss(z_v, y[:3])
    with pytest.raises(ValueError, match="labels are required"):
        cgni_contrastive_loss(z_v, z_g, None, theta_gg=0.4)
