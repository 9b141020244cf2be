"""The report's summary figures, drawn from its tables (no stage recomputes anything for them).

:func:`summary_figures` writes, into ``figures/``, those its tables allow:

* ``table1_forest.png``: Table 1 as a forest plot (validation and holdout balanced accuracy
  with 95 % bootstrap intervals), coloured by kind;
* ``scores_cnn_vs_idp.png``: held-out r per SNP, CNN against IDP, causal SNPs marked when
  the cohort's ground truth is known;
* ``confounds_forest.png``: the confound table (raw, adjusted, matched per model, ± sd over
  folds) with the covariate-only score as a line;
* ``associations_heatmap.png``: score x measure associations as signed -log10 p, with the
  Bonferroni threshold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("sklearn_cgni.cli")

__all__ = ["summary_figures", "FIGURES"]

#: name -> (title, caption) of each summary figure
FIGURES = {
    "table1_forest": ("Table 1 at a glance", "Balanced accuracy (%) per row: validation = the pooled out-of-fold "
                      "predictions, holdout = the mean of the fold models on the common holdout; bars are 95 % "
                      "bootstrap intervals over participants. Row labels coloured by kind."),
    "scores_cnn_vs_idp": ("Brain-genotype scores: CNN against IDP", "Held-out r of each SNP's score with its "
                          "genotype, CNN (x) against the IDP baseline (y); above the diagonal the IDP baseline "
                          "tracks the genotype better."),
    "confounds_forest": ("Confounds at a glance", "Balanced accuracy (%) on the training part's folds, mean "
                         "± sd over the folds: the model as it is (raw), with the covariates regressed out of its "
                         "input (adjusted) and on age- and sex-matched participants (matched); the dashed line is "
                         "the covariate-only model."),
    "associations_heatmap": ("Associations with cognition", "sign(beta) × -log10 p per score (rows, model and SNP) "
                             "and measure (columns); black lines on the colour bar mark the Bonferroni threshold, "
                             "* the associations that pass it."),
}


def ground_truth_causal(out, meta):
    """The causal SNPs of the run's ``ground_truth.json`` (simulated cohorts), or ``None``."""
    path = (meta.get("inputs") or {}).get("ground_truth")
    candidates = [Path(path)] if path else []
    candidates.append(Path(out) / "cohort" / "ground_truth.json")
    for p in candidates:
        if p.exists():
            return set(map(str, json.loads(p.read_text()).get("causal_snps", [])))
    return None


def _table1(tables):
    t1 = tables.get("table1")
    if t1 is None or "validation_ba" not in t1:
        return None
    from ..explain import plot_forest

    return plot_forest(t1, series={"validation": ("validation_ba", "validation_ci_low", "validation_ci_high"),
                                   "holdout": ("holdout_ba", "holdout_ci_low", "holdout_ci_high")}, chance=50)


def _scores(tables, causal):
    acc = tables.get("score_accuracy")
    if acc is None or not len(acc):
        return None
    wide = acc.pivot_table(index="snp", columns="model", values="r_held_out")
    if not {"CNN", "IDP"} <= set(wide.columns):
        return None
    from ..explain import plot_paired_scatter

    marked = wide.index.astype(str).isin(causal) if causal else None
    return plot_paired_scatter(wide["CNN"], wide["IDP"], marked=marked, marked_label="causal SNP (ground truth)",
                               labels=("CNN: held-out r with the genotype", "IDP: held-out r with the genotype"))


def _confounds(tables):
    cf = tables.get("confounds")
    if cf is None or "raw_mean" not in cf:
        return None
    from ..explain import plot_forest

    t = cf.copy()
    series = {}
    for ev in ("raw", "adjusted", "matched"):
        if f"{ev}_mean" not in t:
            continue
        m = 100 * t[f"{ev}_mean"].astype(float)
        sd = 100 * t[f"{ev}_sd"].astype(float).fillna(0) if f"{ev}_sd" in t else 0
        t[f"{ev}_v"], t[f"{ev}_lo"], t[f"{ev}_hi"] = m, (m - sd).clip(0, 100), (m + sd).clip(0, 100)
        series[ev] = (f"{ev}_v", f"{ev}_lo", f"{ev}_hi")
    models = t[t["kind"] == "model"] if "kind" in t else t
    reference = None
    if "baseline_raw_mean" in t and len(models) and np.isfinite(models["baseline_raw_mean"].astype(float)).any():
        name = models["baseline"].iloc[0] if "baseline" in models else "covariates"
        reference = (100 * float(models["baseline_raw_mean"].astype(float).iloc[0]), f"{name} (raw)")
    shown = models.assign(kind="deep")
    shown.loc[shown["model"].str.startswith("classical"), "kind"] = "classical"
    return plot_forest(shown, series=series, reference=reference, chance=50,
                       xlabel="balanced accuracy (%), mean ± sd over folds")


def _associations(tables):
    a = tables.get("associations")
    if a is None or not len(a):
        return None
    from ..explain import plot_association_heatmap

    p = "p_perm" if "p_perm" in a and a["p_perm"].notna().any() else "p"
    sig = "significant_perm_bonferroni" if p == "p_perm" else "significant_bonferroni"
    t = a.assign(row=(a["model"].astype(str) + " " if "model" in a else "") + a["score"].astype(str))
    n_tests = int(t.groupby("model")[p].count().max()) if "model" in t else int(t[p].count())
    if not n_tests:
        return None
    return plot_association_heatmap(t, row="row", p=p, threshold=0.05 / n_tests,
                                    significant=sig if sig in t else None)


def summary_figures(out, tables, meta):
    """Draw the summary figures the tables allow into ``<out>/figures``; return their records for the report.

    Returns
    -------
    figures : list of dict
        ``file`` (relative to ``out``), ``title``, ``caption``, ``name``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .stages._common import _savefig

    fdir = Path(out) / "figures"
    fdir.mkdir(exist_ok=True)
    causal = ground_truth_causal(out, meta)
    makers = {"table1_forest": lambda: _table1(tables), "scores_cnn_vs_idp": lambda: _scores(tables, causal),
              "confounds_forest": lambda: _confounds(tables), "associations_heatmap": lambda: _associations(tables)}
    done = []
    for name, make in makers.items():
        try:
            fig = make()
        except (ValueError, KeyError) as exc:  # a table of an unexpected shape costs its figure, not the report
            log.warning("figure %s not drawn: %s", name, exc)
            continue
        if fig is None:
            continue
        _savefig(fig, fdir / f"{name}.png")
        title, caption = FIGURES[name]
        if name == "scores_cnn_vs_idp" and causal:
            caption += " Red: the causal SNPs of the simulated cohort's ground truth."
        done.append({"file": f"figures/{name}.png", "title": title, "caption": caption, "name": name})
    return done
