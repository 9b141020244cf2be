"""Issue 14, items 3-4: the nested search of CGNI's stages 2-3, the regional-means row, and
the CNN-features row of Table 1.

The CLI test reruns the ``models`` stage of the tiny run of test_cli.py (session fixture
``finished_run``) in a copy, with a search grid.
"""

import html
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from sklearn_cgni.cli import TERM_WEIGHTS, ConfigError, load_config, paper_models, search_grid, tuned
from sklearn_cgni.cli._protocol import TABLE1_CGNI

from test_cli import finished_run, tiny_cohort  # noqa: F401  (shared session fixtures)

SMALL = dict(n_components=4, image_hidden=(), genetic_hidden=(8,), max_epochs=3, batch_size=20)


def _cgni(cross_fit=0, **kw):
    return paper_models(4, contrastive={**SMALL, **kw}, classifier=dict(hidden_layer_sizes=(8,), max_epochs=3),
                        cross_fit=cross_fit, device="cpu")[("Table 1", TABLE1_CGNI)]


def _toy(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    hv = rng.normal(size=(n, 4)) + y[:, None]
    G = rng.integers(0, 3, size=(n, 12)).astype(float)
    return np.hstack([hv, G]).astype(np.float32), y


def test_search_grid_maps_config_keys_onto_the_pipeline():
    grid = {"contrastive.temperature": [0.1, 0.5], "contrastive.genetic_hidden": [[], [16]],
            "classifier.dropout": [0.0, 0.2]}
    assert search_grid(_cgni(), grid) == {"contrastive__temperature": [0.1, 0.5],
                                          "contrastive__genetic_hidden": [(), (16,)],
                                          "classifier__dropout": [0.0, 0.2]}
    crossed = search_grid(_cgni(cross_fit=3), grid)
    assert list(crossed) == ["contrastive__transformer__temperature", "contrastive__transformer__genetic_hidden",
                             "classifier__dropout"]
    # a Table 2 combination keeps the terms it leaves out at 0
    weights = {name: [0.2, 0.7] for name, _ in TERM_WEIGHTS.values()}
    kept = search_grid(_cgni(), {f"contrastive.{k}": v for k, v in weights.items()}, combo="L1+L4")
    assert sorted(kept) == ["contrastive__lambda_vg", "contrastive__theta_gg"]


@pytest.mark.parametrize("grid, match", [
    ({"contrastive.temperatur": [0.1]}, "'contrastive.temperatur' is not a parameter of ContrastiveSNPEncoder"),
    ({"scale.with_mean": [True]}, "must be 'contrastive.<parameter>' or 'classifier.<parameter>'"),
    ({"contrastive.temperature": []}, "must list at least one candidate"),
    ({"classifier": [1]}, "must be 'contrastive.<parameter>'"),
])
def test_search_grid_refuses_bad_keys(grid, match):
    with pytest.raises(ValueError, match=match):
        search_grid(_cgni(), grid)


def test_tuned_searches_on_the_rows_it_is_given_and_refits_the_best():
    X, y = _toy()
    grid = {"contrastive.temperature": [0.1, 0.5]}
    search = tuned(_cgni(standardize=True), grid, inner_cv=1, validation_fraction=0.25, random_state=0)
    assert isinstance(search.cv, StratifiedShuffleSplit) and search.cv.test_size == 0.25
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 2 and search.n_splits_ == 1
    assert search.best_params_["contrastive__temperature"] in (0.1, 0.5)
    # the refitted pipeline encodes (z-scoring its input inside the encoders) and classifies
    assert list(search.best_estimator_.named_steps) == ["contrastive", "classifier"]
    assert search.best_estimator_.named_steps["contrastive"].standardize is True
    assert search.predict(X).shape == y.shape
    assert isinstance(tuned(_cgni(), grid, inner_cv=3).cv, StratifiedKFold)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="inner_cv must be an integer >= 1"):
            tuned(_cgni(), grid, inner_cv=bad)
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        tuned(_cgni(), grid, validation_fraction=1.0)


