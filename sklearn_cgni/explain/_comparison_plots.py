"""Figures that show the report's comparisons at a glance.

* :func:`plot_forest`: scores with intervals, one row per model and one marker per split
  (Table 1 and the confound table as forest plots);
* :func:`plot_paired_scatter`: two methods' value per item (held-out r of the CNN and the
  IDP scorer per SNP), with the diagonal and marked items (causal SNPs);
* :func:`plot_association_heatmap`: signed -log10 p of score x measure associations, with
  the Bonferroni threshold on the colour bar and the cells that pass it starred.

The functions return matplotlib figures and never call ``show``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["plot_forest", "plot_paired_scatter", "plot_association_heatmap"]

#: colours per row kind (Table 1's ``kind`` column, the confound table's ``kind``)
KIND_COLORS = {"deep": "#1f5fa8", "classical": "#d9730d", "covariates": "#555555", "model": "#1f5fa8",
               "baseline": "#555555"}
_MARKERS = ("o", "s", "D", "^")


def plot_forest(table, *, label="model", series, kind="kind", reference=None, chance=None,
                xlabel="balanced accuracy (%)", figure=None):
    """A forest plot: one row per entry of ``table``, one marker with its interval per series.

    Parameters
    ----------
    table : DataFrame
        One row per model, in the order to plot (top to bottom).
    label : str, default="model"
        Column with the row labels.
    series : dict of str -> tuple of str
        Legend name -> ``(value column, low column, high column)``; a low/high column that is
        ``None`` or missing draws the point alone.
    kind : str or None, default="kind"
        Column whose value (``deep``, ``classical``, ``covariates``) colours the row label and
        markers; ``None`` for one colour.
    reference : tuple of (float, str), optional
        A vertical line at ``value`` with a legend ``text`` (e.g. a covariate-only score).
    chance : float, optional
        A dotted vertical line at the chance level (50 for balanced accuracy in %).
    xlabel : str
    figure : matplotlib Figure, optional

    Returns
    -------
    figure : matplotlib Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_cgni.explain import plot_forest
    >>> t = pd.DataFrame({"model": ["CNN", "logistic"], "kind": ["deep", "classical"], "ba": [80.0, 78.0],
    ...                   "lo": [72.0, 70.0], "hi": [88.0, 86.0]})
    >>> fig = plot_forest(t, series={"validation": ("ba", "lo", "hi")})
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['CNN', 'logistic']
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("table must be a non-empty DataFrame with one row per model.")
    if not series:
        raise ValueError("series must name at least one (value, low, high) triple of columns.")
    n = len(table)
    fig = figure if figure is not None else Figure(figsize=(8.0, 0.9 + 0.34 * n * max(1, len(series)) ** 0.5),
                                                   layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1].astype(float)
    offsets = (np.arange(len(series)) - (len(series) - 1) / 2) * (0.5 / max(len(series), 1))
    colors = [KIND_COLORS.get(str(k), "#1f5fa8") for k in table[kind]] if kind else ["#1f5fa8"] * n
    handles = []
    for (name, (value, low, high)), dy, marker in zip(series.items(), offsets, _MARKERS):
        v = pd.to_numeric(table[value], errors="coerce").to_numpy(float) if value in table else np.full(n, np.nan)
        lo = pd.to_numeric(table[low], errors="coerce").to_numpy(float) if low and low in table else v
        hi = pd.to_numeric(table[high], errors="coerce").to_numpy(float) if high and high in table else v
        for i in range(n):
            if not np.isfinite(v[i]):
                continue
            ax.plot([lo[i], hi[i]], [y[i] - dy] * 2, color=colors[i], lw=1.4, alpha=0.8)
            ax.plot(v[i], y[i] - dy, marker, color=colors[i], ms=5.5,
                    markerfacecolor=colors[i] if marker == "o" else "white")
        handles.append(Line2D([], [], marker=marker, color="#333", ls="-", lw=1,
                              markerfacecolor="#333" if marker == "o" else "white", label=name))
    if chance is not None:
        ax.axvline(chance, color="#999", ls=":", lw=1)
        handles.append(Line2D([], [], color="#999", ls=":", lw=1, label="chance"))
    if reference is not None:
        ax.axvline(reference[0], color="#555", ls="--", lw=1)
        handles.append(Line2D([], [], color="#555", ls="--", lw=1, label=reference[1]))
    ax.set_yticks(y, [str(s) for s in table[label]], fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), colors):
        tick.set_color(c)
    if kind:
        shown = [k for k in dict.fromkeys(map(str, table[kind])) if k in KIND_COLORS]
        handles += [Line2D([], [], color=KIND_COLORS[k], lw=6, label=k) for k in shown]
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#ddd", lw=0.6)
    ax.legend(handles=handles, frameon=False, fontsize=7, loc="lower left", bbox_to_anchor=(1.0, 0.0))
    return fig


