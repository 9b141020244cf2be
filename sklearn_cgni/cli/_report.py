"""The output folder of ``sklearn-cgni run``: results.json, tables (CSV and markdown), figures, report.html.

:func:`write_outputs` reads what the stages left in ``<output>/stages`` and ``run.json`` and
writes:

* ``results.json``: every table as a list of records, plus the run's metadata;
* ``tables/<name>.csv`` and ``tables/<name>.md``;
* ``figures/<name>.png``;
* ``report.html``: one self-contained page (figures embedded as base64 PNG).

``sklearn-cgni report OUTPUT`` calls it again without recomputing anything.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ._protocol import (
    CLASSICAL_MODELS,
    HV_LOGISTIC,
    HV_PGS_LOGISTIC,
    HV_PGS_STACKED,
    PAPER_TABLE1,
    PAPER_TABLE2,
    PGS_LOGISTIC,
    SPLITS,
    TABLE1_CGNI,
    summarize_scores,
    table_markdown,
)
from ._comparisons import held_out_predictions, table1_uncertainty, verdict
from ._report_figures import ground_truth_causal, summary_figures
from ._stages import _clean, write_json

__all__ = ["write_outputs", "SECTIONS", "markdown_table"]

SECTIONS = [
    ("cohort", "Cohort and quality control"),
    ("brain_age", "Stage 1: brain-age CNN and training of the CNNs"),
    ("table1", "Table 1: working-memory classification"),
    ("table2", "Table 2: loss-term combinations"),
    ("table3", "Table 3: sparse CCA"),
    ("table4", "Table 4: genes per component"),
    ("table5", "Table 5: regions per component"),
    ("fig3", "Fig. 3: regions and SNPs"),
    ("enrichment", "Gene-set enrichment"),
    ("scores", "Brain-genotype scores"),
    ("confounds", "Confounds: how much is age and sex?"),
    ("recovery", "Ground-truth recovery (simulated cohort)"),
    ("metadata", "Run metadata"),
]


def _fmt_cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v).replace("|", "/").replace("\n", " ")


def markdown_table(df, index=False):
    """A GitHub markdown table (no extra dependency)."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _read(path, **kw):
    path = Path(path)
    return pd.read_csv(path, **kw) if path.exists() else None


def _done(out, stage):
    p = Path(out) / "stages" / stage / "_done.json"
    return json.loads(p.read_text())["result"] if p.exists() else None


def _row_kind(model):
    """``"covariates"`` (covariate-only baselines), ``"classical"`` (:data:`CLASSICAL_MODELS`), ``"pgs"`` (the
    polygenic scores alone or beside h_v into the logistic regression) or ``"deep"``."""
    if model.startswith("covariates: "):
        return "covariates"
    if model in (PGS_LOGISTIC, HV_PGS_LOGISTIC, HV_PGS_STACKED):
        return "pgs"
    return "classical" if model in CLASSICAL_MODELS else "deep"


def collect(out):
    """Tables (DataFrames), notes and figures from the stage folders."""
    out = Path(out)
    st = out / "stages"
    tables, notes, figures = {}, {}, []
    records, searched = [], []
    for d in sorted(st.glob("finetune_f*")) + sorted(st.glob("models_f*")):
        r = _done(out, d.name)
        if r:
            records += r["records"]
            searched += r.get("search", [])
    if searched:
        tables["search"] = pd.DataFrame([{**{k: v for k, v in r.items() if k != "best_params"},
                                          "best_params": json.dumps(r["best_params"])} for r in searched])
    if records:
        per_fold = pd.DataFrame(records)
        tables["per_fold_scores"] = per_fold
        summary = summarize_scores(records)
        for table, key in (("Table 1", "table1"), ("Table 2", "table2")):
            s = summary[summary.table == table]
            if len(s):
                wide = s.pivot_table(index="model", columns="split", values=["mean", "std"], sort=False)
                rows = []
                for model in dict.fromkeys(s["model"]):
                    row = {"model": model, "kind": _row_kind(model)}
                    for split in SPLITS:
                        row[f"{split}_mean"] = wide.loc[model, ("mean", split)] if ("mean", split) in wide else None
                        row[f"{split}_sd"] = wide.loc[model, ("std", split)] if ("std", split) in wide else None
                    paper = (PAPER_TABLE1 if key == "table1" else PAPER_TABLE2).get(model)
                    for split, ref in zip(SPLITS, paper or (None,) * 3):
                        row[f"paper_{split}"] = ref
                    rows.append(row)
                tables[key] = pd.DataFrame(rows)
                notes[key + "_md"] = table_markdown(summary, table, label="model" if key == "table1" else "terms")
        if "table1" in tables:
            preds = held_out_predictions(out)
            if preds is not None and len(preds):
                t1 = tables["table1"]
                intervals, comparisons = table1_uncertainty(preds, dict(zip(t1["model"], t1["kind"])))
                tables["table1"] = t1.merge(intervals, on="model", how="left")
                tables["table1_comparisons"] = comparisons
                notes["table1_md"] += "\n\n" + "\n".join(
                    ["| model | validation, pooled [95 % CI] | holdout [95 % CI] |", "|---|---|---|"]
                    + [f"| {r['model']} | {_ci(r, 'validation')} | {_ci(r, 'holdout')} |"
                       for r in tables["table1"].to_dict("records")])
    ba = _done(out, "brain_age")
    if ba:
        ba = {**ba, **(_done(out, "brain_age_classical") or {})}
        tables["brain_age"] = pd.DataFrame([{k: ba[k] for k in ("mae_holdout", "mae_ci_low", "mae_ci_high",
                                                                 "mae_of_mean_predictor", "mae_gain_pvalue",
                                                                 "ridge_mae_holdout", "mae_gain_over_ridge_pvalue",
                                                                 "n_fit", "n_test", "h_v_width") if k in ba}])
    t3 = _read(st / "scca" / "table3.csv")
    if t3 is not None:
        tables["table3"] = t3
    for name, file in (("table4", "genes/table4.csv"), ("table5", "genes/table5.csv"),
                       ("enrichment", "genes/enrichment.csv"),
                       ("significant_regions", "occlusion/significant_regions.csv"),
                       ("significant_snps", "occlusion/significant_snps.csv"),
                       ("score_accuracy", "scores/score_accuracy.csv"),
                       ("associations", "scores/associations.csv"),
                       ("saliency_top_regions", "scores/saliency_top_regions.csv"),
                       ("stage1_training", "training_curves/training.csv"),
                       ("confounds", "confounds/confounds.csv"),
                       ("confound_scores", "confounds/confound_scores.csv"),
                       ("confound_predictions", "confounds/confound_predictions.csv"),
                       ("image_qc", "data/image_qc.csv"),
                       ("pgs_scores", "pgs/pgs_scores.csv"),
                       ("pgs_coverage", "pgs/pgs_coverage.csv"),
                       ("snp_qc", "data/snp_qc.csv"),
                       ("matching_balance", "confounds/matching_balance.csv")):
        df = _read(st / file)
        if df is not None:
            tables[name] = df
    rec = _done(out, "recovery")
    if rec:
        rows = []
        for what in ("causal_snps", "affected_regions", "image_qc", "snp_qc"):
            if what in rec:
                rows.append({"what": what, **{k: v for k, v in rec[what].items()}})
        tables["recovery"] = pd.DataFrame(rows)
        if rec.get("brain_genotype_scores"):
            tables["recovery_scores"] = pd.DataFrame(rec["brain_genotype_scores"])
    for stage in ("training_curves", "scca", "occlusion"):
        r = _done(out, stage)
        if r:
            figures += [dict(f, file=os.fspath(Path("stages") / f["file"])) for f in r.get("figures", [])]
    return tables, notes, figures


