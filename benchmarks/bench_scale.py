"""Memory and time of the run's stages as the cohort grows (issue 27, item 3: memory flat in n).

A simulated cohort (``make_cohort``, uncompressed NIfTI on a coarse 20×24×20 grid, 1,060 SNPs as in
the paper) is written once per size into a scratch folder outside the repository (``--scratch``;
reused when it is there). Each stage then runs in its own child process, so the measurements do
not accumulate: each child reports its peak resident set size (``VmHWM``: this process image
alone; ``os.wait4``'s maxrss also counts the parent's pages at fork) and samples its anonymous
resident memory (the peak without memory-mapped files such as the image cache). What each child runs:

``data``
    The ``data`` stage of ``sklearn-cgni run`` (align, image QC over every header and image,
    WM groups, splits, SNP QC), as the CLI runs it (``--preset cpu``).
``cache``
    The ``image_cache`` stage: every QC-passed image decoded once into the run's float16 memory map
    (bytes on disk reported; the map is memory-mapped, so its pages are counted in RSS only while
    resident). Before stop 35 this was :func:`~sklearn_cgni.io.build_float16_cache` of the brain-age
    CNN's training images, which the CLI did not use.
``epoch``
    One epoch of the cpu-preset brain-age CNN (``BrainAgeCNNTransformer``, the preset's
    architecture and batch size, no validation split) on the brain_age stage's training
    participants (QC passed, not holdout), read from that map as the brain_age stage reads it
    (``Run.images``).
``regions``
    The ``regions`` stage (regional gray-matter means over AAL2 of every QC-passed image).
``snp_qc``
    The genotype file read and filtered as the data stage does it: a block of variants at a time
    (:class:`~sklearn_cgni.io.GenotypeBlocks`, ``data.genotype_block_mb``), ``SNPQualityFilter``
    decided on the training participants and applied to all, written to memory-mapped
    ``genotypes_qc.npy`` / ``genotypes_raw.npy`` in a scratch folder. (Before stop 29 it read the
    whole matrix and filtered it in memory.)
``models``
    The ``models`` stage on fold 0 (WM participants only) with every model at a budget of one
    epoch and no cross-fitting (``--set`` below): the point is how memory and time grow, not
    accuracy. Its ``h_v`` input, the fine-tuned CNN's features (``finetune_f0/hv.npy``), is
    replaced by random features of the cpu preset's width (the fine-tuning stage is one more
    stage-1 epoch, measured by ``epoch``).
``assoc``
    The score associations of the ``scores`` stage (:func:`association_table`: OLS per score and
    measure, covariates, 1,000 Freedman-Lane permutations instead of the default 10,000: the cost per
    permutation is what grows with the participants)
    on every QC-passed participant, with 8 stand-in scores (regional means, whose cost is that of
    any score column) instead of the cross-fitted CNN scores.
``adjusted``
    The ``adjusted_cnn_f0`` stage (the confound table's imaging CNN on covariate-adjusted images,
    fold 0 of the WM participants) with a budget of one epoch: the voxel-wise covariate
    coefficients fitted over the training images, one fine-tuning epoch reading the adjusted images,
    the validation fold scored. Its brain-age CNN (``brain_age.pt``, which the stage transfers) is
    one epoch on 8 images, trained in the child before the measurement starts. Since stop 37 the
    stage reads the image cache and adjusts each image when read; before, it held the adjusted
    training images as a float32 array (a memory map in scratch beyond 2 GiB).
``confounds``
    The ``confounds`` stage (the confound table: every model of ``confounds.models`` raw, adjusted
    and on the age- and sex-matched participants, per fold of the WM training part, with the
    covariate-only rows and 1,000 permutations) at a budget of one epoch per torch model, like
    ``models``. Its ``h_v`` input, the frozen brain-age CNN's features (``brain_age/hv_wm.npy``), is
    replaced by random features of the cpu preset's width, and its "Imaging CNN" row, which reads the
    fold CNNs' saved predictions and the ``adjusted_cnn_f<k>`` stages (measured by ``adjusted``), is
    left out.

Usage (the results file was written by this)::

    nice -n 10 python benchmarks/bench_scale.py --sizes 10000 25000 50000

Writes the tables to ``benchmarks/results/scale_tables.md`` (and ``.csv``); ``--report CSV ...`` writes
them from the CSV files of separate runs (e.g. one per size). ``benchmarks/results/scale.md`` has the
results, the fixes they led to, and what is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHAPE = (20, 24, 20)
N_SNPS = 1060
STAGES = ("data", "cache", "epoch", "regions", "snp_qc", "models", "assoc", "adjusted", "confounds")
H_V_WIDTH = 32 * 2 * 3 * 2  # the cpu preset's flattened last block at 20x24x20 (32 channels, 2x3x2)
OVERRIDES = [
    "run.threads=1", "run.device=\"cpu\"",
    "stage1.early_stopping=false", "stage1.lr_schedule=\"none\"",
    "contrastive.max_epochs=1", "contrastive.early_stopping=false",
    "classifier.max_epochs=1", "classifier.early_stopping=false", "classifier.cross_fit=0",
    "baselines.max_epochs=1", "baselines.early_stopping=false",
    "scores.n_permutations=1000",  # the cost per permutation is what grows with n; 10,000 (the default) is 10x
]
STAGE_OVERRIDES = {  # the adjusted CNN: one fine-tuning epoch (no warm-up, no minimum, a budget that does not grow)
    "adjusted": ["stage1.finetune_max_epochs=1", "stage1.min_epochs=0", "stage1.warmup_epochs=0",
                 "stage1.budget_growth=1.0"],
    # the confound table without its Imaging CNN row (the adjusted CNN is the `adjusted` child)
    "confounds": ['confounds.models=["Brain-age CNN features", "CGNI", "Imaging-Genetic NN", "Imaging-Genetic SVM", '
                  '"Sparse Genetic NN", "classical: regional GM -> logistic", "classical: SNPs -> logistic", '
                  '"classical: regional GM + SNPs (stacked)"]'],
}


# ---------------------------------------------------------------------------------------------- child side
def _run_object(cohort, out, stage=None):
    from sklearn_cgni.cli._config import load_config
    from sklearn_cgni.cli._inputs import resolve_inputs
    from sklearn_cgni.cli.stages._base import Run, build_plan

    cfg = load_config(preset="cpu", overrides=OVERRIDES + STAGE_OVERRIDES.get(stage, [])
                      + json.loads(os.environ.get("BENCH_SCALE_SET", "[]")))
    run = Run(out, cfg, resolve_inputs(cohort=cohort), progress=False, device="cpu")
    run.input_fp = "bench_scale"
    return run, {p.name: p for p in build_plan(run)}


def _folder(run, name):
    """The store folder of stage ``name``, created if missing."""
    folder = run.store.path(name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _stage(run, plan, name):
    """Run the CLI stage ``name`` into its store folder (upstream outputs already there)."""
    return run.execute(plan[name], _folder(run, name))


def _watch_memory(peaks, every=0.1):
    """Keep the largest anonymous and file-backed resident memory of this process (``/proc``).

    File-backed pages (the float16 cache's memory map, NIfTI files nibabel maps) are counted in
    the peak RSS but are the on-disk data, which the kernel can drop at any time; the anonymous
    peak is the memory the process itself holds.
    """
    import threading

    def poll():
        while True:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "RssFile:")):
                        key, kb = line.split()[:2]
                        peaks[key] = max(peaks.get(key, 0), int(kb))
            time.sleep(every)

    threading.Thread(target=poll, daemon=True).start()


def child(stage, cohort, out):
    import numpy as np
    import torch

    peaks = {}
    _watch_memory(peaks)
    torch.set_num_threads(1)
    run, plan = _run_object(cohort, out, stage)
    extra = {}
    t0 = time.perf_counter()
    c0 = time.process_time()
    if stage == "data":
        _stage(run, plan, "data")
    elif stage == "regions":
        _stage(run, plan, "regions")
    elif stage in ("cache", "epoch"):
        from sklearn_cgni.cli.stages._common import _arch, _cnn_kwargs
        from sklearn_cgni.cli.stages.brain_age import _brain_age_participants
        from sklearn_cgni.imaging import BrainAgeCNNTransformer

        if stage == "cache":  # the run's image_cache stage (threads: run.threads=1)
            t0, c0 = time.perf_counter(), time.process_time()
            result = _stage(run, plan, "image_cache")
            extra["cache_bytes"] = int(result["bytes"])
            # what the store keeps of a finished stage, read by the epoch child (Run.result)
            (run.store.path("image_cache") / "_done.json").write_text(json.dumps({"result": result}))
        else:
            with run.running(plan["brain_age"]):
                parts, _, _ = run.data()
                fit, _ = _brain_age_participants(parts)
                images = run.images(parts.loc[fit, "image"])  # the map the cache stage wrote
            model = BrainAgeCNNTransformer(**_arch(run.cfg), **{**_cnn_kwargs(run), "num_workers": 0, "min_epochs": 1, "max_restarts": 0},
                                           max_epochs=1, early_stopping=False, lr_schedule="none")
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(images, parts.loc[fit, "age"].to_numpy())
            extra["n_fit"] = len(fit)
    elif stage == "snp_qc":
        from sklearn_cgni.cli.stages._common import _genotype_blocks
        from sklearn_cgni.cli.stages.data import _snp_qc_by_block

        with run.running(plan["brain_age"]):
            parts, _, _ = run.data()
        train = parts.index[(parts["split"] == "train").to_numpy()]
        scratch = Path(out) / "snp_qc_bench"
        scratch.mkdir(parents=True, exist_ok=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with run.running(plan["data"]):
            kept, _, _ = _snp_qc_by_block(run, _genotype_blocks(run), parts.index, train, None, scratch)
        extra["kept"] = len(kept)
        shutil.rmtree(scratch)
    elif stage == "models":
        with run.running(plan["models_f0"]):
            wm, _, _, _ = run.wm(genotypes=False)
        hv_dir = run.store.path("finetune_f0")
        hv_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        np.save(hv_dir / "hv.npy", np.maximum(rng.standard_normal((len(wm), H_V_WIDTH), dtype=np.float32), 0))
        t0, c0 = time.perf_counter(), time.process_time()
        _stage(run, plan, "models_f0")
        extra["n_wm"] = len(wm)
    elif stage == "assoc":
        from sklearn_cgni.cli.stages._common import _covariates, _read_phenotypes
        from sklearn_cgni.explain import association_table

        with run.running(plan["scores"]):
            parts, _, _ = run.data()
            ids = parts.index[parts["image_qc_passed"].to_numpy()]
            R, names = run.regions(ids)
            pheno = _read_phenotypes(run).reindex(ids)
        import pandas as pd

        c = run.cfg["scores"]
        scores = pd.DataFrame(R[:, :8], index=ids, columns=names[:8])
        cov_frame, categorical = _covariates(run, pheno)
        covs = list(cov_frame.columns)
        pheno[covs] = cov_frame
        measures = [m for m in run.cfg["data"]["measures"] if m in pheno.columns]
        t0, c0 = time.perf_counter(), time.process_time()
        association_table(scores, pheno, measures, covariates=covs, categorical=categorical,
                          n_permutations=c["n_permutations"], random_state=0)
        extra["n_permutations"] = int(c["n_permutations"])
    elif stage == "adjusted":
        from sklearn_cgni.cli.stages._common import _arch, _cnn_kwargs
        from sklearn_cgni.cli.stages.brain_age import _brain_age_participants
        from sklearn_cgni.imaging import BrainAgeCNNTransformer

        with run.running(plan["brain_age"]):
            parts, _, _ = run.data()
            fit, _ = _brain_age_participants(parts)
            fit = fit[:8]
            images = run.images(parts.loc[fit, "image"])
        BrainAgeCNNTransformer(**_arch(run.cfg), **{**_cnn_kwargs(run), "num_workers": 0, "min_epochs": 1,
                                                     "max_restarts": 0, "validation_fraction": 0.0},
                               max_epochs=1, early_stopping=False, lr_schedule="none",
                               ).fit(images, parts.loc[fit, "age"].to_numpy()).save_weights(
            _folder(run, "brain_age") / "brain_age.pt")
        with run.running(plan["adjusted_cnn_f0"]):
            wm, _, _, _ = run.wm(genotypes=False)
        t0, c0 = time.perf_counter(), time.process_time()
        result = _stage(run, plan, "adjusted_cnn_f0")
        extra.update(n_wm=len(wm), epochs_run=result["epochs_run"])
    elif stage == "confounds":
        with run.running(plan["confounds"]):
            wm, _, _, _ = run.wm(genotypes=False)
        rng = np.random.default_rng(0)
        np.save(_folder(run, "brain_age") / "hv_wm.npy",
                np.maximum(rng.standard_normal((len(wm), H_V_WIDTH), dtype=np.float32), 0))
        t0, c0 = time.perf_counter(), time.process_time()
        result = _stage(run, plan, "confounds")
        extra.update(n_wm=len(wm), n_matched=result["n_matched"])
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    extra["seconds"] = time.perf_counter() - t0
    extra["cpu_seconds"] = time.process_time() - c0  # one thread: the work, whatever the machine's load
    time.sleep(0.25)  # one more sample
    with open("/proc/self/status") as f:  # this process image's own peak (wait4's maxrss also counts
        # the parent's pages at fork, e.g. a parent that has just simulated the cohort)
        extra["peak_hwm_mib"] = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    extra["peak_anon_mib"] = peaks.get("RssAnon:", 0) / 1024
    extra["peak_file_mib"] = peaks.get("RssFile:", 0) / 1024
    print("BENCH_SCALE " + json.dumps(extra), flush=True)


# ---------------------------------------------------------------------------------------------- parent side
def make_cohort_folder(n, scratch):
    folder = Path(scratch) / f"cohort_{n}"
    if (folder / "phenotypes.csv").exists():
        return folder
    from sklearn_cgni.datasets import make_cohort

    t = time.perf_counter()
    make_cohort(n, N_SNPS, shape=SHAPE, output_dir=folder, compress=False, random_state=0)
    print(f"cohort n={n} written in {time.perf_counter() - t:.0f} s", flush=True)
    return folder


def measure(stage, cohort, out, overrides=()):
    """Run ``stage`` in a child process: its result, its own peak RSS (``os.wait4``) and wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "BENCH_SCALE_SET": json.dumps(list(overrides))}
    Path(out).mkdir(parents=True, exist_ok=True)
    log_out, log_err = Path(out) / f"{stage}.out", Path(out) / f"{stage}.err"
    t = time.perf_counter()
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        p = subprocess.Popen([sys.executable, __file__, "--child", stage, "--cohort", os.fspath(cohort),
                              "--out", os.fspath(out)], stdout=fo, stderr=fe, env=env)
        _, status, rusage = os.wait4(p.pid, 0)  # this child alone (RUSAGE_CHILDREN would be the max of all)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {p.returncode}):\n{log_err.read_text()[-3000:]}")
    line = [ln for ln in log_out.read_text().splitlines() if ln.startswith("BENCH_SCALE ")][-1]
    res = json.loads(line.split(" ", 1)[1])
    res["peak_rss_mib"] = res.pop("peak_hwm_mib", rusage.ru_maxrss / 1024)  # kB on Linux
    res["process_seconds"] = wall
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 25000, 50000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--scratch", default="/tmp/scale", help="cohorts and run folders (outside the repository)")
    ap.add_argument("--out", default=os.fspath(RESULTS / "scale_tables"), help="tables: <out>.md and <out>.csv")
    ap.add_argument("--run-tag", default="", help="suffix of the run folders under --scratch (run_<n><tag>)")
    ap.add_argument("--report", nargs="+", metavar="CSV", help="only write the tables of earlier runs' CSV files")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a configuration override of every stage (after the script's own), e.g. "
                         "data.genotype_block_mb=16")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cohort", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.cohort, args.out)
    import pandas as pd

    if args.report:
        return report(pd.concat([pd.read_csv(f) for f in args.report], ignore_index=True), args.out)
    rows = []
    for n in args.sizes:
        cohort = make_cohort_folder(n, args.scratch)
        out = Path(args.scratch) / f"run_{n}{args.run_tag}"
        for stage in args.stages:
            cache = out / "stages" / "image_cache"  # the run's image_cache stage folder
            if stage == "cache":  # built afresh, so that it is measured
                shutil.rmtree(cache, ignore_errors=True)
            res = measure(stage, cohort, out, args.overrides)
            res.update(participants=n, stage=stage, load1=os.getloadavg()[0],
                       cache_bytes=sum(f.stat().st_size for f in cache.glob("*.f16")) if cache.exists() else 0)
            rows.append(res)
            print(f"n={n} {stage}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    report(pd.DataFrame(rows), args.out)


def report(df, out):
    """Write ``out``.csv and ``out``.md: the table n × stage and the ratios of the largest to the smallest n."""
    import pandas as pd

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(out).with_suffix(".csv"), index=False)
    sizes = sorted(df["participants"].unique())
    cols = [c for c in ("participants", "stage", "seconds", "cpu_seconds", "process_seconds", "peak_rss_mib",
                        "peak_anon_mib", "cache_bytes", "load1") if c in df]
    lines = [f"Sizes {' / '.join(map(str, sizes))}; machine {platform.machine()}, {os.cpu_count()} cores; one "
             "thread per stage.", "",
             "`seconds`: wall seconds of the stage's own work in its child process; `cpu_seconds`: its CPU "
             "seconds (one thread, so the work itself, less sensitive to the machine's load); `process_seconds`: "
             "the child from start to exit (imports and reading upstream outputs included); `peak_rss_mib`: the "
             "child's peak resident set size (VmHWM), file-backed pages included; `peak_anon_mib`: its peak "
             "anonymous resident memory (sampled every 0.1 s from /proc), i.e. without the memory-mapped cache "
             "and image files; `load1`: the 1-minute load average after the stage.", "",
             df[cols].to_markdown(index=False, floatfmt=".1f"), ""]
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        a = df[df.participants == lo].set_index("stage")
        b = df[df.participants == hi].set_index("stage")
        ratio = pd.DataFrame({k: b[k] / a[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib", "peak_anon_mib")
                              if k in a and k in b})
        lines += [f"Ratios {hi} / {lo} (size ratio {hi / lo:g}):", "", ratio.to_markdown(floatfmt=".2f"), ""]
    Path(out).with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
