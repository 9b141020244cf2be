"""The ``sklearn-cgni`` command: ``simulate``, ``run`` and ``report``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path

__all__ = ["main", "build_parser", "Terminated"]

log = logging.getLogger("sklearn_cgni.cli")

_DESCRIPTION = """\
sklearn-cgni: imaging genetics from cohort files to a report, in one command.

  sklearn-cgni run                         the whole method on the embedded default cohort
                                           (simulated on the fly, reduced size on a CPU)
  sklearn-cgni run --cohort DIR            on a folder laid out like `simulate` writes it
  sklearn-cgni run --images DIR --genotypes FILE --phenotypes FILE.csv
                                           on your own files
  sklearn-cgni simulate DIR                write a simulated cohort with known ground truth
  sklearn-cgni report OUTPUT               rebuild report.html from a finished run

`sklearn-cgni run --help` lists the inputs, the configuration and the output folder.
"""

_RUN_DESCRIPTION = """\
Run the whole CGNI method on a cohort and write a report:

  quality control -> stage 1 (3D CNN: brain age, then working memory) -> stage 2 (contrastive
  SNP encoder) -> stage 3 (classifier), the paper's baselines and classical rows (logistic
  regression on regional gray-matter means and SNPs) (Tables 1-2) -> sparse CCA (Table 3)
  -> occlusion of atlas regions and SNPs (Fig. 3) -> genes and enrichment (Tables 4-5)
  -> brain-genotype scores and their associations with cognition -> confound table (the covariates:
  age and sex by default, any others listed in data.covariates).

Inputs (pick one):
  nothing                  the embedded default cohort, simulated into OUTPUT/cohort
  --cohort DIR             a folder with images/, genotypes.bed (.pgen, .bgen, .vcf.gz, .csv), phenotypes.csv and
                           optionally snp_info.csv, snp_genes.csv, gene_sets.gmt, atlas.nii.gz +
                           atlas_labels.csv, ground_truth.json (what `sklearn-cgni simulate` writes)
  --images --genotypes --phenotypes  (+ optional --snp-info --snp-genes --gene-sets --atlas)

