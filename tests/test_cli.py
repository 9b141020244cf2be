"""The ``sklearn-cgni`` command: config checks, bad inputs, output-folder safety and resume.

One tiny run (80 participants, 60 SNPs, 24x28x24 images, 1-2 epochs) is shared by the tests
here and in test_report.py (session fixture ``finished_run``); tests that change a run work
on a copy of its output folder.
"""

import io
import json
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.cli import ConfigError, load_config, main
from sklearn_cgni.cli._config import diff_configs, parse_override

from _tiny_config import TINY_CONFIG  # tests/ is on sys.path

_CACHE = {}


def _run(args, capsys=None):
    code = main(args)
    return code


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    if "cohort" not in _CACHE:
        from sklearn_cgni.datasets import make_cohort

        root = tmp_path_factory.mktemp("cli")
        make_cohort(80, 60, shape=(24, 28, 24), output_dir=root / "cohort", random_state=0, n_jobs=1)
        (root / "tiny.toml").write_text(TINY_CONFIG)
        _CACHE["cohort"] = (root / "cohort", root / "tiny.toml")
    return _CACHE["cohort"]


@pytest.fixture(scope="session")
def finished_run(tiny_cohort, tmp_path_factory):
    """A complete run of the tiny cohort: (cohort folder, config file, output folder)."""
    if "run" not in _CACHE:
        cohort, cfg = tiny_cohort
        out = tmp_path_factory.mktemp("run") / "out"
        code = main(["run", "--cohort", str(cohort), "--config", str(cfg), "--preset", "cpu", "-o", str(out),
                     "--no-progress", "--device", "cpu"])
        assert code == 0
        _CACHE["run"] = (cohort, cfg, out)
    return _CACHE["run"]


