"""Table 1's classical rows (regional gray-matter means and SNPs -> logistic regression).

The CLI tests use the tiny run of test_cli.py (session fixture ``finished_run``).
"""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import StackingClassifier
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold

from sklearn_cgni.cli import CLASSICAL_MODELS, ConfigError, classical_models, load_config
from sklearn_cgni.cli._protocol import TABLE1_CGNI
from sklearn_cgni.cli._report import _best_note
from sklearn_cgni.utils._linear import balanced_accuracy_scorer
from test_cli import finished_run, tiny_cohort  # noqa: F401  (shared session fixtures)


def _toy(n=120, n_regions=6, n_snps=15, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    regions = rng.normal(size=(n, n_regions))
    regions[:, 0] += 1.5 * y
    snps = rng.integers(0, 3, size=(n, n_snps)).astype(float)
    snps[:, 0] = np.clip(snps[:, 0] + y, 0, 2)
    return np.hstack([regions, snps]), y


def test_classical_models_fit_predict_and_stack_out_of_fold():
    X, y = _toy()
    models = classical_models(6, cv=3, Cs=4, random_state=0)
    assert list(models) == list(CLASSICAL_MODELS)
    for name, model in models.items():
        model.fit(X, y)
        pred = model.predict(X)
        assert pred.shape == (len(y),) and set(pred) <= {0, 1}
        assert model.predict_proba(X).shape == (len(y), 2)
        assert model.score(X, y) > 0.6, name
    regional, snps, stacked = models.values()
    # each block model sees only its own columns, C chosen by inner stratified CV on balanced accuracy
    assert regional[-1].coef_.shape == (1, 6) and snps[-1].coef_.shape == (1, 15)
    logistic = regional.named_steps["logistic"]
    assert isinstance(logistic, LogisticRegressionCV) and logistic.scoring is balanced_accuracy_scorer  # the same
    # float as scikit-learn's "balanced_accuracy" scorer (tests/test_linear.py)
    assert isinstance(logistic.cv, StratifiedKFold) and logistic.cv.n_splits == 3
    assert logistic.class_weight == "balanced" and len(logistic.Cs_) == 4
    # the stacked model's final logistic regression learns from out-of-fold probabilities
    assert isinstance(stacked, StackingClassifier) and stacked.stack_method == "predict_proba"
    assert isinstance(stacked.cv, StratifiedKFold) and stacked.cv.n_splits == 3 and not stacked.passthrough
    assert stacked.final_estimator_.coef_.shape == (1, 2)  # one probability per block model
    # the regional block carries most of the planted signal: the final model weights it more
    assert stacked.final_estimator_.coef_[0, 0] > stacked.final_estimator_.coef_[0, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_regions=0), "n_regions must be an integer >= 1"),
    (dict(n_regions=2.5), "n_regions must be an integer >= 1"),
    (dict(n_regions=3, cv=1), "cv must be an integer >= 2"),
    (dict(n_regions=3, Cs=0), "Cs must be an integer >= 1"),
    (dict(n_regions=3, class_weight="equal"), "class_weight must be 'balanced' or None"),
])
def test_classical_models_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classical_models(**kwargs)


def test_classical_config_is_checked():
    assert load_config()["confounds"]["models"][-3:] == list(CLASSICAL_MODELS)
    with pytest.raises(ConfigError, match="baselines.classical_cv must be at least 2"):
        load_config(overrides=["baselines.classical_cv=1"])
    with pytest.raises(ConfigError, match="baselines.classical_Cs must be at least 1"):
        load_config(overrides=["baselines.classical_Cs=0"])
    with pytest.raises(ConfigError, match="did you mean 'classical: SNPs -> logistic'"):
        load_config(overrides=['confounds.models=["classical: SNP -> logistic"]'])


def _table1(deep, classical, covariates=60.0):
    return pd.DataFrame([
        {"model": "Imaging CNN", "kind": "deep", "holdout_mean": deep},
        {"model": "Sparse Genetic NN", "kind": "deep", "holdout_mean": deep - 5},
        {"model": CLASSICAL_MODELS[0], "kind": "classical", "holdout_mean": classical},
        {"model": CLASSICAL_MODELS[2], "kind": "classical", "holdout_mean": classical - 1},
        {"model": "covariates: age", "kind": "covariates", "holdout_mean": covariates},
    ])


