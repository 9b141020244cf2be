"""``sklearn-cgni run``: the whole method on a cohort, stage by stage, resumable.

Stages (each one's outputs in ``<output>/stages/<name>/``, see :mod:`._stages`):

``simulate``      the embedded default cohort (only when no input is given)
``data``          align by participant ID, WM groups, image QC, splits, SNP QC
``regions``       regional gray-matter means over the atlas (the classical rows' image features)
``brain_age``     stage 1: 3D CNN pre-trained on brain age (training participants)
``finetune_f<k>`` stage 1: CNN transferred to WM and fine-tuned on fold k; h_v
``models_f<k>``   stages 2-3, the baselines and the classical rows on fold k (Tables 1 and 2)
``scca``          sparse CCA of (z_v, z_g) of fold 0's CGNI model (Table 3)
``occlusion``     regions and SNPs per component (eq. 6, Fig. 3)
``genes``         genes per component, regions per component, enrichment (Tables 4-5)
``scores``        brain-genotype scores (cross-fitted), IDP baseline, saliency, associations
``confounds``     covariate-only baselines, adjusted and matched scores
``recovery``      ground-truth recovery (simulated cohorts only)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._config import EXECUTION_KEYS, config_fingerprint, config_slice, diff_configs, to_toml
from ._protocol import CLASSICAL_MODELS, TABLE1_CGNI, classical_models, paper_models, paper_splits, score_model
from ._stages import OutputFolderError, StageStore, epoch_bar_callback, progress_bar, write_json

__all__ = ["Inputs", "InputError", "resolve_inputs", "run_pipeline"]

log = logging.getLogger("sklearn_cgni.cli")


class InputError(ValueError):
    """Cohort inputs that cannot be used (missing files, no images...)."""


# ---------------------------------------------------------------------------- inputs
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
    files the ``[data]`` section names (``snp_list``, ``sample``, ``info_table``)."""
    parts = {}
    for key, value in asdict(inputs).items():
        if key in ("notes", "embedded") or value is None:
            continue
        parts[key] = [os.fspath(value), _stat(value)]
    for key in ("snp_list", "sample", "info_table"):
        value = (data or {}).get(key)
        if value and Path(value).is_file():
            parts[f"data.{key}"] = [os.path.abspath(value), _stat(value)]
    if inputs.images and Path(inputs.images).suffix == ".csv" and "{id}" not in inputs.images:  # the images a CSV lists
        try:
            from ..io import read_image_paths

            parts["listed_images"] = [_stat(p) for p in read_image_paths(inputs.images, id_column=id_column)]
        except Exception as exc:  # reported properly by the data stage
            parts["listed_images"] = str(exc)
    return config_fingerprint(parts)


