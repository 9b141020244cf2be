"""Issue 14's paper-size experiment: does CGNI beat the CNN's features alone as n grows?

For each cohort size the command line's own stages run on the embedded simulated cohort
(``make_cohort`` with 1,060 SNPs, demographics independent of the working-memory groups by
default, small images so that a CPU can train the CNNs): data and QC, regional means, the
brain-age CNN (once), the working-memory CNN fine-tuned on each outer fold (``h_v`` cached in
``finetune_f*/hv.npy``), then the ``models`` stage twice on the same ``h_v`` (B in a copy of
A's folder, so that re-running the benchmark reuses both):

A. **the paper's stages 2-3**: the paper's encoder and classifier sizes, 50 epochs, no
   cross-fitting, fixed loss weights; with it the paper's baselines, the CNN features alone
   (``h_v`` -> logistic regression), the classical rows and age + sex;
B. **CGNI with issue 14's items 1-4**: inputs standardised, small encoders with early stopping
   on held-out cross-modal matching, stage 3 cross-fitted (3 folds), and a nested search
   (one stratified 20 % inner split of each fold's training part) over a grid fixed before
   the runs (:data:`GRID`, 8 candidates); the same model with regional gray-matter means as
   the image input instead of ``h_v`` (item 4); with ``--finetune-blocks K``, also the same model
   whose contrastive loss fine-tunes the last K blocks of the fold's CNN (item 4's other option,
   ``contrastive.finetune_blocks``).

Reported per size: balanced accuracy on the pooled out-of-fold validation predictions (every
training-part participant once) with a 95 % bootstrap interval, the holdout mean ± sd over
folds, and a paired test of each row against ``h_v -> logistic`` on the same participants
(the difference of balanced accuracies, 10,000 random swaps of the two rows' predictions per
participant, two-sided): :func:`~sklearn_cgni.evaluation.balanced_accuracy_interval` and
:func:`~sklearn_cgni.evaluation.paired_balanced_accuracy_test`, the helpers of the report's
Table 1 (results written before they moved there drew other random numbers). Oracle rows use
the simulator's planted latent paths (``cohort/latent.csv``) to show what integration could
gain at most. Then the learning curve and Table 3 (sparse CCA of fold 0's ``z_v``, ``z_g`` on
training, validation and holdout) for A and B.

Usage (the results file was written by this; one torch thread)::

    OMP_NUM_THREADS=1 python benchmarks/bench_paper_size.py --sizes 500 1000 2000

Writes ``benchmarks/results/paper_size.md`` and ``paper_size.csv``.

Issue 29's polygenic-score rows: ``--with-pgs`` adds ``data.pgs = ["simulated"]`` to the runs
above (Table 1's three PGS rows); ``--pgs`` runs the fast path without a CNN (:func:`pgs_rows`:
regional means in place of ``h_v``, several ``gwas_n``), written to ``benchmarks/results/pgs.md``::

    OMP_NUM_THREADS=1 python benchmarks/bench_paper_size.py --pgs --sizes 1000 5000 \
        --gwas-n 10000 100000 300000 1000000 --folds 5 --shape 12 14 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from sklearn_cgni.cli._comparisons import held_out_predictions
from sklearn_cgni.cli._config import default_config, load_config
from sklearn_cgni.cli._inputs import Inputs
from sklearn_cgni.cli._run import run_pipeline
from sklearn_cgni.evaluation import balanced_accuracy_interval, paired_balanced_accuracy_test

RESULTS = Path(__file__).parent / "results"
#: the nested search of row B, fixed before any run: 2 x 2 x 2 = 8 candidates
GRID = {"contrastive.genetic_hidden": [[], [64]], "contrastive.temperature": [0.1, 0.5],
        "contrastive.weight_decay": [1e-4, 1e-2]}
#: row B's base settings (items 1-4 of issue 14)
ITEMS = {"contrastive": {"standardize": True, "regional_row": True, "n_components": 32, "image_hidden": [],
                         "genetic_hidden": [64], "max_epochs": 200, "early_stopping": True, "scoring": "matching",
                         "n_iter_no_change": 15, "snp_dropout": 0.2},
         "classifier": {"cross_fit": 3, "hidden_layer_sizes": [64, 32], "max_epochs": 15},
         "search": {"grid": GRID, "inner_cv": 1, "validation_fraction": 0.2}}
REFERENCE = "CNN features h_v -> logistic"


def items_for(args):
    """Row B's settings: :data:`ITEMS`, plus the fine-tuned row when ``--finetune-blocks`` is given."""
    if not args.finetune_blocks:
        return ITEMS
    return {**ITEMS, "contrastive": {**ITEMS["contrastive"], "finetune_blocks": args.finetune_blocks}}


def config(args, n, items):
    paper = default_config()
    over = [{"cohort": {"n_participants": n, "n_snps": args.snps, "shape": list(args.shape),
                        "demographics": args.demographics, "effect_pattern": args.effect_pattern},
             "protocol": {"folds": args.folds, "table2": False},
             "run": {"seed": args.seed, "threads": 1},
             # A: the paper's stages 2-3 and baselines (the cpu preset shrinks them)
             "contrastive": paper["contrastive"], "classifier": paper["classifier"], "baselines": paper["baselines"]}]
    if getattr(args, "with_pgs", False):  # issue 29: the simulated GWAS's score, its three Table 1 rows
        over.append({"data": {"pgs": ["simulated"]}})
    if items:
        over.append(items_for(args))
    return load_config(None, preset="cpu", overrides=over)


def collect(out, folds, label):
    """Per-fold records and held-out predictions of Table 1's rows (the report's own reader of them)."""
    st = Path(out) / "stages"
    recs = []
    for k in range(folds):
        for stage in (f"models_f{k}", f"finetune_f{k}"):
            recs += json.loads((st / stage / "_done.json").read_text())["result"]["records"]
    recs = pd.DataFrame(recs).assign(run=label)
    return recs[recs["table"] == "Table 1"], held_out_predictions(out).assign(run=label)


def oracle(out, folds):
    """Rows that use the simulator's planted latent paths (``cohort/latent.csv``): what integration could gain.

    Per outer fold, logistic regressions (the classical row's, on the fold's training part) on
    ``h_v`` + the planted direct genetic path, and on the planted brain + genetic paths; and
    how well the SNPs predict the direct genetic path (ridge, holdout r), i.e. whether the SNP
    side of the signal is learnable at this n at all.
    """
    from sklearn.linear_model import RidgeCV

    from sklearn_cgni.cli._protocol import CLASSICAL_MODELS, classical_models

    st = Path(out) / "stages"
    parts = pd.read_csv(st / "data" / "participants.csv", dtype={"participant_id": str}).set_index("participant_id")
    wm = parts[parts["wm_group"].notna() & parts["image_qc_passed"]]
    y = wm["wm_group"].astype(int).to_numpy()
    G = np.load(st / "data" / "genotypes_qc.npy")[(parts["wm_group"].notna() & parts["image_qc_passed"]).to_numpy()]
    latent = pd.read_csv(Path(out) / "cohort" / "latent.csv", dtype={"participant_id": str}).set_index("participant_id")
    lat = latent.loc[wm.index]
    split = json.loads((st / "data" / "splits.json").read_text())
    hold = np.asarray(split["holdout"])
    preds, recs, ridge_r = [], [], []
    for k, (tr, va) in enumerate(split["folds"]):
        tr, va = np.asarray(tr), np.asarray(va)
        hv = np.load(st / f"finetune_f{k}" / "hv.npy")
        rows = {"oracle: h_v + planted genetic path -> logistic": np.hstack([hv, lat[["genetic_path"]].to_numpy()]),
                "oracle: planted brain + genetic paths -> logistic": lat[["brain_path", "genetic_path"]].to_numpy()}
        for name, F in rows.items():
            m = classical_models(F.shape[1], random_state=0)[CLASSICAL_MODELS[0]].fit(F[tr], y[tr])
            for s_, ix in (("validation", va), ("holdout", hold)):
                pred = m.predict(F[ix])
                preds.append(pd.DataFrame({"participant_id": wm.index[ix], "table": "Table 1", "model": name,
                                           "split": s_, "predicted": pred, "fold": k}))
                recs.append({"table": "Table 1", "model": name, "fold": k, "split": s_,
                             "balanced_accuracy": balanced_accuracy_score(y[ix], pred)})
        r = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(G[tr], lat["genetic_path"].to_numpy()[tr])
        ridge_r.append(float(np.corrcoef(r.predict(G[hold]), lat["genetic_path"].to_numpy()[hold])[0, 1]))
    preds = pd.concat(preds).assign(run="oracle")
    preds["y"] = preds["participant_id"].map(wm["wm_group"].astype(int)).to_numpy()
    return pd.DataFrame(recs).assign(run="oracle"), preds, float(np.mean(ridge_r))


def summarize(recs, preds, n, rng):
    """Per row: pooled validation BA with its bootstrap interval, the paired test against h_v, the holdout."""
    val = preds[preds["split"] == "validation"]
    ref = val[val["model"] == REFERENCE].set_index("participant_id")
    rows = []
    for (run, model), d in val.groupby(["run", "model"], sort=False):
        d = d.set_index("participant_id")
        y, p = d["y"].to_numpy(), d["predicted"].to_numpy()
        ba = balanced_accuracy_interval(y, p, random_state=rng)
        diff, pval = 0.0, 1.0
        if model != REFERENCE:
            test = paired_balanced_accuracy_test(y, p, ref.loc[d.index, "predicted"].to_numpy(), random_state=rng)
            diff, pval = test.difference, test.pvalue
        h = recs[(recs["run"] == run) & (recs["model"] == model) & (recs["split"] == "holdout")]["balanced_accuracy"]
        rows.append({"n": n, "run": run, "model": model, "n_validation": len(y), "validation_ba": 100 * ba.score,
                     "ci_low": 100 * ba.ci_low, "ci_high": 100 * ba.ci_high, "minus_hv": 100 * diff,
                     "p_vs_hv": pval, "holdout_mean": 100 * h.mean(), "holdout_sd": 100 * h.std()})
    return pd.DataFrame(rows)


def table3(out):
    p = Path(out) / "stages" / "scca" / "table3.csv"
    return pd.read_csv(p) if p.exists() else None


PGS_RESULTS = RESULTS / "pgs"


def pgs_rows(n, gwas_sizes, *, snps, shape, folds, demographics, effect_pattern, seed, rng):
    """Issue 29: polygenic-score rows on one simulated cohort, without a CNN (the fast path).

    ``make_cohort(n, gwas_n=g)`` for each ``g`` (the cohort is the same for every ``g``: the
    GWAS has its own random stream); the image side is the regional gray-matter means (a
    stand-in for ``h_v``: under ``effect_pattern="region"`` the planted brain path is a
    regional mean, so this is a strong image feature); the scores go through the package's
    reader, matcher and :class:`~sklearn_cgni.genetics.PolygenicScore`. Rows, each through the
    classical logistic regression (C by inner CV), pooled out-of-fold predictions over
    ``folds`` stratified folds of the working-memory participants, paired test against
    the regional means alone.
    """
    import tempfile

    from sklearn.model_selection import StratifiedKFold

    from sklearn_cgni.cli._protocol import CLASSICAL_MODELS, classical_models
    from sklearn_cgni.datasets import make_cohort
    from sklearn_cgni.genetics import PolygenicScore
    from sklearn_cgni.io import working_memory_groups
    from sklearn_cgni.io._pgs import write_scoring_file

    rows, diag, preds = [], [], {}
    variants = None
    for g in gwas_sizes:
        c = make_cohort(n, snps, shape=tuple(shape), demographics=demographics, effect_pattern=effect_pattern,
                        gwas_n=g, random_state=seed, n_jobs=1)
        if variants is None:
            groups = working_memory_groups(c.phenotypes["digit_span"])
            ids = groups.index
            y = groups.astype(int).to_numpy()
            atlas = np.asarray(c.atlas.img.dataobj).astype(int).ravel()
            labels = c.atlas.labels["index"].to_numpy()
            onehot = (atlas[:, None] == labels[None, :]).astype(np.float64)
            keep = onehot.sum(0) > 0
            imgs = np.asarray(c.images, dtype=np.float64).reshape(n, -1)
            R_all = pd.DataFrame(imgs @ onehot[:, keep] / onehot[:, keep].sum(0), index=c.participant_ids)
            R = R_all.loc[ids].to_numpy()
            lat = c.latent.loc[ids]
            info = c.snp_info
            variants = pd.DataFrame({"id": info.index, "chrom": info["chrom"].astype(str), "pos": info["pos"],
                                     "counted": info["a1"], "other": info["a2"]})
            G = c.genotypes.loc[ids]
            cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(R, y))
            # the best a score can be: the simulator's true joint per-allele effects on the trait (direct and
            # through the brain), no sampling error, no LD double counting, every variant (ground_truth["gwas"])
            effects = pd.Series(c.ground_truth["gwas"]["per_allele_effects"])
            Gc = G[effects.index].to_numpy(dtype=np.float64)
            Gc = np.where(np.isnan(Gc), np.nanmean(Gc, axis=0), Gc)
            true_score = (Gc @ effects.to_numpy())[:, None]
            diag.append({"n": n, "gwas_n": "true effects", "ambiguous": "kept", "matched": len(effects),
                         "r_pgs_genetic_path": float(np.corrcoef(true_score[:, 0], lat["genetic_path"])[0, 1]),
                         "r_pgs_brain_path": float(np.corrcoef(true_score[:, 0], lat["brain_path"])[0, 1]),
                         "r_pgs_trait": float(np.corrcoef(true_score[:, 0], lat["trait"])[0, 1])})
            features = {"regional GM -> logistic (stand-in for h_v)": R,
                        "oracle: regional GM + planted genetic path -> logistic":
                            np.hstack([R, lat[["genetic_path"]].to_numpy()]),
                        "oracle: regional GM + score of the true joint effects -> logistic":
                            np.hstack([R, true_score])}
        path = write_scoring_file(c.gwas, Path(tempfile.mkdtemp()) / f"gwas{g}.txt.gz", pgs_id=f"sim_gwas_{g}")
        for keep_amb in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # coverage < 75 %: reported below
                est = PolygenicScore(path, variants=variants, keep_ambiguous=keep_amb).fit(G)
            P = est.transform(G).to_numpy()
            cov = est.coverage_.iloc[0]
            tag = "" if not keep_amb else ", ambiguous kept"
            diag.append({"n": n, "gwas_n": g, "ambiguous": "kept" if keep_amb else "dropped",
                         "matched": int(cov["matched"]), "n_variants": int(cov["n_variants"]),
                         "flipped": int(cov["flipped"]), "ambiguous_variants": int(cov["ambiguous"]),
                         "missing": int(cov["missing"]),
                         "r_pgs_genetic_path": float(np.corrcoef(P[:, 0], lat["genetic_path"])[0, 1]),
                         "r_pgs_brain_path": float(np.corrcoef(P[:, 0], lat["brain_path"])[0, 1]),
                         "r_pgs_trait": float(np.corrcoef(P[:, 0], lat["trait"])[0, 1])})
            if keep_amb and g != 300_000 and 300_000 in gwas_sizes:
                continue
            if not keep_amb:
                # diagnosis, not a row the toolkit offers: the same file clumped to its lead variant per LD block
                # (largest |standardised weight|), as clumping + thresholding would do with a reference panel
                w = est.weights_.iloc[:, 0]
                sd = G[w.index].std().to_numpy()
                lead = (pd.DataFrame({"z": np.abs(w.to_numpy()) * sd, "block": info.loc[w.index, "ld_block"].to_numpy()},
                                     index=w.index).groupby("block")["z"].idxmax())
                Gl = G[lead.to_numpy()].to_numpy(dtype=np.float64)
                Gl = np.where(np.isnan(Gl), np.nanmean(Gl, axis=0), Gl)
                clumped = (Gl @ w.loc[lead.to_numpy()].to_numpy())[:, None]
                diag.append({"n": n, "gwas_n": f"{g} clumped", "ambiguous": "dropped", "matched": len(lead),
                             "r_pgs_genetic_path": float(np.corrcoef(clumped[:, 0], lat["genetic_path"])[0, 1]),
                             "r_pgs_brain_path": float(np.corrcoef(clumped[:, 0], lat["brain_path"])[0, 1]),
                             "r_pgs_trait": float(np.corrcoef(clumped[:, 0], lat["trait"])[0, 1])})
                features[f"regional GM + PGS clumped to lead variants -> logistic (gwas_n {g:,}; diagnosis)"] = \
                    np.hstack([R, clumped])
            features[f"PGS -> logistic (gwas_n {g:,}{tag})"] = P
            features[f"regional GM + PGS -> logistic (gwas_n {g:,}{tag})"] = np.hstack([R, P])
    for name, F in features.items():
        pred = np.empty(len(y), dtype=int)
        for tr, va in cv:
            m = classical_models(F.shape[1], random_state=seed)[CLASSICAL_MODELS[0]].fit(F[tr], y[tr])
            pred[va] = m.predict(F[va])
        preds[name] = pred
    ref = preds["regional GM -> logistic (stand-in for h_v)"]
    for name, pred in preds.items():
        ba = balanced_accuracy_interval(y, pred, random_state=rng)
        test = paired_balanced_accuracy_test(y, pred, ref, random_state=rng)
        rows.append({"n": n, "row": name, "n_wm": len(y), "ba": 100 * ba.score, "ci_low": 100 * ba.ci_low,
                     "ci_high": 100 * ba.ci_high, "minus_ref": 100 * test.difference, "p": test.pvalue})
    return pd.DataFrame(rows), pd.DataFrame(diag)


