"""The main job: ``sklearn-cgni run`` on the embedded default cohort.

Equivalent to the command line ``sklearn-cgni run --output cgni_demo``: the default cohort is
simulated into ``cgni_demo/cohort`` (on a machine without a GPU, the ``cpu`` preset: 400
participants, 200 SNPs, 24x28x24 images, a small CNN and few epochs), then every stage runs
(quality control, stage 1, stages 2-3 and the baselines, sparse CCA, occlusion, genes,
brain-genotype scores, confounds, ground-truth recovery) and ``cgni_demo/report.html`` is
written. Run it again and finished stages are skipped.

    python examples/run_default_cohort.py                 # as above
    python examples/run_default_cohort.py --preset paper  # the paper's settings (GPU)
    python examples/run_default_cohort.py --help          # every option of `sklearn-cgni run`
"""

# %%
import os
import sys

from sklearn_cgni.cli import main


def run(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("SKLEARN_CGNI_EXAMPLE_SIZE") == "tiny" and not any(a.startswith("--preset") for a in argv):
        argv = ["--preset", "tiny", *argv]  # CI: every stage in about a minute
    if "--help" not in argv and "-h" not in argv and not any(a in ("-o", "--output") or a.startswith("--output=")
                                                             for a in argv):
        argv = ["--output", "cgni_demo", *argv]
    return main(["run", *argv])


# %%
if __name__ == "__main__":
    sys.exit(run())
