"""Does the cpu preset's brain-genotype CNN read a strong regional signal? (issue 17, first criterion)

The criterion: where the IDP baseline (regional gray-matter means -> ridge) reads a causal SNP at
held-out r >= 0.9 (region pattern, large effect), the CNN reaches r >= 0.7 *at the cpu preset*.
So this runs the command line itself, ``sklearn-cgni run --preset cpu``, up to the ``scores``
stage (nothing is re-implemented here: the scorer, its transfer from the brain-age CNN, early
stopping on valid_r and the cross-fitting are the run's own), on a simulated cohort with the
region pattern at the given SNP effects, scoring every causal SNP that passed QC
(``scores.snps``), and reads each stage's ``score_accuracy.csv``: held-out r of the CNN's and
the IDP's scores with the true genotype, per causal SNP.

Usage (a few minutes per effect on 2 cores)::

    python benchmarks/bench_scores_cpu_preset.py --effects 0.2 0.5 --n 400

Writes ``benchmarks/results/scores_cpu_preset.md`` (and ``.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from sklearn_cgni.cli._config import load_config
from sklearn_cgni.cli._inputs import cohort_folder_inputs
from sklearn_cgni.cli._run import run_pipeline
from sklearn_cgni.datasets import make_cohort

RESULTS = Path(__file__).parent / "results"


def one_effect(effect, args, tmp):
    cohort_dir = Path(tmp) / f"cohort_{effect}"
    make_cohort(args.n, args.snps, shape=tuple(args.shape), effect_pattern="region", snp_effect=effect,
                n_causal_snps=args.causal, output_dir=cohort_dir, random_state=args.seed)
    gt = json.loads((cohort_dir / "ground_truth.json").read_text())
    causal = [str(s) for s in gt["causal_snps"]]
    config = load_config(None, preset="cpu", overrides=[
        {"scores": {"snps": causal}}, {"run": {"threads": args.threads, "seed": args.seed}}])
    out = Path(tmp) / f"run_{effect}"
    t = time.perf_counter()
    run_pipeline(out, config, cohort_folder_inputs(cohort_dir), progress=False, preset="cpu", only="scores")
    wall = time.perf_counter() - t
    stage = out / "stages" / "scores"
    acc = pd.read_csv(stage / "score_accuracy.csv", dtype={"snp": str})
    done = json.loads((stage / "_done.json").read_text())["result"]
    wide = acc.pivot(index="snp", columns="model", values="r_held_out").reindex(
        [s for s in causal if s in set(acc["snp"])])
    wide.insert(0, "snp_effect", effect)
    return wide, wall, done.get("epochs")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--effects", type=float, nargs="+", default=[0.2, 0.5])
    ap.add_argument("--n", type=int, default=400, help="participants (the cpu preset's embedded cohort: 400)")
    ap.add_argument("--snps", type=int, default=200)
    ap.add_argument("--shape", type=int, nargs=3, default=[24, 28, 24])
    ap.add_argument("--causal", type=int, default=20, help="make_cohort(n_causal_snps=...) (its default: 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="default: results/scores_cpu_preset_causal<N>")
    args = ap.parse_args(argv)
    args.out = args.out or os.fspath(RESULTS / f"scores_cpu_preset_causal{args.causal}")
    load0 = os.getloadavg()
    parts, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for effect in args.effects:
            wide, wall, epochs = one_effect(effect, args, tmp)
            parts.append(wide)
            strong = wide[wide["IDP"] >= 0.9]
            diff = wide["CNN"] - wide["IDP"]
            p = wilcoxon(diff).pvalue if len(diff) >= 5 and np.any(diff != 0) else float("nan")
            lines.append(
                f"| {effect} | {len(wide)} | {wide['CNN'].mean():.3f} | {wide['IDP'].mean():.3f} | {p:.3g} | "
                f"{len(strong)} | {(strong['CNN'] >= 0.7).sum()} | "
                f"{strong['CNN'].min() if len(strong) else float('nan'):.3f} | {wall:.0f} |")
            print(lines[-1], f"epochs {epochs}", flush=True)
    table = pd.concat(parts)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(args.out).with_suffix(".csv"))
    md = [f"# Brain-genotype scores at the cpu preset: region pattern, strong effects ({time.strftime('%Y-%m-%d')})",
          "",
          f"`python benchmarks/bench_scores_cpu_preset.py --effects {' '.join(map(str, args.effects))} --n {args.n} "
          f"--snps {args.snps} --causal {args.causal} --shape {' '.join(map(str, args.shape))} --threads {args.threads} --seed {args.seed}`: "
          "`sklearn-cgni run --preset cpu` up to the scores stage on a simulated cohort (region pattern), every "
          "causal SNP scored (the preset's 3-fold cross-fitting), held-out r of each score with the true "
          f"genotype. Load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, 2 cores.",
          "",
          "| snp_effect | causal SNPs scored | CNN mean r | IDP mean r | paired Wilcoxon p (CNN - IDP) | "
          "SNPs with IDP r >= 0.9 | of those, CNN r >= 0.7 | CNN's lowest r among them | wall s |",
          "|---|---|---|---|---|---|---|---|---|", *lines, "", "Per SNP:", "", table.round(3).to_markdown(), ""]
    Path(args.out).with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
