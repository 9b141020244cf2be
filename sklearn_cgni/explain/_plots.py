"""Figures of the post-analysis: the paper's Fig. 3 and companions.

* :func:`region_effect_map` / :func:`plot_region_effects`: significant atlas regions on a
  glass brain or stat map, red for increased and blue for decreased gray matter (Fig. 3).
* :func:`plot_snp_contributions`: standardised SNP contributions per component with the
  significance threshold.
* :func:`plot_canonical_correlations`: canonical correlation per component and split
  (Table 3 as a figure).

The functions return matplotlib figures (or nilearn displays) and never call ``show``;
matplotlib picks a non-interactive backend (Agg) on a machine without a display, and scripts
may force it with ``matplotlib.use("Agg")`` before plotting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "region_effect_map",
    "plot_region_effects",
    "plot_snp_contributions",
    "plot_canonical_correlations",
    "plot_training_curves",
]


def region_effect_map(significant_regions, atlas, *, component=None, value="sign"):
    """A NIfTI image holding each significant region's signed effect.

    Parameters
    ----------
    significant_regions : DataFrame
        ``OcclusionExplainer.significant_regions_`` (``component``, ``region``, ``sign``,
        ``zscore``, and ``label`` or a region name found in ``atlas.labels``).
    atlas : Bunch
        ``img`` and ``labels`` (e.g. ``OcclusionExplainer.atlas_``).
    component : int or None, default=None
        One component, or ``None`` for all (a region's value is then averaged over the
        components where it is significant, as in Fig. 3 "across five SCCA components").
    value : {"sign", "zscore"}, default="sign"
        ``"sign"``: +1 / -1; ``"zscore"``: ``sign * |zscore|``.

    Returns
    -------
    img : nibabel.Nifti1Image
        Float32 map on the atlas grid, 0 outside significant regions.
    """
    import nibabel as nib

    if value not in ("sign", "zscore"):
        raise ValueError(f"value must be 'sign' or 'zscore'; got {value!r}.")
    table = significant_regions
    if component is not None:
        if component not in set(table["component"]):
            raise ValueError(
                f"Component {component} has no significant region; components with regions: "
                f"{sorted(set(table['component']))}."
            )
        table = table[table["component"] == component]
    labels = atlas.labels
    name_to_label = dict(zip(labels["name"].astype(str), labels["index"].astype(int)))
    data = np.asarray(atlas.img.dataobj)
    out = np.zeros(data.shape, dtype=np.float32)
    if table.empty:
        return nib.Nifti1Image(out, atlas.img.affine)
    vals = table["sign"].astype(float)
    if value == "zscore":
        vals = vals * table["zscore"].abs()
    if "label" in table:
        keys = table["label"].astype(int)
    else:
        missing = sorted(set(table["region"]) - set(name_to_label))
        if missing:
            raise ValueError(f"Region(s) {missing} are not in the atlas label table.")
        keys = table["region"].map(name_to_label)
    per_label = pd.Series(vals.to_numpy(), index=keys.to_numpy()).groupby(level=0).mean()
    for label, v in per_label.items():
        out[data == label] = v
    return nib.Nifti1Image(out, atlas.img.affine)


def plot_region_effects(significant_regions, atlas, *, component=None, value="sign", kind="glass",
                        title=None, figure=None, **kwargs):
    """Significant regions coloured by the sign of their effect (the paper's Fig. 3).

    Parameters
    ----------
    significant_regions, atlas, component, value
        See :func:`region_effect_map`.
    kind : {"glass", "stat_map"}, default="glass"
        :func:`nilearn.plotting.plot_glass_brain` (``plot_abs=False``) or
        :func:`nilearn.plotting.plot_stat_map`.
    title : str, optional
    figure : matplotlib Figure, optional
    **kwargs
        Passed to the nilearn function.

    Returns
    -------
    display : nilearn display
        Its ``frame_axes.figure`` is the matplotlib figure (``display.savefig(path)``).
    """
    from nilearn import plotting

    img = region_effect_map(significant_regions, atlas, component=component, value=value)
    vmax = float(np.abs(np.asarray(img.dataobj)).max()) or 1.0
    if title is None:
        title = "Significant regions" + (f", component {component}" if component is not None else "")
    common = dict(colorbar=True, cmap="bwr", vmin=-vmax, vmax=vmax, title=title, figure=figure)
    common.update(kwargs)
    if kind == "glass":
        return plotting.plot_glass_brain(img, plot_abs=False, **common)
    if kind == "stat_map":
        common.pop("vmin", None)  # plot_stat_map is symmetric around 0 by itself
        return plotting.plot_stat_map(img, **common)
    raise ValueError(f"kind must be 'glass' or 'stat_map'; got {kind!r}.")


def plot_snp_contributions(contributions, *, threshold=3.0, standardize=True, label_top=5, figure=None,
                           standardise="deprecated"):
    """SNP contributions per component (one panel each) with the significance threshold.

    Parameters
    ----------
    contributions : DataFrame of shape (n_snps, n_components)
        ``OcclusionExplainer.snp_contributions_``.
    threshold : float, default=3.0
        Drawn at ``mean +- threshold * sd`` (the explainer's ``snp_threshold``).
    standardize : bool, default=True
        Plot z-scores ((c - mean) / sd per component) rather than raw contributions.
    label_top : int, default=5
        Name the SNPs with the largest |z| beyond the threshold in each panel.
    figure : matplotlib Figure, optional
    standardise : bool
        Deprecated spelling of ``standardize`` (a FutureWarning); it will be removed.

    Returns
    -------
    figure : matplotlib Figure
    """
    from matplotlib.figure import Figure

    if standardise != "deprecated":
        import warnings

        warnings.warn("plot_snp_contributions: 'standardise' is deprecated and will be removed; use "
                      "'standardize'.", FutureWarning, stacklevel=2)
        standardize = standardise
    if not isinstance(contributions, pd.DataFrame) or contributions.empty:
        raise ValueError("contributions must be a non-empty DataFrame (SNPs x components).")
    values = contributions.to_numpy(dtype=float)
    mean, sd = values.mean(axis=0), values.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (values - mean) / sd
    k = values.shape[1]
    fig = figure if figure is not None else Figure(figsize=(8, 1.8 * k + 0.6))
    axes = fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(values.shape[0])
    for j, ax in enumerate(axes):
        y = z[:, j] if standardize else values[:, j]
        hi = threshold if standardize else mean[j] + threshold * sd[j]
        lo = -threshold if standardize else mean[j] - threshold * sd[j]
        sig = (y > hi) | (y < lo)
        ax.scatter(x[~sig], y[~sig], s=4, color="0.6")
        ax.scatter(x[sig], y[sig], s=10, color="tab:red")
        ax.axhline(hi, color="k", lw=0.6, ls="--")
        ax.axhline(lo, color="k", lw=0.6, ls="--")
        for i in np.flatnonzero(sig)[np.argsort(-np.abs(y[sig]))][:label_top]:
            ax.annotate(str(contributions.index[i]), (x[i], y[i]), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
        ax.set_ylabel(f"comp. {contributions.columns[j]}" + ("\n(z)" if standardize else ""))
    axes[-1].set_xlabel("SNP")
    fig.suptitle("SNP contributions (eq. 6)")
    return fig


def plot_canonical_correlations(table, *, figure=None):
    """Canonical correlation per component and split as grouped bars.

    Parameters
    ----------
    table : DataFrame
        ``SparseCCA.correlation_table(...)``: index component, one column per split (a
        ``p_value`` column is left out).
    figure : matplotlib Figure, optional

    Returns
    -------
    figure : matplotlib Figure
    """
    from matplotlib.figure import Figure

    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("table must be a non-empty DataFrame (components x splits).")
    splits = [c for c in table.columns if c != "p_value"]
    if not splits:
        raise ValueError("table has no split column (only p_value).")
    fig = figure if figure is not None else Figure(figsize=(1.2 + 0.9 * len(table), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(splits)
    x = np.arange(len(table))
    for i, split in enumerate(splits):
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, table[split].to_numpy(float), width, label=str(split))
    ax.set_xticks(x, [str(c) for c in table.index])
    ax.set_xlabel("component")
    ax.set_ylabel("canonical correlation")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(frameon=False, fontsize=8)
    return fig


_METRIC_LABELS = {"valid_mae": "validation MAE (years)", "valid_bacc": "validation balanced accuracy",
                  "valid_loss": "validation loss"}


def plot_training_curves(histories, *, best_epochs=None, figure=None):
    """Loss and validation metric per epoch of one or more trained networks, side by side.

    Parameters
    ----------
    histories : dict of str -> list of dict
        Per network (the panel title), its ``history_`` as the stage-1 estimators record it
        (:class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer`,
        :class:`~sklearn_cgni.imaging.ImagingCNNClassifier`): one dict per epoch with
        ``epoch``, ``train_loss`` and, when a validation split was held out, ``valid_loss``
        and the early-stopping metric (``valid_mae`` or ``valid_bacc``).
    best_epochs : dict of str -> int, optional
        The epoch kept for each network (e.g. ``best_epoch_``); default: the best epoch of
        the validation metric shown.
    figure : matplotlib Figure, optional

    Returns
    -------
    figure : matplotlib Figure
        One panel per network: training and validation loss (left axis), the validation
        metric (right axis), and a dotted vertical line at the epoch kept.

    Examples
    --------
    >>> from sklearn_cgni.explain import plot_training_curves
    >>> hist = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e + 0.01 * e,
    ...          "valid_bacc": 0.5 + 0.04 * e - 0.003 * e * e} for e in range(1, 11)]
    >>> fig = plot_training_curves({"WM CNN fold 0": hist})
    >>> len(fig.axes)
    2
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not isinstance(histories, dict) or not histories:
        raise ValueError("histories must be a non-empty dict of name -> list of per-epoch dicts.")
    n = len(histories)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = figure if figure is not None else Figure(figsize=(3.4 * cols, 2.7 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, hist) in zip(axes, histories.items()):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if not hist:
            ax.text(0.5, 0.5, "not trained", ha="center", va="center", transform=ax.transAxes)
            continue
        epochs = [h["epoch"] for h in hist]
        for key, style in (("train_loss", "-"), ("valid_loss", "--")):
            if key in hist[0]:
                ax.plot(epochs, [h[key] for h in hist], style, color="C0", label=key.replace("_", " "))
        ax.set_ylabel("loss", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        metric = next((k for k in ("valid_mae", "valid_bacc") if k in hist[0]), None)
        if metric is not None:
            twin = ax.twinx()
            values = np.array([h[metric] for h in hist])
            twin.plot(epochs, values, color="C1", label=_METRIC_LABELS[metric])
            twin.set_ylabel(_METRIC_LABELS[metric], fontsize=8, color="C1")
            best = epochs[int(np.argmin(values) if metric == "valid_mae" else np.argmax(values))]
        if best_epochs and name in best_epochs:
            best = best_epochs[name]
        if metric is not None or (best_epochs and name in best_epochs):
            ax.axvline(best, color="k", ls=":", lw=1)
        ax.legend(frameon=False, fontsize=7, loc="upper right")
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig
