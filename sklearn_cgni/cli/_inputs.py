"""Where the cohort's files are: ``--cohort`` folders, per-file options, the embedded cohort.

:func:`resolve_inputs` checks the command line's inputs; :func:`inputs_fingerprint` is what
tells a resumed run that the input files changed (paths, sizes and modification times).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._config import config_fingerprint

__all__ = ["Inputs", "InputError", "cohort_folder_inputs", "inputs_fingerprint", "resolve_inputs",
           "use_embedded_cohort"]


class InputError(ValueError):
    """Cohort inputs that cannot be used (missing files, no images...)."""


@dataclass
class Inputs:
    """Where the cohort's files are. ``simulated``: the embedded default cohort."""

    images: str | None = None
    genotypes: str | None = None
    phenotypes: str | None = None
    snp_info: str | None = None
    snp_genes: str | None = None
    gene_sets: str | None = None
    atlas: str | None = None
    atlas_labels: str | None = None
    ground_truth: str | None = None
    embedded: bool = False
    notes: list = field(default_factory=list)


#: Genotype files a cohort folder may hold (``genotypes<suffix>``), the first found is read.
GENOTYPE_FILES = (".bed", ".pgen", ".bgen", ".vcf.gz", ".bcf", ".vcf", ".csv")


def _first_existing(folder, names):
    for name in names:
        p = folder / name
        if p.exists():
            return os.fspath(p.resolve())
    return None