def test_best_sentence_without_predictions_claims_no_winner():
    """An older run folder (no per-participant predictions): fold means only, and no difference called real."""
    html = _best_note(_table1(deep=80.0, classical=86.5))
    assert "no intervals or paired tests and no difference can be called real" in html
    assert "best classical row on the holdout: classical: regional GM -&gt; logistic (86.50 % mean over folds)" in html
    assert "best deep row on the holdout: Imaging CNN (80.00 %" in html and "beats" not in html


# ---------------------------------------------------------------------------- in the run's output
def test_every_table1_output_carries_the_classical_rows(finished_run):  # noqa: F811
    _, _, out = finished_run
    csv = pd.read_csv(out / "tables" / "table1.csv").set_index("model")
    md = (out / "tables" / "table1.md").read_text()
    res = json.loads((out / "results.json").read_text())
    t1 = pd.DataFrame(res["tables"]["table1"]).set_index("model")
    per_fold = pd.DataFrame(res["tables"]["per_fold_scores"])
    html = (out / "report.html").read_text()
    table1_html = html[html.index("id='table1'"):html.index("id='table2'")]
    for name in CLASSICAL_MODELS:
        for table in (csv, t1):
            assert table.loc[name, "kind"] == "classical"
            assert table.loc[name, ["train_mean", "validation_mean", "holdout_mean"]].notna().all()
            assert pd.isna(table.loc[name, "paper_holdout"])  # not in the paper: no bracketed value
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert "[" not in row and row.count("±") == 3
        assert name.replace(">", "&gt;") in table1_html
        assert len(per_fold.query("model == @name")) == 6  # 2 folds x 3 splits
    assert (csv.loc[["Imaging CNN", TABLE1_CGNI], "kind"] == "deep").all()
    assert (csv.loc[csv.index.str.startswith("covariates: "), "kind"] == "covariates").all()
    # the sentence under Table 1 names the best deep and classical rows (on validation) and compares them
    # on the same participants, with an interval and a Holm-adjusted p
    for kind in ("deep", "classical"):
        best = csv.loc[csv["kind"] == kind, "validation_ba"].idxmax()
        assert f"Best {kind} row on validation: {best}".replace(">", "&gt;") in table1_html
        low, ba, high = csv.loc[best, ["validation_ci_low", "validation_ba", "validation_ci_high"]]
        assert low <= ba <= high
    assert "95 % CI [" in table1_html and "Holm-adjusted within each split" in table1_html
    assert ("no detectable difference (" in table1_html) or ("points better (" in table1_html) \
        or ("points worse (" in table1_html)
    assert "Schulz et al. 2020" in table1_html