def pgs_main(args):
    """``--pgs``: :func:`pgs_rows` at each size, written to ``benchmarks/results/pgs.md``."""
    rng = np.random.RandomState(args.seed)
    t0, load0 = time.perf_counter(), os.getloadavg()
    res, diag, times = [], [], []
    for n in args.sizes:
        t = time.perf_counter()
        r, d = pgs_rows(n, args.gwas_n, snps=args.snps, shape=args.shape, folds=args.folds,
                        demographics=args.demographics, effect_pattern=args.effect_pattern, seed=args.seed, rng=rng)
        times.append({"n": n, "seconds": time.perf_counter() - t})
        res.append(r)
        diag.append(d)
        print(r.round(3).to_string(), "\n", d.round(3).to_string(), flush=True)
    res, diag = pd.concat(res), pd.concat(diag)
    res.to_csv(f"{args.pgs_out}.csv", index=False)
    diag.to_csv(f"{args.pgs_out}_coverage.csv", index=False)
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/bench_paper_size.py --pgs --sizes {' '.join(map(str, args.sizes))} "
           f"--gwas-n {' '.join(map(str, args.gwas_n))} --snps {args.snps} --shape {' '.join(map(str, args.shape))} "
           f"--folds {args.folds} --demographics {args.demographics} --effect-pattern {args.effect_pattern} "
           f"--seed {args.seed}")
    lines = [f"# Issue 29: polygenic-score rows ({time.strftime('%Y-%m-%d')})", "", f"`{cmd}`", "",
             f"{platform.machine()}, {os.cpu_count()} cores (shared), load average {load0[0]:.1f} at the start; wall "
             f"time {time.perf_counter() - t0:.0f} s.", "",
             "The fast path, no CNN: the image side is the regional gray-matter means (the `classical: regional GM` "
             "input), standing in for `h_v`; with `effect_pattern='region'` the planted brain path is a mean over "
             "regions, so this stand-in is at least as good an image feature as the CNN's `h_v` at these sizes "
             "(paper_size.md). The polygenic score is read, matched (flips handled, strand-ambiguous A/T, C/G "
             "variants dropped as the PGS Catalog calculator does, unless said) and computed by "
             "`PolygenicScore` from the scoring file `make_cohort(gwas_n=...)` writes. Each row: the classical "
             "logistic regression (C by inner CV), pooled out-of-fold predictions over "
             f"{args.folds} stratified folds of the working-memory participants, balanced accuracy with a 95 % "
             "bootstrap interval, and the paired permutation test (10,000 swaps, two-sided) against the regional "
             "means alone on the same participants.", ""]
    for n, d in res.groupby("n", sort=False):
        lines += [f"## n = {n:,} ({int(d['n_wm'].iloc[0])} working-memory participants)", "",
                  "| row | BA % [95 % CI] | − regional GM (points) | p |", "|---|---|---|---|"]
        for r in d.to_dict("records"):
            lines.append(f"| {r['row']} | {r['ba']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}] | "
                         f"{r['minus_ref']:+.1f} | {r['p']:.3g} |")
        lines.append("")
    lines += ["## How much of the planted paths the score carries (learning curve in gwas_n)", "",
              "Correlation of the score with the planted direct genetic path, the brain path and the latent trait "
              "(all participants), and the scoring file's coverage.", "",
              diag.round(3).to_markdown(index=False), "",
              "## Time per size (s)", "", pd.DataFrame(times).round(0).to_markdown(index=False)]
    Path(f"{args.pgs_out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pgs", action="store_true", help="issue 29's polygenic-score rows (fast path, no CNN): "
                    "writes benchmarks/results/pgs.md")
    ap.add_argument("--gwas-n", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000])
    ap.add_argument("--pgs-out", default=os.fspath(PGS_RESULTS))
    ap.add_argument("--with-pgs", action="store_true", help="the CNN runs with data.pgs = ['simulated']: Table 1's "
                    "PGS rows (PGS, h_v + PGS, CGNI with the PGS beside z_g) beside the others")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    ap.add_argument("--snps", type=int, default=1060)
    ap.add_argument("--shape", type=int, nargs=3, default=[20, 24, 20])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--demographics", default="independent", choices=("independent", "reference"))
    ap.add_argument("--effect-pattern", default="region", choices=("region", "focal", "mixed"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/sklearn_cgni_paper_size")
    ap.add_argument("--out", default=os.fspath(RESULTS / "paper_size"))
    ap.add_argument("--finetune-blocks", type=int, default=0,
                    help="also run B's CGNI fine-tuning the last K CNN blocks (contrastive.finetune_blocks)")
    args = ap.parse_args(argv)
    if args.pgs:
        return pgs_main(args)
    warnings.filterwarnings("ignore")
    rng = np.random.RandomState(args.seed)
    t0, load0 = time.perf_counter(), os.getloadavg()
    summaries, t3, timings, ridge = [], [], [], {}
    for n in args.sizes:
        base = Path(args.work) / f"n{n}_{args.demographics}_{args.effect_pattern}"
        both = []
        for label, items in (("A", False), ("B", True)):
            out = base if label == "A" else base.with_name(base.name + "_B")
            if label == "B" and not out.exists():  # B starts from A's folder: stage 1 and h_v are reused
                shutil.copytree(base, out)
            t = time.perf_counter()
            run_pipeline(out, config(args, n, items), Inputs(embedded=True), force=True, progress=False,
                         preset="cpu", only="scca")
            timings.append({"n": n, "run": label, "seconds": time.perf_counter() - t})
            both.append(collect(out, args.folds, label))
            tab = table3(out)
            if tab is not None:
                t3.append(tab.assign(n=n, run=label))
            print(f"n={n} run {label}: {timings[-1]['seconds']:.0f} s", flush=True)
        o_recs, o_preds, snp_r = oracle(base, args.folds)
        both.append((o_recs, o_preds))
        ridge[n] = snp_r
        recs = pd.concat([b[0] for b in both])
        preds = pd.concat([b[1] for b in both])
        # A's rows other than CGNI are B's too (same h_v, folds and seeds): keep them once
        keep_b = preds["run"].isin(["A", "oracle"]) | preds["model"].str.startswith("CGNI")
        preds = preds[keep_b]
        recs = recs[recs["run"].isin(["A", "oracle"]) | recs["model"].str.startswith("CGNI")]
        s = summarize(recs, preds, n, rng)
        summaries.append(s)
        print(s.round(3).to_string(), flush=True)
    df = pd.concat(summaries)
    df.to_csv(f"{args.out}.csv", index=False)
    write_markdown(args, df, pd.concat(t3) if t3 else None, pd.DataFrame(timings), load0, time.perf_counter() - t0,
                   ridge)
    return df


def write_markdown(args, df, t3, timings, load0, wall, ridge):
    name = {("A", "CGNI contrastive (terms 1+2+4)"): "CGNI, paper's stages 2-3 (A)",
            ("B", "CGNI contrastive (terms 1+2+4)"): "CGNI, items 1-4, tuned (B)",
            ("B", "CGNI on regional GM means"): "CGNI, items 1-4, tuned, regional GM input (B)",
            ("B", "CGNI fine-tuning the last CNN blocks"):
                f"CGNI, items 1-4, tuned, last {args.finetune_blocks} CNN block(s) fine-tuned (B)"}
    df = df.assign(row=[name.get((r, m), m) for r, m in zip(df["run"], df["model"])])
    lines = [f"# Issue 14: the paper-size experiment ({time.strftime('%Y-%m-%d')})", "",
             "`OMP_NUM_THREADS=1 python benchmarks/bench_paper_size.py --sizes "
             f"{' '.join(map(str, args.sizes))} --snps {args.snps} --shape {' '.join(map(str, args.shape))} "
             f"--folds {args.folds} --demographics {args.demographics} --effect-pattern {args.effect_pattern}"
             + (f" --finetune-blocks {args.finetune_blocks}" if args.finetune_blocks else "") + "`: "
             f"the command line's stages (cpu preset stage 1: brain-age CNN once, working-memory CNN per fold with "
             f"early stopping) on `make_cohort(n, {args.snps}, shape={tuple(args.shape)}, "
             f"demographics={args.demographics!r}, effect_pattern={args.effect_pattern!r}, random_state={args.seed})`, "
             f"{args.folds} outer folds + a 10 % holdout. {platform.machine()}, {os.cpu_count()} cores, load average "
             f"{load0[0]:.1f} at the start; wall time {wall:.0f} s.", "",
             "Row B's nested search grid (fixed before the runs): " + json.dumps(GRID) + "; its base settings: "
             + json.dumps(items_for(args)["contrastive"]) + ", stage 3 " + json.dumps(ITEMS["classifier"]) + ".", "",
             "`validation BA` = balanced accuracy of the pooled out-of-fold validation predictions (each "
             "training-part participant once) with a 95 % bootstrap interval; `- h_v` = that minus the "
             "`CNN features h_v -> logistic` row on the same participants, `p` its paired permutation p; holdout = "
             "mean ± sd over the folds' models.", ""]
    for n, d in df.groupby("n", sort=False):
        lines += [f"## n = {n}", "", "| row | validation BA % [95 % CI] | − h_v (points) | p vs h_v | holdout % |",
                  "|---|---|---|---|---|"]
        for r in d.sort_values("validation_ba", ascending=False).to_dict("records"):
            lines.append(f"| {r['row']} | {r['validation_ba']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}] | "
                         f"{r['minus_hv']:+.1f} | {r['p_vs_hv']:.3g} | {r['holdout_mean']:.1f} ± {r['holdout_sd']:.1f} |")
        lines.append("")
    lines += ["## Is the direct genetic path a function of the SNPs?", "",
              "Holdout r of a ridge from the QC'd SNPs to the planted direct genetic path itself (`latent.csv`, "
              "a noiseless target no real study has), mean over the folds' fits: "
              + ", ".join(f"n = {n}: **{r:.2f}**" for n, r in ridge.items()) + ". So the path is a linear function "
              "of the SNPs; what a model learning from working-memory labels lacks is information, not capacity "
              "(compare `classical: SNPs -> logistic`).", "",
              "## Learning curve (validation BA %)", ""]
    curve = df.pivot_table(index="row", columns="n", values="validation_ba", sort=False)
    lines.append("| row | " + " | ".join(f"n = {c}" for c in curve.columns) + " |")
    lines.append("|---|" + "---|" * len(curve.columns))
    for row, vals in curve.iterrows():
        lines.append(f"| {row} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    if t3 is not None:
        lines += ["", "## Table 3: sparse CCA of fold 0's z_v, z_g", "", t3.round(3).to_markdown(index=False)]
    lines += ["", "## Time per run (s)", "", timings.round(0).to_markdown(index=False)]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
