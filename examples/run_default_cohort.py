"""Run the method on the embedded default cohort.

This is the README's main job until the ``sklearn-cgni`` command exists. It simulates the default
cohort (reference-study proportions, a reduced image shape for a CPU), writes it as a user would
have it, reads it back, runs quality control and then the stages that are available.

    python examples/run_default_cohort.py --help
"""

# %%
import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="cgni_demo", help="output folder (default: %(default)s)")
    p.add_argument("--n-participants", type=int, default=600, help="participants to simulate (default: %(default)s)")
    p.add_argument("--n-snps", type=int, default=1060, help="SNPs (default: %(default)s, as in the paper)")
    p.add_argument("--shape", type=int, nargs=3, default=(48, 56, 48), metavar=("X", "Y", "Z"),
                   help="image shape (default: %(default)s; the paper's is 128 141 128)")
    p.add_argument("--epochs", type=int, default=4, help="CNN epochs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from sklearn_cgni.datasets import make_cohort
    from sklearn_cgni.genetics import SNPQualityFilter
    from sklearn_cgni.imaging import image_quality_control
    from sklearn_cgni.io import load_cohort

    out = Path(args.output)
    cohort_dir = out / "cohort"
    timings = {}
    t0 = time.perf_counter()
    if not (cohort_dir / "ground_truth.json").exists():
        print(f"[1/4] simulating {args.n_participants} participants, {args.n_snps} SNPs, images {tuple(args.shape)}")
        make_cohort(args.n_participants, args.n_snps, shape=tuple(args.shape), output_dir=cohort_dir,
                    random_state=args.seed, n_jobs=2)
    else:
        print(f"[1/4] reusing the cohort in {cohort_dir}")
    timings["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = load_cohort(cohort_dir)
    for w in caught:
        print(f"      note: {str(w.message)[:200]}")
    n_low, n_high = int((cohort.y == 0).sum()), int((cohort.y == 1).sum())
    print(f"[2/4] loaded {len(cohort.participant_ids)} participants; WM groups: {n_low} low, {n_high} high")
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    images = cohort.images.loc[cohort.y.index]
    qc_img = image_quality_control(images)
    bad = qc_img.index[~qc_img["passed"]].tolist()
    print(f"[3/4] image QC: {len(bad)} image(s) below r=0.9 with the mean image: {bad}")
    geno = cohort.genotypes.loc[cohort.y.index]
    qc_snp = SNPQualityFilter(info_r2=cohort.snp_info["info_r2"].to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qc_snp.fit(geno)
    print(f"      SNP QC: kept {int(qc_snp.get_support().sum())} of {geno.shape[1]} SNPs; "
          f"removed {qc_snp.exclusions_['reason'].value_counts().to_dict()}")
    timings["qc"] = time.perf_counter() - t0

    truth = cohort.ground_truth
    planted = set(truth["qc_fail_snps"])
    removed = set(qc_snp.exclusions_["snp"])
    summary = {
        "n_participants": len(cohort.participant_ids),
        "wm_groups": {"low": n_low, "high": n_high},
        "image_qc_failed": bad,
        "image_qc_recall_of_planted_bad_images": len(set(bad) & set(truth["bad_images"])) / max(1, len(truth["bad_images"])),
        "snp_qc_removed": len(removed),
        "snp_qc_recall_of_planted_failures": len(removed & planted) / max(1, len(planted)),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    print("[4/4] later stages: see the issues tracker; this run stops after quality control")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
