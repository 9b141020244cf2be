"""Contrastive losses of the CGNI paper, equations (1)-(5).

Notation (Suresh et al., "Integrating Neuroimaging and Genetics via Contrastive Learning
for Working Memory"): in a batch of ``b`` participants, ``z_v[i]`` is the imaging embedding
and ``z_g[i]`` the genetic embedding of participant ``i``, ``y[i]`` its working-memory group,
``tau`` the temperature and ``P(i) = {p != i : y[p] == y[i]}``.

Conventions used by every function here
---------------------------------------
* **Normalisation.** Embeddings are L2-normalised along the feature axis before the dot
  products (``normalize=True``, the default), so ``z^i . z^j`` is a cosine similarity in
  ``[-1, 1]`` and ``tau`` alone sets the sharpness. ``normalize=False`` uses the raw dot
  product exactly as printed in the paper.
* **Cross-modal denominator.** Equations (1)-(2) sum the denominator over ``j != i``: the
  positive pair is *not* in the denominator (``denominator="paper"``, the default). The
  standard InfoNCE / CLIP form includes it (``denominator="infonce"``); it is then a
  cross-entropy and is always ``>= 0``, whereas the paper's form can be negative (it is
  ``log(sum_{j != i} exp(s_ij)) - s_ii``, unbounded below as the positive dominates).
* **Supervised terms** (3)-(4) are the SupCon form: the anchor is excluded from its own
  denominator and from ``P(i)``. An anchor whose class has no other member in the batch
  (``|P(i)| = 0``) has no positive; it contributes nothing (the paper's ``1/|P(i)|`` is
  undefined there) and is not counted by ``reduction="mean"``. If no anchor in the batch has
  a positive, the term is exactly ``0`` (never NaN).
* **Reduction.** The paper *sums* over anchors (``reduction="sum"``). The default here is
  ``reduction="mean"``: the sum divided by the number of contributing anchors (all ``b``
  anchors for (1)-(2), the anchors with a non-empty ``P(i)`` for (3)-(4)). It keeps the loss
  value comparable across batch sizes; with Adam the two differ by an almost constant factor
  per batch. ``reduction="none"`` returns the per-anchor losses (``0`` for anchors without
  positives).

Everything is vectorised: one ``b x b`` similarity matrix per pair of views and a
log-sum-exp along its rows; there is no Python loop over samples.
"""

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "cross_modal_contrastive_loss",
    "supervised_contrastive_loss",
    "cgni_contrastive_loss",
    "CGNIContrastiveLoss",
]

_DENOMINATORS = ("paper", "infonce")
_REDUCTIONS = ("mean", "sum", "none")