def write_outputs(out):
    """Write results.json, tables/, figures/ and report.html; return the report's path."""
    out = Path(out)
    meta = json.loads((out / "run.json").read_text())
    tables, notes, figures = collect(out)
    tdir, fdir = out / "tables", out / "figures"
    tdir.mkdir(exist_ok=True)
    fdir.mkdir(exist_ok=True)
    for name, df in tables.items():
        df.to_csv(tdir / f"{name}.csv", index=False)
        md = notes.get(name + "_md") or markdown_table(df)
        (tdir / f"{name}.md").write_text(md + "\n")
    fig_out = []
    for f in figures:
        src = out / f["file"]
        if src.exists():
            shutil.copyfile(src, fdir / src.name)
            fig_out.append(dict(f, file=os.fspath(Path("figures") / src.name)))
    fig_out += summary_figures(out, tables, meta)
    stages = {}
    for d in sorted((out / "stages").iterdir()) if (out / "stages").exists() else []:
        r = _done(out, d.name)
        if r is not None:
            stages[d.name] = r
    results = {
        "metadata": {k: meta.get(k) for k in ("preset", "started", "finished", "wall_time_s", "device", "threads",
                                              "machine", "versions", "stage_seconds", "stage_status", "argv",
                                              "fingerprint", "inputs", "config")},
        "seed": meta.get("config", {}).get("run", {}).get("seed"),
        "stages": stages,
        "tables": {name: _clean(df.replace({np.nan: None}).to_dict("records")) for name, df in tables.items()},
        "figures": fig_out,
    }
    write_json(out / "results.json", results)
    path = out / "report.html"
    path.write_text(render_html(out, results, tables, notes))
    return path


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #345}h2{margin-top:2em;border-bottom:1px solid #ccc;color:#234}
.tw{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em;max-width:100%}td,th{border:1px solid #ccc;
padding:3px 6px;text-align:right;overflow-wrap:break-word}th{background:#eef2f6}td.long{overflow-wrap:anywhere}
td:first-child,th:first-child{text-align:left}
.note{background:#f7f7e8;border-left:4px solid #cc9;padding:.4em .8em;margin:.6em 0;overflow-wrap:anywhere}
details{margin:.4em 0}summary{cursor:pointer;color:#345}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%;height:auto}
nav a{margin-right:.8em}code,pre{background:#f4f4f4;font-size:.85em}pre{padding:.6em;overflow-x:auto}
"""


def _td(v):
    text = _fmt_cell(v)
    long = max((len(w) for w in text.split()), default=0) > 30  # may break anywhere, so the table fits the page
    return f"<td class='long'>{html.escape(text)}</td>" if long else f"<td>{html.escape(text)}</td>"


def _rows_html(df):
    return "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in df.itertuples(index=False))


def _html_table(df, max_rows=60, head_rows=10):
    """An HTML table that fits the page: the first ``head_rows`` rows shown, the rest (up to ``max_rows``) folded."""
    df = df.copy()
    more = ""
    if len(df) > max_rows:
        more = f"<p class='note'>First {max_rows} of {len(df)} rows; all rows are in the CSV.</p>"
        df = df.head(max_rows)
    # long column names may break after an underscore, so that a table fits the page
    head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in df.columns)
    table = f"<div class='tw'><table><thead><tr>{head}</tr></thead><tbody>{_rows_html(df.head(head_rows))}"
    if len(df) > head_rows + 2:  # folding fewer than three rows saves nothing
        rest = df.iloc[head_rows:]
        return (table + "</tbody></table></div>"
                f"<details><summary>{len(rest)} more rows</summary><div class='tw'><table><thead><tr>{head}</tr>"
                f"</thead><tbody>{_rows_html(rest)}</tbody></table></div></details>{more}")
    return table + _rows_html(df.iloc[head_rows:]) + f"</tbody></table></div>{more}"


def _img(out, fig):
    path = Path(out) / fig["file"]
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure><img alt='{html.escape(fig['title'])}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{html.escape(fig['title'])}.</b> {html.escape(fig.get('caption', ''))}</figcaption>"
            "</figure>")


def _figure_with_table(out, figs, name, table_html, summary="The table"):
    """A summary figure with its table one click away (``<details>``); the table alone when there is no figure."""
    fig = figs.get(f"{name}.png")
    if fig is None:
        return table_html
    return _img(out, fig) + f"<details><summary>{html.escape(summary)}</summary>{table_html}</details>"


def _score_snps_sentence(sc, cfg):
    """How the scored SNPs were chosen (the scores stage's ``source_of_snps``)."""
    if sc.get("source_of_snps") == "config":
        return f"SNPs: the {len(sc['snps'])} listed in scores.snps, in every fold."
    if sc.get("source_of_snps") == "screen":
        every = sc.get("snps_in_every_fold", [])
        return (f"SNPs: in each cross-fitting fold, the {cfg.get('max_snps')} SNPs whose calls correlate most with "
                "regional gray-matter means (max |r| over atlas regions) among that fold's training participants "
                "only, so the choice never saw the participants it scores, and nothing from CGNI is used; "
                f"{len(sc['snps'])} SNPs were chosen in at least one fold and {len(every)} in every fold (r is "
                "over the participants whose fold chose the SNP; the associations with cognition use the SNPs "
                "chosen in every fold).")
    return f"SNPs: chosen from {sc.get('source_of_snps')}."


def _scorer_winner_sentence(acc, causal=None, random_state=0):
    """CNN against the IDP scorer: held-out r per SNP, paired over SNPs, on the causal SNPs and on all.

    ``causal``: the causal SNPs when the cohort's ground truth is known. Each set's mean
    difference has a 95 % bootstrap interval over SNPs and a sign-flip permutation p; the two
    p-values are Holm-adjusted together.
    """
    from ..evaluation import holm_adjust, paired_mean_difference

    if acc is None or not len(acc):
        return ""
    acc = pd.DataFrame(acc)
    wide = acc.pivot_table(index="snp", columns="model", values="r_held_out")
    if not {"CNN", "IDP"} <= set(wide.columns):
        return ""
    wide = wide.dropna(subset=["CNN", "IDP"])
    sets = []
    if causal:
        sets.append(("the causal SNPs (ground truth)", wide[wide.index.astype(str).isin(causal)]))
    sets.append(("all scored SNPs", wide))
    found = []
    for what, w in sets:
        if len(w) < 2:
            continue
        res = paired_mean_difference(w["CNN"], w["IDP"], random_state=random_state)
        found.append((what, w, res))
    if not found:
        return ""
    p_holm = holm_adjust([r.pvalue for _, _, r in found])
    out = []
    for (what, w, r), ph in zip(found, p_holm):
        real = (r.ci_low > 0 or r.ci_high < 0) and ph < 0.05
        lead = ("the CNN is better" if r.difference > 0 else "the IDP baseline is better") if real else \
            "no detectable difference"
        p = f"p = {r.pvalue:.2g}" + (f", Holm-adjusted over {len(found)}: {ph:.2g}" if len(found) > 1 else "")
        out.append(f"over {what} ({r.n}), {lead}: mean held-out r {w['CNN'].mean():.3f} (CNN) vs "
                   f"{w['IDP'].mean():.3f} (IDP), difference {r.difference:+.3f} (95 % CI [{r.ci_low:.3f}, "
                   f"{r.ci_high:.3f}] over SNPs, {p})")
    return "Which scorer wins and by how much (paired over SNPs): " + "; ".join(out) + "."


#: the associations' columns shown in the report (tables/associations.csv has them all)
_ASSOCIATION_COLUMNS = ("model", "score", "measure", "n", "beta", "p", "p_perm", "p_perm_bonferroni",
                        "significant_perm_bonferroni", "genotype_r", "tracks_genotype")


def _untracked_associations_sentence(assoc):
    """How many significant associations come from scores that do not track their own genotype."""
    if assoc is None or not len(assoc):
        return ""
    a = pd.DataFrame(assoc)
    if "tracks_genotype" not in a:
        return ""
    col = "significant_perm_bonferroni" if "significant_perm_bonferroni" in a else "significant_bonferroni"
    sig = a[a[col].astype(bool)]
    untracked = sig[~sig["tracks_genotype"].astype(bool)]
    if not len(sig):
        return ""
    what = ", ".join(f"{m} {s} ~ {x}" for m, s, x in untracked[["model", "score", "measure"]].itertuples(index=False))
    return (f"{len(sig)} association(s) pass Bonferroni ({col}); "
            + (f"{len(untracked)} of them come from a score that does not track its own genotype "
               f"(tracks_genotype = False: {what}): the image's association with cognition, not evidence about the "
               "SNP." if len(untracked) else "every one comes from a score that tracks its own genotype "
               "(tracks_genotype)."))


def _note(text):
    return f"<p class='note'>{html.escape(text)}</p>"


def _pct(m, sd=None):
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    return f"{m:.2f}" + ("" if sd is None else f" ± {0.0 if isinstance(sd, float) and math.isnan(sd) else sd:.2f}")


def _mae_note(ba):
    """What the brain-age MAE's interval says: how wide it is on this many test participants, and
    whether the CNN is better than predicting the mean (older runs have no interval: nothing)."""
    if not np.isfinite(ba.get("mae_ci_low", np.nan)):
        return ""
    note = (f"95 % bootstrap interval over the {ba['n_test']} holdout participants: {ba['mae_ci_low']:.2f} to "
            f"{ba['mae_ci_high']:.2f} years (mae_ci_low, mae_ci_high); a difference between runs or settings "
            "inside it is noise.")
    gain = (f" Gain over predicting the training mean: {ba['mae_gain_over_mean']:.2f} years "
            f"[{ba['mae_gain_ci_low']:.2f}, {ba['mae_gain_ci_high']:.2f}], paired permutation p = "
            f"{ba['mae_gain_pvalue']:.3g} (mae_gain_pvalue)")
    if ba["mae_gain_ci_low"] <= 0:
        gain += ": not distinguishable from predicting the mean."
    else:
        gain += "."
    return note + gain + _ridge_note(ba)


def _ridge_note(ba):
    """The classical brain-age row (regional means -> ridge) on the same participants, and whether the
    CNN's difference from it is inside the noise (runs before it existed: nothing)."""
    if not np.isfinite(ba.get("mae_gain_over_ridge_ci_low", np.nan)):
        return ""
    low, high = ba["mae_gain_over_ridge_ci_low"], ba["mae_gain_over_ridge_ci_high"]
    verdict = ("the CNN is not distinguishable from it" if low <= 0 <= high
               else "the CNN is better" if ba["mae_gain_over_ridge"] > 0 else "the CNN is worse")
    return (f" The classical model on the same training and holdout participants, regional gray-matter means -> "
            f"ridge (ridge_mae_holdout): {ba['ridge_mae_holdout']:.2f} years [{ba['ridge_mae_ci_low']:.2f}, "
            f"{ba['ridge_mae_ci_high']:.2f}]; CNN MAE minus ridge MAE {-ba['mae_gain_over_ridge']:+.2f} years "
            f"[{-high:+.2f}, {-low:+.2f}], paired permutation p = {ba['mae_gain_over_ridge_pvalue']:.3g} "
            f"(mae_gain_over_ridge_pvalue): {verdict}.")


def _ci(r, split):
    m, lo, hi = r.get(f"{split}_ba"), r.get(f"{split}_ci_low"), r.get(f"{split}_ci_high")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def _table1_html(df):
    """Table 1 (or 2): pooled / holdout scores with 95 % intervals where known, and mean ± sd over the folds."""
    intervals = "validation_ba" in df
    head = ["model"] + (["validation, pooled [95 % CI]", "holdout [95 % CI]"] if intervals else []) + [
        "train, folds", "validation, folds", "holdout, folds"]
    rows = []
    for r in df.to_dict("records"):
        cells = [_ci(r, "validation"), _ci(r, "holdout")] if intervals else []
        for s in SPLITS:
            ref = r.get(f"paper_{s}")
            cells.append(html.escape(_pct(r.get(f"{s}_mean"), r.get(f"{s}_sd")))
                         + (f" <small>[{html.escape(ref)}]</small>" if isinstance(ref, str) and ref else ""))
        rows.append(f"<tr><td>{html.escape(r['model'])}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<div class='tw'><table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def _search_note(search, cfg):
    """What the nested search tried and chose per fold, for Table 1's note."""
    sc = cfg.get("search", {})
    if search is None or not len(search):
        return "CGNI's loss weights and settings are the configured ones (no nested search). "
    rows = search[search["table"] == "Table 1"]
    chosen = "; ".join(f"{r['model']}, fold {r['fold']}: {r['best_params']} (inner balanced accuracy "
                       f"{100 * r['inner_score']:.1f} %)" for r in rows.to_dict("records"))
    inner = (f"one stratified {100 * sc.get('validation_fraction', 0.2):.0f} % split" if sc.get("inner_cv", 1) == 1
             else f"{sc.get('inner_cv')}-fold CV")
    return (f"CGNI was tuned by a nested search on each fold's training part ({inner}; "
            f"{int(rows['n_candidates'].max()) if len(rows) else 0} candidates over {sorted(sc.get('grid', {}))}; "
            f"h_v computed once). Chosen: {chosen}. ")


def _comparison(comparisons, model, against, split):
    if comparisons is None or not len(comparisons):
        return None
    c = comparisons[(comparisons["model"] == model) & (comparisons["against"] == against)
                    & (comparisons["split"] == split)]
    return c.iloc[0].to_dict() if len(c) else None


def _cgni_vs_hv_note(table1, comparisons=None):
    """Whether CGNI adds anything to the CNN's features alone, with the paired tests on both splits."""
    rows = table1.set_index("model")
    if TABLE1_CGNI not in rows.index or HV_LOGISTIC not in rows.index:
        return ""
    found = {s: _comparison(comparisons, TABLE1_CGNI, HV_LOGISTIC, s) for s in ("validation", "holdout")}
    if all(found.values()):
        text = ("CGNI against the CNN's features alone (h_v -> logistic), paired on the same participants: "
                f"validation (pooled), {verdict(found['validation'])}; holdout, {verdict(found['holdout'])}.")
        better = all(c["ci_low"] > 0 and c["p_holm"] < 0.05 for c in found.values())
    else:  # a run folder without per-participant predictions: fold means only
        c, h = rows.loc[TABLE1_CGNI], rows.loc[HV_LOGISTIC]
        gaps = {s: c[f"{s}_mean"] - h[f"{s}_mean"] for s in ("validation", "holdout")}
        text = (f"CGNI against the CNN's features alone (h_v -> logistic): {gaps['validation']:+.2f} points on "
                f"validation, {gaps['holdout']:+.2f} on the holdout (means over folds; this run folder has no "
                "per-participant predictions, so no interval or test).")
        better = min(gaps.values()) >= 1.0
    if not better:
        text += (" CGNI shows no consistent gain over the image here: its contrastive objective aligns the SNP "
                 "embedding with the image, so it can only re-find genetic signal that acts through the brain "
                 "(which h_v already carries), and genetic effects on cognition that bypass the brain must be "
                 "learnt from the labels, which at this size carry little of them "
                 "(benchmarks/results/paper_size.md).")
    return _note(text)


def _best_note(table1, comparisons=None):
    """The best deep row against the best classical row, with intervals and paired tests on both splits.

    Rows are ranked on the pooled validation predictions (the holdout is not used to choose). A
    difference is called detectable only when its 95 % interval excludes 0 and its Holm-adjusted
    p is below 0.05 (:func:`~sklearn_cgni.cli._comparisons.verdict`).
    """
    if "validation_ba" not in table1:
        return _best_note_without_intervals(table1)
    t1 = table1.dropna(subset=["validation_ba"])
    best = {kind: rows.loc[rows["validation_ba"].idxmax()] for kind, rows in t1.groupby("kind")}
    if not best:
        return ""
    text = []
    if "deep" in best:
        d = best["deep"]
        text.append(f"Best deep row on validation: {d['model']} ({_ci(d, 'validation')} % pooled over "
                    f"{int(d['validation_n'])} participants; holdout {_ci(d, 'holdout')} %).")
    if "classical" in best:
        c = best["classical"]
        text.append(f"Best classical row on validation: {c['model']} ({_ci(c, 'validation')} %; holdout "
                    f"{_ci(c, 'holdout')} %).")
    if "deep" in best and "classical" in best:
        d, c = best["deep"], best["classical"]
        found = {s: _comparison(comparisons, d["model"], c["model"], s) for s in ("validation", "holdout")}
        words = [f"{s}, {verdict(v)}" for s, v in found.items() if v]
        if words:
            text.append(f"{d['model']} against {c['model']}: " + "; ".join(words) + ".")
    for row in (HV_PGS_LOGISTIC, HV_PGS_STACKED):  # what the polygenic scores add to h_v
        if row not in set(t1["model"]):
            continue
        found = {s: _comparison(comparisons, row, HV_LOGISTIC, s) for s in ("validation", "holdout")}
        words = [f"{s}, {verdict(v)}" for s, v in found.items() if v]
        if words:
            text.append(f"Polygenic scores (tables/pgs_scores.csv, coverage in tables/pgs_coverage.csv): "
                        f"{row} against {HV_LOGISTIC}: " + "; ".join(words) + ".")
    if "covariates" in best:
        cov = best["covariates"]
        text.append(f"The best covariate-only model, {cov['model']}, reaches {_ci(cov, 'validation')} % on "
                    f"validation and {_ci(cov, 'holdout')} % on the holdout.")
    if comparisons is not None and len(comparisons):
        n = int(comparisons["n_comparisons"].max())
        text.append(f"Intervals: 95 % percentile bootstrap over participants (1,000 resamples); paired tests: "
                    f"the two rows' predictions swapped per participant at random (10,000 permutations, two-sided). "
                    f"Each deep row is compared with the best classical row (chosen on validation) and with h_v "
                    f"alone, {n} comparisons per split, Holm-adjusted within each split; a difference counts as "
                    "detectable when its interval excludes 0 and its adjusted p < 0.05. All comparisons are in "
                    "the table below and in tables/table1_comparisons.csv.")
    return _note(" ".join(text) + " The confound section below says how much of each model's accuracy age and sex "
                 "explain.")


def _best_note_without_intervals(table1):
    """Older run folders (no per-participant predictions): the fold means, said to be without intervals."""
    t1 = table1.dropna(subset=["holdout_mean"])
    best = {kind: rows.loc[rows["holdout_mean"].idxmax()] for kind, rows in t1.groupby("kind")}
    parts = [f"best {k} row on the holdout: {r['model']} ({r['holdout_mean']:.2f} % mean over folds)"
             for k, r in best.items()]
    if not parts:
        return ""
    return _note("This run folder has no per-participant predictions, so Table 1 has no intervals or paired tests "
                 "and no difference can be called real; " + "; ".join(parts) + ".")


def _comparisons_html(comparisons):
    """The paired comparisons of Table 1, one line each, in a table."""
    if comparisons is None or not len(comparisons):
        return ""
    rows = comparisons.assign(
        difference=[f"{d:+.2f} [{lo:.2f}, {hi:.2f}]" for d, lo, hi in
                    comparisons[["difference", "ci_low", "ci_high"]].itertuples(index=False)],
        verdict=[("detectably better" if lo > 0 else "detectably worse") if (lo > 0 or hi < 0) and ph < 0.05
                 else "no detectable difference"
                 for lo, hi, ph in comparisons[["ci_low", "ci_high", "p_holm"]].itertuples(index=False)])
    rows = rows[["split", "model", "against", "difference", "p", "p_holm", "verdict"]].rename(
        columns={"difference": "difference, points [95 % CI]", "p_holm": "p (Holm)"})
    return "<h3>Paired comparisons</h3>" + _html_table(rows)


def _adjusted_cnn_training(stages):
    """How each fold's CNN on covariate-adjusted images trained (the ``adjusted_cnn_f<k>`` stages), as one sentence."""
    folds = sorted((int(name.rsplit("_f", 1)[1]), r) for name, r in stages.items()
                   if name.startswith("adjusted_cnn_f") and "epochs_run" in r)
    if not folds:
        return ""
    return (" The Imaging CNN's adjusted score comes from a CNN fine-tuned from the brain-age CNN on each fold's "
            "adjusted images: " + "; ".join(f"fold {k} {r['epochs_run']} epochs, best {r['best_epoch']} of a "
                                            f"{r['budget']}-epoch budget" + (f", {r['restarts']} restart(s)"
                                                                             if r.get("restarts") else "")
                                            for k, r in folds) + ".")


def _confound_sentences(confounds, linear_models=()):
    """One line per model of the confound table, its p-values Holm-adjusted over the models.

    ``gain`` (raw minus covariate-only, one-sided) and ``incremental`` (likelihood-ratio test
    of the predictions beyond the covariates, one-sided) are each a family of one test per
    model; a gain counts only when its adjusted p is below 0.05.
    """
    from ..evaluation import holm_adjust

    rows = [r for r in confounds.to_dict("records") if r.get("kind") == "model"]
    if not rows:
        return ""

    def num(r, key):
        v = r.get(key)
        return float("nan") if v is None else float(v)

    gain_holm = holm_adjust([num(r, "gain_p") for r in rows])
    inc_holm = holm_adjust([num(r, "incremental_p") for r in rows])
    items = []
    for r, gh, ih in zip(rows, gain_holm, inc_holm):
        g, pv = num(r, "gain_mean"), num(r, "gain_p")
        gain = ("a gain over the covariates" if g > 0 and gh < 0.05 else "no detectable gain over the covariates")
        text = (f"<b>{html.escape(r['model'])}</b>: {100 * num(r, 'raw_mean'):.1f} % vs "
                f"{100 * num(r, 'baseline_raw_mean'):.1f} % for {html.escape(str(r.get('baseline')))} alone, "
                f"{gain} ({100 * g:+.1f} points, p = {pv:.2g}, Holm-adjusted {gh:.2g}); covariates regressed out "
                f"{100 * num(r, 'adjusted_mean'):.1f} %"
                + ("" if r["model"] in linear_models else " (a non-linear model can still read the covariates from "
                   "linearly adjusted features)")
                + f"; matched {100 * num(r, 'matched_mean'):.1f} %")
        mg, mp = num(r, "matched_gain_mean"), num(r, "matched_gain_p")
        if mg == mg and mp == mp:
            text += f" (gain there {100 * mg:+.1f} points, p = {mp:.2g}, not corrected)"
        ip = num(r, "incremental_p")
        if ip == ip:
            text += (f"; its predictions {'add' if ih < 0.05 else 'add nothing detectable'} to the covariates "
                     f"(likelihood-ratio z = {num(r, 'incremental_z'):.2f}, p = {ip:.2g}, Holm-adjusted {ih:.2g})")
        items.append(f"<li>{text}.</li>")
    return (f"<div class='note'>Each model against the covariates alone (one-sided tests; the p-values of the "
            f"{len(rows)} models are Holm-adjusted within each test):<ul>" + "".join(items) + "</ul></div>")


def render_html(out, results, tables, notes):
    meta = results["metadata"]
    cfg = meta.get("config") or {}
    stages = results["stages"]
    figs = {Path(f["file"]).name: f for f in results["figures"]}
    data = stages.get("data", {})
    parts = {}

    # cohort
    c = []
    if data:
        c.append(_html_table(pd.DataFrame([{
            "participants (aligned)": data.get("n_aligned"), "dropped (missing a source)": data.get("n_dropped_by_alignment"),
            "image QC failed": data.get("n_image_qc_failed"), "WM low": data.get("n_low"), "WM high": data.get("n_high"),
            "train": data.get("n_train"), "holdout": data.get("n_holdout"), "folds": data.get("n_folds"),
            "SNPs": data.get("n_snps"), "SNPs after QC": data.get("n_snps_kept"),
            "image shape": "×".join(map(str, data.get("image_shape", []))),
        }])))
        if data.get("snp_qc_removed"):
            c.append(_note("SNP QC (fitted on the training part) removed: " + ", ".join(
                f"{k}: {v}" for k, v in data["snp_qc_removed"].items())))
        if data.get("image_qc_failed"):
            c.append(_note("Images excluded by QC: " + ", ".join(data["image_qc_failed"][:40])))
    sim = stages.get("simulate")
    if sim:
        c.append(_note(f"Embedded default cohort simulated with make_cohort: {sim['n_participants']} participants, "
                       f"{sim['n_snps']} SNPs, images {'×'.join(map(str, sim['shape']))} (the paper's are "
                       "128×141×128), demographics " + str(sim.get("demographics"))))
    cache = stages.get("image_cache")
    if cache:
        c.append(_note(f"The CNNs read the {cache['n_images']} images that passed QC from a float16 memory map "
                       f"decoded once (stages/image_cache, {cache['bytes'] / 1e6:.1f} MB; stage1.image_cache), not "
                       "from the NIfTI files at every epoch."))
    parts["cohort"] = "".join(c)

    ba = stages.get("brain_age")
    if ba:
        ba = {**ba, **stages.get("brain_age_classical", {})}
        parts["brain_age"] = (_html_table(tables["brain_age"]) + _note(
            "Mean absolute error of the predicted age on the holdout (years); the paper reports 2.47 years on "
            "its test set. " + _mae_note(ba) + f" CNN: {json.dumps(ba.get('arch'))}."))
    if "stage1_training" in tables:
        s1 = cfg.get("stage1", {})
        parts["brain_age"] = parts.get("brain_age", "") + "<h3>Training of the stage-1 CNNs</h3>" + _html_table(
            tables["stage1_training"]) + _note(
            (f"Early stopping on {s1.get('validation_fraction')} of each CNN's training participants (patience "
             f"{s1.get('n_iter_no_change')} epochs, never before epoch {s1.get('min_epochs')}; brain age: validation "
             f"MAE, WM folds: validation "
             f"{'balanced accuracy' if s1.get('finetune_scoring') == 'balanced_accuracy' else 'cross-entropy'}); "
             "the weights of the best epoch are kept. The budget grows while the best epoch is in its last 10 % "
             f"(up to {s1.get('budget_growth')}× the configured budget), and a run whose validation metric stays "
             "within 10 % of the constant predictor's restarts from a fresh initialisation."
             if s1.get("early_stopping") else "Fixed number of epochs (early stopping off).")
            + (f" Learning rate warmed up over {s1.get('warmup_epochs')} epochs, then halved on plateaus of the "
               "validation metric (not before that epoch, never below a 16th)." if s1.get("lr_schedule") == "plateau"
               else "")
            + (" Input z-scored voxel by voxel with the training images' mean and SD."
               if s1.get("standardize_voxels") else " Raw voxel values as input.")) + (
            _img(out, figs["training_curves.png"]) if "training_curves.png" in figs else "")
    if "table1" in tables:
        comps = tables.get("table1_comparisons")
        parts["table1"] = (_best_note(tables["table1"], comps) + _cgni_vs_hv_note(tables["table1"], comps)
                           + _figure_with_table(out, figs, "table1_forest", _table1_html(tables["table1"]),
                                                "Table 1 as a table")
                           + _comparisons_html(comps)) + _note(
            "Balanced accuracy (%). pooled: the out-of-fold validation predictions of all folds together (each "
            "training-part participant once) and the holdout's mean over the fold models, with 95 % bootstrap "
            "intervals over participants; folds: mean ± sd over the folds, each fold's model scored on its "
            "training part, its validation part and the common holdout. Paper values in brackets (paper rows "
            "only). The Imaging CNN "
            "is stage 1 fine-tuned on each fold; every other deep model takes that fold's h_v and the QC'd SNPs. "
            + (f"CGNI's stage 3 learns on out-of-fold z_g ({cfg['classifier']['cross_fit']}-fold cross-fitting of "
               "the contrastive encoder on the fold's training part; new participants go through the encoder "
               "refitted on all of it). " if cfg.get("classifier", {}).get("cross_fit") else
               "CGNI's stage 3 learns on the z_g of the encoder's own training participants (no cross-fitting, "
               "as in the paper). ")
            + _search_note(tables.get("search"), cfg)
            + "Rows not in the paper, fitted on the same folds and scored with the same metric: the CNN's features "
            "h_v alone through the classical logistic regression (what CGNI must beat to show that the SNPs add "
            "anything), CGNI on regional GM means when contrastive.regional_row is set, CGNI whose contrastive loss "
            "also fine-tunes the last CNN blocks (its h_v is the fine-tuned one) when contrastive.finetune_blocks is "
            "set, the "
            "classical rows (logistic regression, C chosen by inner cross-validation, on the atlas's regional "
            "gray-matter means, on the SNPs, and both stacked), because linear models on brain scans are as "
            "accurate as deep models at UK Biobank sample sizes (Schulz et al. 2020, Nat Commun 11:4238), and the "
            "covariate-only rows (logistic regression on the covariates).")
    if "table2" in tables:
        parts["table2"] = _table1_html(tables["table2"]) + _note(
            "CGNI with one or more contrastive terms (L1 = L(v,g), L2 = L(g,v), L3 = L(v,v), L4 = L(g,g)); "
            + ("each combination's weights and settings were tuned by the nested search on each fold's training part "
               "(the grid's weights of the terms a combination leaves out stay 0). "
               if cfg.get("search", {}).get("grid") and cfg["search"].get("table2") else
               "included terms take the configured weights, no per-combination tuning (fixed weights). ")
            + "The covariate-only rows are those of Table 1.")
    elif cfg.get("protocol", {}).get("table2") is False:
        parts["table2"] = _note("Not computed: protocol.table2 = false in this run's configuration.")
    if "table3" in tables:
        best = stages.get("scca", {}).get("best_params")
        parts["table3"] = _html_table(tables["table3"]) + _note(
            f"Canonical correlation per component of z_v and z_g (fold 0's CGNI model): fold 0's training and "
            f"validation parts and the holdout. Chosen by {cfg.get('scca', {}).get('cv')}-fold CV: {best}. "
            "The paper reports 0.52-0.68.") + (_img(out, figs["canonical_correlations.png"])
                                               if "canonical_correlations.png" in figs else "")
    if "table4" in tables:
        parts["table4"] = _html_table(tables["table4"])
    for n in stages.get("genes", {}).get("notes", []):
        parts["table4"] = parts.get("table4", "") + _note(n)
    if "table5" in tables:
        parts["table5"] = _html_table(tables["table5"])
    else:
        parts["table5"] = _note("No significant region.")
    f3 = "".join(_img(out, figs[n]) for n in ("fig3_regions.png", "snp_contributions.png") if n in figs)
    occ = stages.get("occlusion", {})
    if occ:
        f3 += _note(f"Occlusion (eq. 6) with atlas {occ.get('atlas')} ({occ.get('n_regions')} regions on the grid), "
                    f"{occ.get('n_image_participants')} training participants' images, "
                    f"{occ.get('n_snp_participants')} participants' genotypes.")
        for key, title in (("significant_regions", "Significant regions"), ("significant_snps", "Significant SNPs")):
            if key in tables:
                f3 += f"<h3>{title}</h3>" + _html_table(tables[key], max_rows=40)
    parts["fig3"] = f3
    if "enrichment" in tables:
        parts["enrichment"] = _html_table(tables["enrichment"], max_rows=15) + _note(
            "Hypergeometric over-representation of the genes of the significant SNPs among the gene sets, "
            "against the genes of all SNPs kept by QC.")
    else:
        parts["enrichment"] = _note("Not computed: it needs significant SNPs, a SNP -> gene table and a GMT file "
                                    "(see Table 4).")
    sc = stages.get("scores")
    if sc:
        s = _note(f"Multi-task 3D CNN (initialised from the brain-age CNN) predicting SNPs from gray matter; "
                  f"held-out scores by {cfg.get('scores', {}).get('cv')}-fold cross-fitting on "
                  f"{sc['n_participants']} participants; IDP baseline: ridge on regional means. r = correlation "
                  "of the held-out score with the genotype. " + _score_snps_sentence(sc, cfg.get("scores", {})))
        winner = _scorer_winner_sentence(tables.get("score_accuracy"), ground_truth_causal(out, meta))
        if winner:
            s += _note(winner)
        untracked = _untracked_associations_sentence(tables.get("associations"))
        if untracked:
            s += _note(untracked)
        for key, title, fig in (("score_accuracy", "Held-out accuracy", "scores_cnn_vs_idp"),
                                ("associations", "Associations with cognition (OLS with covariates; p_perm: "
                                                 "Freedman-Lane permutation p-values)", "associations_heatmap"),
                                ("saliency_top_regions", "Saliency: top regions per score", None)):
            if key in tables:
                t = tables[key]
                if key == "associations":  # the columns that fit a page; all of them are in the CSV
                    t = t[[c_ for c_ in _ASSOCIATION_COLUMNS if c_ in t.columns]]
                s += f"<h3>{title}</h3>" + _figure_with_table(out, figs, fig, _html_table(t, max_rows=40),
                                                              f"{title}: the table")
                if key == "saliency_top_regions":
                    fwhm = cfg.get("scores", {}).get("saliency_fwhm") or 0
                    s += _note(f"Signed mean gradients smoothed at {fwhm:g} mm FWHM (regions ranked by magnitude)."
                               if fwhm else "Mean absolute gradients, unsmoothed (scores.saliency_fwhm = 0).")
        parts["scores"] = s
    elif cfg.get("scores", {}).get("enabled") is False:
        parts["scores"] = _note("Not computed: scores.enabled = false.")
    if "confounds" in tables:
        cf = stages.get("confounds", {})
        # the columns that fit the page (the covariate-only rows are rows of their own); all are in the CSV
        cols = [c_ for c_ in ("model", "raw_mean", "raw_sd", "adjusted_mean", "matched_mean", "gain_mean", "gain_p",
                              "gain_p_permutation", "matched_gain_mean", "incremental_z", "incremental_p")
                if c_ in tables["confounds"].columns]
        summary = _confound_sentences(tables["confounds"], cf.get("linear_models", []))
        features = "".join(f" {m}: {f}." for m, f in (cf.get("model_features") or {}).items())
        adjusted = _adjusted_cnn_training(stages)
        parts["confounds"] = _figure_with_table(out, figs, "confounds_forest", _html_table(tables["confounds"][cols]),
                                                "The confound table") + summary + _note(
            f"Balanced accuracy on the training part with the protocol's folds.{features} Other models: "
            f"{cf.get('features')}. raw: the model; covariates: logistic regression on covariates only; adjusted: "
            "covariates regressed out of the model's input inside each fold (coefficients from the training "
            "participants only); matched: the raw fold models scored on the age- and sex-matched participants "
            f"({cf.get('n_matched')} in all); gain: raw minus the covariate-only model on the same folds, one-sided "
            "(corrected resampled t-test; sign-flip permutation test); incremental: does the model's held-out "
            "prediction explain the label beyond the covariates? (logistic regression of the label on the covariates "
            "with and without the prediction, likelihood-ratio test on the pooled validation folds after removing "
            "each fold model's linear covariate part, one-sided; slightly liberal, see "
            "benchmarks/results/incremental_calibration.md). Unlike the adjusted score it does not rely on a linear regression "
            "removing all covariate information from the features, which fails for non-linear models of "
            "zero-inflated or discrete "
            "features such as ReLU features and genotypes. All columns are in tables/confounds.csv, "
            "per-fold scores in tables/confound_scores.csv, held-out predictions in "
            "tables/confound_predictions.csv." + adjusted)
    elif cfg.get("confounds", {}).get("enabled") is False:
        parts["confounds"] = _note("Not computed: confounds.enabled = false.")
    if "recovery" in tables:
        r = _html_table(tables["recovery"])
        rec = stages.get("recovery", {})
        if rec.get("planted_gene_set"):
            p = rec["planted_gene_set"]
            r += _note(f"Planted gene set {p['name']}: rank {p['rank']} of {p['n_sets']} in the enrichment.")
        if "recovery_scores" in tables:
            r += "<h3>Brain-genotype scores of causal vs other SNPs (mean held-out r)</h3>" + _html_table(
                tables["recovery_scores"])
        parts["recovery"] = r + _note("Compared with ground_truth.json; nothing was tuned on it.")
    timing = pd.DataFrame([{"stage": k, "seconds": round(v, 1), "status": (meta.get("stage_status") or {}).get(k)}
                           for k, v in (meta.get("stage_seconds") or {}).items()])
    md = [("preset", meta.get("preset")), ("seed", results.get("seed")), ("device", meta.get("device")),
          ("torch threads", meta.get("threads")), ("machine", meta.get("machine")),
          ("started", meta.get("started")), ("finished", meta.get("finished")),
          ("wall time of this invocation (s)", None if meta.get("wall_time_s") is None else round(meta["wall_time_s"], 1)),
          ("compute time of all stages (s)", round(sum((meta.get("stage_seconds") or {}).values()), 1)),
          ("fingerprint", meta.get("fingerprint")), ("command", " ".join(meta.get("argv") or []))]
    parts["metadata"] = (_html_table(pd.DataFrame(md, columns=["item", "value"]))
                         + "<h3>Versions</h3>" + _html_table(pd.DataFrame(list((meta.get("versions") or {}).items()),
                                                                          columns=["package", "version"]))
                         + ("<h3>Stage timings</h3>" + _html_table(timing) if len(timing) else "")
                         + "<h3>Configuration</h3><details><summary>config.toml of this run</summary><pre>"
                         + html.escape(_toml(cfg)) + "</pre></details>")

    nav = " ".join(f"<a href='#{k}'>{html.escape(t.split(':')[0])}</a>" for k, t in SECTIONS if k in parts)
    body = "".join(f"<h2 id='{k}'>{html.escape(t)}</h2>{parts[k]}" for k, t in SECTIONS if k in parts)
    title = "sklearn-cgni report"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1><p>Contrastive neuroimaging-genetics integration "
            "(CGNI) and brain-genotype scores on this cohort: the equivalents of the paper's Tables 1-5 and Fig. 3. "
            "Every table is also in <code>tables/</code> (CSV, markdown) and <code>results.json</code>.</p>"
            f"<nav>{nav}</nav>{body}</body></html>")


def _toml(cfg):
    from ._config import to_toml

    try:
        return to_toml(cfg)
    except Exception:  # pragma: no cover
        return json.dumps(cfg, indent=1)