Images: one gray-matter NIfTI per participant named <participant_id>.nii.gz, a BIDS derivatives
folder (sub-<id>/anat/*.nii.gz; pick the file with --image-suffix/--image-space), a path template
with {id} ('derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz'), or a CSV with columns
participant_id,image. Genotypes: a PLINK 1 prefix (.bed/.bim/.fam), a PLINK 2 prefix (.pgen/.pvar/
.psam), a BGEN v1.2 file (+ its .sample: --sample; its .bgi index is used when present; imputation
info from --info-table, a UK Biobank mfi table, or computed; dosages need --allow-dosage), a VCF
(.vcf, .vcf.gz, .bcf), or a CSV with a participant_id column and one 0/1/2 column per SNP; read
only some variants with --snps FILE (one rsID per line) or --genes GENE,... Phenotypes: a CSV
with participant_id, digit_span (backward digit span: low group 2-5, high 9-12), age and sex
(0/1, F/M or Female/Male); other names are mapped with --id-column eid --column
digit_span=4282-2.0 ... (config: data.id_column, data.columns, data.sex_coding).

Configuration: every hyperparameter has a default (the paper's, in default_config.toml; print it
with --print-config). --preset cpu (the default without a GPU) uses a small CNN, few epochs and
a small embedded cohort; --preset paper uses the paper's settings; --preset tiny checks every
stage in about a minute (meaningless numbers). --config FILE changes any key,
--set section.key=value and the named flags change one key; later wins. Unknown keys are refused.

Output folder (--output, default ./cgni_output):
  report.html   the report, self-contained (open it in a browser)
  results.json  every table and the run's metadata, machine-readable
  tables/       each table as CSV and markdown      figures/  PNG figures
  stages/       each stage's outputs with a fingerprint of what it depended on
  run.json, config.toml, run.log

Re-running the same command resumes: finished stages whose configuration and inputs are
unchanged are skipped, an interrupted stage is recomputed. A folder holding another
configuration's run is refused unless --force (then still-valid stages are reused and the
others recomputed); a non-empty folder that is not an sklearn-cgni output is refused too.
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what batch schedulers send before killing a job), raised like Ctrl-C.

    A subclass of KeyboardInterrupt, so that everything that stops cleanly on Ctrl-C (the
    stages, the estimators' training loops) stops the same way; ``main`` exits with 143
    instead of 130.
    """

    signal_name = "SIGTERM"


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises():
    """Within this block SIGTERM raises :class:`Terminated` in the main thread."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. main() called from a worker thread): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser():
    p = argparse.ArgumentParser(prog="sklearn-cgni", description=_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{run,simulate,report}")

    r = sub.add_parser("run", help="the whole method on a cohort, with a report", description=_RUN_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = r.add_argument_group("inputs (none: the embedded default cohort)")
    g.add_argument("--cohort", metavar="DIR", help="a cohort folder (layout of `sklearn-cgni simulate`)")
    g.add_argument("--images", metavar="DIR|CSV|TEMPLATE",
                   help="folder of <participant_id>.nii[.gz], a BIDS derivatives folder (sub-<id>/anat/*.nii.gz), "
                        "a path template with {id} (e.g. 'derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz'), "
                        "or a CSV participant_id,image")
    g.add_argument("--genotypes", metavar="FILE|PREFIX", help="PLINK 1 prefix or .bed, PLINK 2 prefix or .pgen, "
                   ".bgen (+ .sample), .vcf[.gz]/.bcf, or CSV of 0/1/2 per SNP")
    g.add_argument("--phenotypes", metavar="CSV", help="participant_id, digit_span, age, sex (+ other measures)")
    g.add_argument("--snp-info", metavar="CSV", help="optional: snp, info_r2 (imputation quality), gene ...")
    g.add_argument("--snp-genes", metavar="CSV", help="optional: SNP -> gene table (snp, gene[, ensembl_id])")
    g.add_argument("--gene-sets", metavar="GMT", help="optional: gene sets for the enrichment test")
    g.add_argument("--atlas", metavar="NIFTI", help="optional: labelled atlas (default: AAL2, 120 regions)")
    g.add_argument("--atlas-labels", metavar="CSV", help="label table of --atlas (columns index, name)")
    m = r.add_argument_group("columns and images of your files (config section [data])")
    m.add_argument("--id-column", metavar="NAME", help="participant ID column of the phenotype file (and of a "
                   "genotype or image CSV), e.g. eid (data.id_column; default participant_id)")
    m.add_argument("--column", action="append", default=[], metavar="NAME=COLUMN",
                   help="read the toolkit's column NAME (digit_span, age, sex, a measure or covariate) from your "
                        "COLUMN, e.g. --column digit_span=4282-2.0 (repeatable; data.columns)")
    m.add_argument("--image-suffix", metavar="TEXT", help="BIDS folder: text the image file name must contain, "
                   "e.g. mwp1 or _T1w (data.image_suffix)")
    m.add_argument("--image-space", metavar="LABEL", help="BIDS folder: the images' space-<LABEL>, e.g. "
                   "MNI152NLin2009cAsym (data.image_space)")
    m.add_argument("--snps", metavar="FILE", help="read only the variants listed (one ID per line) in FILE "
                   "(data.snp_list; data.snps takes a list)")
    m.add_argument("--genes", metavar="GENE[,GENE...]", help="read only the variants the SNP -> gene table "
                   "maps to these genes (data.genes)")
    m.add_argument("--sample", metavar="FILE", help="BGEN: its .sample file (data.sample; default: "
                   "<name>.sample next to the .bgen)")
    m.add_argument("--info-table", metavar="FILE", help="BGEN: a UK Biobank mfi table with each variant's "
                   "imputation info (data.info_table; default: computed from the probabilities)")
    m.add_argument("--allow-dosage", action="store_true", default=None,
                   help="accept imputed dosages in [0, 2] (data.allow_dosage)")
    m.add_argument("--pgs", nargs="+", metavar="FILE", help="PGS Catalog scoring files (format 2.0, .txt or "
                   ".txt.gz) to score the cohort with; 'simulated' = the cohort folder's gwas_pgs.txt.gz (data.pgs)")
    c = r.add_argument_group("configuration")
    c.add_argument("--config", metavar="TOML", help="a TOML file with the keys to change")
    c.add_argument("--preset", choices=("auto", "cpu", "paper", "tiny"), default="auto",
                   help="cpu: small and fast; paper: the paper's settings; tiny: a one-minute smoke test; "
                        "auto (default): paper with a GPU, else cpu")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one key, e.g. --set contrastive.max_epochs=20 (repeatable)")
    c.add_argument("--seed", type=int, help="run.seed")
    c.add_argument("--device", help="run.device: auto, cpu, cuda, cuda:1 ...")
    c.add_argument("--threads", type=int, help="run.threads (CPU threads of torch and of the BLAS/OpenMP pools; 0 = default)")
    c.add_argument("--scheduler", metavar="local:N|ADDRESS|FILE",
                   help="run.scheduler: run independent stages (folds, scores, confounds ...) as Dask tasks: "
                        "'local:N' on N worker processes here, 'tcp://host:8786' or a scheduler file on a cluster")
    c.add_argument("--folds", type=int, help="protocol.folds")
    c.add_argument("--print-config", action="store_true", help="print the resolved configuration (TOML) and exit")
    o = r.add_argument_group("output")
    o.add_argument("--output", "-o", default="cgni_output", metavar="DIR", help="output folder (default: %(default)s)")
    o.add_argument("--force", action="store_true",
                   help="use a folder holding another configuration's run (valid stages kept, others recomputed)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--quiet", "-q", action="store_true", help="log warnings only")

    s = sub.add_parser("simulate", help="write a simulated cohort (make_cohort) with known ground truth",
                       description="Write a simulated UK-Biobank-style cohort (images, PLINK and CSV genotypes, "
                                   "phenotypes, SNP and gene tables, atlas, ground_truth.json) to DIR.")
    s.add_argument("output", metavar="DIR")
    s.add_argument("--n-participants", type=int, default=600, help="(default: %(default)s; the paper: 4995)")
    s.add_argument("--n-snps", type=int, default=1060, help="(default: %(default)s, as in the paper)")
    s.add_argument("--shape", type=int, nargs=3, default=(48, 56, 48), metavar=("X", "Y", "Z"),
                   help="image shape (default: 48 56 48; the paper: 128 141 128)")
    s.add_argument("--demographics", choices=("reference", "independent"), default="reference",
                   help="reference: age and sex differ between WM groups as in UK Biobank")
    s.add_argument("--effect-pattern", choices=("region", "focal", "mixed"), default="region",
                   help="how causal SNPs change gray matter: whole atlas regions, focal 12 mm clusters at random "
                        "gray-matter locations, or each SNP one or the other (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")

    rep = sub.add_parser("report", help="rebuild report.html, results.json and tables/ from a run's output folder")
    rep.add_argument("output", metavar="OUTPUT")
    return p


def _setup_logging(quiet):
    from tqdm.auto import tqdm

    class TqdmHandler(logging.Handler):
        def emit(self, record):
            try:
                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # pragma: no cover
                self.handleError(record)

    # one console handler however often main() runs in a process (the class is new at each call)
    handler = next((h for h in log.handlers if getattr(h, "_cgni_console", False)), None)
    if handler is None:
        handler = TqdmHandler()
        handler._cgni_console = True
        handler.addFilter(lambda record: not getattr(record, "file_only", False))  # said once, by main()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").propagate = False


def _resolve_preset(preset):
    if preset != "auto":
        return preset
    try:
        import torch

        return "paper" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def _cmd_run(args):
    from ._config import ConfigError, load_config, to_toml
    from ._inputs import resolve_inputs
    from ._run import run_pipeline

    preset = _resolve_preset(args.preset)
    overrides = list(args.overrides)
    for flag, key in (("seed", "run.seed"), ("device", "run.device"), ("threads", "run.threads"),
                      ("scheduler", "run.scheduler"), ("folds", "protocol.folds"), ("id_column", "data.id_column"),
                      ("image_suffix", "data.image_suffix"), ("image_space", "data.image_space"),
                      ("snps", "data.snp_list"), ("genes", "data.genes"), ("sample", "data.sample"),
                      ("info_table", "data.info_table"), ("allow_dosage", "data.allow_dosage"),
                      ("pgs", "data.pgs")):
        value = getattr(args, flag)
        if flag == "genes" and value is not None:
            value = [g.strip() for g in value.split(",") if g.strip()]
        elif flag in ("snps", "sample", "info_table") and value is not None:
            value = os.path.abspath(value)  # relative to the current folder
        elif flag == "pgs" and value is not None:
            value = [v if v == "simulated" else os.path.abspath(v) for v in value]
        if value is not None:
            section, name = key.split(".")
            overrides.append({section: {name: value}})
    config = load_config(args.config, preset=preset, overrides=overrides)
    if args.column:  # added to the file's data.columns, later flags win
        columns = dict(config["data"]["columns"])
        for item in args.column:
            name, sep, column = (part.strip() for part in item.partition("="))
            if not sep or not name or not column:
                raise ConfigError(f"--column expects NAME=COLUMN (e.g. digit_span=4282-2.0); got {item!r}.")
            columns[name] = column
        config = load_config(args.config, preset=preset, overrides=[*overrides, {"data": {"columns": columns}}])
    if args.print_config:
        print(f"# preset: {preset}\n" + to_toml(config))
        return 0
    inputs = resolve_inputs(cohort=args.cohort, images=args.images, genotypes=args.genotypes,
                            phenotypes=args.phenotypes, snp_info=args.snp_info, snp_genes=args.snp_genes,
                            gene_sets=args.gene_sets, atlas=args.atlas, atlas_labels=args.atlas_labels)
    from ..utils._distributed import init_distributed, shutdown_distributed

    rank, _ = init_distributed(device=config["run"]["device"])  # under torchrun / accelerate launch
    if rank:  # rank 0 speaks for the run (console, run.log, progress bars); the others report errors only
        for handler in log.handlers:
            if getattr(handler, "_cgni_console", False):
                handler.setLevel(logging.ERROR)
    try:
        report = run_pipeline(args.output, config, inputs, force=args.force, progress=not args.no_progress,
                              preset=preset, argv=["sklearn-cgni", *args.argv])
    except BaseException:
        shutdown_distributed(wait=False)
        raise
    shutdown_distributed()  # every process stays until rank 0 has written the report
    if not rank:
        print(f"Report: {os.fspath(report)}")
    return 0


def _cmd_simulate(args):
    from ..datasets import make_cohort
    from ._inputs import InputError

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise InputError(f"{os.fspath(out)!r} is not empty; choose another folder or pass --force.")
    log.info("simulating %d participants, %d SNPs, images %s into %s", args.n_participants, args.n_snps,
             tuple(args.shape), out)
    make_cohort(args.n_participants, args.n_snps, shape=tuple(args.shape), demographics=args.demographics,
                effect_pattern=args.effect_pattern, output_dir=out, random_state=args.seed)
    print(f"Cohort written to {os.fspath(out)}; run it with: sklearn-cgni run --cohort {os.fspath(out)}")
    return 0


def _cmd_report(args):
    from ._report import write_outputs
    from ._inputs import InputError

    out = Path(args.output)
    if not (out / "run.json").exists():
        raise InputError(f"{os.fspath(out)!r} is not an sklearn-cgni output folder (no run.json).")
    print(f"Report: {os.fspath(write_outputs(out))}")
    return 0


def console():
    """The ``sklearn-cgni`` command and ``python -m sklearn_cgni.cli``: :func:`main`, then exit.

    After an interrupt (exit status 130 or 143) the process leaves without the interpreter's
    finalisation, once the streams are flushed: under load the status of an interrupted run was
    sometimes the SIGINT death (-2) instead of 130 even though ``main`` had caught the interrupt and
    recorded it, which batch systems and scripts then misread.
    """
    code = main()
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv=None):
    """The command line's logic; returns the exit status (used in-process by the tests)."""
    from ._config import ConfigError
    from ._inputs import InputError
    from ._stages import OutputFolderError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command recorded in run.json
    if args.version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(version("sklearn-cgni"))
        except PackageNotFoundError:  # pragma: no cover
            print("unknown")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display needed
    _setup_logging(getattr(args, "quiet", False))
    commands = {"run": _cmd_run, "simulate": _cmd_simulate, "report": _cmd_report}
    try:
        with _sigterm_raises():
            return commands[args.command](args)
    except (ConfigError, InputError, OutputFolderError, OSError, ValueError) as exc:
        # the package's readers name the file (and participant, column) in their OSErrors and ValueErrors
        msg = str(exc)
        print("sklearn-cgni: error: " + textwrap.indent(msg, "  ").lstrip(), file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"sklearn-cgni: error: the optional package {exc.name!r} is needed for this step; install "
              "everything the command uses with: pip install 'sklearn-cgni[all]'. Finished stages are kept: "
              "run the same command again afterwards to resume.", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        stage = getattr(exc, "cgni_stage", None)
        during = f" during stage {stage!r} (not marked done)" if stage else ""
        print(f"\nsklearn-cgni: interrupted by {getattr(exc, 'signal_name', 'SIGINT')}{during}. Run the same command "
              "again to resume: finished stages are kept.", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a bug or an unforeseen input problem: one line, the traceback in run.log
        from ._run import failure_summary

        stage = getattr(exc, "cgni_stage", None)
        where = f" in stage {stage!r}" if stage else ""
        log_hint = (f" The traceback is in {os.fspath(Path(args.output) / 'run.log')}."
                    if hasattr(exc, "cgni_stage") else "")  # set where run_pipeline logged it
        print(f"sklearn-cgni: error{where}: {failure_summary(exc)[1]}.{log_hint} Finished stages are kept: run "
              "the same command again to resume after fixing the cause.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