def cohort_folder_inputs(folder):
    """Inputs of a folder laid out like :func:`sklearn_cgni.datasets.make_cohort` writes it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Cohort folder {os.fspath(folder)!r} does not exist.")
    inputs = Inputs(
        images=_first_existing(folder, ["images", "images.csv"]),
        genotypes=_first_existing(folder, [f"genotypes{s}" for s in GENOTYPE_FILES]),
        phenotypes=_first_existing(folder, ["phenotypes.csv"]),
        snp_info=_first_existing(folder, ["snp_info.csv"]),
        snp_genes=_first_existing(folder, ["snp_genes.csv"]),
        gene_sets=_first_existing(folder, ["gene_sets.gmt"]),
        atlas=_first_existing(folder, ["atlas.nii.gz", "atlas.nii"]),
        atlas_labels=_first_existing(folder, ["atlas_labels.csv"]),
        ground_truth=_first_existing(folder, ["ground_truth.json"]),
    )
    missing = [n for n, v in (("images/ (or images.csv)", inputs.images),
                              ("genotypes.bed (or .pgen, .bgen, .vcf.gz, .vcf, .csv)", inputs.genotypes),
                              ("phenotypes.csv", inputs.phenotypes)) if v is None]
    if missing:
        raise InputError(f"Cohort folder {os.fspath(folder)!r} lacks {', '.join(missing)}.")
    return inputs


def resolve_inputs(*, cohort=None, images=None, genotypes=None, phenotypes=None, snp_info=None,
                   snp_genes=None, gene_sets=None, atlas=None, atlas_labels=None):
    """Combine ``--cohort`` and the per-file options; nothing at all means the embedded cohort."""
    given = dict(images=images, genotypes=genotypes, phenotypes=phenotypes, snp_info=snp_info,
                 snp_genes=snp_genes, gene_sets=gene_sets, atlas=atlas, atlas_labels=atlas_labels)
    if cohort is not None:
        inputs = cohort_folder_inputs(cohort)
    elif not any(given.values()):
        return Inputs(embedded=True)
    else:
        inputs = Inputs()
    for key, value in given.items():
        if key == "images" and value is not None and "{id}" in str(value):
            template = os.path.abspath(os.fspath(value))  # relative to the current folder
            fixed = Path(template.split("{id}", 1)[0])
            base = fixed if template.split("{id}", 1)[0].endswith(os.sep) else fixed.parent
            if not base.is_dir():
                raise InputError(f"--images template {value!r}: the folder {os.fspath(base)!r} does not exist.")
            inputs.images = template
            continue
        if value is not None:
            path = Path(value)
            if key == "genotypes" and not path.exists():
                for suffix in (".bed", ".pgen"):  # a PLINK 1 or PLINK 2 prefix
                    if Path(f"{value}{suffix}").exists():
                        path = Path(f"{value}{suffix}")
                        break
            if not path.exists():
                raise InputError(f"--{key.replace('_', '-')} {value!r} does not exist.")
            setattr(inputs, key, os.fspath(path.resolve()))
    missing = [f"--{k}" for k in ("images", "genotypes", "phenotypes") if getattr(inputs, k) is None]
    if missing:
        raise InputError(
            f"Missing {', '.join(missing)}: give all three of --images, --genotypes and --phenotypes, "
            "or --cohort DIR, or no input at all for the embedded default cohort."
        )
    if (inputs.atlas is None) != (inputs.atlas_labels is None):
        raise InputError("--atlas and --atlas-labels go together (a labelled NIfTI and its table "
                         "with columns index,name); give both or neither (AAL2 is the default).")
    images_path = Path(inputs.images)
    if images_path.is_dir():
        from ..io._images import is_bids_root

        if not any(p.name.endswith((".nii", ".nii.gz")) for p in images_path.iterdir()) \
                and not is_bids_root(images_path):
            raise InputError(
                f"No NIfTI images (*.nii, *.nii.gz) found in {os.fspath(images_path)!r}. The image folder "
                "must hold one gray-matter image per participant named <participant_id>.nii.gz, or be a BIDS "
                "derivatives folder (sub-<id>/anat/*.nii.gz); or give a path template with {id}, or a CSV "
                "with columns participant_id,image."
            )
    return inputs


def _stat(path):
    text = os.fspath(path)
    if "{id}" in text:  # an image path template: the files it can match
        import glob

        files = sorted(glob.glob(glob.escape(text).replace(glob.escape("{id}"), "*")))
        return [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    p = Path(path)
    if p.is_dir():
        from ..io._images import is_bids_root

        files = sorted(f for f in p.iterdir() if f.is_file())
        if is_bids_root(p):  # a BIDS tree: the images of every sub-*/[ses-*/]anat
            files += sorted(f for f in p.glob("sub-*/**/anat/*.nii*") if f.is_file())
        return [(os.fspath(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    if p.suffix in (".bed", ".pgen", ".bgen") or p.name.endswith((".vcf", ".vcf.gz", ".bcf")):
        from ..io._genotypes import companion_files  # .bim/.fam, .pvar/.psam, .sample/.bgi, .tbi

        return [(q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in companion_files(p) if q.exists()]
    st = p.stat()
    return [(p.name, st.st_size, st.st_mtime_ns)]


def inputs_fingerprint(inputs, id_column="participant_id", data=None):
    """Paths, sizes and modification times of every input file (contents are not read), with the
    files the ``[data]`` section names (``snp_list``, ``sample``, ``info_table``, ``pgs``)."""
    parts = {}
    for key, value in asdict(inputs).items():
        if key in ("notes", "embedded") or value is None:
            continue
        parts[key] = [os.fspath(value), _stat(value)]
    for key in ("snp_list", "sample", "info_table"):
        value = (data or {}).get(key)
        if value and Path(value).is_file():
            parts[f"data.{key}"] = [os.path.abspath(value), _stat(value)]
    for i, value in enumerate((data or {}).get("pgs", [])):
        if value != "simulated" and Path(value).is_file():
            parts[f"data.pgs.{i}"] = [os.path.abspath(value), _stat(value)]
    if inputs.images and Path(inputs.images).suffix == ".csv" and "{id}" not in inputs.images:  # the images a CSV lists
        try:
            from ..io import read_image_paths

            parts["listed_images"] = [_stat(p) for p in read_image_paths(inputs.images, id_column=id_column)]
        except Exception as exc:  # reported properly by the data stage
            parts["listed_images"] = str(exc)
    return config_fingerprint(parts)



def use_embedded_cohort(inputs, folder):
    """Point ``inputs`` at the files of the simulated cohort in ``folder``."""
    found = cohort_folder_inputs(folder)
    for key, value in asdict(found).items():
        if key not in ("embedded", "notes"):
            setattr(inputs, key, value)
