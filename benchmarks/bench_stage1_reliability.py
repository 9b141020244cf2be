"""Stage-1 reliability: the cpu preset's CNNs over fit seeds, torch thread counts and cohorts.

Runs ``sklearn-cgni run --preset cpu`` (its own stages, nothing re-implemented) on a simulated
cohort up to the brain-genotype scores, for every combination of ``--seeds`` (the run's
``--seed``: fit seeds, splits and folds), ``--threads`` (``--threads``: torch and BLAS threads,
which change float sums and so the path of training) and ``--cohort-seeds`` (the simulated
cohort, ``make_cohort`` with the preset's cohort settings; seed 0 is the demo's cohort). Per run
it records:

- the brain-age CNN: holdout MAE against predicting the training mean, epochs run, best epoch,
  final budget, stop reason and restarts;
- each working-memory fold's CNN: validation and holdout balanced accuracy, the same training
  facts, and Table 1's ``CNN features h_v -> logistic`` row of the same fold (the Imaging CNN row
  should be within a point of it);
- the brain-genotype scorer: held-out r of the CNN and IDP scores on the planted causal SNPs it
  scored, and each cross-fitting fold's epochs, best epoch and budget.

Usage (one run is 4-8 min on 2 idle cores; the full grid of 10 seeds x 2 thread counts x 2
cohorts is 40 runs, about 4 hours)::

    python benchmarks/bench_stage1_reliability.py --seeds 0 1 2 3 4 5 6 7 8 9 --threads 1 2 \\
        --cohort-seeds 0 1

Appends one JSON line per run to ``benchmarks/results/stage1_reliability.jsonl`` (runs already
there are skipped, so an interrupted grid resumes) and rewrites
``benchmarks/results/stage1_reliability.md`` from all lines, with the issue's criteria: brain-age
MAE <= 2.6 years in every run, no CNN whose best epoch lies in the last 10 % of its final budget,
and the Imaging CNN row within one point of ``h_v -> logistic``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
JSONL = RESULTS / "stage1_reliability.jsonl"


def _cohort(scratch, cohort_seed):
    """The cpu preset's embedded cohort simulated with ``cohort_seed`` (seed 0: the demo's)."""
    from sklearn_cgni.cli._config import load_config
    from sklearn_cgni.datasets import make_cohort

    folder = Path(scratch) / f"cohort{cohort_seed}"
    if not (folder / "ground_truth.json").exists():
        c = load_config(None, preset="cpu")["cohort"]
        make_cohort(c["n_participants"], c["n_snps"], shape=tuple(c["shape"]), demographics=c["demographics"],
                    effect_pattern=c["effect_pattern"], output_dir=folder, random_state=cohort_seed)
    return folder


def _in_tail(result):
    """Whether the kept epoch lies in the last 10 % of the final budget."""
    budget = result["budget"]
    return result["best_epoch"] > budget - max(1, int(np.ceil(0.1 * budget)))


def planted_signal(out, cohort):
    """Planted r of the brain-age CNN's h_v, fold 0's WM CNN h_v and the regional means.

    As ``bench_ground_truth_recovery.planted_signal_r``: for each region a causal SNP acts on,
    its planted genetic part (sum of sign x effect x dosage over those SNPs); a ridge (alpha
    by RidgeCV) from the features to it, fitted on fold 0's training participants and scored
    (Pearson r) on fold 0's validation participants and the holdout; the mean over regions.
    """
    from sklearn.linear_model import RidgeCV

    stages = out / "stages"
    parts = pd.read_csv(stages / "data" / "participants.csv", dtype={"participant_id": str}, index_col=0)
    wm = parts[parts["wm_group"].notna() & parts["image_qc_passed"].astype(bool)]
    split = json.loads((stages / "data" / "splits.json").read_text())
    tr, va = (np.asarray(a) for a in split["folds"][0])
    test = np.r_[va, np.asarray(split["holdout"])]
    truth = json.loads((cohort / "ground_truth.json").read_text())
    dosage = pd.read_csv(cohort / "genotypes.csv", dtype={"participant_id": str}, index_col=0).loc[wm.index]
    dosage = dosage.fillna(dosage.mean())
    targets = {}
    for e in truth["snp_region_effects"]:
        targets[e["region"]] = targets.get(e["region"], 0.0) + e["sign"] * abs(e["effect"]) * dosage[e["snp"]].to_numpy()
    region_ids = pd.read_csv(stages / "regions" / "participants.csv", dtype={"participant_id": str})["participant_id"]
    features = {"brain-age CNN h_v": np.load(stages / "brain_age" / "hv_wm.npy"),
                "regional means": np.load(stages / "regions" / "regional_means.npy")[
                    pd.Index(region_ids).get_indexer(wm.index)]}
    if (stages / "finetune_f0" / "hv.npy").exists():  # not with --until brain_age
        features["WM CNN h_v (fold 0)"] = np.load(stages / "finetune_f0" / "hv.npy")
    out_r = {}
    for name, F in features.items():
        rs = []
        for target in targets.values():
            model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(F[tr], target[tr])
            rs.append(float(np.corrcoef(model.predict(F[test]), target[test])[0, 1]))
        out_r[name] = round(float(np.mean(rs)), 4)
    return out_r


def one_run(cohort, seed, threads, scratch, until="scores", overrides=(), variant=""):
    from sklearn_cgni.cli._config import load_config
    from sklearn_cgni.cli._inputs import resolve_inputs
    from sklearn_cgni.cli._run import run_pipeline

    out = Path(scratch) / f"run_{cohort.name}_s{seed}_t{threads}{variant}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, preset="cpu", overrides=[f"run.seed={seed}", f"run.threads={threads}", *overrides])
    t0 = time.perf_counter()
    run_pipeline(out, cfg, resolve_inputs(cohort=cohort), progress=False, preset="cpu", only=until)
    wall = time.perf_counter() - t0
    stages = out / "stages"

    def result(name):
        return json.loads((stages / name / "_done.json").read_text())["result"]

    ba = result("brain_age")
    if (stages / "brain_age_classical" / "_done.json").exists():  # regional means -> ridge on the same holdout
        ba = {**ba, **result("brain_age_classical")}
    row = {"cohort_seed": int(cohort.name.removeprefix("cohort")), "seed": seed, "threads": threads,
           "variant": variant, "overrides": list(overrides), "wall_s": round(wall, 1),
           "brain_age": {"mae": round(ba["mae_holdout"], 3), "mae_mean_predictor": round(ba["mae_of_mean_predictor"], 3),
                         **({"mae_ridge": round(ba["ridge_mae_holdout"], 3),
                             "gain_over_ridge_p": round(ba["mae_gain_over_ridge_pvalue"], 4)}
                            if "ridge_mae_holdout" in ba else {}),
                         **{k: ba[k] for k in ("epochs_run", "best_epoch", "budget", "stop_reason", "restarts")},
                         "h_v_width": ba["h_v_width"]}}
    folds = []
    k = 0
    while (stages / f"finetune_f{k}" / "_done.json").exists():
        ft = result(f"finetune_f{k}")
        bacc = {r["split"]: r["balanced_accuracy"] for r in ft["records"]}
        fold = {"fold": k, "validation": round(bacc["validation"], 4), "holdout": round(bacc["holdout"], 4),
                **{key: ft[key] for key in ("epochs_run", "best_epoch", "budget", "stop_reason", "restarts")}}
        if (stages / f"models_f{k}" / "_done.json").exists():
            recs = pd.DataFrame(result(f"models_f{k}")["records"])
            hv = recs[(recs["model"] == "CNN features h_v -> logistic")].set_index("split")["balanced_accuracy"]
            fold["hv_logistic_validation"] = round(float(hv["validation"]), 4)
            fold["hv_logistic_holdout"] = round(float(hv["holdout"]), 4)
        folds.append(fold)
        k += 1
    row["wm_folds"] = folds
    if (stages / "scores" / "_done.json").exists():
        sc = result("scores")
        truth = json.loads((cohort / "ground_truth.json").read_text())
        acc = pd.read_csv(stages / "scores" / "score_accuracy.csv")
        causal = acc[acc["snp"].isin(truth["causal_snps"])]
        row["scores"] = {"n_causal_scored": int(causal["snp"].nunique()),
                         "causal_r": {m: round(float(g["r_held_out"].mean()), 4) for m, g in causal.groupby("model")},
                         "folds": sc["epochs"]}
    row["planted_r"] = planted_signal(out, cohort)
    row["stage_seconds"] = json.loads((out / "run.json").read_text()).get("stage_seconds")
    shutil.rmtree(out, ignore_errors=True)
    return row


def summarize(rows):
    """The markdown summary of all runs."""
    lines = ["# Stage-1 reliability (cpu preset), written by `benchmarks/bench_stage1_reliability.py`", ""]
    if not rows:
        return "\n".join(lines + ["No runs yet."]) + "\n"
    lines += [f"{len(rows)} runs. Command: `python benchmarks/bench_stage1_reliability.py --seeds ... --threads ... "
              "--cohort-seeds ...`; per-run lines in `stage1_reliability.jsonl`.", "",
              "| variant | cohort | seed | threads | brain-age MAE (mean pred.; ridge on regional means) | epochs / best / budget | restarts | "
              "WM validation per fold | WM best / budget per fold | Imaging CNN - h_v logistic (val., hold.) | "
              "scorer causal r CNN / IDP | planted r: brain-age h_v / WM h_v / regional means | wall |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    tail_runs, diffs_val, diffs_hold = [], [], []
    main_rows = [r for r in rows if not r.get("variant")]
    for r in sorted(rows, key=lambda r: (r.get("variant", ""), r["cohort_seed"], r["threads"], r["seed"])):
        ba = r["brain_age"]
        wm = r["wm_folds"]
        cnns = [("brain age", ba)] + [(f"WM fold {f['fold']}", f) for f in wm]
        cnns += [(f"scorer fold {i}", f) for i, f in enumerate(r.get("scores", {}).get("folds", []))]
        pr = r.get("planted_r", {})
        if not r.get("variant"):  # the criteria are the shipped preset's
            tail_runs += [f"cohort {r['cohort_seed']} seed {r['seed']} threads {r['threads']}: {name} "
                          f"(best {c['best_epoch']} of {c['budget']})" for name, c in cnns if _in_tail(c)]
        dv = [100 * (f["validation"] - f["hv_logistic_validation"]) for f in wm if "hv_logistic_validation" in f]
        dh = [100 * (f["holdout"] - f["hv_logistic_holdout"]) for f in wm if "hv_logistic_holdout" in f]
        if not r.get("variant"):
            diffs_val += dv
            diffs_hold += dh
        sc = r.get("scores", {}).get("causal_r", {})
        lines.append(
            f"| {r.get('variant') or 'shipped cpu preset'} | {r['cohort_seed']} | {r['seed']} | {r['threads']} | {ba['mae']:.2f} ({ba['mae_mean_predictor']:.2f}"
            f"{'; ridge %.2f' % ba['mae_ridge'] if 'mae_ridge' in ba else ''}) | "
            f"{ba['epochs_run']} / {ba['best_epoch']} / {ba['budget']} | {ba['restarts']} | "
            + ", ".join(f"{100 * f['validation']:.1f}" for f in wm) + " | "
            + ", ".join(f"{f['best_epoch']}/{f['budget']}" for f in wm) + " | "
            + (f"{np.mean(dv):+.1f}, {np.mean(dh):+.1f}" if dv else "") + " | "
            + (f"{sc.get('CNN', float('nan')):.2f} / {sc.get('IDP', float('nan')):.2f}" if sc else "") + " | "
            + (" / ".join(f"{v:.2f}" for v in pr.values()) if pr else "") + " | "
            + f"{r['wall_s'] / 60:.1f} min |")
    if not main_rows:
        return "\n".join(lines) + "\n"
    maes = np.array([r["brain_age"]["mae"] for r in main_rows])
    lines += ["", "## Criteria (issue: stage-1 CNNs that converge on every run), shipped cpu preset", "",
              f"- Brain-age holdout MAE: {maes.min():.2f}-{maes.max():.2f} years (median {np.median(maes):.2f}); "
              f"<= 2.6 in {int((maes <= 2.6).sum())} of {len(maes)} runs.",
              *_ridge_line(main_rows),
              f"- CNNs whose kept epoch lies in the last 10 % of their final budget: {len(tail_runs)}"
              + ("" if not tail_runs else ": " + "; ".join(tail_runs)) + "."]
    if diffs_val:
        lines.append(f"- Imaging CNN minus `h_v -> logistic`, per fold: validation mean {np.mean(diffs_val):+.2f} "
                     f"points (range {min(diffs_val):+.1f} to {max(diffs_val):+.1f}), holdout mean "
                     f"{np.mean(diffs_hold):+.2f} (range {min(diffs_hold):+.1f} to {max(diffs_hold):+.1f}).")
    return "\n".join(lines) + "\n"


def _ridge_line(rows):
    """The classical brain-age model (regional means -> ridge) on the same holdouts, where the runs have it."""
    pairs = [(r["brain_age"]["mae"], r["brain_age"]["mae_ridge"], r["brain_age"]["gain_over_ridge_p"])
             for r in rows if "mae_ridge" in r["brain_age"]]
    if not pairs:
        return []
    cnn, ridge, p = map(np.array, zip(*pairs))
    return [f"- Regional means -> ridge on the same holdouts ({len(pairs)} runs): {ridge.min():.2f}-{ridge.max():.2f} "
            f"years (median {np.median(ridge):.2f}), <= 2.6 in {int((ridge <= 2.6).sum())}; CNN minus ridge "
            f"{np.min(cnn - ridge):+.2f} to {np.max(cnn - ridge):+.2f} (median {np.median(cnn - ridge):+.2f}); paired "
            f"p < 0.05 in {int((p < 0.05).sum())} runs."]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cohort-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--until", default="scores", help="the last stage to run (default: scores)")
    ap.add_argument("--scratch", default=None, help="folder for the cohorts and runs (default: a temporary one)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[],
                    help="config overrides (section.key=value) of a variant, e.g. the former layout: "
                         "stage1.pool_blocks=4 stage1.global_pool=avg")
    ap.add_argument("--variant", default="", help="the variant's name in the results (with --set)")
    ap.add_argument("--out", default=str(JSONL))
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["cohort_seed"], r["seed"], r["threads"], r.get("variant", "")) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(args.scratch or tmp)
        for cohort_seed in args.cohort_seeds:
            cohort = _cohort(scratch, cohort_seed)
            for seed in args.seeds:
                for threads in args.threads:
                    if (cohort_seed, seed, threads, args.variant) in done:
                        continue
                    row = one_run(cohort, seed, threads, scratch, until=args.until, overrides=args.overrides,
                                  variant=args.variant)
                    print(json.dumps(row), flush=True)
                    with out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    rows.append(row)
                    out.with_suffix(".md").write_text(summarize(rows))
    out.with_suffix(".md").write_text(summarize(rows))


if __name__ == "__main__":
    main()