def plot_paired_scatter(x, y, *, marked=None, labels=("x", "y"), marked_label="marked", title=None, figure=None):
    """Two methods' values per item as a scatter, with the diagonal ``y = x``.

    Parameters
    ----------
    x, y : array-like of shape (n_items,)
        The two methods' values for the same items (e.g. held-out r of the CNN and of the IDP
        scorer, one point per SNP).
    marked : array-like of bool of shape (n_items,), optional
        Items to draw as filled red markers (e.g. the causal SNPs of a simulated cohort).
    labels : tuple of (str, str)
        Axis labels.
    marked_label : str
    title : str, optional
    figure : matplotlib Figure, optional

    Returns
    -------
    figure : matplotlib Figure
        Points above the diagonal: the y method is higher.

    Examples
    --------
    >>> from sklearn_cgni.explain import plot_paired_scatter
    >>> fig = plot_paired_scatter([0.1, 0.2, 0.0], [0.3, 0.1, 0.05], marked=[True, False, False],
    ...                           labels=("CNN r", "IDP r"))
    >>> fig.axes[0].get_xlabel()
    'CNN r'
    """
    from matplotlib.figure import Figure

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or not x.size:
        raise ValueError(f"x and y must be non-empty 1-D arrays of one length; got shapes {x.shape} and {y.shape}.")
    marked = np.zeros(x.shape, bool) if marked is None else np.asarray(marked, dtype=bool)
    fig = figure if figure is not None else Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.subplots()
    ok = np.isfinite(x) & np.isfinite(y)
    lo = min(0.0, np.min(x[ok], initial=0), np.min(y[ok], initial=0)) - 0.03
    hi = max(np.max(x[ok], initial=0.1), np.max(y[ok], initial=0.1)) + 0.03
    ax.plot([lo, hi], [lo, hi], color="#999", lw=1, ls="--", label="y = x")
    ax.axhline(0, color="#ccc", lw=0.6)
    ax.axvline(0, color="#ccc", lw=0.6)
    ax.scatter(x[ok & ~marked], y[ok & ~marked], s=16, color="#1f5fa8", alpha=0.6, label="other")
    if (ok & marked).any():
        ax.scatter(x[ok & marked], y[ok & marked], s=34, color="#c0392b", edgecolor="k", lw=0.5,
                   label=marked_label, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    return fig


def plot_association_heatmap(table, *, row="score", column="measure", p="p", sign="beta", threshold=None,
                             significant=None, figure=None):
    """Associations as a heat map of signed -log10 p (sign of the effect, red positive, blue negative).

    Parameters
    ----------
    table : DataFrame
        One row per association, with the ``row``, ``column``, ``p`` and ``sign`` columns
        (e.g. :func:`~sklearn_cgni.explain.association_table`; prefix ``row`` labels with a
        model name to show several models).
    row, column, p, sign : str
    threshold : float, optional
        The Bonferroni p threshold (alpha / number of tests): drawn on the colour bar at
        ``±-log10(threshold)``.
    significant : str, optional
        A boolean column: its cells are starred.
    figure : matplotlib Figure, optional

    Returns
    -------
    figure : matplotlib Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_cgni.explain import plot_association_heatmap
    >>> t = pd.DataFrame({"score": ["rs1", "rs1", "rs2", "rs2"], "measure": ["a", "b", "a", "b"],
    ...                   "p": [1e-6, 0.5, 0.02, 0.9], "beta": [0.3, -0.1, -0.2, 0.01]})
    >>> fig = plot_association_heatmap(t, threshold=0.05 / 4)
    >>> fig.axes[0].get_images()[0].get_array().shape
    (2, 2)
    """
    from matplotlib.figure import Figure

    need = {row, column, p, sign} - set(getattr(table, "columns", []))
    if need:
        raise ValueError(f"table lacks the column(s) {sorted(need)}.")
    t = table.assign(_v=np.sign(table[sign].astype(float)) * -np.log10(table[p].astype(float).clip(lower=1e-300)))
    wide = t.pivot_table(index=row, columns=column, values="_v", aggfunc="first", sort=False)
    v = wide.to_numpy(float)
    finite = v[np.isfinite(v)]
    vmax = max(np.max(np.abs(finite), initial=1.0), -np.log10(threshold) if threshold else 0) * 1.05
    nr, nc = v.shape
    fig = figure if figure is not None else Figure(figsize=(2.6 + 0.9 * nc, 1.2 + 0.26 * nr), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(v), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_xticks(np.arange(nc), [str(c) for c in wide.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(nr), [str(r) for r in wide.index], fontsize=7)
    bar = fig.colorbar(im, ax=ax, shrink=0.9)
    bar.set_label("sign(effect) × -log10 p", fontsize=8)
    if threshold:
        cut = -np.log10(threshold)
        for s in (cut, -cut):
            bar.ax.axhline(s, color="k", lw=1.2)
        bar.ax.text(1.05, cut, " Bonferroni", transform=bar.ax.get_yaxis_transform(), va="bottom", fontsize=7)
    if significant and significant in t:
        sig = t.pivot_table(index=row, columns=column, values=significant, aggfunc="first", sort=False)
        sig = sig.reindex(index=wide.index, columns=wide.columns)
        for i, j in zip(*np.nonzero(sig.fillna(False).to_numpy(bool))):
            ax.text(j, i, "*", ha="center", va="center", fontsize=10, color="k")
    return fig