def _copy(out, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def _base_args(cohort, cfg, out):
    return ["run", "--cohort", str(cohort), "--config", str(cfg), "--preset", "cpu", "-o", str(out),
            "--no-progress", "--device", "cpu"]


# ---------------------------------------------------------------------------- config
def test_help_explains_inputs_config_and_output(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--cohort", "--images", "--genotypes", "--phenotypes", "--config", "--set", "report.html",
                   "results.json", "resumes", "--force", "digit_span"):
        assert needle in text, needle


def test_unknown_config_key_names_the_nearest(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[contrastive]\nlamda_vg = 0.5\n")
    assert main(["run", "--config", str(bad), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "lamda_vg" in err and "did you mean 'contrastive.lambda_vg'" in err
    with pytest.raises(ConfigError, match="did you mean 'occlusion.snp_threshold'"):
        load_config(overrides=["occlusoin.snp_threshold=2"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(overrides=["run.seed=abc"])
    with pytest.raises(ConfigError, match="integer"):
        load_config(overrides=["stage1.channels=[4.5, 8]"])


def test_encoder_early_stopping_and_confound_models_from_the_config():
    from sklearn_cgni.cli._protocol import TABLE1_CGNI, paper_models

    from sklearn_cgni.cli._config import estimator_params

    cfg = load_config(preset="cpu", overrides=["contrastive.n_iter_no_change=3"])
    c = estimator_params(cfg, "contrastive", "ContrastiveSNPEncoder")  # the section's encoder parameters
    model = paper_models(8, contrastive=c, classifier=estimator_params(cfg, "classifier", "CGNIClassifier"))
    enc, clf = model[("Table 1", TABLE1_CGNI)].named_steps.values()
    # outside the paper preset, stages 2 and 3 stop early on held-out participants
    assert enc.early_stopping is True and enc.n_iter_no_change == 3 and enc.validation_fraction == 0.2
    assert enc.scoring == "matching" and clf.early_stopping is True and clf.validation_fraction == 0.2
    paper = load_config()
    assert paper["contrastive"]["early_stopping"] is False  # the paper's fixed epochs by default
    assert paper["classifier"]["early_stopping"] is False and paper["baselines"]["early_stopping"] is False
    assert "Imaging CNN" in load_config()["confounds"]["models"]
    with pytest.raises(ConfigError, match="unknown model 'Imaging CN'; did you mean 'Imaging CNN'"):
        load_config(overrides=['confounds.models=["Imaging CN"]'])


def test_tiny_preset_matches_the_test_config():
    """preset_tiny.toml (CI smoke test) and this file's config describe the same run."""
    import tomllib

    tiny = load_config(preset="tiny")
    ours = load_config(overrides=[tomllib.loads(TINY_CONFIG)])
    assert {d.split(".")[0] for d in diff_configs(ours, tiny)} == {"cohort"}  # run.threads is not compared


def test_keys_of_one_stage_are_in_its_fingerprint_only():
    """data.pgs is fingerprinted by the pgs stage alone: changing it leaves the data stage's slice unchanged."""
    from sklearn_cgni.cli._config import EXECUTION_KEYS, OWN_STAGE_KEYS, config_slice
    from sklearn_cgni.cli.stages import REGISTRY

    a, b = load_config(preset="cpu"), load_config(preset="cpu", overrides=['data.pgs=["simulated"]'])
    exclude = EXECUTION_KEYS | OWN_STAGE_KEYS
    for name in ("data", "models", "confounds", "scores"):
        sections = REGISTRY[name].config
        assert "data" in sections and config_slice(a, *sections, exclude=exclude) == config_slice(b, *sections,
                                                                                                  exclude=exclude)
    pgs = REGISTRY["pgs"].config
    assert config_slice(b, *pgs, exclude=exclude) == {"data": {"pgs": ["simulated"], "pgs_keep_ambiguous": False,
                                                               "pgs_min_coverage": 0.75, "sample": ""}}
    assert config_slice(a, *pgs, exclude=exclude) != config_slice(b, *pgs, exclude=exclude)
    assert {"pgs", "finetune"} <= set(REGISTRY["models"].after) and "pgs" in REGISTRY["confounds"].after


def test_config_layers_and_flags(capsys):
    cfg = load_config(preset="cpu", overrides=["contrastive.max_epochs=3", {"run": {"seed": 7}}])
    assert cfg["contrastive"]["max_epochs"] == 3 and cfg["run"]["seed"] == 7
    assert cfg["stage1"]["global_pool"] == "none" and cfg["stage1"]["pool_blocks"] == "auto"  # from the cpu preset
    paper = load_config(preset="paper")
    assert paper["stage1"]["channels"] == [32, 64, 128, 256, 256] and paper["contrastive"]["lambda_vg"] == 0.7
    assert parse_override("scca.alpha_x=[0.1, 0.2]") == {"scca": {"alpha_x": [0.1, 0.2]}}
    assert diff_configs(paper, cfg)  # differences are listed
    assert main(["run", "--preset", "paper", "--seed", "3", "--print-config"]) == 0
    assert "seed = 3" in capsys.readouterr().out


# ---------------------------------------------------------------------------- bad inputs
def test_folder_with_no_images(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "notes.txt").write_text("no images here")
    (tmp_path / "g.csv").write_text("participant_id,rs1\na,0\n")
    (tmp_path / "p.csv").write_text("participant_id,digit_span,age,sex\na,3,50,1\n")
    code = main(["run", "--images", str(tmp_path / "imgs"), "--genotypes", str(tmp_path / "g.csv"),
                 "--phenotypes", str(tmp_path / "p.csv"), "-o", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "No NIfTI images" in err and "imgs" in err
    assert not (tmp_path / "out").exists()


def test_incomplete_inputs(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    assert main(["run", "--images", str(tmp_path / "imgs"), "-o", str(tmp_path / "out")]) == 2
    assert "Missing --genotypes, --phenotypes" in capsys.readouterr().err
    assert main(["run", "--cohort", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_non_empty_foreign_folder_is_refused(tiny_cohort, tmp_path, capsys):
    cohort, cfg = tiny_cohort
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(_base_args(cohort, cfg, out)) == 2
    assert "not an sklearn-cgni output folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


# ---------------------------------------------------------------------------- the run
def test_run_writes_the_output_folder(finished_run):
    _, _, out = finished_run
    for name in ("report.html", "results.json", "run.json", "config.toml", "run.log"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["stage_status"].values()) == {"computed"}
    # the genotype-score CNN reads the brain-age CNN's input scale (stage1.standardize_voxels): its
    # transferred blocks were once fed z-scored voxels they never saw, which missed strong signals
    assert "transferred block(s) were trained on" not in (out / "run.log").read_text()
    expected = {"data", "regions", "brain_age", "finetune_f0", "finetune_f1", "models_f0", "models_f1",
                "training_curves", "scca",
                "occlusion", "genes", "scores", "confounds", "recovery"}
    assert expected <= set(meta["stage_status"])
    for stage in expected:
        assert (out / "stages" / stage / "_done.json").is_file()
    assert meta["device"] == "cpu" and meta["versions"]["torch"]


def test_stage1_training_is_selected_on_validation_and_drawn(finished_run):
    _, _, out = finished_run
    cfg = tomllib.loads((out / "config.toml").read_text())["stage1"]
    train = pd.read_csv(out / "tables" / "stage1_training.csv")
    assert list(train["model"]) == ["brain-age CNN", "WM CNN fold 0", "WM CNN fold 1"]
    assert (train["best_epoch"] <= train["epochs_run"]).all() and (train["epochs_run"] <= train["budget"]).all()
    assert list(train["budget"]) == [cfg["pretrain_max_epochs"]] + [cfg["finetune_max_epochs"]] * 2
    for k in range(2):  # the epoch kept is the best validation loss of that fold's CNN
        r = json.loads((out / "stages" / f"finetune_f{k}" / "_done.json").read_text())["result"]
        losses = [h["valid_loss"] for h in r["history"]]
        assert r["best_epoch"] == int(np.argmin(losses)) + 1 and len(losses) == r["epochs_run"]
    ba = json.loads((out / "stages" / "brain_age" / "_done.json").read_text())["result"]
    assert ba["best_epoch"] == int(np.argmin([h["valid_mae"] for h in ba["history"]])) + 1
    results = json.loads((out / "results.json").read_text())
    assert any(f["file"].endswith("training_curves.png") for f in results["figures"])
    assert (out / "figures" / "training_curves.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "Training of the stage-1 CNNs" in html and "Stage-1 training curves" in html


def test_brain_age_mae_carries_its_interval(finished_run):
    """The holdout MAE with a bootstrap interval over its participants, and the paired gain over the mean."""
    _, _, out = finished_run
    ba = json.loads((out / "stages" / "brain_age" / "_done.json").read_text())["result"]
    assert ba["mae_ci_low"] < ba["mae_holdout"] < ba["mae_ci_high"]
    assert ba["mae_gain_over_mean"] == pytest.approx(ba["mae_of_mean_predictor"] - ba["mae_holdout"])
    assert ba["mae_gain_ci_low"] < ba["mae_gain_over_mean"] < ba["mae_gain_ci_high"] and 0 < ba["mae_gain_pvalue"] <= 1
    table = pd.read_csv(out / "tables" / "brain_age.csv")
    assert table.loc[0, "mae_ci_low"] == pytest.approx(ba["mae_ci_low"])
    html = (out / "report.html").read_text()
    assert f"{ba['n_test']} holdout participants: {ba['mae_ci_low']:.2f} to {ba['mae_ci_high']:.2f} years" in html


def test_brain_age_shows_the_classical_row(finished_run):
    """Regional means -> ridge on the brain-age CNN's own training and holdout participants, refitted here
    from the regions stage's output; the CNN's gain over it is paired over the same participants."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    _, _, out = finished_run
    ba = {**json.loads((out / "stages" / "brain_age" / "_done.json").read_text())["result"],
          **json.loads((out / "stages" / "brain_age_classical" / "_done.json").read_text())["result"]}
    cnn = pd.read_csv(out / "stages" / "brain_age" / "holdout_predictions.csv", dtype={"participant_id": str})
    assert np.mean(np.abs(cnn["predicted_age"] - cnn["age"])) == pytest.approx(ba["mae_holdout"])
    parts = pd.read_csv(out / "stages" / "data" / "participants.csv", dtype={"participant_id": str}).set_index(
        "participant_id")
    ids = pd.read_csv(out / "stages" / "regions" / "participants.csv", dtype={"participant_id": str})["participant_id"]
    R = pd.DataFrame(np.load(out / "stages" / "regions" / "regional_means.npy"), index=ids)
    ok = parts["image_qc_passed"].astype(bool) & parts["age"].notna()
    fit, test = parts.index[ok & (parts["split"] != "holdout")], parts.index[ok & (parts["split"] == "holdout")]
    assert len(fit) == ba["n_fit"] and len(test) == ba["n_test"] and list(test) == cnn["participant_id"].tolist()
    scaler = StandardScaler().fit(R.loc[fit])
    ridge = RidgeCV(alphas=np.logspace(-3, 5, 33)).fit(scaler.transform(R.loc[fit]), parts.loc[fit, "age"])
    err = np.abs(ridge.predict(scaler.transform(R.loc[test])) - parts.loc[test, "age"].to_numpy())
    assert ba["ridge_alpha"] == pytest.approx(ridge.alpha_)
    assert ba["ridge_mae_holdout"] == pytest.approx(err.mean())
    assert ba["mae_gain_over_ridge"] == pytest.approx(ba["ridge_mae_holdout"] - ba["mae_holdout"])
    assert ba["mae_gain_over_ridge_ci_low"] <= ba["mae_gain_over_ridge"] <= ba["mae_gain_over_ridge_ci_high"]
    assert 0 < ba["mae_gain_over_ridge_pvalue"] <= 1
    table = pd.read_csv(out / "tables" / "brain_age.csv")
    assert table.loc[0, "ridge_mae_holdout"] == pytest.approx(ba["ridge_mae_holdout"])
    assert f"ridge (ridge_mae_holdout): {ba['ridge_mae_holdout']:.2f} years" in (out / "report.html").read_text()


def test_confound_table_covers_every_configured_model(finished_run):
    import nibabel as nib
    import pandas as pd

    _, _, out = finished_run
    summary = pd.read_csv(out / "tables" / "confounds.csv").set_index("model")
    models = ["Imaging CNN", "Brain-age CNN features", "Sparse Genetic NN", "classical: regional GM -> logistic"]
    assert list(summary.index) == models + ["covariates: age", "covariates: sex", "covariates: age + sex"]
    cols = ["raw_mean", "adjusted_mean", "matched_mean", "baseline_raw_mean", "gain_mean", "gain_p"]
    assert summary.loc[models, cols].notna().all().all()
    assert (summary.loc[models, "baseline"] == "covariates: age + sex").all()
    # the imaging CNN's raw scores are those of Table 1's fold models on the same validation folds
    scores = pd.read_csv(out / "tables" / "confound_scores.csv")
    cnn_raw = scores.query("model == 'Imaging CNN' and evaluation == 'raw'").set_index("fold")["score"]
    per_fold = pd.read_csv(out / "tables" / "per_fold_scores.csv")
    table1 = per_fold.query("model == 'Imaging CNN' and split == 'validation'").set_index("fold")["balanced_accuracy"]
    pd.testing.assert_series_equal(cnn_raw.sort_index(), table1.sort_index(), check_names=False)
    # Table 1's covariate-only rows are the confound table's baselines: same folds, same model, same scores
    base = scores.query("model == 'covariates: age + sex' and evaluation == 'raw'").set_index("fold")["score"]
    t1_base = per_fold.query("model == 'covariates: age + sex' and split == 'validation'").set_index("fold")
    np.testing.assert_allclose(base.sort_index(), t1_base["balanced_accuracy"].sort_index())
    # every model is scored on the same folds as the covariate-only baseline
    folds = scores.query("evaluation == 'raw'").groupby("model")["fold"].apply(lambda f: sorted(f))
    assert all(f == [0, 1] for f in folds)
    # what the voxel-wise adjustment removed, on the input grid
    age_map = nib.load(out / "stages" / "confounds" / "covariate_effect_age.nii.gz")
    assert age_map.shape == (24, 28, 24) and np.isfinite(age_map.get_fdata()).all()
    assert not list((out / "stages").glob("*/residuals_f*"))  # the adjusted folds' scratch images are gone
    # each fold's adjusted CNN is its own stage; the table's adjusted scores are theirs
    adjusted = scores.query("model == 'Imaging CNN' and evaluation == 'adjusted'").set_index("fold")["score"]
    for k in (0, 1):
        done = json.loads((out / "stages" / f"adjusted_cnn_f{k}" / "_done.json").read_text())
        assert adjusted[k] == pytest.approx(done["result"]["score"])
        # and how its CNN trained: epochs run and kept, within the tiny preset's 2-epoch budget
        assert 1 <= done["result"]["best_epoch"] <= done["result"]["epochs_run"] == done["result"]["budget"] == 2
        assert len(done["result"]["history"]) == 2
    # held-out predictions of every model (the CNN's from Table 1's fold models) and the
    # incremental test computed from them; covariate-only models add nothing to themselves
    preds = pd.read_csv(out / "tables" / "confound_predictions.csv")
    assert set(preds["model"]) == set(summary.index)
    cnn_pred = preds.query("model == 'Imaging CNN'")
    assert cnn_pred["participant"].is_unique and len(cnn_pred) == scores.query(
        "model == 'Imaging CNN' and evaluation == 'raw'")["n_test"].sum()
    assert summary.loc[models, ["incremental_z", "incremental_p"]].notna().all().all()
    assert (summary.loc[[m for m in summary.index if m.startswith("covariates")], "incremental_z"] == 0).all()
    html = (out / "report.html").read_text()
    assert "Imaging CNN" in html and "every voxel" in html and "likelihood-ratio test" in html
    # the adjusted CNNs' training, from their stages
    assert "adjusted images: fold 0 2 epochs, best " in html and "of a 2-epoch budget; fold 1 2 epochs" in html
    # the adjusted score of a non-linear model carries a caveat; the linear h_v model's does not
    caveat = "can still read the covariates from linearly adjusted features"
    sentences = {m: next(t for t in html.split("<li><b>") if t.startswith(m.replace(">", "&gt;") + "</b>: "))
                 for m in models}
    # each gain and likelihood-ratio p is Holm-adjusted over the models
    assert all(s.count("Holm-adjusted") == 2 for s in sentences.values())
    assert f"the p-values of the {len(models)} models are Holm-adjusted within each test" in html
    assert caveat in sentences["Sparse Genetic NN"] and caveat in sentences["Imaging CNN"]
    assert caveat not in sentences["Brain-age CNN features"]
    assert caveat not in sentences["classical: regional GM -> logistic"]


def test_rerun_resumes_without_recomputing(finished_run, tmp_path):
    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    weights = out / "stages" / "brain_age" / "brain_age.pt"
    before = weights.stat().st_mtime_ns
    assert main(_base_args(cohort, cfg, out)) == 0
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["stage_status"].values()) == {"reused"}
    assert weights.stat().st_mtime_ns == before


def test_interrupted_stage_is_recomputed(finished_run, tmp_path):
    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    # an interruption leaves a stage folder without its _done.json
    (out / "stages" / "occlusion" / "_done.json").unlink()
    assert main(_base_args(cohort, cfg, out)) == 0
    status = json.loads((out / "run.json").read_text())["stage_status"]
    # occlusion is recomputed, and genes and recovery, which read its outputs, follow
    assert status["occlusion"] == "computed" and status["genes"] == "computed" and status["recovery"] == "computed"
    # the brain-genotype scores do not read occlusion (their SNPs come from a regional screen)
    assert status["brain_age"] == "reused" and status["scores"] == "reused"


def test_other_config_is_refused_then_forced(finished_run, tmp_path, capsys):
    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    results = out / "results.json"
    before = results.read_bytes()
    args = _base_args(cohort, cfg, out) + ["--set", "occlusion.region_threshold=2.0", "--set", "scores.enabled=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "occlusion.region_threshold: 2.5 -> 2.0" in err and "--force" in err
    assert results.read_bytes() == before  # nothing overwritten
    assert main(args + ["--force"]) == 0
    status = json.loads((out / "run.json").read_text())["stage_status"]
    assert status["occlusion"] == "computed" and status["genes"] == "computed"
    assert status["brain_age"] == "reused" and status["models_f1"] == "reused" and "scores" not in status


def test_report_command_rebuilds(finished_run, tmp_path, capsys):
    _, _, out = finished_run
    out = _copy(out, tmp_path)
    (out / "report.html").unlink()
    shutil.rmtree(out / "tables")
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "tables" / "table1.csv").is_file()
    assert main(["report", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_simulate_command(tmp_path, capsys):
    dst = tmp_path / "sim"
    assert main(["simulate", str(dst), "--n-participants", "30", "--n-snps", "40", "--shape", "12", "14", "12"]) == 0
    assert (dst / "ground_truth.json").is_file() and len(list((dst / "images").iterdir())) == 30
    assert "sklearn-cgni run --cohort" in capsys.readouterr().out
    assert main(["simulate", str(dst), "--n-participants", "30"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_simulate_effect_pattern(tmp_path):
    dst = tmp_path / "focal"
    assert main(["simulate", str(dst), "--n-participants", "20", "--n-snps", "30", "--shape", "24", "28", "24",
                 "--effect-pattern", "focal"]) == 0
    gt = json.loads((dst / "ground_truth.json").read_text())
    assert gt["effect_pattern"] == "focal" and gt["focal_effects"] and not gt["snp_region_effects"]
    with pytest.raises(SystemExit):
        main(["simulate", str(tmp_path / "x"), "--effect-pattern", "blob"])


def test_cohort_effect_pattern_is_checked():
    with pytest.raises(ConfigError, match="cohort.effect_pattern"):
        load_config(preset="tiny", overrides=["cohort.effect_pattern=blob"])


def test_module_entry_point_runs():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "sklearn_cgni.cli", "--help"], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parent, timeout=120)
    assert res.returncode == 0 and "sklearn-cgni run" in res.stdout


def test_explicit_files_csv_of_paths_and_plink_prefix(tiny_cohort, tmp_path):
    """--images CSV, --genotypes PLINK prefix, --phenotypes: a participant missing from the
    phenotypes is dropped and reported, the others are aligned (data stage only)."""
    import pandas as pd

    from sklearn_cgni.cli import load_config, resolve_inputs, run_pipeline

    cohort, cfg = tiny_cohort
    images = sorted((cohort / "images").glob("*.nii.gz"))
    ids = [p.name[: -len(".nii.gz")] for p in images]
    pd.DataFrame({"participant_id": ids, "image": [str(p) for p in images]}).to_csv(tmp_path / "images.csv",
                                                                                   index=False)
    pheno = pd.read_csv(cohort / "phenotypes.csv")
    pheno[pheno.participant_id != ids[0]].to_csv(tmp_path / "pheno.csv", index=False)
    inputs = resolve_inputs(images=str(tmp_path / "images.csv"), genotypes=str(cohort / "genotypes"),
                            phenotypes=str(tmp_path / "pheno.csv"))
    assert inputs.genotypes.endswith("genotypes.bed") and not inputs.embedded
    config = load_config(cfg, preset="cpu", overrides=["run.device=cpu"])
    run_pipeline(tmp_path / "out", config, inputs, progress=False, only="data")
    result = json.loads((tmp_path / "out" / "stages" / "data" / "_done.json").read_text())["result"]
    assert result["n_aligned"] == 79 and result["n_dropped_by_alignment"] == 1
    assert result["dropped_by_alignment"][0]["participant_id"] == ids[0]
    assert result["n_low"] > 0 and result["n_high"] > 0 and result["n_folds"] == 2
    log = (tmp_path / "out" / "run.log").read_text()
    assert ids[0] in log  # the dropped participant is named in the log


def test_data_stage_filters_the_genotypes_by_block_as_one_filter_on_the_whole_matrix(tiny_cohort, tmp_path):
    """``data.genotype_block_mb`` small enough for a few SNPs per block: the same files, bit for bit,
    as one block, and as one SNPQualityFilter fitted on the training rows of the whole matrix; one
    warning for all the blocks; nothing left behind."""
    import warnings

    from sklearn_cgni.cli import load_config, resolve_inputs, run_pipeline
    from sklearn_cgni.genetics import SNPQualityFilter
    from sklearn_cgni.io import read_genotypes

    cohort, cfg = tiny_cohort
    folders = {}
    for name, mb in (("blocked", 0.002), ("whole", 64.0)):  # 0.002 MB: 6 SNPs of the 80 participants a block
        config = load_config(cfg, preset="cpu", overrides=["run.device=cpu", f"data.genotype_block_mb={mb}",
                                                           "qc.min_maf=0.2"])  # some SNPs removed in most blocks
        run_pipeline(tmp_path / name, config, resolve_inputs(cohort=str(cohort)), progress=False, only="data")
        folders[name] = tmp_path / name / "stages" / "data"
    blocked, whole = folders["blocked"], folders["whole"]
    for name in ("genotypes_qc.npy", "genotypes_raw.npy", "snps.csv", "snp_qc.csv", "participants.csv"):
        assert (blocked / name).read_bytes() == (whole / name).read_bytes(), name
    assert sorted(p.name for p in blocked.glob("*.tmp.npy")) == []
    parts = pd.read_csv(whole / "participants.csv", dtype={"participant_id": str}, index_col=0)
    geno = read_genotypes(cohort / "genotypes.bed").loc[parts.index]
    info = pd.read_csv(cohort / "snp_info.csv", dtype={"snp": str}).set_index("snp")["info_r2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qc = SNPQualityFilter(info_r2=info, min_maf=0.2).fit(geno[(parts["split"] == "train").to_numpy()])
    removed = [str(w.message) for w in caught if "SNPQualityFilter removed" in str(w.message)]
    np.testing.assert_array_equal(np.load(blocked / "genotypes_qc.npy"), qc.transform(geno))
    raw = np.load(blocked / "genotypes_raw.npy")
    np.testing.assert_array_equal(raw, geno.loc[:, qc.get_support()].to_numpy())
    assert pd.read_csv(blocked / "snps.csv")["snp"].tolist() == list(geno.columns[qc.get_support()])
    assert 0 < (~qc.get_support()).sum() < geno.shape[1]
    log = (tmp_path / "blocked" / "run.log").read_text()
    assert len(removed) == 1 and log.count("SNPQualityFilter removed") == 1  # one verdict for all the blocks
    assert removed[0] in log
    result = json.loads((blocked / "_done.json").read_text())["result"]
    assert result["missing_calls_imputed"] == int(np.isnan(raw).sum())


def test_keyboard_interrupt_then_resume(finished_run, tmp_path, monkeypatch, capsys):
    import dataclasses

    from sklearn_cgni.cli.stages import REGISTRY

    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    (out / "stages" / "genes" / "_done.json").unlink()

    def interrupted(run, folder):
        (folder / "partial.csv").write_text("half-written")
        raise KeyboardInterrupt

    original = REGISTRY["genes"]
    monkeypatch.setitem(REGISTRY, "genes", dataclasses.replace(original, func=interrupted))
    assert main(_base_args(cohort, cfg, out)) == 130
    assert "Run the same command again to resume" in capsys.readouterr().err
    assert not (out / "stages" / "genes" / "_done.json").exists()
    monkeypatch.setitem(REGISTRY, "genes", original)
    assert main(_base_args(cohort, cfg, out)) == 0
    status = json.loads((out / "run.json").read_text())["stage_status"]
    assert status["genes"] == "computed" and status["occlusion"] == "reused"
    assert not (out / "stages" / "genes" / "partial.csv").exists()  # the half-written stage was cleared


# ---------------------------------------------------------------------------- brain-genotype scores
def test_scores_stage_chooses_snps_by_a_screen_and_says_who_wins(finished_run):
    _, _, out = finished_run
    done = json.loads((out / "stages" / "scores" / "_done.json").read_text())
    res = done.get("result", done)
    assert res["source_of_snps"] == "screen"
    assert all(1 <= len(f) <= 2 for f in res["snps_per_fold"])  # max_snps = 2 per fold
    assert set(res["snps"]) == set().union(*res["snps_per_fold"])
    assert all(e["best_epoch"] <= e["epochs_run"] for e in res["epochs"])
    report = (out / "report.html").read_text()
    assert "Which scorer wins and by how much" in report and "training participants" in report


def test_score_snp_screen_never_sees_the_scored_participants(tiny_cohort):
    from types import SimpleNamespace

    from sklearn.model_selection import KFold

    from sklearn_cgni.cli.stages.scores import _score_snp_choice
    from sklearn_cgni.imaging import RegionalMeans, screen_snps
    from sklearn_cgni.io import read_genotypes

    cohort, _ = tiny_cohort
    G = read_genotypes(cohort / "genotypes.csv")
    images = pd.Series([str(cohort / "images" / f"{pid}.nii.gz") for pid in G.index], index=G.index)
    R = RegionalMeans().fit_transform(images.tolist())
    run = SimpleNamespace(cfg={"scores": {"snps": [], "max_snps": 3}},
                          regions=lambda ids: (R[images.index.get_indexer(ids)], None))
    folds = list(KFold(2, shuffle=True, random_state=0).split(G))
    G_all, select, source = _score_snp_choice(run, G, images, folds)
    assert source == "screen" and G_all is G
    first = [select(tr) for tr, _ in folds]
    assert all(len(c) == 3 for c in first) and first[0] != first[1]
    # scrambling the genotypes of fold 0's test participants does not change fold 0's choice
    (train, test) = folds[0]
    G2 = G.copy()
    G2.iloc[test] = G.iloc[test].to_numpy()[np.random.default_rng(0).permutation(len(test))]
    _, select2, _ = _score_snp_choice(run, G2, images, folds)
    assert select2(train) == first[0]
    # the screen ranks by max |r| over regions: a SNP copied from a region's values comes first
    R = np.random.default_rng(1).normal(size=(40, 5))
    Gs = np.random.default_rng(2).integers(0, 3, size=(40, 4)).astype(float)
    Gs[:, 2] = np.digitize(R[:, 3], [-0.5, 0.5])
    Gs[:5, 2] = np.nan
    Gs[:, 0] = 1.0  # constant: never chosen
    Gs = pd.DataFrame(Gs, columns=["a", "b", "c", "d"])
    assert screen_snps(R, Gs, 2)[0] == "c"
    assert "a" not in screen_snps(R, Gs, 4)
    assert screen_snps(R, Gs.to_numpy(), 1) == [2]  # positions for an array
    run_user = SimpleNamespace(cfg={"scores": {"snps": [G.columns[1]], "max_snps": 3}})
    Gu, sel_u, src_u = _score_snp_choice(run_user, G, images, folds)
    assert list(Gu.columns) == [G.columns[1]] and sel_u is None and src_u == "config"


# ---------------------------------------------------------------------------- stage registry
def test_a_stage_reading_an_undeclared_upstream_output_fails(finished_run, tmp_path, monkeypatch, capsys):
    """The plan comes from the registry; a stage may read only the stages it names in ``after``."""
    from sklearn_cgni.cli import Inputs
    from sklearn_cgni.cli.stages import REGISTRY, Run, Stage, UndeclaredStageError, build_plan

    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    run = Run(out, load_config(cfg, preset="cpu"), Inputs(), progress=False, device="cpu")
    plan = {p.name: p for p in build_plan(run)}
    assert plan["models_f1"].after == ("data", "regions", "image_cache", "finetune_f1")
    assert plan["training_curves"].after == ("brain_age", "finetune_f0", "finetune_f1")
    assert "simulate" not in plan and "recovery" not in plan  # not enabled: no embedded cohort, no ground truth
    with run.running(plan["scca"]):
        assert run.splits()[0].size and run.path("models_f0").is_dir()
        with pytest.raises(UndeclaredStageError, match="'scca' reads the outputs of stage 'regions'"):
            run.regions()  # upstream of models_f0, but not declared by scca: direct reads only
    with pytest.raises(UndeclaredStageError, match="outside a running stage"):
        run.data()

    def reads_regions(run, folder):
        run.regions()

    monkeypatch.setitem(REGISTRY, "sloppy", Stage("sloppy", reads_regions, after=("data",)))
    assert main(_base_args(cohort, cfg, out)) == 1  # one line, no traceback: it is in run.log
    err = capsys.readouterr().err
    assert "error in stage 'sloppy': UndeclaredStageError: stage 'sloppy' reads the outputs of stage 'regions'" in err
    assert "Traceback" not in err and "Traceback" in (out / "run.log").read_text()
    assert not (out / "stages" / "sloppy" / "_done.json").exists()


def test_a_cnn_with_the_runs_epoch_bar_pickles_after_fit():
    """The run's CNNs carry its per-epoch progress bar; a fitted one pickles (joblib, as users cache models).
    The bar's class was local to a function, so ``joblib.dump`` failed after training."""
    import joblib

    from sklearn_cgni.imaging import BrainAgeCNNTransformer
    from sklearn_cgni.utils._skorch import EpochProgressBar

    rng = np.random.default_rng(0)
    X, age = rng.random((8, 24, 28, 24), dtype=np.float32), rng.uniform(45, 80, 8)
    model = BrainAgeCNNTransformer(channels=(4, 4), max_epochs=1, early_stopping=False, lr_schedule="none",
                                   min_epochs=0, warmup_epochs=0, max_restarts=0, validation_fraction=0.0,
                                   device="cpu", callbacks=[EpochProgressBar("brain-age CNN", 1, False)]).fit(X, age)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    np.testing.assert_allclose(joblib.load(buffer).predict(X), model.predict(X), rtol=1e-5)


def test_the_cnns_read_the_images_once_decoded_into_the_run_cache(finished_run):
    """stage1.image_cache: the image_cache stage decodes every image that passed QC once into a float16 memory
    map; a stage that declares it reads its rows (same participants, values within float16's precision), and
    without the key there is no such stage and the CNN stages read the files."""
    from sklearn_cgni.cli import Inputs
    from sklearn_cgni.cli.stages import Run, build_plan
    from sklearn_cgni.io import ImageSource
    from sklearn_cgni.io._images import load_image

    cohort, cfg, out = finished_run
    run = Run(out, load_config(cfg, preset="cpu"), Inputs(), progress=False, device="cpu")
    plan = {p.name: p for p in build_plan(run)}
    for name in ("brain_age", "finetune_f0", "scores", "occlusion", "adjusted_cnn_f0"):
        assert "image_cache" in plan[name].after, name
    import sklearn_cgni.io._source as source_module
    from sklearn_cgni.io import check_images

    def no_header_read(*args, **kwargs):
        raise AssertionError("a header was read")

    with run.running(plan["finetune_f0"]):
        parts, _, _ = run.data()
        info = run.result("image_cache")
        wm, _, _, _ = run.wm(genotypes=False)
        with pytest.MonkeyPatch.context() as mp:  # the data stage checked the headers: no pass over the files here
            mp.setattr(source_module, "check_image_headers", no_header_read)
            images = run.images(wm["image"])
        with pytest.raises(RuntimeError, match="no cached image for participant.*'nobody'"):
            run.images(pd.Series({"nobody": wm["image"].iloc[0]}))
    n_ok = int(parts["image_qc_passed"].sum())
    assert info["n_images"] == n_ok and info["dtype"] == "float16" and info["shape"][0] == n_ok
    assert info["bytes"] == n_ok * int(np.prod(info["shape"][1:])) * 2
    assert isinstance(images, ImageSource) and images.participant_ids == list(wm.index)
    gate = check_images(wm["image"])  # what the gate gives for the same files, headers read
    assert (images.shape, images.paths, list(images.index)) == (gate.shape, gate.paths, list(gate.index))
    np.testing.assert_array_equal(images.affine, gate.affine)
    for i in (0, len(wm) // 2, len(wm) - 1):  # the participant's own image, rounded to float16
        original = load_image(wm["image"].iloc[i])
        np.testing.assert_allclose(images.load(i), original, rtol=1e-3, atol=1e-4)
        assert not np.array_equal(images.load(i), original)  # read from the map, not from the file
    paths = wm["image"]
    with run.running(plan["regions"]):  # regions does not declare the cache: it reads the files
        assert run.images(paths) is paths
    off = Run(out, load_config(cfg, preset="cpu", overrides=["stage1.image_cache=false"]), Inputs(), progress=False,
              device="cpu")
    plan_off = {p.name: p for p in build_plan(off)}
    assert "image_cache" not in plan_off and plan_off["brain_age"].after == ("data",)


def test_the_adjusted_cnn_reads_the_run_cache_and_adjusts_each_image_when_read(finished_run, tmp_path):
    """The confound table's adjusted CNN reads the image cache as the other CNNs do and subtracts each image's
    covariate effect when it reads it: no header or image file is opened, and nothing is written besides its
    effect maps (before, it decoded every file and held or wrote a float32 copy of the adjusted images)."""
    from sklearn_cgni.cli import Inputs
    from sklearn_cgni.cli.stages import Run

    import sklearn_cgni.io._source as source_module

    cohort, cfg, out = finished_run
    run = Run(out, load_config(cfg, preset="cpu"), Inputs(), progress=False, device="cpu")

    def no_file_read(*args, **kwargs):
        raise AssertionError("an image file was opened")

    folder = tmp_path / "adjusted_cnn_f0"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(source_module, "check_image_headers", no_file_read)
        mp.setattr(source_module, "load_image", no_file_read)
        result = run.call("adjusted_cnn_f0", folder)
    done = json.loads((out / "stages" / "adjusted_cnn_f0" / "_done.json").read_text())["result"]
    assert result["covariates"] == done["covariates"] and 0 <= result["score"] <= 1
    assert 1 <= result["best_epoch"] <= result["epochs_run"] == 2
    maps = sorted(f.name for f in (out / "stages" / "adjusted_cnn_f0").glob("covariate_effect_*.nii.gz"))
    assert maps and sorted(f.name for f in folder.iterdir()) == maps


# ---------------------------------------------------------------------------- Dask scheduler
def _tables_without_timings(out):
    """Every table the run wrote, minus the columns that hold seconds."""
    tables = {}
    for path in sorted((out / "tables").glob("*.csv")):
        df = pd.read_csv(path)
        tables[path.name] = df.drop(columns=[c for c in df.columns if "seconds" in c])
    return tables


def test_run_on_a_local_dask_cluster_writes_the_serial_tables(finished_run, tmp_path):
    """Issue 27: ``--scheduler local:2`` runs independent stages in 2 worker processes; same tables."""
    cohort, cfg, serial = finished_run
    out = tmp_path / "dask"
    assert main(_base_args(cohort, cfg, out) + ["--scheduler", "local:2"]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and set(meta["stage_status"].values()) == {"computed"}
    par = meta["parallel"]
    assert par["workers"] == 2 and par["threads_per_task"] == 1 and 0 < par["serial_share"] < 1
    assert len(set(par["stage_workers"].values())) == 2  # both workers took stages
    assert meta["stage_status"].keys() == json.loads((serial / "run.json").read_text())["stage_status"].keys()
    ours, theirs = _tables_without_timings(out), _tables_without_timings(serial)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name], check_exact=True, obj=name)
    assert "[worker" in (out / "run.log").read_text()  # the workers' stage logs are in run.log
    # a second run resumes on the cluster too: nothing recomputed
    assert main(_base_args(cohort, cfg, out) + ["--scheduler", "local:2"]) == 0
    assert set(json.loads((out / "run.json").read_text())["stage_status"].values()) == {"reused"}


@pytest.mark.parametrize("value", ["local:0", "localhost:8786", "dask"])
def test_a_wrong_scheduler_is_refused_by_name(finished_run, tmp_path, capsys, value):
    cohort, cfg, _ = finished_run
    out = tmp_path / "out"
    assert main(_base_args(cohort, cfg, out) + ["--scheduler", value]) == 2
    err = capsys.readouterr().err
    assert "run.scheduler" in err and repr(value) in err
    assert not (out / "stages").exists()  # refused before anything ran


def test_a_failing_stage_on_the_cluster_is_retried_once_then_named(finished_run, tmp_path, monkeypatch, capsys):
    """A task that fails is retried once, then the run ends with the serial run's one-line error."""
    import contextlib

    from distributed import Client

    from sklearn_cgni.cli import _dask
    from sklearn_cgni.cli.stages import REGISTRY, Stage

    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    calls = []

    def broken(run, folder):
        calls.append(folder.name)
        raise RuntimeError("the gene-set file is empty")

    @contextlib.contextmanager
    def threads_client(spec):  # worker threads in this process: they see the monkeypatched registry
        with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
            yield client

    monkeypatch.setitem(REGISTRY, "broken", Stage("broken", broken, after=("data",)))
    monkeypatch.setattr(_dask, "dask_client", threads_client)
    assert main(_base_args(cohort, cfg, out) + ["--scheduler", "local:1"]) == 1
    err = capsys.readouterr().err
    assert "error in stage 'broken': RuntimeError: the gene-set file is empty" in err and "Traceback" not in err
    assert calls == ["broken", "broken"]  # retried once
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["error"]["stage"] == "broken"
    assert not (out / "stages" / "broken" / "_done.json").exists()


def test_pgs_rows_and_tables(finished_run, tmp_path):
    """--pgs: the simulated GWAS's scoring file scored, its tables written, three Table 1 rows and two confound
    rows added, each PGS row compared with h_v alone."""
    cohort, cfg, out = finished_run
    out = _copy(out, tmp_path)
    assert main(_base_args(cohort, cfg, out) + ["--pgs", "simulated", "--force"]) == 0
    # a stage of its own: the score is added without retraining a CNN, and what reads it is refitted
    status = json.loads((out / "run.json").read_text())["stage_status"]
    assert {s: status[s] for s in ("data", "brain_age", "finetune_f0", "scores", "adjusted_cnn_f0")} == dict.fromkeys(
        ("data", "brain_age", "finetune_f0", "scores", "adjusted_cnn_f0"), "reused")
    assert status["pgs"] == status["models_f0"] == status["models_f1"] == status["confounds"] == "computed"
    scores = pd.read_csv(out / "tables" / "pgs_scores.csv")
    assert list(scores.columns) == ["participant_id", "sim_gwas_300000"] and len(scores) == 80
    cov = pd.read_csv(out / "tables" / "pgs_coverage.csv")
    assert cov.loc[0, "matched"] + cov.loc[0, "ambiguous"] + cov.loc[0, "missing"] == cov.loc[0, "n_variants"]
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    assert {"PGS -> logistic", "h_v + PGS -> logistic", "h_v + PGS (stacked)",
            "CGNI with the PGS beside z_g"} <= set(t1["model"])
    comp = pd.read_csv(out / "tables" / "table1_comparisons.csv")
    against = comp[comp["model"].isin(["PGS -> logistic", "h_v + PGS -> logistic", "h_v + PGS (stacked)"])]["against"]
    assert comp["model"].isin(["h_v + PGS (stacked)"]).any()
    assert set(against) == {"CNN features h_v -> logistic"}
    conf = pd.read_csv(out / "tables" / "confounds.csv")
    assert {"PGS -> logistic", "h_v + PGS -> logistic"} <= set(conf["model"])
    # a scoring file that matches nothing ends in one line naming it
    bad = tmp_path / "bad.txt"
    bad.write_text("#pgs_id=bad\n#trait_reported=x\n#genome_build=GRCh37\nrsID\tchr_name\tchr_position\t"
                   "effect_allele\tother_allele\teffect_weight\nrs0\t1\t1\tA\tC\t1.0\n")
    assert main(_base_args(cohort, cfg, tmp_path / "out2") + ["--pgs", str(bad)]) != 0
