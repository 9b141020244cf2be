"""The report of ``sklearn-cgni run``: results.json, tables, figures and report.html.

Uses the tiny run of test_cli.py (session fixture ``finished_run``).
"""

import base64
import html
import json
import re

import pandas as pd
import pytest

from sklearn_cgni.cli._protocol import (
    CLASSICAL_MODELS,
    COMBOS,
    PAPER_TABLE1,
    combo_params,
    paper_splits,
    summarise_scores,
    summarize_scores,
    table_markdown,
)
from sklearn_cgni.cli._report import SECTIONS, markdown_table
from test_cli import finished_run, tiny_cohort  # noqa: F401  (shared session fixtures)


def test_report_html_has_every_section(finished_run):  # noqa: F811
    _, _, out = finished_run
    text = (out / "report.html").read_text()
    for key, title in SECTIONS:
        if key == "table2":  # switched off in the tiny config: the report says so
            assert "protocol.table2 = false" in text
            continue
        assert f"id='{key}'" in text, f"section {key!r} missing"
    for needle in ("Table 1", "Table 3", "Table 4", "Table 5", "Fig. 3", "Brain-genotype scores",
                   "Confounds", "Ground-truth recovery", "covariates: age + sex", "CGNI contrastive"):
        assert needle in text, needle
    # self-contained: figures embedded, nothing loaded from elsewhere
    images = re.findall(r"src='([^']+)'", text)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    png = base64.b64decode(images[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text


def test_results_json_is_machine_readable(finished_run):  # noqa: F811
    _, _, out = finished_run
    res = json.loads((out / "results.json").read_text())
    assert res["seed"] == 0
    assert {"table1", "table3", "confounds", "score_accuracy", "recovery", "per_fold_scores"} <= set(res["tables"])
    t1 = pd.DataFrame(res["tables"]["table1"])
    assert list(t1["model"]) == ["Imaging CNN", "Sparse Genetic NN", "Imaging-Genetic SVM (linear)",
                                 "Imaging-Genetic NN (non-linear)", "CGNI contrastive (terms 1+2+4)",
                                 "CNN features h_v -> logistic", *CLASSICAL_MODELS, "covariates: age",
                                 "covariates: sex", "covariates: age + sex"]
    is_paper = t1["model"].isin(PAPER_TABLE1)
    assert t1["holdout_mean"].between(0, 100).all() and t1.loc[is_paper, "paper_holdout"].notna().all()
    assert t1.loc[~is_paper, "paper_holdout"].isna().all()  # the paper has no classical or covariate-only rows
    per_fold = pd.DataFrame(res["tables"]["per_fold_scores"])
    assert sorted(per_fold["fold"].unique()) == [0, 1]
    assert set(per_fold["split"]) == {"train", "validation", "holdout"}
    meta = res["metadata"]
    assert meta["versions"]["scikit-learn"] and meta["config"]["protocol"]["folds"] == 2
    assert set(meta["stage_seconds"]) >= {"data", "brain_age", "occlusion"}
    confounds = pd.DataFrame(res["tables"]["confounds"])
    assert {"raw_mean", "adjusted_mean", "matched_mean", "gain_mean", "gain_p"} <= set(confounds.columns)
    recovery = pd.DataFrame(res["tables"]["recovery"]).set_index("what")
    assert recovery.loc["causal_snps", "true"] > 0  # compared against the planted causal SNPs


def test_tables_as_csv_and_markdown(finished_run):  # noqa: F811
    _, _, out = finished_run
    for name in ("table1", "table3", "table5", "confounds", "score_accuracy"):
        csv = pd.read_csv(out / "tables" / f"{name}.csv")
        md = (out / "tables" / f"{name}.md").read_text()
        assert len(csv) and md.startswith("|") and md.count("\n") >= len(csv) + 2, name
    assert "[88.91 ± 0.66]" in (out / "tables" / "table1.md").read_text()
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert "canonical_correlations.png" in figs and "snp_contributions.png" in figs


def test_protocol_splits_are_stratified_and_disjoint():
    import numpy as np

    y = np.r_[np.zeros(64), np.ones(36)].astype(int)
    train, hold, cv = paper_splits(y, holdout=0.1, folds=5, random_state=0)
    assert len(hold) == 10 and set(train).isdisjoint(hold) and len(train) + len(hold) == 100
    vals = np.concatenate([va for _, va in cv])
    assert sorted(vals) == sorted(train)  # every training participant validates once
    assert abs(y[hold].mean() - 0.36) < 0.11
    for tr, va in cv:
        assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(train)


def test_protocol_tables():
    assert len(COMBOS) == 14
    assert combo_params("L1+L4") == {"lambda_vg": 0.7, "sigma_gv": 0.0, "gamma_vv": 0.0, "theta_gg": 0.4}
    with pytest.raises(ValueError, match="L5"):
        combo_params("L1+L5")
    recs = [dict(table="Table 1", model="Imaging CNN", fold=f, split=s, balanced_accuracy=b)
            for f, b in ((0, 0.6), (1, 0.8)) for s in ("train", "validation", "holdout")]
    summary = summarize_scores(recs)
    with pytest.warns(FutureWarning, match="summarise_scores is deprecated"):
        pd.testing.assert_frame_equal(summarise_scores(recs), summary)
    row = summary[(summary.split == "holdout")].iloc[0]
    assert row["mean"] == pytest.approx(70.0) and row["std"] == pytest.approx(14.142, abs=1e-3)
    md = table_markdown(summary, "Table 1")
    assert "| Imaging CNN | 70.00 ± 14.14 [81.34 ± 2.34]" in md
    assert markdown_table(pd.DataFrame({"a": [1.23456, None], "b": ["x|y", "z"]})).splitlines()[2] == "| 1.23 | x/y |"


def test_scorer_winner_sentence_names_the_winner_and_the_margin():
    import numpy as np

    from sklearn_cgni.cli._report import _scorer_winner_sentence

    snps = [f"rs{i}" for i in range(12)]
    cnn = np.linspace(0.0, 0.1, 12)
    acc = pd.DataFrame({"snp": snps * 2, "model": ["CNN"] * 12 + ["IDP"] * 12,
                        "r_held_out": np.r_[cnn, cnn + 0.2 + np.linspace(-0.01, 0.01, 12)]})
    text = _scorer_winner_sentence(acc)
    assert text.startswith("Which scorer wins and by how much (paired over SNPs)")
    assert "over all scored SNPs (12), the IDP baseline is better: mean held-out r 0.050 (CNN) vs 0.250 (IDP), " \
           "difference -0.200 (95 % CI [" in text
    # the causal SNPs as their own comparison, Holm-adjusted with the other; four SNPs tied: no winner
    tied = acc.copy()
    tied.loc[(tied["model"] == "IDP") & tied["snp"].isin(snps[:4]), "r_held_out"] = cnn[:4][::-1]
    text = _scorer_winner_sentence(tied, causal=set(snps[:4]))
    assert "over the causal SNPs (ground truth) (4), no detectable difference" in text
    assert "Holm-adjusted over 2" in text
    assert _scorer_winner_sentence(None) == ""


def _synthetic_table1(acc_a, acc_b, n=120, seed=0):
    """Predictions of two deep rows, h_v alone and a classical row on 2 folds + a holdout, for Table 1's notes."""
    import numpy as np

    from sklearn_cgni.cli._protocol import HV_LOGISTIC, TABLE1_CGNI

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    hold = np.arange(n - 40, n)
    rows = []
    accuracy = {"Imaging CNN": acc_a, TABLE1_CGNI: acc_b, HV_LOGISTIC: acc_b, CLASSICAL_MODELS[0]: acc_b}
    for model, acc in accuracy.items():
        for k in range(2):
            val = np.arange(k, n - 40, 2)
            for split, ix in (("validation", val), ("holdout", hold)):
                pred = np.where(rng.random(ix.size) < acc, y[ix], 1 - y[ix])
                rows.append(pd.DataFrame({"participant_id": [f"p{i}" for i in ix], "model": model, "split": split,
                                          "fold": k, "predicted": pred, "y": y[ix]}))
    kinds = {m: "classical" if m in CLASSICAL_MODELS else "deep" for m in accuracy}
    return pd.concat(rows, ignore_index=True), kinds


def test_table1_notes_call_a_tie_no_detectable_difference():
    from sklearn_cgni.cli._comparisons import table1_uncertainty
    from sklearn_cgni.cli._report import _best_note, _cgni_vs_hv_note

    preds, kinds = _synthetic_table1(0.8, 0.8)
    rows, comps = table1_uncertainty(preds, kinds, n_resamples=300, n_permutations=2000)
    assert {"validation_ba", "validation_ci_low", "holdout_ba", "holdout_ci_high"} <= set(rows.columns)
    assert (rows["validation_ci_low"] < rows["validation_ba"]).all() and (rows["validation_n"] == 80).all()
    # each deep row against the best classical row and against h_v alone, Holm over the split's comparisons
    assert set(comps["against_role"]) == {"best classical row", "h_v alone"} and (comps["n_comparisons"] == 5).all()
    assert (comps["p_holm"] >= comps["p"]).all()
    t1 = pd.DataFrame({"model": list(kinds), "kind": list(kinds.values())}).merge(rows, on="model")
    for split in ("validation", "holdout"):
        t1[f"{split}_mean"] = t1[f"{split}_ba"]
    best = html.unescape(_best_note(t1, comps))
    assert "against classical: regional GM -> logistic: validation, no detectable difference (" in best
    assert "Holm-adjusted within each split" in best
    assert "no detectable difference" in _cgni_vs_hv_note(t1, comps)
    # a real gap: the better row is named, with its interval and adjusted p
    preds, kinds = _synthetic_table1(0.95, 0.6)
    rows, comps = table1_uncertainty(preds, kinds, n_resamples=300, n_permutations=2000)
    t1 = pd.DataFrame({"model": list(kinds), "kind": list(kinds.values())}).merge(rows, on="model")
    best = html.unescape(_best_note(t1, comps))
    assert "Best deep row on validation: Imaging CNN" in best
    assert "validation, " in best and "points better (95 % CI [" in best and "Holm-adjusted over 5 comparisons" in best


def test_report_names_significant_associations_of_scores_that_do_not_track_their_genotype():
    from sklearn_cgni.cli._report import _untracked_associations_sentence

    assoc = pd.DataFrame({"model": ["CNN", "CNN", "IDP"], "score": ["rs1", "rs2", "rs1"],
                          "measure": ["fluid_intelligence", "digit_span", "digit_span"],
                          "significant_bonferroni": [True, True, False],
                          "significant_perm_bonferroni": [True, True, False],
                          "tracks_genotype": [False, True, True]})
    text = _untracked_associations_sentence(assoc)
    assert text.startswith("2 association(s) pass Bonferroni (significant_perm_bonferroni); 1 of them")
    assert "CNN rs1 ~ fluid_intelligence" in text and "not evidence about the SNP" in text
    assoc["tracks_genotype"] = True
    assert "every one comes from a score that tracks its own genotype" in _untracked_associations_sentence(assoc)
    assert _untracked_associations_sentence(assoc.drop(columns="tracks_genotype")) == ""  # older run folders
    assert _untracked_associations_sentence(assoc.assign(significant_perm_bonferroni=False)) == ""