def _check_common(temperature, reduction, denominator=None):
    if not (
        isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
    if denominator is not None and denominator not in _DENOMINATORS:
        raise ValueError(f"denominator must be one of {_DENOMINATORS}; got {denominator!r}.")


def _check_embeddings(*zs):
    for z in zs:
        if z.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (batch, features); got shape {tuple(z.shape)}.")
    if len(zs) == 2 and zs[0].shape[0] != zs[1].shape[0]:
        raise ValueError(
            f"z_v and z_g must hold the same participants; got {zs[0].shape[0]} and "
            f"{zs[1].shape[0]} rows."
        )
    if zs[0].shape[0] < 2:
        raise ValueError(
            f"contrastive losses need a batch of at least 2 samples (b > 1 in the paper); "
            f"got {zs[0].shape[0]}."
        )


def _reduce(per_anchor, n_contributing, reduction):
    if reduction == "none":
        return per_anchor
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    # mean over the anchors that contribute; 0 (not NaN) when none does.
    return total / max(int(n_contributing), 1)


def _cross_modal_from_logits(logits, denominator):
    """Per-anchor loss of rows of ``logits`` (b x b) against the diagonal positive."""
    positive = torch.diagonal(logits)
    if denominator == "paper":
        eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(eye, float("-inf"))
    return torch.logsumexp(logits, dim=1) - positive


def cross_modal_contrastive_loss(
    z_a, z_b, *, temperature=0.1, denominator="paper", reduction="mean", normalize=True
):
    """Cross-modal contrastive loss L(a, b), equations (1) and (2).

    For every anchor ``z_a[i]`` the positive is ``z_b[i]`` (same participant); every
    ``z_b[j]``, ``j != i``, is a negative::

        L(a, b) = - sum_i log( exp(z_a^i . z_b^i / tau) / sum_{j in D(i)} exp(z_a^i . z_b^j / tau) )

    with ``D(i) = {j != i}`` for ``denominator="paper"`` and ``D(i) = {all j}`` for
    ``denominator="infonce"``. ``L(v, g)`` is ``cross_modal_contrastive_loss(z_v, z_g)`` and
    ``L(g, v)`` is ``cross_modal_contrastive_loss(z_g, z_v)``.

    Parameters
    ----------
    z_a, z_b : Tensor of shape (b, d)
        Anchor-view and other-view embeddings; row ``i`` of both is the same participant.
    temperature : float, default=0.1
        ``tau > 0``.
    denominator : {"paper", "infonce"}, default="paper"
        ``"paper"`` excludes the positive from the denominator, as printed in (1)-(2);
        ``"infonce"`` includes it (standard InfoNCE / CLIP, always ``>= 0``).
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"sum"`` is the paper's; ``"mean"`` divides by ``b``.
    normalize : bool, default=True
        L2-normalise the rows first (cosine similarity).

    Returns
    -------
    loss : Tensor
        Scalar, or shape ``(b,)`` for ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn.losses import cross_modal_contrastive_loss
    >>> z_v, z_g = torch.randn(8, 4), torch.randn(8, 4)
    >>> cross_modal_contrastive_loss(z_v, z_g, denominator="infonce").item() >= 0
    True
    """
    _check_common(temperature, reduction, denominator)
    _check_embeddings(z_a, z_b)
    if normalize:
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    logits = (z_a @ z_b.T) / temperature
    per_anchor = _cross_modal_from_logits(logits, denominator)
    return _reduce(per_anchor, z_a.shape[0], reduction)


def _supervised_from_logits(logits, labels):
    """Per-anchor SupCon loss and the number of anchors with a positive."""
    b = logits.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = positives.sum(dim=1)
    # masked_fill, not a product: 0 * -inf would be NaN were the diagonal ever touched
    summed = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    has_pos = n_pos > 0
    per_anchor = torch.where(has_pos, -summed / n_pos.clamp(min=1), torch.zeros_like(summed))
    return per_anchor, int(has_pos.sum())


def supervised_contrastive_loss(z, labels, *, temperature=0.1, reduction="mean", normalize=True):
    """Supervised within-modality contrastive loss L(v, v) or L(g, g), equations (3)-(4).

    SupCon form (Khosla et al. 2020, "L_out")::

        L = sum_i  -1/|P(i)| sum_{p in P(i)} log( exp(z^i . z^p / tau) / sum_{j != i} exp(z^i . z^j / tau) )

    with ``P(i) = {p != i : y_p = y_i}``. Anchors with an empty ``P(i)`` contribute 0 and are
    not counted by ``reduction="mean"``; a batch in which no anchor has a positive gives
    exactly 0.

    Parameters
    ----------
    z : Tensor of shape (b, d)
    labels : Tensor of shape (b,)
        Integer class labels (working-memory group).
    temperature : float, default=0.1
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"`` averages over anchors with at least one positive (this equals
        pytorch-metric-learning's ``SupConLoss`` with its default reducer); ``"sum"`` is the
        paper's.
    normalize : bool, default=True
        L2-normalise the rows first.

    Returns
    -------
    loss : Tensor

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn.losses import supervised_contrastive_loss
    >>> z = torch.randn(6, 3)
    >>> y = torch.tensor([0, 0, 0, 1, 1, 2])  # class 2 has no positive: anchor ignored
    >>> bool(torch.isfinite(supervised_contrastive_loss(z, y)))
    True
    """
    _check_common(temperature, reduction)
    _check_embeddings(z)
    labels = torch.as_tensor(labels, device=z.device)
    if labels.ndim != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must have shape ({z.shape[0]},) to match the embeddings; got {tuple(labels.shape)}."
        )
    if normalize:
        z = F.normalize(z, dim=1)
    logits = (z @ z.T) / temperature
    per_anchor, n_with_pos = _supervised_from_logits(logits, labels)
    return _reduce(per_anchor, n_with_pos, reduction)


def _check_weights(lambda_vg, sigma_gv, gamma_vv, theta_gg):
    weights = {"lambda_vg": lambda_vg, "sigma_gv": sigma_gv, "gamma_vv": gamma_vv, "theta_gg": theta_gg}
    for name, w in weights.items():
        if not (isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0):
            raise ValueError(f"loss weight {name} must be a finite number >= 0; got {w!r}.")
    if all(w == 0 for w in weights.values()):
        raise ValueError(
            "all four loss weights (lambda_vg, sigma_gv, gamma_vv, theta_gg) are 0: the "
            "contrastive loss would be identically 0 and the encoders would not learn. "
            "Set at least one weight > 0 (the paper's best: lambda_vg=0.7, sigma_gv=0.3, "
            "theta_gg=0.4)."
        )
    return weights


