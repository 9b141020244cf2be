"""Aligning images, genotypes and phenotypes by participant ID; working-memory groups."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._images import check_image_headers, images_from_template, is_bids_root, list_bids_images, list_images
from ._tables import read_genotypes, read_phenotypes

__all__ = ["align_cohort", "working_memory_groups", "read_image_paths", "find_images", "load_cohort"]


def _format_ids(ids, limit=20):
    ids = list(ids)
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _as_id_index(obj, what):
    if isinstance(obj, (pd.Series, pd.DataFrame)):
        index = obj.index.astype(str)
    else:
        raise TypeError(f"{what} must be a pandas Series or DataFrame indexed by participant ID; got {type(obj).__name__}.")
    dup = index[index.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Duplicated participant ID(s) in {what}: {_format_ids(dup)}.")
    return index


def find_images(images, participant_ids=None, *, id_column="participant_id", suffix=None, space=None):
    """One image path per participant, from any of the accepted layouts.

    Parameters
    ----------
    images : str or path-like
        - a path template with ``{id}`` (e.g. ``"derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz"``;
          relative to the current folder), resolved for ``participant_ids``;
        - a folder of ``<participant_id>.nii[.gz]`` files (see :func:`list_images`);
        - a BIDS derivatives folder with ``sub-<id>/[ses-*/]anat/*.nii[.gz]`` (see
          :func:`list_bids_images`), filtered by ``suffix`` and ``space``;
        - a CSV with an ID column and an ``image`` column (see :func:`read_image_paths`).
    participant_ids : sequence of str, optional
        The participants wanted (those of the phenotype file); required for a template, and
        restricts the search in a BIDS folder.
    id_column : str, default="participant_id"
        ID column of a CSV.
    suffix, space : str, optional
        File-name filters of a BIDS folder (refused for the other layouts).

    Returns
    -------
    paths : pandas.Series
        Index: participant ID (str), values: absolute image paths.
    """
    spec = os.fspath(images)
    if "{id}" in spec:
        if participant_ids is None:
            raise ValueError(f"The image path template {spec!r} needs the participant IDs to look for.")
        kind, paths = "template", images_from_template(spec, participant_ids)
    elif Path(spec).is_dir() and not any(p.name.endswith((".nii", ".nii.gz")) for p in Path(spec).iterdir()) \
            and is_bids_root(spec):
        return list_bids_images(spec, suffix=suffix, space=space, participant_ids=participant_ids)
    elif Path(spec).is_dir():
        kind, paths = "folder", list_images(spec)
    elif spec.endswith((".nii", ".nii.gz")):
        raise ValueError(
            f"Images {spec!r} is {'one NIfTI image' if Path(spec).is_file() else 'a NIfTI path that does not exist'}; "
            "give a folder of <participant_id>.nii[.gz], a BIDS derivatives folder, a path template with {id} "
            "or a CSV participant_id,image."
        )
    elif not Path(spec).exists():
        raise FileNotFoundError(f"Images {spec!r}: no such folder or image CSV.")
    else:
        kind, paths = "CSV", read_image_paths(spec, id_column=id_column)
    if suffix or space:
        raise ValueError(
            f"An image file-name filter (suffix={suffix!r}, space={space!r}) applies to a BIDS folder; "
            f"{spec!r} is an image {kind}."
        )
    return paths


def read_image_paths(path, *, id_column="participant_id", path_column="image"):
    """Read a CSV listing one image path per participant.

    Relative paths are resolved against the CSV's folder.

    Returns
    -------
    paths : pandas.Series
        Index: participant ID, values: absolute image paths.
    """
    from ._tables import PHENOTYPE_NA_VALUES, _read_keyed_table

    path = Path(path)
    table, _, _ = _read_keyed_table(path, id_column=id_column, required=(path_column,), what="image CSV",
                                    na_values=PHENOTYPE_NA_VALUES,
                                    hint=f" An image CSV has the columns {id_column},{path_column}.")
    empty = table[path_column].isna()
    if empty.any():
        raise ValueError(f"Image CSV {os.fspath(path)!r} has no image path for participant(s) "
                         f"{table.index[empty].tolist()[:5]}.")
    base = path.parent
    paths = table[path_column].map(lambda p: os.fspath((base / str(p)).resolve()) if not os.path.isabs(str(p)) else str(p))
    return paths.rename("image")


def align_cohort(images=None, genotypes=None, phenotypes=None):
    """Inner-join images, genotypes and phenotypes on participant ID, reporting what was dropped.

    Parameters
    ----------
    images : pandas.Series, optional
        Image paths indexed by participant ID (see :func:`list_images`, :func:`read_image_paths`).
    genotypes : DataFrame, optional
        Participants × SNPs (see :func:`read_genotypes`).
    phenotypes : DataFrame, optional
        Indexed by participant ID (see :func:`read_phenotypes`).

    Returns
    -------
    cohort : Bunch
        ``participant_ids`` (list, sorted by ID: the same cohort gives the same order whatever
        the row order of its files), ``images``, ``genotypes``, ``phenotypes`` restricted and
        ordered to them, and
        ``dropped``: a DataFrame (``participant_id``, ``reason``) of every participant left out.

    Warns
    -----
    UserWarning
        Listing the dropped participants and why, when any are dropped.
    """
    sources = {"image": images, "genotypes": genotypes, "phenotypes": phenotypes}
    given = {k: v for k, v in sources.items() if v is not None}
    if len(given) < 2:
        raise ValueError(f"align_cohort needs at least two of images, genotypes, phenotypes; got {list(given)}.")
    indexes = {k: _as_id_index(v, k) for k, v in given.items()}
    # one canonical order, whatever the files' row orders: by participant ID
    union = sorted(set().union(*(set(idx) for idx in indexes.values())))
    keep, dropped = [], []
    sets = {k: set(v) for k, v in indexes.items()}
    for pid in union:
        missing = [k for k in given if pid not in sets[k]]
        if missing:
            dropped.append((pid, "no " + " and no ".join(missing)))
        else:
            keep.append(pid)
    if not keep:
        raise ValueError(
            "No participant ID is shared by all of " + ", ".join(given) + ". "
            f"Examples: " + "; ".join(f"{k}: {_format_ids(list(v)[:3], 3)}" for k, v in indexes.items())
        )
    dropped = pd.DataFrame(dropped, columns=["participant_id", "reason"])
    if len(dropped):
        summary = dropped.groupby("reason")["participant_id"].apply(lambda s: _format_ids(s, 10))
        warnings.warn(
            f"align_cohort dropped {len(dropped)} participant(s) not present in every source: "
            + "; ".join(f"{reason}: {ids}" for reason, ids in summary.items()),
            UserWarning,
            stacklevel=2,
        )
    out = Bunch(participant_ids=keep, dropped=dropped)
    keep_index = pd.Index(keep, name="participant_id")
    for k, v in given.items():
        v = v.set_axis(indexes[k])  # copy-on-write: the caller's object is untouched, no data copied
        if not v.index.equals(keep_index):  # a copy only when rows are dropped or reordered
            v = v.loc[keep]
        v.index.name = "participant_id"
        out["images" if k == "image" else k] = v
    return out


def working_memory_groups(digit_span, low=(2, 5), high=(9, 12)):
    """Low / high working-memory groups from the backward digit-span score.

    Parameters
    ----------
    digit_span : pandas.Series
        Maximum digits recalled, indexed by participant ID.
    low : tuple (min, max), default=(2, 5)
        Inclusive score range of the low group (label 0).
    high : tuple (min, max), default=(9, 12)
        Inclusive score range of the high group (label 1).

    Returns
    -------
    groups : pandas.Series of int
        0 (low) or 1 (high), named ``wm_group``, for the participants in either range only.

    Warns
    -----
    UserWarning
        Listing participants excluded because their score is between the groups or missing.

    Raises
    ------
    ValueError
        For bounds that overlap or are reversed, or when one group is empty.
    """
    low, high = tuple(low), tuple(high)
    for name, (a, b) in (("low", low), ("high", high)):
        if a > b:
            raise ValueError(f"{name}={(a, b)} is not an increasing (min, max) range.")
    if low[1] >= high[0]:
        raise ValueError(f"The low range {low} must end below the high range {high}.")
    if not isinstance(digit_span, pd.Series):
        digit_span = pd.Series(digit_span)
    score = pd.to_numeric(digit_span, errors="coerce")
    bad = score.isna() & digit_span.notna()
    if bad.any():
        raise ValueError(
            f"Non-numeric digit-span score(s) for participant(s) {_format_ids(digit_span.index[bad])}: "
            f"{digit_span[bad].iloc[0]!r}."
        )
    is_low = score.between(*low)
    is_high = score.between(*high)
    groups = pd.Series(np.where(is_high, 1, 0), index=digit_span.index, name="wm_group")[is_low | is_high]
    excluded = digit_span.index[~(is_low | is_high)]
    if len(excluded):
        n_missing = int(score.isna().sum())
        warnings.warn(
            f"working_memory_groups excluded {len(excluded)} participant(s) with a digit span outside "
            f"{low} and {high} ({n_missing} of them missing): {_format_ids(excluded)}",
            UserWarning,
            stacklevel=2,
        )
    counts = groups.value_counts()
    if counts.get(0, 0) == 0 or counts.get(1, 0) == 0:
        raise ValueError(
            f"Only one working-memory group is present (low {low}: {counts.get(0, 0)}, "
            f"high {high}: {counts.get(1, 0)} participants); both are needed."
        )
    return groups.astype(int)


def load_cohort(directory, *, genotypes="plink", low=(2, 5), high=(9, 12), check_images=True):
    """Load a cohort folder as written by :func:`sklearn_cgni.datasets.make_cohort`.

    The folder holds ``images/<participant_id>.nii.gz``, ``genotypes.bed/.bim/.fam`` and
    ``genotypes.csv``, ``phenotypes.csv``, ``snp_info.csv`` and, for a simulated cohort,
    ``ground_truth.json``. Real cohorts laid out the same way load the same way.

    Parameters
    ----------
    directory : path-like
        Cohort folder.
    genotypes : {"plink", "csv"}, default="plink"
        Which genotype file to read.
    low, high : tuple (min, max)
        Digit-span ranges of the working-memory groups (see :func:`working_memory_groups`).
    check_images : bool, default=True
        Check that all images share one shape and affine (reads headers only).

    Returns
    -------
    cohort : Bunch
        ``participant_ids``, ``images`` (Series of paths), ``genotypes``, ``phenotypes`` (with a
        ``wm_group`` column, NaN for excluded participants), ``y`` (wm_group of the participants
        in a group), ``snp_info`` (if present), ``ground_truth`` (if present), ``dropped``,
        ``shape`` and ``affine`` of the images.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Cohort folder {os.fspath(directory)!r} does not exist.")
    images = list_images(directory / "images")
    if genotypes == "plink":
        geno = read_genotypes(directory / "genotypes.bed")
    elif genotypes == "csv":
        geno = read_genotypes(directory / "genotypes.csv")
    else:
        raise ValueError(f"genotypes must be 'plink' or 'csv'; got {genotypes!r}.")
    pheno = read_phenotypes(directory / "phenotypes.csv", required=("digit_span",))
    cohort = align_cohort(images, geno, pheno)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        groups = working_memory_groups(cohort.phenotypes["digit_span"], low=low, high=high)
    cohort.phenotypes["wm_group"] = groups.reindex(cohort.phenotypes.index).astype("Float64")
    cohort.y = groups
    if check_images:
        cohort.shape, cohort.affine = check_image_headers(cohort.images.tolist(), cohort.participant_ids)
    info_path = directory / "snp_info.csv"
    if info_path.exists():
        cohort.snp_info = pd.read_csv(info_path, dtype={"snp": str}).set_index("snp")
    truth_path = directory / "ground_truth.json"
    if truth_path.exists():
        cohort.ground_truth = json.loads(truth_path.read_text())
    return cohort