def test_classical_rows_reproduce_from_saved_features_and_the_deep_rows_folds(finished_run):  # noqa: F811
    from sklearn_cgni.imaging import RegionalMeans
    from sklearn_cgni.io import load_atlas

    cohort, _, out = finished_run
    stages = out / "stages"
    cfg = json.loads((out / "run.json").read_text())["config"]
    parts = pd.read_csv(stages / "data" / "participants.csv", dtype={"participant_id": str}).set_index("participant_id")
    wm = (parts["wm_group"].notna() & parts["image_qc_passed"]).to_numpy()
    y = parts.loc[wm, "wm_group"].astype(int).to_numpy()
    G = np.load(stages / "data" / "genotypes_qc.npy")[wm]
    # the regions stage holds every participant with a QC-passed image, the WM ones among them
    R_all = np.load(stages / "regions" / "regional_means.npy")
    ids = pd.read_csv(stages / "regions" / "participants.csv", dtype={"participant_id": str})["participant_id"]
    assert list(ids) == list(parts.index[parts["image_qc_passed"].to_numpy()])
    R = R_all[pd.Index(ids).get_indexer(parts.index[wm])]
    regions = pd.read_csv(stages / "regions" / "regions.csv")
    assert R.shape == (len(y), len(regions)) and len(regions) > 10 and len(R_all) > len(R)
    # the saved means are the atlas's regional means of each WM participant's image
    atlas = load_atlas(cohort / "atlas.nii.gz", cohort / "atlas_labels.csv")
    first = RegionalMeans(atlas).fit_transform(parts.loc[wm, "image"].iloc[:3].tolist())
    np.testing.assert_allclose(R[:3], first)

    split = json.loads((stages / "data" / "splits.json").read_text())
    hold = np.asarray(split["holdout"])
    X = np.hstack([R, G])
    b = cfg["baselines"]
    class_weight = None if cfg["protocol"]["class_weight"] == "none" else "balanced"
    for k, (tr, va) in enumerate(split["folds"]):
        recorded = pd.DataFrame(json.loads((stages / f"models_f{k}" / "_done.json").read_text())["result"]["records"])
        models = classical_models(R.shape[1], cv=b["classical_cv"], Cs=b["classical_Cs"], class_weight=class_weight,
                                  random_state=cfg["run"]["seed"])
        for name, model in models.items():
            model.fit(X[tr], y[tr])
            for s, idx in (("train", tr), ("validation", va), ("holdout", hold)):
                rec = recorded.query("model == @name and split == @s")["balanced_accuracy"]
                assert rec.tolist() == [balanced_accuracy_score(y[idx], model.predict(X[idx]))], (k, name, s)
    # the same (fold, split) cells as the deep rows
    per_fold = pd.read_csv(out / "tables" / "per_fold_scores.csv")
    def keys(model):
        return sorted(map(tuple, per_fold.query("model == @model")[["fold", "split"]].to_numpy().tolist()))

    for name in CLASSICAL_MODELS:
        assert keys(name) == keys("Imaging CNN") and len(keys(name)) == 3 * len(split["folds"])
    # the confound table's raw scores of the regional row are Table 1's validation scores (same fold models)
    scores = pd.read_csv(out / "tables" / "confound_scores.csv")
    raw = scores.query("model == @CLASSICAL_MODELS[0] and evaluation == 'raw'").set_index("fold")["score"]
    validation = per_fold.query("model == @CLASSICAL_MODELS[0] and split == 'validation'").set_index("fold")
    np.testing.assert_allclose(raw.sort_index(), validation["balanced_accuracy"].sort_index(), rtol=1e-12)


def test_classical_models_in_the_confound_evaluation():
    """All three rows go through evaluate_confounds, adjusted variants included (as in `sklearn-cgni run`)."""
    from sklearn_cgni.evaluation import evaluate_confounds

    X, y = _toy(n=150)
    rng = np.random.default_rng(1)
    covs = pd.DataFrame({"age": 50 + 5 * rng.standard_normal(150) - 4 * y, "sex": rng.integers(0, 2, 150)})
    X = pd.DataFrame(X, columns=[f"GM: r{j}" for j in range(6)] + [f"rs{j}" for j in range(15)])
    res = evaluate_confounds(classical_models(6, cv=3, Cs=5), X, y, covs, cv=3, match=False, n_permutations=20,
                             random_state=0)
    summary = res.summary.set_index("model").loc[list(CLASSICAL_MODELS)]
    assert summary[["raw_mean", "adjusted_mean", "gain_mean"]].notna().all().all()
    # the planted effects are not age: they survive the adjustment (measured 0.75 / 0.63 / 0.75 raw)
    assert (summary["raw_mean"] > 0.6).all() and (summary["adjusted_mean"] > 0.6).all()


def test_stages_reading_the_regional_means_follow_the_regions_stage(finished_run, tmp_path):  # noqa: F811
    import shutil

    from sklearn_cgni.cli import main
    from test_cli import _base_args

    cohort, cfg, out = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "stages" / "regions" / "_done.json").unlink()  # as if interrupted
    assert main(_base_args(cohort, cfg, copy)) == 0
    status = json.loads((copy / "run.json").read_text())["stage_status"]
    assert status["regions"] == status["brain_age_classical"] == "computed"
    assert status["models_f0"] == status["models_f1"] == status["confounds"] == status["scores"] == "computed"
    assert status["brain_age"] == status["finetune_f0"] == status["finetune_f1"] == "reused"