def cgni_contrastive_loss(
    z_v,
    z_g,
    labels=None,
    *,
    lambda_vg=0.7,
    sigma_gv=0.3,
    gamma_vv=0.0,
    theta_gg=0.4,
    temperature=0.1,
    denominator="paper",
    reduction="mean",
    normalize=True,
    return_terms=False,
):
    """Combined CGNI loss, equation (5).

    ``L = lambda_vg * L(v,g) + sigma_gv * L(g,v) + gamma_vv * L(v,v) + theta_gg * L(g,g)``

    The defaults are the paper's best weights (lambda=0.7, sigma=0.3, gamma=0, theta=0.4).
    Terms with weight 0 are not computed. The two cross-modal terms share one similarity
    matrix (``L(g, v)`` uses its transpose).

    Parameters
    ----------
    z_v, z_g : Tensor of shape (b, d)
        Imaging and genetic embeddings of the same ``b`` participants.
    labels : Tensor of shape (b,) or None
        Needed when ``gamma_vv`` or ``theta_gg`` is > 0.
    lambda_vg, sigma_gv, gamma_vv, theta_gg : float >= 0
        Weights of (1)-(4). All zero raises ``ValueError``.
    temperature, denominator, reduction, normalize
        As in :func:`cross_modal_contrastive_loss` / :func:`supervised_contrastive_loss`.
    return_terms : bool, default=False
        Also return a dict with the unweighted terms that were computed.

    Returns
    -------
    loss : Tensor
    terms : dict, only if ``return_terms``

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn.losses import cgni_contrastive_loss
    >>> z_v, z_g = torch.randn(10, 5), torch.randn(10, 5)
    >>> y = torch.tensor([0, 1] * 5)
    >>> loss, terms = cgni_contrastive_loss(z_v, z_g, y, return_terms=True)
    >>> sorted(terms)
    ['L_gg', 'L_gv', 'L_vg']
    """
    _check_weights(lambda_vg, sigma_gv, gamma_vv, theta_gg)
    _check_common(temperature, reduction, denominator)
    _check_embeddings(z_v, z_g)
    if (gamma_vv > 0 or theta_gg > 0) and labels is None:
        raise ValueError("labels are required when gamma_vv or theta_gg is > 0 (supervised terms).")
    if normalize:
        z_v, z_g = F.normalize(z_v, dim=1), F.normalize(z_g, dim=1)
    b = z_v.shape[0]
    terms = {}
    if lambda_vg > 0 or sigma_gv > 0:
        logits = (z_v @ z_g.T) / temperature
        if lambda_vg > 0:
            terms["L_vg"] = _reduce(_cross_modal_from_logits(logits, denominator), b, reduction)
        if sigma_gv > 0:
            terms["L_gv"] = _reduce(_cross_modal_from_logits(logits.T, denominator), b, reduction)
    if gamma_vv > 0 or theta_gg > 0:
        labels = torch.as_tensor(labels, device=z_v.device)
        if labels.ndim != 1 or labels.shape[0] != b:
            raise ValueError(f"labels must have shape ({b},); got {tuple(labels.shape)}.")
        if gamma_vv > 0:
            terms["L_vv"] = _reduce(*_supervised_from_logits((z_v @ z_v.T) / temperature, labels), reduction)
        if theta_gg > 0:
            terms["L_gg"] = _reduce(*_supervised_from_logits((z_g @ z_g.T) / temperature, labels), reduction)
    weights = {"L_vg": lambda_vg, "L_gv": sigma_gv, "L_vv": gamma_vv, "L_gg": theta_gg}
    loss = sum(weights[k] * v for k, v in terms.items())
    if return_terms:
        return loss, terms
    return loss


class CGNIContrastiveLoss(nn.Module):
    """Module form of :func:`cgni_contrastive_loss` (usable as a skorch criterion).

    ``forward(z_v, z_g, labels)`` returns the weighted loss of equation (5). Parameters are
    validated at construction, so ``lambda_vg = sigma_gv = gamma_vv = theta_gg = 0`` fails
    before any training starts.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn.losses import CGNIContrastiveLoss
    >>> crit = CGNIContrastiveLoss(gamma_vv=0.5)
    >>> z = torch.randn(4, 3)
    >>> crit(z, z, torch.tensor([0, 0, 1, 1])).ndim
    0
    """

    def __init__(
        self,
        lambda_vg=0.7,
        sigma_gv=0.3,
        gamma_vv=0.0,
        theta_gg=0.4,
        temperature=0.1,
        denominator="paper",
        reduction="mean",
        normalize=True,
    ):
        super().__init__()
        _check_weights(lambda_vg, sigma_gv, gamma_vv, theta_gg)
        _check_common(temperature, reduction, denominator)
        self.kwargs = dict(
            lambda_vg=lambda_vg,
            sigma_gv=sigma_gv,
            gamma_vv=gamma_vv,
            theta_gg=theta_gg,
            temperature=temperature,
            denominator=denominator,
            reduction=reduction,
            normalize=normalize,
        )

    def forward(self, z_v, z_g, labels=None):
        return cgni_contrastive_loss(z_v, z_g, labels, **self.kwargs)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
