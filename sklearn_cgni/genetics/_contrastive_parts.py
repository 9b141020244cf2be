"""Stage 2's training parts: the matching score, the class-stratified batch sampler, the skorch net.

Private module of :mod:`sklearn_cgni.genetics._contrastive` (which re-exports these names, so
files saved before the split still load).
"""

import math

import numpy as np
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.utils import to_tensor

from ..utils._skorch import InterruptibleNetMixin, SkorchNet, _silent  # noqa: F401 (saved nets name _silent here)


def matching_score(z_v, z_g):
    """How well each participant's two embeddings find each other: a label-free cross-modal score.

    For every participant ``i`` and every other participant ``j``, the pair counts as matched
    when ``cos(z_v[i], z_g[i]) > cos(z_v[i], z_g[j])`` (image -> gene) and, separately, when
    ``cos(z_g[i], z_v[i]) > cos(z_g[i], z_v[j])`` (gene -> image); ties count 1/2. The score
    is the fraction matched over both directions: an AUC of the true pair against every
    impostor. 0.5 is chance whatever the number of participants (unlike top-1 retrieval, whose
    chance level is ``1/n``), 1.0 means every participant's image embedding is closer to its
    own SNP embedding than to anyone else's. It is what the cross-modal terms of the loss
    ask for, measured on participants the encoders did not train on, and it needs no labels.

    Parameters
    ----------
    z_v, z_g : array-like of shape (n_samples, n_components)
        Matched embeddings (row ``i`` of both is participant ``i``), at least 2 rows.

    Returns
    -------
    score : float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.genetics import matching_score
    >>> z = np.eye(4)
    >>> matching_score(z, z), round(matching_score(z, z[::-1]), 3)
    (1.0, 0.333)
    """
    z_v = np.asarray(z_v, dtype=np.float64)
    z_g = np.asarray(z_g, dtype=np.float64)
    if z_v.shape != z_g.shape or z_v.ndim != 2 or len(z_v) < 2:
        raise ValueError(f"matching_score needs two matched (n, k) arrays with n >= 2; got shapes "
                         f"{z_v.shape} and {z_g.shape}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        z_v = z_v / np.linalg.norm(z_v, axis=1, keepdims=True)
        z_g = z_g / np.linalg.norm(z_g, axis=1, keepdims=True)
    sim = np.nan_to_num(z_v @ z_g.T)  # sim[i, j] = cos(z_v[i], z_g[j])
    own = np.diag(sim)
    off = ~np.eye(len(sim), dtype=bool)
    v2g = ((own[:, None] > sim) + 0.5 * (own[:, None] == sim))[off].mean()
    g2v = ((own[None, :] > sim) + 0.5 * (own[None, :] == sim))[off].mean()
    return float((v2g + g2v) / 2)


class StratifiedBatchSampler:
    """Batch sampler whose every batch holds every class (both WM groups).

    Each epoch the ``n`` samples are dealt into ``ceil(n / batch_size)`` batches: each
    class is shuffled and spread evenly over the batches (starting at a random batch), so
    batch sizes differ by at most the number of classes and every batch holds at least
    ``min_per_class`` samples of each class. Usable as ``DataLoader(batch_sampler=...)``.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    batch_size : int
    min_per_class : int, default=1
        The paper's constraint is ``|{y=0}| > 0`` and ``|{y=1}| > 0`` per batch (1). Use 2 so
        that every anchor of the supervised terms has a positive.
    random_state : int, RandomState instance or None
        Its stream advances every epoch, so batches differ between epochs.

    Raises
    ------
    ValueError
        If a class has fewer than ``min_per_class * n_batches`` samples: the batch size is
        too small for that class (fewer batches, i.e. a larger ``batch_size``, fixes it).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.genetics import StratifiedBatchSampler
    >>> y = np.array([0] * 90 + [1] * 10)
    >>> batches = list(StratifiedBatchSampler(y, batch_size=25, random_state=0))
    >>> len(batches), all(set(y[b]) == {0, 1} for b in batches)
    (4, True)
    """

    def __init__(self, labels, batch_size, min_per_class=1, random_state=None):
        labels = np.asarray(labels)
        self.batch_size = int(batch_size)
        self.n_samples = labels.shape[0]
        self.n_batches = max(1, math.ceil(self.n_samples / self.batch_size))
        classes, inverse = np.unique(labels, return_inverse=True)
        self._members = [np.flatnonzero(inverse == k) for k in range(classes.size)]
        for cls, members in zip(classes, self._members):
            cls = cls.item() if hasattr(cls, "item") else cls
            if members.size < min_per_class * self.n_batches:
                largest_ok = members.size // min_per_class
                raise ValueError(
                    f"class {cls!r} has {members.size} sample(s), too few to put "
                    f"{min_per_class} in each of the {self.n_batches} batches of "
                    f"batch_size={self.batch_size} over {self.n_samples} samples. Use "
                    f"batch_size >= {math.ceil(self.n_samples / max(largest_ok, 1))} or more "
                    f"samples of class {cls!r}."
                )
        self._rng = check_random_state(random_state)

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        rng, nb = self._rng, self.n_batches
        batch_of, index = [], []
        for members in self._members:
            n_c = members.size
            batch_of.append((np.arange(n_c) * nb // n_c + rng.randint(nb)) % nb)
            index.append(rng.permutation(members))
        batch_of, index = np.concatenate(batch_of), np.concatenate(index)
        # shuffle within batches, then group by batch, then shuffle the batch order
        perm = rng.permutation(index.size)
        batch_of, index = batch_of[perm], index[perm]
        order = np.argsort(batch_of, kind="stable")
        bounds = np.cumsum(np.bincount(batch_of, minlength=nb))[:-1]
        batches = np.split(index[order], bounds)
        for k in rng.permutation(nb):
            yield batches[k].tolist()


class _ContrastiveLoss(InterruptibleNetMixin, NeuralNet):
    """NeuralNet whose module returns ``(z_v, z_g)`` and whose criterion takes the labels."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        z_v, z_g = y_pred
        return self.criterion_(z_v, z_g, to_tensor(y_true, device=self.device))


class _ContrastiveNet(SkorchNet, _ContrastiveLoss):
    """The contrastive loss, plus the module's ``penalty()`` in training (:class:`SkorchNet`):
    ``genetic_l1`` on the SNP weights."""


class _ValidMatching(Callback):
    """skorch callback: :func:`matching_score` of the held-out samples after each epoch (``valid_matching``)."""

    def __init__(self, h_v, x_g):
        self.h_v, self.x_g = h_v, x_g

    def on_epoch_end(self, net, **kwargs):
        import torch

        module = net.module_
        was_training = module.training
        module.eval()
        with torch.no_grad():
            z_v = module.embed_image(torch.as_tensor(self.h_v, device=net.device)).cpu().numpy()
            z_g = module.genetic_encoder(torch.as_tensor(self.x_g, device=net.device)).cpu().numpy()
        module.train(was_training)
        net.history.record("valid_matching", matching_score(z_v, z_g))


def _check_finite(X, owner, feature_names, index):
    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        col_names = (
            [str(feature_names[c]) for c in np.unique(cols)]
            if feature_names is not None
            else [f"column {c}" for c in np.unique(cols)]
        )
        row_names = [str(index[r]) if index is not None else f"row {r}" for r in np.unique(rows)]
        raise ValueError(
            f"{owner}: X contains NaN or inf in {len(col_names)} column(s) {col_names[:10]} "
            f"for {len(row_names)} participant(s) {row_names[:10]}. Missing genotype calls "
            "are not imputed here: impute them first (sklearn_cgni.genetics.SNPQualityFilter "
            "imputes, or sklearn.impute.SimpleImputer in the pipeline)."
        )