@pytest.mark.parametrize("override, match", [
    ('search.grid={"contrastive.temperatur"=[0.1]}', "did you mean 'contrastive.temperature'"),
    ('search.grid={"contrastive.temperature"=[0, 0.5]}', "candidate 0 of 'contrastive.temperature' is refused"),
    ('search.grid={"contrastive.temperature"=[]}', "must list at least one candidate"),
    ('search.grid={"stage1.lr"=[0.1]}', "must be 'contrastive.<parameter>' or 'classifier.<parameter>'"),
    ("search.inner_cv=0", "search.inner_cv must be 1"),
    ("search.validation_fraction=1.5", "search.validation_fraction must be in"),
    ("contrastive.finetune_blocks=5", r"finetune_blocks must be 0 \(off\) or a number of CNN blocks up to 4"),
    ("contrastive.finetune_blocks=-1", "finetune_blocks must be 0"),
])
def test_search_config_is_refused_at_load_time(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(preset="cpu", overrides=[override])


def test_models_stage_runs_the_nested_search_and_the_extra_rows(finished_run, tmp_path):  # noqa: F811
    from sklearn_cgni.cli._run import run_pipeline
    from sklearn_cgni.cli._inputs import cohort_folder_inputs
    from sklearn_cgni.cli._protocol import FINETUNED_CGNI, HV_LOGISTIC, REGIONAL_CGNI

    cohort, cfg_path, out = finished_run
    dst = tmp_path / "run"
    shutil.copytree(out, dst)
    config = load_config(cfg_path, preset="cpu", overrides=[
        {"search": {"grid": {"contrastive.temperature": [0.1, 0.5]}}},
        "contrastive.regional_row=true", "contrastive.finetune_blocks=1", "contrastive.standardize=true",
        "run.device=cpu"])
    report = run_pipeline(dst, config, cohort_folder_inputs(cohort), force=True, progress=False, preset="cpu", only="models")
    stages = dst / "stages"
    split = json.loads((stages / "data" / "splits.json").read_text())
    parts = pd.read_csv(stages / "data" / "participants.csv", dtype={"participant_id": str}).set_index("participant_id")
    wm = parts[parts["wm_group"].notna() & parts["image_qc_passed"]]
    y = wm["wm_group"].astype(int)
    for k, (_, va) in enumerate(split["folds"]):
        result = json.loads((stages / f"models_f{k}" / "_done.json").read_text())["result"]
        searched = {r["model"]: r for r in result["search"]}
        assert set(searched) == {TABLE1_CGNI, REGIONAL_CGNI, FINETUNED_CGNI}
        for r in searched.values():
            assert r["n_candidates"] == 2 and r["best_params"]["temperature"] in (0.1, 0.5)
            assert 0 <= r["inner_score"] <= 1
        records = pd.DataFrame(result["records"])
        assert {HV_LOGISTIC, REGIONAL_CGNI, FINETUNED_CGNI, TABLE1_CGNI} <= set(records["model"])
        # the saved held-out predictions are the ones the recorded scores come from, on the fold's participants
        pred = pd.read_csv(stages / f"models_f{k}" / "predictions.csv.gz", dtype={"participant_id": str})
        for (model, s), d in pred.groupby(["model", "split"]):
            rows = va if s == "validation" else split["holdout"]
            assert list(d["participant_id"]) == list(wm.index[rows])
            rec = records.query("model == @model and split == @s")["balanced_accuracy"].item()
            assert balanced_accuracy_score(y.loc[d["participant_id"]], d["predicted"]) == pytest.approx(rec)
        # h_v -> logistic is the classical logistic regression on the fold's CNN features
        hv = np.load(stages / f"finetune_f{k}" / "hv.npy")
        assert hv.shape[0] == len(wm)
    text = report.read_text()
    assert "tuned by a nested search" in text and "CGNI against the CNN&#x27;s features alone" in text
    assert html.escape(REGIONAL_CGNI) in text and html.escape(HV_LOGISTIC) in text
    assert html.escape(FINETUNED_CGNI) in text
    chosen = pd.read_csv(dst / "tables" / "search.csv")
    assert len(chosen) == 3 * len(split["folds"])


def test_report_says_whether_cgni_adds_to_the_cnn_features():
    from sklearn_cgni.cli._protocol import HV_LOGISTIC
    from sklearn_cgni.cli._report import _cgni_vs_hv_note

    def table(cgni, hv):
        return pd.DataFrame([{"model": TABLE1_CGNI, "validation_mean": cgni, "holdout_mean": cgni},
                             {"model": HV_LOGISTIC, "validation_mean": hv, "holdout_mean": hv}])

    level = _cgni_vs_hv_note(table(70.2, 70.0))
    assert "+0.20 points on validation" in level and "no consistent gain" in level
    better = _cgni_vs_hv_note(table(74.0, 70.0))
    assert "+4.00 points on validation" in better and "no consistent gain" not in better
    mixed = table(72.0, 70.0)
    mixed.loc[0, "holdout_mean"] = 69.0  # better on validation, worse on the holdout
    assert "no consistent gain" in _cgni_vs_hv_note(mixed)
    assert _cgni_vs_hv_note(table(70.0, 70.0).iloc[:1]) == ""  # no h_v row: nothing to say