# ---------------------------------------------------------------------------- helpers
def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("sklearn-cgni", "torch", "scikit-learn", "skorch", "nibabel", "nilearn", "cca-zoo",
                 "captum", "numpy", "pandas", "statsmodels"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _arch(cfg):
    s = cfg["stage1"]
    return dict(channels=tuple(s["channels"]), padding=s["padding"], pool_blocks=s["pool_blocks"],
                global_pool=None if s["global_pool"] == "none" else s["global_pool"])


def _class_weight(cfg):
    return None if cfg["protocol"]["class_weight"] == "none" else "balanced"


def _caught(records):
    for w in records:
        log.warning("%s", str(w.message)[:1000])


def _savefig(fig, path):
    """Save a matplotlib Figure or a nilearn display as PNG and close it."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    if isinstance(fig, Figure):
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    else:  # nilearn display
        fig.savefig(path, dpi=110)
        fig.close()


def _figure(stage_dir, name, title, caption):
    return {"file": os.fspath(Path(stage_dir.name) / name), "title": title, "caption": caption}


class _Run:
    """State shared by the stages of one ``run``."""

    def __init__(self, out, config, inputs, *, progress, device):
        self.out = Path(out)
        self.cfg = config
        self.inputs = inputs
        self.progress = progress
        self.device = device
        self.store = StageStore(self.out / "stages")
        self.seed = int(config["run"]["seed"])
        self.input_fp = None

    # ---------------------------------------------------------------- loaded outputs
    def data(self):
        d = self.store.path("data")
        parts = pd.read_csv(d / "participants.csv", dtype={"participant_id": str}).set_index("participant_id")
        snps = pd.read_csv(d / "snps.csv", dtype={"snp": str})["snp"].tolist()
        G = np.load(d / "genotypes_qc.npy")
        return parts, snps, G

    def wm(self):
        parts, snps, G = self.data()
        mask = parts["wm_group"].notna().to_numpy() & parts["image_qc_passed"].to_numpy()
        wm = parts[mask]
        y = wm["wm_group"].astype(int).to_numpy()
        return wm, y, G[mask], snps

    def splits(self):
        split = json.loads((self.store.path("data") / "splits.json").read_text())
        train = np.asarray(split["train"])
        hold = np.asarray(split["holdout"])
        cv = [(np.asarray(a), np.asarray(b)) for a, b in split["folds"]]
        return train, hold, cv

    def regions(self, participants=None):
        """Regional gray-matter means and the region names.

        Rows: the given participant IDs, by default the WM participants (rows as :meth:`wm`).
        """
        d = self.store.path("regions")
        ids = pd.read_csv(d / "participants.csv", dtype={"participant_id": str})["participant_id"]
        if participants is None:
            participants = self.wm()[0].index
        rows = pd.Index(ids).get_indexer(pd.Index(participants))
        if (rows < 0).any():
            raise RuntimeError(f"regions stage: no regional means for participant(s) "
                               f"{list(pd.Index(participants)[rows < 0][:5])}")
        R = np.load(d / "regional_means.npy", mmap_mode="r")[rows]
        return np.asarray(R), pd.read_csv(d / "regions.csv")["region"].astype(str).tolist()


# ---------------------------------------------------------------------------- stages
def _stage_simulate(run, folder):
    from ..datasets import make_cohort

    c = run.cfg["cohort"]
    target = run.out / "cohort"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    log.info("simulating the embedded default cohort: %d participants, %d SNPs, images %s, %s SNP effects",
             c["n_participants"], c["n_snps"], tuple(c["shape"]), c["effect_pattern"])
    make_cohort(c["n_participants"], c["n_snps"], shape=tuple(c["shape"]), demographics=c["demographics"],
                effect_pattern=c["effect_pattern"], output_dir=target, random_state=run.seed)
    return {"folder": os.fspath(target), **c}


def _read_phenotypes(run, required=()):
    """The phenotype file under the toolkit's column names, as the ``data`` section maps and codes it."""
    from ..io import read_phenotypes

    d = run.cfg["data"]
    codings = {"sex": dict(d["sex_coding"])} if d["sex_coding"] else None
    return read_phenotypes(run.inputs.phenotypes, id_column=d["id_column"], required=required,
                           columns=dict(d["columns"]), codings=codings)


def _covariates(run, frame):
    """The configured covariates of ``frame`` and which of them are categorical.

    Numeric covariates come back as float; categorical ones (listed in ``data.categorical``, or
    non-numeric) as text, for the estimators to one-hot encode (first level dropped): the one
    place that decides how each covariate enters the covariate-only rows, the confound table,
    the associations and the adjusted models.
    """
    names = list(run.cfg["data"]["covariates"])
    forced = set(run.cfg["data"]["categorical"])
    out, categorical = pd.DataFrame(index=frame.index), []
    for c in names:
        col = frame[c]
        if c in forced or not pd.api.types.is_numeric_dtype(col):
            out[c] = col.map(lambda v: v if pd.isna(v) else str(v)).astype(object)
            categorical.append(c)
        else:
            out[c] = col.astype(float)
    return out, categorical


def _read_genotypes(run):
    """The genotype file through :func:`read_genotypes`, with the ``[data]`` variant selection."""
    from ..io import read_genotypes
    from ..io._genotypes import read_id_list

    d = run.cfg["data"]
    snps = list(d["snps"]) + (read_id_list(d["snp_list"]) if d["snp_list"] else [])
    genes, table = list(d["genes"]) or None, None
    if genes:
        table = _gene_table(run)
        if table is None:
            raise InputError(f"data.genes ({genes[:5]}) selects variants through a SNP -> gene table: give "
                             "--snp-genes, or a --snp-info with a 'gene' column.")
    return read_genotypes(run.inputs.genotypes, id_column=d["id_column"], allow_dosage=d["allow_dosage"],
                          snps=list(dict.fromkeys(snps)) or None, genes=genes, snp_genes=table,
                          sample=d["sample"] or None, info_table=d["info_table"] or None)


def _stage_data(run, folder):
    from ..genetics import SNPQualityFilter
    from ..imaging import image_quality_control
    from ..io import align_cohort, check_image_headers, find_images, working_memory_groups

    cfg, inp = run.cfg, run.inputs
    d = cfg["data"]
    covariates = list(d["covariates"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        pheno = _read_phenotypes(run, required=("digit_span", *covariates))
        images = find_images(inp.images, list(pheno.index), id_column=d["id_column"],
                             suffix=d["image_suffix"] or None, space=d["image_space"] or None)
        geno = _read_genotypes(run)
        info_from_file = geno.attrs.get("info")
        cohort = align_cohort(images, geno, pheno)
    _caught([w for w in caught if issubclass(w.category, UserWarning)])
    images, geno, pheno = cohort.images, cohort.genotypes, cohort.phenotypes
    shape, affine = check_image_headers(images.tolist(), list(images.index))
    log.info("cohort: %d participants with an image, genotypes and phenotypes (%d dropped), %d SNPs, images %s",
             len(images), len(cohort.dropped), geno.shape[1], shape)

    t = cfg["qc"]
    qc = image_quality_control(images, threshold=t["image_threshold"])
    qc.to_csv(folder / "image_qc.csv")
    failed = qc.index[~qc["passed"].astype(bool)].tolist()
    if failed:
        log.warning("image QC: %d image(s) correlate below %.2f with the mean image and are excluded: %s",
                    len(failed), t["image_threshold"], failed[:50])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        groups = working_memory_groups(pheno["digit_span"], low=tuple(cfg["data"]["wm_low"]),
                                       high=tuple(cfg["data"]["wm_high"]))
    n_between = len(pheno) - len(groups)
    missing_cov = pheno[covariates].isna().any(axis=1)
    if missing_cov.any():
        log.warning("%d participant(s) miss a covariate %s and are left out of the WM analysis: %s",
                    int(missing_cov.sum()), covariates, pheno.index[missing_cov].tolist()[:50])
    _, categorical = _covariates(run, pheno)
    for c in categorical:
        levels = pheno[c].dropna().astype(str).unique()
        log.info("covariate %r is categorical: %d levels (%s), one-hot encoded with %r as reference", c,
                 len(levels), ", ".join(sorted(levels)[:10]), sorted(levels)[0] if len(levels) else None)
    parts = pd.DataFrame(index=pheno.index)
    parts["image"] = images
    for c in dict.fromkeys(["age", "sex", *covariates]):
        if c in pheno:
            parts[c] = pheno[c]
    parts["image_qc_r"] = qc["correlation"].reindex(parts.index)
    parts["image_qc_passed"] = qc["passed"].reindex(parts.index).astype(bool)
    wm = groups.reindex(parts.index)
    wm[missing_cov.reindex(parts.index).to_numpy()] = np.nan
    parts["wm_group"] = wm
    in_wm = parts["wm_group"].notna() & parts["image_qc_passed"]
    y = parts.loc[in_wm, "wm_group"].astype(int).to_numpy()
    if (np.bincount(y, minlength=2) < cfg["protocol"]["folds"] + 1).any():
        raise InputError(f"Too few participants in a WM group for {cfg['protocol']['folds']}-fold CV: "
                         f"{int((y == 0).sum())} low, {int((y == 1).sum())} high.")
    p = cfg["protocol"]
    train, hold, cv = paper_splits(y, holdout=p["holdout"], folds=p["folds"], random_state=run.seed)
    wm_ids = parts.index[in_wm]
    parts["split"] = ""
    parts.loc[wm_ids[train], "split"] = "train"
    parts.loc[wm_ids[hold], "split"] = "holdout"
    parts["fold"] = -1
    for k, (_, va) in enumerate(cv):
        parts.loc[wm_ids[va], "fold"] = k
    write_json(folder / "splits.json", {"train": train, "holdout": hold,
                                        "folds": [[a.tolist(), b.tolist()] for a, b in cv]})

    info_r2 = info_from_file  # a BGEN's info (its mfi table, or computed from the probabilities)
    if inp.snp_info:
        info = pd.read_csv(inp.snp_info, dtype={"snp": str}).set_index("snp")
        if "info_r2" in info:
            info_r2 = info["info_r2"]
    snp_qc = SNPQualityFilter(min_info_r2=t["min_info_r2"], max_missing=t["max_missing"], min_maf=t["min_maf"],
                              min_hwe_p=t["min_hwe_p"], info_r2=info_r2, allow_dosage=d["allow_dosage"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        snp_qc.fit(geno.loc[wm_ids[train]])
    _caught([w for w in caught if issubclass(w.category, UserWarning)])
    kept = list(np.asarray(geno.columns)[snp_qc.get_support()])
    G = np.asarray(snp_qc.transform(geno), dtype=np.float32)
    np.save(folder / "genotypes_qc.npy", G)
    np.save(folder / "genotypes_raw.npy", geno[kept].to_numpy(dtype=np.float32))
    pd.DataFrame({"snp": kept}).to_csv(folder / "snps.csv", index=False)
    snp_qc.exclusions_.to_csv(folder / "snp_qc.csv", index=False)
    parts.to_csv(folder / "participants.csv")
    np.save(folder / "affine.npy", affine)
    reasons = snp_qc.exclusions_["reason"].value_counts().to_dict() if len(snp_qc.exclusions_) else {}
    log.info("WM groups: %d low, %d high (%d between the groups or missing); train %d, holdout %d; "
             "SNP QC keeps %d of %d", int((y == 0).sum()), int((y == 1).sum()), n_between, len(train),
             len(hold), len(kept), geno.shape[1])
    return {
        "n_aligned": len(parts), "n_dropped_by_alignment": len(cohort.dropped),
        "dropped_by_alignment": cohort.dropped.head(50).to_dict("records"),
        "image_shape": list(shape), "n_image_qc_failed": len(failed), "image_qc_failed": failed,
        "n_wm": int(in_wm.sum()), "n_low": int((y == 0).sum()), "n_high": int((y == 1).sum()),
        "n_between_groups_or_missing": int(n_between), "n_train": len(train), "n_holdout": len(hold),
        "n_folds": len(cv), "n_snps": int(geno.shape[1]), "n_snps_kept": len(kept),
        "snp_qc_removed": reasons, "snp_qc_removed_snps": snp_qc.exclusions_["snp"].tolist(),
        "missing_calls_imputed": int(np.isnan(geno[kept].to_numpy(dtype=float)).sum()),
        "covariates": covariates, "categorical_covariates": categorical,
    }


def _stage_regions(run, folder):
    """Mean gray matter per atlas region of every participant whose image passed QC.

    A fixed transform, computed once and read by every later stage that needs it: the classical
    rows and the confound table (WM participants) and the brain-genotype scores' SNP screen
    (all participants with an image).
    """
    from ..imaging import RegionalMeans

    parts, _, _ = run.data()
    qc = parts[parts["image_qc_passed"].to_numpy()]
    means = RegionalMeans(_load_atlas(run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        R = means.fit_transform(qc["image"].tolist())
    _caught(caught)
    np.save(folder / "regional_means.npy", R)
    pd.Series(qc.index, name="participant_id").to_csv(folder / "participants.csv", index=False)
    pd.DataFrame({"region": means.region_names_, "n_voxels": means.region_sizes_}).to_csv(folder / "regions.csv",
                                                                                         index=False)
    log.info("regional gray-matter means: %d regions of %s, %d participants", R.shape[1], means.atlas_.name, len(R))
    return {"atlas": means.atlas_.name, "n_regions": int(R.shape[1]), "n_participants": len(R)}


def _cnn_kwargs(run):
    """Training settings that every CNN of the run shares (stage 1 and the genotype scorer)."""
    s = run.cfg["stage1"]
    return dict(dropout=s["dropout"], batch_size=s["batch_size"], lr=s["lr"], weight_decay=s["weight_decay"],
                validation_fraction=0.0, num_workers=s["num_workers"], device=run.device, random_state=run.seed)


def _stage1_kwargs(run, max_epochs, desc):
    """The stage-1 CNNs: shared settings, early stopping on a validation split, LR schedule, input handling."""
    s = run.cfg["stage1"]
    selection = {k: s[k] for k in ("early_stopping", "validation_fraction", "n_iter_no_change", "lr_schedule",
                                   "standardize_voxels", "augment_shift")}
    if not (s["early_stopping"] or s["lr_schedule"] != "none"):
        selection["validation_fraction"] = 0.0  # nothing watches a validation split: train on everything
    return {**_cnn_kwargs(run), **selection, "max_epochs": max_epochs,
            "callbacks": [epoch_bar_callback(desc, max_epochs, run.progress)]}


def _training_summary(model):
    """Epochs run and kept and the per-epoch curves of a fitted stage-1 CNN, for the report."""
    return {"epochs_run": int(model.n_epochs_), "best_epoch": int(model.best_epoch_), "history": model.history_}


def _stage_brain_age(run, folder):
    from ..imaging import BrainAgeCNNTransformer

    parts, _, _ = run.data()
    s = run.cfg["stage1"]
    ok = parts["image_qc_passed"] & parts["age"].notna()
    fit_ids = parts.index[ok & (parts["split"] != "holdout")]
    test_ids = parts.index[ok & (parts["split"] == "holdout")]
    model = BrainAgeCNNTransformer(**_arch(run.cfg), **_stage1_kwargs(run, s["pretrain_max_epochs"], "brain-age CNN"))
    model.fit(parts.loc[fit_ids, "image"].tolist(), parts.loc[fit_ids, "age"].to_numpy())
    model.save_weights(folder / "brain_age.pt")
    pred = model.predict(parts.loc[test_ids, "image"].tolist())
    age_test = parts.loc[test_ids, "age"].to_numpy()
    mae = float(np.mean(np.abs(pred - age_test)))
    mae_mean = float(np.mean(np.abs(age_test - parts.loc[fit_ids, "age"].mean())))
    wm, _, _, _ = run.wm()
    np.save(folder / "hv_wm.npy", model.transform(wm["image"].tolist()))
    log.info("brain-age CNN: holdout MAE %.2f years (predicting the training mean: %.2f); %d epochs, best %d",
             mae, mae_mean, model.n_epochs_, model.best_epoch_)
    return {"mae_holdout": mae, "mae_of_mean_predictor": mae_mean, "n_fit": len(fit_ids), "n_test": len(test_ids),
            "h_v_width": int(model.n_features_out_), "arch": {k: (list(v) if isinstance(v, tuple) else v)
                                                                for k, v in model.arch_.items()},
            **_training_summary(model)}


def _wm_cnn(run, desc):
    """The stage-1 working-memory CNN of the configuration (brain-age blocks transferred)."""
    from ..imaging import ImagingCNNClassifier

    s = run.cfg["stage1"]
    return ImagingCNNClassifier(
        brain_age_model=os.fspath(run.store.path("brain_age") / "brain_age.pt"),
        n_transfer_blocks=s["n_transfer_blocks"], freeze_transferred=s["freeze_transferred"],
        class_weight=_class_weight(run.cfg), scoring=s["finetune_scoring"],
        **_stage1_kwargs(run, s["finetune_max_epochs"], desc))


def _stage_finetune(run, folder, k):
    wm, y, _, _ = run.wm()
    train, hold, cv = run.splits()
    tr, va = cv[k]
    paths = wm["image"].to_numpy()
    cnn = _wm_cnn(run, f"WM CNN fold {k}")
    cnn.fit(paths[tr].tolist(), y[tr])
    cnn.save_weights(folder / "cnn.pt")
    proba = cnn.predict_proba(paths.tolist())
    np.save(folder / "cnn_proba.npy", proba)
    np.save(folder / "hv.npy", cnn.transform(paths.tolist()))
    pred = cnn.classes_[proba.argmax(1)]
    idx = {"train": tr, "validation": va, "holdout": hold}
    records = score_model(lambda ix: pred[ix], {n: (ix, y[ix]) for n, ix in idx.items()},
                          table="Table 1", model="Imaging CNN", fold=k)
    log.info("fold %d imaging CNN: validation %.3f, holdout %.3f; %d epochs, best %d", k,
             records[1]["balanced_accuracy"], records[2]["balanced_accuracy"], cnn.n_epochs_, cnn.best_epoch_)
    return {"records": records, **_training_summary(cnn)}


def _stage_training_curves(run, folder):
    """Figure and table of the stage-1 CNNs' training: loss and validation metric per epoch."""
    from ..explain import plot_training_curves

    folds = run.cfg["protocol"]["folds"]
    runs = {"brain-age CNN": run.store.done_info("brain_age")["result"]}
    for k in range(folds):
        runs[f"WM CNN fold {k}"] = run.store.done_info(f"finetune_f{k}")["result"]
    rows = [{"model": name, "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"],
             "budget": run.cfg["stage1"]["pretrain_max_epochs" if name.startswith("brain") else "finetune_max_epochs"],
             **{f"best_{key}": r["history"][r["best_epoch"] - 1][key] for key in ("valid_mae", "valid_loss", "valid_bacc")
                if r["history"] and key in r["history"][r["best_epoch"] - 1]}}
            for name, r in runs.items()]
    pd.DataFrame(rows).to_csv(folder / "training.csv", index=False)
    figures = []
    if any(r["history"] for r in runs.values()):
        _savefig(plot_training_curves({name: r["history"] for name, r in runs.items()},
                                      best_epochs={name: r["best_epoch"] for name, r in runs.items()}),
                 folder / "training_curves.png")
        figures.append(_figure(folder, "training_curves.png", "Stage-1 training curves",
                               "Training and validation loss per epoch (left axis) and a validation metric (right "
                               "axis; brain age: MAE in years, WM folds: balanced accuracy), per CNN; the dotted "
                               "vertical line marks the epoch kept (best validation MAE for brain age, best "
                               "stage1.finetune_scoring for the WM folds)."))
    return {"rows": rows, "figures": figures}


def _model_configs(run):
    """The encoder's and stage-3 classifier's parameters, and the [baselines] keys (for paper_models)."""
    from ._config import ESTIMATOR_KEYS, estimator_params

    baselines = {key: run.cfg["baselines"][key] for _, _, keys in ESTIMATOR_KEYS["baselines"] for key in keys}
    return (estimator_params(run.cfg, "contrastive", "ContrastiveSNPEncoder"),
            estimator_params(run.cfg, "classifier", "CGNIClassifier"), baselines)


def _covariate_records(run, wm, y, tr, va, hold, k):
    """Covariate-only logistic regressions (each covariate, then all) on the fold's splits, for Tables 1 and 2."""
    from ..evaluation import covariate_baselines

    covs, categorical = _covariates(run, wm)
    tables = ("Table 1", "Table 2") if run.cfg["protocol"]["table2"] else ("Table 1",)
    splits = {"train": (covs.iloc[tr], y[tr]), "validation": (covs.iloc[va], y[va]),
              "holdout": (covs.iloc[hold], y[hold])}
    records = []
    for name, model in covariate_baselines(list(covs.columns), categorical=categorical,
                                           class_weight=_class_weight(run.cfg), random_state=run.seed).items():
        est = model.fit(covs.iloc[tr], y[tr])
        for table in tables:
            records += score_model(est.predict, splits, table=table, model=name, fold=k)
    return records


def _classical(run, n_regions):
    """Table 1's classical rows with the run's inner folds, C grid, class weights and seed."""
    b = run.cfg["baselines"]
    return classical_models(n_regions, cv=b["classical_cv"], Cs=b["classical_Cs"],
                            class_weight=_class_weight(run.cfg), random_state=run.seed)


def _fit_and_score(model, splits, *, table, name, k):
    """Fit ``model`` on ``splits["train"]`` and score it on every split: ``(fitted, records)``, timed and logged."""
    t0 = time.perf_counter()
    est = model.fit(*splits["train"])
    recs = score_model(est.predict, splits, table=table, model=name, fold=k)
    for r in recs:
        r["seconds"] = time.perf_counter() - t0
    log.info("fold %d %s %s: validation %.3f, holdout %.3f (%.1f s)", k, table, name,
             recs[1]["balanced_accuracy"], recs[2]["balanced_accuracy"], time.perf_counter() - t0)
    return est, recs


def _classical_records(run, X, n_regions, y, tr, va, hold, k):
    """Table 1's classical rows (``X`` = [regional means ⊕ SNPs]) fitted on the fold's training rows and scored."""
    splits = {"train": (X[tr], y[tr]), "validation": (X[va], y[va]), "holdout": (X[hold], y[hold])}
    return [r for name, model in _classical(run, n_regions).items()
            for r in _fit_and_score(model, splits, table="Table 1", name=name, k=k)[1]]


def _stage_models(run, folder, k):
    import torch
    from sklearn.base import clone

    wm, y, G, snps = run.wm()
    train, hold, cv = run.splits()
    tr, va = cv[k]
    hv = np.load(run.store.path(f"finetune_f{k}") / "hv.npy")
    X = np.hstack([hv, G]).astype(np.float32)
    n_img = hv.shape[1]
    contrastive, classifier, baselines = _model_configs(run)
    # a term switched off here (gamma_vv = 0, as in the paper) takes the paper's weight in the combinations with it
    weights = {n: contrastive[n] for n in ("lambda_vg", "sigma_gv", "gamma_vv", "theta_gg")}
    models = paper_models(n_img, contrastive=contrastive, classifier=classifier, baselines=baselines,
                          class_weight=_class_weight(run.cfg), device=run.device, random_state=run.seed,
                          table2=run.cfg["protocol"]["table2"], term_weights=weights,
                          cross_fit=run.cfg["classifier"]["cross_fit"])
    splits = {"train": (X[tr], y[tr]), "validation": (X[va], y[va]), "holdout": (X[hold], y[hold])}
    records = []
    bar = progress_bar(list(models.items()), enabled=run.progress, desc=f"models fold {k}", leave=False,
                       position=1, unit="model")
    for (table, name), model in bar:
        bar.set_postfix_str(name[:30])
        est, recs = _fit_and_score(clone(model), splits, table=table, name=name, k=k)
        records += recs
        if k == 0 and table == "Table 1" and name == TABLE1_CGNI:
            enc = est.named_steps["contrastive"]
            enc = getattr(enc, "transformer_", enc)  # cross-fitted: the encoder refitted on all training rows
            torch.save({k2: v.detach().cpu() for k2, v in enc.net_.module_.state_dict().items()},
                       folder / "encoders.pt")
            np.save(folder / "z_v.npy", enc.transform_image(X))
            np.save(folder / "z_g.npy", enc.transform_genetic(X))
            write_json(folder / "encoders.json", {
                "n_image_features": n_img, "n_genetic_features": G.shape[1],
                "image_hidden": list(enc.image_hidden), "genetic_hidden": list(enc.genetic_hidden),
                "n_components": enc.n_components, "loss_curve": enc.loss_curve_})
    R, _ = run.regions()
    records += _classical_records(run, np.hstack([R, G]), R.shape[1], y, tr, va, hold, k)
    records += _covariate_records(run, wm, y, tr, va, hold, k)
    return {"records": records}


def _stage_scca(run, folder):
    from ..explain import SparseCCA, plot_canonical_correlations

    c = run.cfg["scca"]
    d = run.store.path("models_f0")
    z_v, z_g = np.load(d / "z_v.npy"), np.load(d / "z_g.npy")
    _, hold, cv = run.splits()
    tr, va = cv[0]
    scca = SparseCCA(n_components=list(c["n_components"]), alpha_x=list(c["alpha_x"]), alpha_y=list(c["alpha_y"]),
                     cv=c["cv"], n_permutations=c["n_permutations"], random_state=run.seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scca.fit(z_v[tr], z_g[tr])
    table3 = scca.correlation_table(train=(z_v[tr], z_g[tr]), validation=(z_v[va], z_g[va]),
                                    holdout=(z_v[hold], z_g[hold]))
    table3.to_csv(folder / "table3.csv")
    np.savez(folder / "weights.npz", x=scca.x_weights_, y=scca.y_weights_)
    figures = []
    try:
        _savefig(plot_canonical_correlations(table3), folder / "canonical_correlations.png")
        figures.append(_figure(folder, "canonical_correlations.png", "Canonical correlations (Table 3)",
                               "Sparse CCA of z_v and z_g of fold 0's CGNI model, per component and split."))
    except Exception as exc:  # plotting is optional (matplotlib)
        log.warning("canonical-correlation figure skipped: %s", exc)
    log.info("sparse CCA: %s; holdout correlations %s", scca.best_params_,
             np.round(table3["holdout"].to_numpy(), 3).tolist())
    return {"best_params": scca.best_params_, "n_components": int(scca.n_components_), "figures": figures}


def _load_atlas(run):
    from ..io import load_atlas

    if run.inputs.atlas:
        return load_atlas(run.inputs.atlas, run.inputs.atlas_labels)
    return None  # AAL2 resampled onto the images by the explainers


def _stage_occlusion(run, folder):
    import torch

    from ..explain import OcclusionExplainer, plot_region_effects, plot_snp_contributions
    from ..imaging import ImagingCNNClassifier
    from ..nn import ContrastiveEncoders

    c = run.cfg["occlusion"]
    wm, y, G, snps = run.wm()
    _, _, cv = run.splits()
    tr = cv[0][0]
    occ_idx = tr if not c["n_participants"] else tr[: c["n_participants"]]
    paths = wm["image"].to_numpy()
    cnn = ImagingCNNClassifier.from_weights(os.fspath(run.store.path("finetune_f0") / "cnn.pt"),
                                            paths[occ_idx[:2]].tolist(), device=run.device)
    d = run.store.path("models_f0")
    meta = json.loads((d / "encoders.json").read_text())
    enc = ContrastiveEncoders(meta["n_image_features"], meta["n_genetic_features"], tuple(meta["image_hidden"]),
                              tuple(meta["genetic_hidden"]), n_components=meta["n_components"])
    enc.load_state_dict(torch.load(d / "encoders.pt", map_location="cpu", weights_only=True))
    enc.eval().to(cnn.device_)
    w = np.load(run.store.path("scca") / "weights.npz")
    occ = OcclusionExplainer((w["x"], w["y"]), feature_extractor=cnn, image_encoder=enc.image_encoder,
                             genetic_encoder=enc.genetic_encoder, atlas=_load_atlas(run),
                             region_threshold=c["region_threshold"], snp_threshold=c["snp_threshold"],
                             batch_size=c["batch_size"])
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        occ.fit(paths[occ_idx].tolist(), pd.DataFrame(G[tr], columns=snps))
    _caught(caught)
    occ.region_contributions_.to_csv(folder / "region_contributions.csv")
    occ.snp_contributions_.to_csv(folder / "snp_contributions.csv")
    occ.significant_regions_.to_csv(folder / "significant_regions.csv", index=False)
    occ.significant_snps_.to_csv(folder / "significant_snps.csv", index=False)
    import nibabel as nib

    nib.save(occ.atlas_.img, folder / "atlas_on_grid.nii.gz")
    occ.atlas_.labels.to_csv(folder / "atlas_labels.csv", index=False)
    figures = []
    try:
        if len(occ.significant_regions_):
            fig = plot_region_effects(occ.significant_regions_, occ.atlas_,
                                      title="Significant regions across components (red +, blue -)")
            _savefig(fig, folder / "fig3_regions.png")
            figures.append(_figure(folder, "fig3_regions.png", "Fig. 3: regions by component sign",
                                   "Atlas regions whose occlusion changes the imaging canonical variate beyond "
                                   f"{c['region_threshold']} SD, coloured by the sign of their effect, averaged "
                                   "over the sparse-CCA components."))
        _savefig(plot_snp_contributions(occ.snp_contributions_, threshold=c["snp_threshold"]),
                 folder / "snp_contributions.png")
        figures.append(_figure(folder, "snp_contributions.png", "SNP contributions per component",
                               f"z-scored occlusion contributions; dashed lines at ±{c['snp_threshold']} SD."))
    except Exception as exc:
        log.warning("occlusion figures skipped: %s", exc)
    log.info("occlusion: %d significant region rows, %d significant SNP rows (%d participants' images)",
             len(occ.significant_regions_), len(occ.significant_snps_), len(occ_idx))
    return {"atlas": occ.atlas_.name, "n_regions": int(len(occ.region_contributions_)),
            "n_image_participants": len(occ_idx), "n_snp_participants": len(tr),
            "n_image_forwards": int(occ.n_image_forwards_), "figures": figures,
            "component_orientation": occ.component_orientation_}


def _gene_table(run):
    if run.inputs.snp_genes:
        try:
            return pd.read_csv(run.inputs.snp_genes, dtype=str)
        except (ValueError, OSError) as exc:  # optional: reported as a note by the genes stage
            log.warning("SNP -> gene table %r could not be read: %s", run.inputs.snp_genes, exc)
            return None
    if run.inputs.snp_info:
        info = pd.read_csv(run.inputs.snp_info, dtype=str)
        if "gene" in info:
            return info[[c for c in ("snp", "gene", "ensembl_id") if c in info]]
    return None


def _stage_genes(run, folder):
    from ..explain import enrichment_test, genes_per_component, map_snps_to_genes, read_gmt, regions_per_component

    occ = run.store.path("occlusion")
    sig_snps = pd.read_csv(occ / "significant_snps.csv", dtype={"snp": str})
    sig_regions = pd.read_csv(occ / "significant_regions.csv")
    notes = []
    table = _gene_table(run)
    if len(sig_regions):
        regions_per_component(sig_regions).to_csv(folder / "table5.csv", index=False)
    if table is None and run.inputs.snp_genes:
        notes.append(f"The SNP -> gene table {run.inputs.snp_genes!r} could not be read: Table 4 and the "
                     "enrichment are skipped (see run.log).")
    elif table is None:
        notes.append("No SNP -> gene table given (--snp-genes, or a 'gene' column in --snp-info): Table 4 "
                     "and the enrichment are skipped.")
    elif len(sig_snps):
        source = run.inputs.snp_genes or run.inputs.snp_info
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # unmapped SNPs: noted and logged just below
                table4 = genes_per_component(sig_snps, table)
            table4.to_csv(folder / "table4.csv", index=False)
            unmapped = sorted({s_ for row in table4["unmapped_snps"] for s_ in row})
            if unmapped:
                notes.append(f"{len(unmapped)} significant SNP(s) are not in the SNP -> gene table {source!r} and "
                             f"have no gene in Table 4 or the enrichment: {', '.join(unmapped[:20])}"
                             + (" ..." if len(unmapped) > 20 else "") + ".")
                log.warning("%s", notes[-1])
        except (ValueError, OSError) as exc:  # an optional annotation: a gap in Table 4, never the run
            notes.append(f"Table 4 skipped: the SNP -> gene table {source!r} could not be used: {exc}")
            log.warning("%s", notes[-1])
            table4 = None
        if table4 is not None and run.inputs.gene_sets:
            try:
                _, snps, _ = run.data()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # unmapped SNPs: noted above
                    mapping = map_snps_to_genes(list(snps), table)
                genes = sorted(set(mapping.loc[mapping["snp"].isin(set(sig_snps["snp"])), "gene"].dropna()))
                background = sorted(set(mapping["gene"].dropna()))
                g = run.cfg["genes"]  # sets are restricted to the background by enrichment_test
                if not genes:
                    raise ValueError("none of the significant SNPs has a gene in the SNP -> gene table")
                res = enrichment_test(genes, read_gmt(run.inputs.gene_sets), background=background,
                                      method=g["enrichment_method"],
                                      min_set_size=g["min_set_size"])
                res.to_csv(folder / "enrichment.csv", index=False)
            except (ValueError, OSError) as exc:
                notes.append(f"Enrichment skipped: {exc}")
                log.warning("%s", notes[-1])
        elif table4 is not None:
            notes.append("No GMT gene sets given (--gene-sets): enrichment skipped.")
    else:
        notes.append("No significant SNP: Table 4 and the enrichment are empty.")
    for n in notes:
        log.info("%s", n)
    return {"notes": notes}


def _screen_snps(R, G, snps, k):
    """The ``k`` SNPs most associated with regional gray matter in these rows, strongest first.

    Statistic: max over regions of |Pearson r| between the regional means ``R`` and the SNP's
    observed calls (``G``, NaN = missing); SNPs without variation in these rows are skipped.
    """
    stat = np.full(G.shape[1], -np.inf)
    for j in range(G.shape[1]):
        ok = np.isfinite(G[:, j])
        g = G[ok, j]
        if ok.sum() < 3 or g.std() == 0:
            continue
        Rz = R[ok] - R[ok].mean(axis=0)
        sd = Rz.std(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (Rz * (g - g.mean())[:, None]).mean(axis=0) / (sd * g.std())
        r = r[np.isfinite(r)]
        if r.size:
            stat[j] = np.abs(r).max()
    order = np.argsort(-stat, kind="stable")
    return [snps[j] for j in order[:k] if np.isfinite(stat[j])]


def _score_snp_choice(run, G_all, images, folds):
    """Which SNPs the brain-genotype scores are for: ``(G, select, source)`` for cross_fit_scores.

    ``scores.snps`` when given (the same SNPs in every fold). Otherwise a screen nested in the
    cross-fitting: in each fold, the ``scores.max_snps`` SNPs whose calls correlate most with
    regional gray-matter means (max |r| over atlas regions, from the regions stage) among that
    fold's training participants only, so the choice never sees the participants it scores.
    Nothing from CGNI (stage 2, occlusion) is used.
    """
    c = run.cfg["scores"]
    snps = list(G_all.columns)
    if c["snps"]:
        unknown = [s_ for s_ in c["snps"] if s_ not in set(snps)]
        if unknown:
            raise InputError(f"scores.snps lists SNP(s) not in the cohort after QC: {unknown[:10]}.")
        chosen = list(c["snps"])
        flat = [s_ for s_ in chosen if not all(np.nanstd(G_all[s_].to_numpy()[tr]) > 0 for tr, _ in folds)]
        if flat:
            raise InputError(f"scores.snps: SNP(s) {flat[:10]} do not vary within a cross-fitting training fold.")
        return G_all[chosen], None, "config"
    R, _ = run.regions(images.index)
    values = G_all.to_numpy(dtype=float)
    by_fold = {}
    for k, (tr, _) in enumerate(folds):
        by_fold[np.asarray(tr).tobytes()] = chosen = _screen_snps(R[tr], values[tr], snps, c["max_snps"])
        if not chosen:
            raise InputError(f"No SNP varies among the training participants of cross-fitting fold {k + 1}; "
                             "brain-genotype scores need polymorphic SNPs (or set scores.enabled = false).")
    return G_all, lambda tr: by_fold[np.asarray(tr).tobytes()], "screen"


def _held_out_accuracy(G, scores):
    """Per SNP and model: r of the held-out score with the observed genotype where both exist."""
    rows = []
    for snp in scores["CNN"].columns:
        obs = G[snp].to_numpy(dtype=float)
        for name, sc in scores.items():
            v = sc[snp].to_numpy(dtype=float)
            m = np.isfinite(obs) & np.isfinite(v)
            ok = m.sum() > 2 and v[m].std() > 0 and obs[m].std() > 0
            rows.append({"snp": snp, "model": name,
                         "r_held_out": float(np.corrcoef(v[m], obs[m])[0, 1]) if ok else float("nan"),
                         "n": int(m.sum())})
    return pd.DataFrame(rows)


def _stage_scores(run, folder):
    from sklearn.model_selection import KFold

    from ..explain import SaliencyExplainer, association_table
    from ..imaging import BrainGenotypeScorer, cross_fit_scores, make_idp_scorer

    c = run.cfg["scores"]
    parts, snps, _ = run.data()
    raw = np.load(run.store.path("data") / "genotypes_raw.npy")
    ok = parts["image_qc_passed"].to_numpy()
    ids = parts.index[ok]
    cv = KFold(c["cv"], shuffle=True, random_state=run.seed)
    folds = list(cv.split(np.zeros(len(ids))))
    images = parts.loc[ids, "image"]
    G_all = pd.DataFrame(raw[ok], index=ids, columns=snps)
    if not c["snps"]:  # a SNP constant here has nothing to score (listed ones are checked per fold below)
        G_all = G_all.loc[:, (G_all.max() > G_all.min()).to_numpy()]
    G, select, source = _score_snp_choice(run, G_all, images, folds)
    watch = c["early_stopping"] or c["lr_schedule"] != "none"
    scorer = BrainGenotypeScorer(
        task=c["task"], brain_age_model=os.fspath(run.store.path("brain_age") / "brain_age.pt"),
        n_transfer_blocks=c["n_transfer_blocks"],
        **{**_cnn_kwargs(run), "validation_fraction": c["validation_fraction"] if watch else 0.0},
        max_epochs=c["max_epochs"], early_stopping=c["early_stopping"], lr_schedule=c["lr_schedule"],
        n_iter_no_change=c["n_iter_no_change"],
        callbacks=[epoch_bar_callback("genotype-score CNN", c["max_epochs"], run.progress)])
    log.info("brain-genotype scores: %s, %d-fold cross-fitting on %d participants",
             f"{len(G.columns)} SNPs from scores.snps" if select is None else
             f"the {c['max_snps']} SNPs per fold most associated with regional gray matter in its training part",
             c["cv"], len(ids))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        cnn_scores, estimators = cross_fit_scores(scorer, images.tolist(), G, cv=folds, select=select,
                                                  return_estimators=True)
        affine = np.load(run.store.path("data") / "affine.npy")
        idp_scores = cross_fit_scores(make_idp_scorer(_load_atlas(run), affine=affine, alpha=c["idp_alpha"]),
                                      images.tolist(), G, cv=folds, select=select)
    _caught(caught)
    cnn_scores.index, idp_scores.index = ids, ids
    cnn_scores.to_csv(folder / "scores_cnn.csv")
    idp_scores.to_csv(folder / "scores_idp.csv")
    chosen = list(cnn_scores.columns)
    acc = _held_out_accuracy(G, {"CNN": cnn_scores, "IDP": idp_scores})
    per_fold = [{str(x) for x in est.snp_names_} for est in estimators]
    acc["folds_scored"] = [sum(snp in f for f in per_fold) for snp in acc["snp"]]
    acc.to_csv(folder / "score_accuracy.csv", index=False)
    complete = [s_ for s_ in chosen if cnn_scores[s_].notna().all()]  # scored in every fold
    pheno = _read_phenotypes(run)
    measures = [m for m in run.cfg["data"]["measures"] if m in pheno.columns]
    pheno = pheno.reindex(ids)
    cov_frame, categorical = _covariates(run, pheno)
    covs = list(cov_frame.columns)
    keep = pheno[covs].notna().all(axis=1).to_numpy()
    pheno[covs] = cov_frame
    assoc = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        for name, sc in (("CNN", cnn_scores), ("IDP", idp_scores)):
            if measures and complete:
                t = association_table(sc.loc[keep, complete], pheno[keep], measures, covariates=covs,
                                      categorical=categorical, n_permutations=c["n_permutations"],
                                      random_state=run.seed)
                t.insert(0, "model", name)
                assoc.append(t)
    _caught(caught)
    if assoc:
        pd.concat(assoc).to_csv(folder / "associations.csv", index=False)
    # saliency of fold 0's scorer on its own held-out participants
    test0 = folds[0][1][: c["saliency_participants"]]
    sal = SaliencyExplainer(estimators[0], atlas=_load_atlas(run), top_k=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        sal.fit(images.iloc[test0].tolist())
    _caught(caught)
    if sal.top_regions_ is not None:
        sal.top_regions_.to_csv(folder / "saliency_top_regions.csv", index=False)
    summary = acc.groupby("model")["r_held_out"].mean().to_dict()
    log.info("brain-genotype scores: mean held-out r with the genotype: %s", {k: round(v, 3) for k, v in summary.items()})
    return {"snps": chosen, "n_participants": len(ids), "mean_r": summary, "measures": measures, "covariates": covs,
            "source_of_snps": source, "snps_per_fold": [list(est.snp_names_) for est in estimators],
            "snps_in_every_fold": complete,
            "epochs": [{"epochs_run": int(est.n_epochs_), "best_epoch": int(est.best_epoch_)} for est in estimators]}


def _brain_age_feature_model(n_img, class_weight, seed):
    """Logistic regression on the frozen brain-age CNN features h_v (no WM label ever reached the CNN)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("h_v", ColumnTransformer([("h_v", "passthrough", slice(0, n_img))])),
                     ("scale", StandardScaler()),
                     ("logistic", LogisticRegression(class_weight=class_weight, max_iter=2000, random_state=seed))])


def _imaging_cnn_confound_scores(run, folder, wm, y, cv, covariates, categorical, matched_ids):
    """Per-fold confound scores of the fine-tuned imaging CNN (Table 1's "Imaging CNN").

    raw and matched: the fold models of the finetune stages (their saved predictions), scored
    on each validation fold and on its matched participants; adjusted: the same CNN
    re-fine-tuned per fold on images whose voxels have the covariates regressed out
    (:class:`ImageCovariateRegressor`, fitted on the fold's training participants).
    """
    import shutil

    import nibabel as nib
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import Pipeline

    from ..evaluation import ImageCovariateRegressor
    from ..evaluation._incremental import _proba_logit

    rows, preds = [], []
    in_match = wm.index.isin(matched_ids) if matched_ids is not None else None
    frame = pd.concat([wm[["image"]], _covariates(run, wm)[0]], axis=1)
    for k, (tr, va) in enumerate(cv):
        proba = np.load(run.store.path(f"finetune_f{k}") / "cnn_proba.npy")
        pred = proba.argmax(1)  # the classes are 0 (low) and 1 (high) in every fold
        preds.append(pd.DataFrame({"model": "Imaging CNN", "fold": k, "participant": wm.index[va],
                                   "prediction": _proba_logit(proba[va, 1])}))
        evals = {"raw": va}
        if in_match is not None:
            evals["matched"] = va[in_match[va]]
        for ev, idx in evals.items():
            ok = len(idx) and len(np.unique(y[idx])) == 2
            rows.append({"model": "Imaging CNN", "kind": "model", "evaluation": ev, "fold": k,
                         "score": float(balanced_accuracy_score(y[idx], pred[idx])) if ok else np.nan,
                         "n_train": len(tr), "n_test": len(idx)})
        first = nib.load(wm["image"].iloc[0])
        n_vox = int(np.prod(first.shape[:3]))
        tmp = folder / f"residuals_f{k}"  # a memory map when the training images do not fit in 2 GiB
        adj = ImageCovariateRegressor(covariates, categorical=categorical,
                                      output_dir=tmp if len(tr) * n_vox * 4 > 2 ** 31 else None)
        model = Pipeline([("covariate_adjustment", adj), ("cnn", _wm_cnn(run, f"adjusted WM CNN fold {k}"))])
        model.fit(frame.iloc[tr], y[tr])
        pred_va = model.predict(frame.iloc[va])
        rows.append({"model": "Imaging CNN", "kind": "model", "evaluation": "adjusted", "fold": k,
                     "score": float(balanced_accuracy_score(y[va], pred_va)), "n_train": len(tr), "n_test": len(va)})
        if k == 0:  # what was removed: one coefficient map per covariate (intensity per unit), fold 0
            fitted = model.named_steps["covariate_adjustment"]
            for name, coef in zip(fitted.design_names_, fitted.coef_):
                nib.save(nib.Nifti1Image(coef, first.affine), folder / f"covariate_effect_{name}.nii.gz")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("fold %d imaging CNN: raw %.3f, adjusted %.3f", k, rows[-len(evals) - 1]["score"], rows[-1]["score"])
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True)


def _stage_confounds(run, folder):
    from ..evaluation import evaluate_confounds, match_groups, summarize_confounds

    c = run.cfg["confounds"]
    covariates = list(run.cfg["data"]["covariates"])
    wm, y, G, snps = run.wm()
    train, _, cv = run.splits()
    hv = np.load(run.store.path("brain_age") / "hv_wm.npy")
    n_img = hv.shape[1]
    pos = {p: i for i, p in enumerate(train)}
    folds = [(np.array([pos[i] for i in tr]), np.array([pos[i] for i in va])) for tr, va in cv]
    X = pd.DataFrame(np.hstack([hv, G])[train], index=wm.index[train],
                     columns=[f"h_v{i}" for i in range(n_img)] + list(snps))
    covs, categorical = _covariates(run, wm.iloc[train])
    match = None
    if c["match"]:
        match = match_groups(covs, y[train], random_state=run.seed, **(c["match"] if isinstance(c["match"], dict)
                                                                        else {}))
    contrastive, classifier, baselines = _model_configs(run)
    all_models = paper_models(n_img, contrastive=contrastive, classifier=classifier, baselines=baselines,
                              class_weight=_class_weight(run.cfg), device=run.device, random_state=run.seed,
                              cross_fit=run.cfg["classifier"]["cross_fit"])
    names = {"CGNI": TABLE1_CGNI, "Imaging-Genetic NN": "Imaging-Genetic NN (non-linear)",
             "Imaging-Genetic SVM": "Imaging-Genetic SVM (linear)", "Sparse Genetic NN": "Sparse Genetic NN"}
    models = {}
    for m in c["models"]:
        if m == "Brain-age CNN features":
            models[m] = _brain_age_feature_model(n_img, _class_weight(run.cfg), run.seed)
        elif m in names:
            models[m] = all_models[("Table 1", names[m])]
    R, regions = run.regions()
    classical = {m: est for m, est in _classical(run, R.shape[1]).items() if m in c["models"]}
    X_classical = pd.DataFrame(np.hstack([R, G])[train], index=wm.index[train],
                               columns=[f"GM: {r}" for r in regions] + list(snps))
    log.info("confound evaluation of %s on the training part (%d participants, %d folds)", list(c["models"]), len(X),
             len(folds))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        kw = dict(cv=folds, adjust="first", categorical=categorical, match=match if c["match"] else False,
                  n_permutations=c["n_permutations"], alternative="greater", random_state=run.seed)
        res = evaluate_confounds(models, X, y[train], covs, **kw)
        scores, predictions = res.scores, res.predictions
        if classical:  # their own input, [regional means ⊕ SNPs]; the covariate-only rows are already there
            res = evaluate_confounds(classical, X_classical, y[train], covs, **kw)
            scores = pd.concat([scores, res.scores[res.scores["model"].isin(list(classical))]], ignore_index=True)
            predictions = pd.concat([predictions, res.predictions[res.predictions["model"].isin(list(classical))]],
                                    ignore_index=True)
        if "Imaging CNN" in c["models"]:
            cnn, cnn_pred = _imaging_cnn_confound_scores(run, folder, wm, y, cv, covariates, categorical,
                                                         None if match is None else match.ids)
            scores = pd.concat([scores, cnn], ignore_index=True)
            predictions = pd.concat([predictions, cnn_pred], ignore_index=True)
    _caught(caught)
    rank = {m: i for i, m in enumerate(c["models"])}  # rows in the configuration's order, baselines last
    scores = scores.iloc[np.argsort([rank.get(m, len(rank)) for m in scores["model"]], kind="stable")]
    summary = summarize_confounds(scores, predictions=predictions, y=y[train], covariates=covs,
                                  categorical=categorical, baseline="covariates: " + " + ".join(covariates),
                                  alternative="greater",
                                  n_permutations=c["n_permutations"], random_state=run.seed)
    summary.to_csv(folder / "confounds.csv", index=False)
    scores.to_csv(folder / "confound_scores.csv", index=False)
    predictions.to_csv(folder / "confound_predictions.csv", index=False)
    if match is not None and match.get("balance") is not None:
        pd.DataFrame(match.balance).to_csv(folder / "matching_balance.csv")
    features = {
        "Imaging CNN": "the fine-tuned stage-1 CNN of each fold on the images (adjusted: covariates regressed out of "
                       "every voxel inside the fold, then the CNN fine-tuned again)",
        "Brain-age CNN features": "logistic regression on h_v of the frozen brain-age CNN (never saw WM labels)",
        CLASSICAL_MODELS[0]: "logistic regression (C by inner CV) on the atlas's regional gray-matter means "
                             "(adjusted: covariates regressed out of each region's mean)",
        CLASSICAL_MODELS[1]: "logistic regression (C by inner CV) on the QC'd SNPs (adjusted: covariates regressed "
                             "out of each SNP)",
        CLASSICAL_MODELS[2]: "logistic regression on the out-of-fold probabilities of the two classical logistic "
                             "regressions (adjusted: both fitted on adjusted inputs; their probabilities are a "
                             "non-linear function of these)",
    }
    return {"models": list(c["models"]),
            "features": "brain-age CNN h_v (frozen, no WM labels) + QC'd SNPs, with covariates regressed out of "
                        "these columns for 'adjusted'",
            "model_features": {m: features[m] for m in c["models"] if m in features},
            # models linear in their input features, for which the adjusted score is age-free
            "linear_models": [m for m in c["models"] if m in ("Brain-age CNN features", *CLASSICAL_MODELS[:2])],
            "n_matched": len(match.ids) if match is not None else None}


def _precision_recall(found, truth):
    found, truth = set(found), set(truth)
    hit = len(found & truth)
    return {"found": len(found), "true": len(truth), "hits": hit,
            "precision": hit / len(found) if found else None, "recall": hit / len(truth) if truth else None}


def _stage_recovery(run, folder):
    gt = json.loads(Path(run.inputs.ground_truth).read_text())
    data = run.store.done_info("data")["result"]
    _, snps, _ = run.data()
    occ = run.store.path("occlusion")
    sig_snps = pd.read_csv(occ / "significant_snps.csv", dtype={"snp": str})
    sig_regions = pd.read_csv(occ / "significant_regions.csv")
    causal = [s for s in gt.get("causal_snps", []) if s in set(snps)]
    out = {
        "image_qc": _precision_recall(data["image_qc_failed"], gt.get("bad_images", [])),
        "snp_qc": _precision_recall(data["snp_qc_removed_snps"], gt.get("qc_fail_snps", [])),
        "causal_snps": _precision_recall(sig_snps["snp"].unique(), causal),
        "affected_regions": _precision_recall(sig_regions["region"].unique() if len(sig_regions) else [],
                                              gt.get("affected_regions", {})),
        "n_causal_snps_planted": len(gt.get("causal_snps", [])), "n_causal_snps_after_qc": len(causal),
    }
    if run.inputs.snp_info:
        info = pd.read_csv(run.inputs.snp_info, dtype={"snp": str}).set_index("snp")
        if "ld_block" in info and len(sig_snps):
            blocks = set(info.loc[causal, "ld_block"])
            found = sig_snps["snp"].unique()
            out["causal_snps"]["ld_tolerant_precision"] = float(np.mean([info.loc[s, "ld_block"] in blocks
                                                                         for s in found]))
    if len(sig_regions):
        signs = sig_regions.groupby("region")["sign"].agg(lambda s: int(np.sign(s.sum())))
        truth = gt.get("affected_regions", {})
        agree = [int(signs[r] == truth[r]) for r in signs.index if r in truth]
        out["affected_regions"]["sign_agreement"] = f"{sum(agree)} of {len(agree)}"
    enr = run.store.path("genes") / "enrichment.csv"
    if enr.exists() and gt.get("planted_gene_set"):
        e = pd.read_csv(enr)
        terms = e["term"].tolist()
        planted = gt["planted_gene_set"]
        out["planted_gene_set"] = {"name": planted, "rank": terms.index(planted) + 1 if planted in terms else None,
                                   "n_sets": len(terms)}
    acc = run.store.path("scores") / "score_accuracy.csv"
    if acc.exists():
        a = pd.read_csv(acc, dtype={"snp": str})
        a["causal"] = a["snp"].isin(set(gt.get("causal_snps", [])))
        out["brain_genotype_scores"] = (a.groupby(["model", "causal"])["r_held_out"].mean().reset_index()
                                        .to_dict("records"))
    write_json(folder / "recovery.json", out)
    log.info("ground truth: causal SNPs %s; regions %s", out["causal_snps"], out["affected_regions"])
    return out


# ---------------------------------------------------------------------------- output folder
def _check_writable(out):
    """The output folder (or the folder it will be made in) must be a writable folder."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"Output path {os.fspath(out)!r} is a file, not a folder; choose a folder with --output.")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"Output folder {os.fspath(out)!r} cannot be made: {os.fspath(parent)!r} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"Output folder {os.fspath(out)!r} cannot be written: {os.fspath(parent)!r} is not "
                                "writable (permissions); choose another folder with --output.")


def check_output_folder(out, fingerprint, config, inputs_fp, *, force):
    """Refuse a folder that is not ours or holds another configuration's run, unless ``force``."""
    out = Path(out)
    _check_writable(out)
    if not out.exists() or not any(out.iterdir()):
        return "new"
    run_json = out / "run.json"
    if not run_json.exists():
        if force:
            log.warning("%s is not an sklearn-cgni output folder; writing into it anyway (--force)", out)
            return "forced"
        raise OutputFolderError(
            f"Output folder {os.fspath(out)!r} is not empty and holds no run.json: it is not an sklearn-cgni output "
            "folder. Choose a new folder with --output, or pass --force to write into it (files of the same "
            "names would be overwritten)."
        )
    old = json.loads(run_json.read_text())
    if old.get("fingerprint") == fingerprint:
        return "resume"
    changes = diff_configs(old.get("config", {}), config)
    if old.get("inputs_fingerprint") != inputs_fp:
        changes.append("the input files (paths, sizes or modification times) changed")
    if force:
        log.warning("--force: %s holds a run with another configuration (%s); stages still valid are kept, "
                    "the others recomputed and overwritten", out, "; ".join(changes) or "other inputs")
        return "forced"
    raise OutputFolderError(
        f"Output folder {os.fspath(out)!r} holds a run with a different configuration or inputs:\n  - "
        + "\n  - ".join(changes or ["(unknown difference)"])
        + "\nNothing was changed. Use another --output, or --force to reuse the stages that are still valid "
          "and recompute (overwrite) the others."
    )


def run_pipeline(out, config, inputs, *, force=False, progress=True, preset="paper", argv=None,
                 only=None):
    """Run every stage into ``out`` (resuming), then write results.json and report.html.

    Parameters
    ----------
    out : path-like
        Output folder (see :func:`check_output_folder` for what is refused).
    config : dict
        From :func:`sklearn_cgni.cli.load_config`.
    inputs : Inputs
        From :func:`resolve_inputs`.
    force : bool, default=False
        Use a folder holding another configuration's run (valid stages kept).
    progress : bool, default=True
        tqdm bars for the stages, the models of a fold and the epochs of each CNN.
    preset : str
        Recorded in the metadata.
    argv : list of str, optional
        The command line, recorded in the metadata.
    only : str, optional
        Stop after this stage (e.g. ``"data"``), then write the report of what exists.

    Returns
    -------
    report : pathlib.Path
        ``out / "report.html"``.
    """
    import torch

    from ..utils import resolve_device

    out = Path(out)
    t_start = time.perf_counter()
    if config["run"]["threads"]:
        torch.set_num_threads(int(config["run"]["threads"]))
    device = resolve_device(config["run"]["device"])
    if inputs.embedded:
        inputs_fp = config_fingerprint({"embedded": config_slice(config, "cohort"), "seed": config["run"]["seed"]})
    else:
        inputs_fp = inputs_fingerprint(inputs, config["data"]["id_column"], config["data"])
    full = config_slice(config, *config)
    fingerprint = config_fingerprint({"config": full, "inputs": inputs_fp})
    state = check_output_folder(out, fingerprint, config, inputs_fp, force=force)
    out.mkdir(parents=True, exist_ok=True)
    handler = _attach_file_log(out)
    try:
        return _run_stages(out, config, inputs, force=force, progress=progress, preset=preset, argv=argv,
                           only=only, device=device, inputs_fp=inputs_fp, fingerprint=fingerprint,
                           state=state, t_start=t_start)
    finally:
        log.removeHandler(handler)
        logging.getLogger("py.warnings").removeHandler(handler)
        handler.close()


def _run_stages(out, config, inputs, *, force, progress, preset, argv, only, device, inputs_fp, fingerprint,
                state, t_start):
    import torch

    from ._report import write_outputs

    log.info("sklearn-cgni run -> %s (%s), device %s, preset %s", out, state, device, preset)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (out / "config.toml").write_text(to_toml(config))
    meta = {"fingerprint": fingerprint, "inputs_fingerprint": inputs_fp, "config": config, "preset": preset,
            "inputs": asdict(inputs), "started": started, "argv": list(argv or sys.argv), "state": state}
    write_json(out / "run.json", meta)

    run = _Run(out, config, inputs, progress=progress, device=device)
    run.input_fp = inputs_fp
    store = run.store
    cfg = config
    sec = lambda *s: config_slice(cfg, *s)  # noqa: E731

    folds = cfg["protocol"]["folds"]
    plan = []
    if inputs.embedded:
        plan.append(("simulate", lambda d: _stage_simulate(run, d), dict(config=sec("cohort", "run"), inputs=inputs_fp),
                     ()))
    plan.append(("data", lambda d: _stage_data(run, d), dict(config=sec("data", "qc", "protocol", "run"),
                                                                 inputs=inputs_fp),
                 ("simulate",) if inputs.embedded else ()))
    plan.append(("regions", lambda d: _stage_regions(run, d), dict(inputs=inputs_fp), ("data",)))
    plan.append(("brain_age", lambda d: _stage_brain_age(run, d), dict(config=sec("stage1")), ("data",)))
    for k in range(folds):
        plan.append((f"finetune_f{k}", lambda d, k=k: _stage_finetune(run, d, k), dict(config=sec("stage1")),
                     ("data", "brain_age")))
        plan.append((f"models_f{k}", lambda d, k=k: _stage_models(run, d, k),
                     dict(config=sec("contrastive", "classifier", "baselines", "protocol", "data")),
                     ("data", "regions", f"finetune_f{k}")))
    plan.append(("training_curves", lambda d: _stage_training_curves(run, d), dict(config=sec("protocol", "stage1")),
                 ("brain_age",) + tuple(f"finetune_f{k}" for k in range(folds))))
    plan.append(("scca", lambda d: _stage_scca(run, d), dict(config=sec("scca")), ("data", "models_f0")))
    plan.append(("occlusion", lambda d: _stage_occlusion(run, d), dict(config=sec("occlusion"), inputs=inputs_fp),
                 ("data", "finetune_f0", "models_f0", "scca")))
    plan.append(("genes", lambda d: _stage_genes(run, d), dict(config=sec("genes"), inputs=inputs_fp),
                 ("data", "occlusion")))
    if cfg["scores"]["enabled"]:
        plan.append(("scores", lambda d: _stage_scores(run, d), dict(config=sec("scores", "stage1", "data"),
                                                                     inputs=inputs_fp),
                     ("data", "regions", "brain_age")))
    if cfg["confounds"]["enabled"]:
        plan.append(("confounds", lambda d: _stage_confounds(run, d),
                     dict(config=sec("confounds", "contrastive", "classifier", "baselines", "data", "stage1",
                                     "protocol")),
                     ("data", "regions", "brain_age") + tuple(f"finetune_f{k}" for k in range(folds))))
    if inputs.embedded:
        gt = out / "cohort" / "ground_truth.json"
        inputs.ground_truth = os.fspath(gt)
    if inputs.ground_truth:
        after = ("data", "occlusion", "genes") + (("scores",) if cfg["scores"]["enabled"] else ())
        plan.append(("recovery", lambda d: _stage_recovery(run, d), dict(inputs=inputs_fp), after))

    bar = progress_bar(plan, enabled=progress, desc="stages", unit="stage", position=0)
    for name, func, kw, after in bar:
        bar.set_postfix_str(name)
        if name == "data" and inputs.embedded:
            _use_embedded_cohort(inputs, out / "cohort")
        store.run(name, func, after=after, **kw)
        if only and name == only:
            break
    bar.close()
    meta.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=time.perf_counter() - t_start,
                device=device, versions=_versions(), stage_seconds=dict(store.timings),
                stage_cpu_seconds=dict(store.cpu_timings), stage_status=dict(store.status), inputs=asdict(inputs), threads=torch.get_num_threads(),
                machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    write_json(out / "run.json", meta)
    return write_outputs(out)


def _use_embedded_cohort(inputs, folder):
    found = cohort_folder_inputs(folder)
    for key, value in asdict(found).items():
        if key not in ("embedded", "notes"):
            setattr(inputs, key, value)


def _attach_file_log(out):
    fh = logging.FileHandler(os.fspath(Path(out) / "run.log"))
    fh.setLevel(logging.INFO)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(fh)
    logging.getLogger("py.warnings").addHandler(fh)
    return fh
