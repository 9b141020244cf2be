"""Helpers the stages share: the configuration's estimators and settings, phenotype and
genotype reading, covariates, warnings and figures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._inputs import InputError
from .._protocol import classical_models

log = logging.getLogger("sklearn_cgni.cli")


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


def _read_phenotypes(run, required=()):
    """The phenotype file under the toolkit's column names, as the ``data`` section maps and codes it."""
    from ...io import read_phenotypes

    d = run.cfg["data"]
    codings = {"sex": dict(d["sex_coding"])} if d["sex_coding"] else None
    return read_phenotypes(run.inputs.phenotypes, id_column=d["id_column"], required=required,
                           columns=dict(d["columns"]), codings=codings, types=_column_types(run.cfg),
                           missing_codes=list(d["missing_codes"]))


def _column_types(cfg):
    """The declared types of the phenotype columns a run reads (the others are inferred)."""
    d = cfg["data"]
    types = {c: "numeric" for c in ("digit_span", "age", *d["measures"])}
    types.update({c: "categorical" for c in d["categorical"]})
    types["sex"] = "sex"
    return types


def _covariates(run, frame):
    """The configured covariates of ``frame`` and which of them are categorical.

    Numeric covariates come back as float; categorical ones (listed in ``data.categorical``, or
    non-numeric) as text, for the estimators to one-hot encode (first level dropped); a
    categorical covariate with fewer than two levels in ``frame`` is left out, with a warning
    (once per run) naming it: the one
    place that decides how each covariate enters the covariate-only rows, the confound table,
    the associations and the adjusted models.
    """
    names = list(run.cfg["data"]["covariates"])
    forced = set(run.cfg["data"]["categorical"])
    out, categorical, dropped = pd.DataFrame(index=frame.index), [], []
    for c in names:
        col = frame[c]
        if c in forced or not pd.api.types.is_numeric_dtype(col):
            col = col.map(lambda v: v if pd.isna(v) else str(v)).astype(object)
            if col.dropna().nunique() < 2:  # nothing to encode: a design column of zeros
                dropped.append((c, sorted(col.dropna().unique().tolist())))
                continue
            out[c] = col
            categorical.append(c)
        else:
            out[c] = col.astype(float)
    warned = getattr(run, "_warned_covariates", set())
    for c, levels in dropped:
        if c not in warned:
            log.warning("covariate %r is categorical with %s among the %d participants used: it is dropped from "
                        "every covariate model", c, f"one level ({levels[0]!r})" if levels else "no value", len(frame))
            warned.add(c)
    run._warned_covariates = warned
    return out, categorical


def _rows_side_by_side(blocks, idx, dtype=None):
    """The values of ``np.hstack(blocks)[idx]`` (same promotion, then ``dtype``) without the whole stacked matrix:
    each block gives only rows ``idx`` (an in-memory array, a memory map or ``WMRows``), then they are put
    side by side. The ``models`` and ``confounds`` stages build their learners' inputs this way."""
    X = np.hstack([np.asarray(b[idx]) for b in blocks])
    return X if dtype is None else X.astype(dtype, copy=False)


def _genotype_blocks(run):
    """The genotype file as :class:`~sklearn_cgni.io.GenotypeBlocks` (read a block of variants at a
    time through :func:`read_genotypes`), with the ``[data]`` variant selection."""
    from ...io import GenotypeBlocks
    from ...io._genotypes import read_id_list

    d = run.cfg["data"]
    snps = list(d["snps"]) + (read_id_list(d["snp_list"]) if d["snp_list"] else [])
    genes, table = list(d["genes"]) or None, None
    if genes:
        table = _gene_table(run)
        if table is None:
            raise InputError(f"data.genes ({genes[:5]}) selects variants through a SNP -> gene table: give "
                             "--snp-genes, or a --snp-info with a 'gene' column.")
    return GenotypeBlocks(run.inputs.genotypes, block_bytes=max(1, int(d["genotype_block_mb"] * 1024**2)),
                          id_column=d["id_column"], allow_dosage=d["allow_dosage"],
                          snps=list(dict.fromkeys(snps)) or None, genes=genes, snp_genes=table,
                          sample=d["sample"] or None, info_table=d["info_table"] or None)


def _cnn_kwargs(run):
    """Training settings that every CNN of the run shares (stage 1 and the genotype scorer)."""
    s = run.cfg["stage1"]
    from .._config import _SHARED_CNN

    return {**{k: s[k] for k in _SHARED_CNN}, "validation_fraction": 0.0, "device": run.device,
            "random_state": run.seed}


def _stage1_kwargs(run, max_epochs, desc):
    """The stage-1 CNNs: shared settings, early stopping on a validation split, LR schedule, input handling."""
    from ...utils._skorch import EpochProgressBar  # picklable: a fitted CNN holding it can be saved

    s = run.cfg["stage1"]
    selection = {k: s[k] for k in ("early_stopping", "validation_fraction", "n_iter_no_change", "lr_schedule",
                                   "standardize_voxels", "augment_shift")}
    if not (s["early_stopping"] or s["lr_schedule"] != "none"):
        selection["validation_fraction"] = 0.0  # nothing watches a validation split: train on everything
    return {**_cnn_kwargs(run), **selection, "max_epochs": max_epochs,
            "callbacks": [EpochProgressBar(desc, max_epochs, run.progress)]}


def _training_summary(model):
    """Epochs run and kept, the final budget, why it stopped, restarts and the per-epoch curves of a
    fitted CNN, for the report."""
    return {"epochs_run": int(model.n_epochs_), "best_epoch": int(model.best_epoch_), "budget": int(model.budget_),
            "stop_reason": model.stop_reason_, "restarts": int(model.n_restarts_), "history": model.history_}


def _wm_cnn(run, desc):
    """The stage-1 working-memory CNN of the configuration (brain-age blocks transferred)."""
    from ...imaging import ImagingCNNClassifier

    s = run.cfg["stage1"]
    return ImagingCNNClassifier(
        brain_age_model=os.fspath(run.path("brain_age") / "brain_age.pt"),
        n_transfer_blocks=s["n_transfer_blocks"], freeze_transferred=s["freeze_transferred"],
        class_weight=_class_weight(run.cfg), scoring=s["finetune_scoring"], refit_head=s["refit_head"],
        **_stage1_kwargs(run, s["finetune_max_epochs"], desc))


def _model_configs(run):
    """The encoder's and stage-3 classifier's parameters, and the [baselines] keys (for paper_models)."""
    from .._config import ESTIMATOR_KEYS, estimator_params

    baselines = {key: run.cfg["baselines"][key] for _, _, keys in ESTIMATOR_KEYS["baselines"] for key in keys}
    return (estimator_params(run.cfg, "contrastive", "ContrastiveSNPEncoder"),
            estimator_params(run.cfg, "classifier", "CGNIClassifier"), baselines)


def _classical(run, n_regions):
    """Table 1's classical rows with the run's inner folds, C grid, class weights and seed."""
    b = run.cfg["baselines"]
    return classical_models(n_regions, cv=b["classical_cv"], Cs=b["classical_Cs"],
                            class_weight=_class_weight(run.cfg), random_state=run.seed)


def _load_atlas(run):
    from ...io import load_atlas

    if run.inputs.atlas:
        return load_atlas(run.inputs.atlas, run.inputs.atlas_labels)
    return None  # AAL2 resampled onto the images by the explainers


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
