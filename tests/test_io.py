"""Cohort I/O: lazy images, genotype and phenotype readers, alignment, WM groups, atlas; bad inputs."""

import gzip
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.io import (
    NiftiImageSet,
    align_cohort,
    check_image_headers,
    list_images,
    load_atlas,
    load_image,
    read_genotypes,
    read_image_paths,
    read_phenotypes,
    working_memory_groups,
    write_genotypes_csv,
    write_plink,
)

SHAPE = (6, 7, 8)


def _save(path, data=None, affine=None):
    data = np.random.default_rng(0).random(SHAPE).astype("float32") if data is None else data
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return os.fspath(path)


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(1)
    for pid in ["sub-1", "sub-2", "sub-3"]:
        _save(d / f"{pid}.nii.gz", rng.random(SHAPE).astype("float32"))
    return d


# ----------------------------------------------------------------------------- images
def test_image_set_is_lazy_and_ordered(image_dir, monkeypatch):
    images = NiftiImageSet.from_directory(image_dir)
    assert images.participant_ids == ["sub-1", "sub-2", "sub-3"]
    assert images.shape == SHAPE and len(images) == 3
    calls = []
    orig = nib.load

    def counting_load(path, *a, **k):
        calls.append(os.fspath(path))
        return orig(path, *a, **k)

    decoded = []
    orig_array = nib.arrayproxy.ArrayProxy.__array__

    def counting_array(proxy, *a, **k):
        decoded.append(os.fspath(proxy.file_like))
        return orig_array(proxy, *a, **k)

    monkeypatch.setattr(nib, "load", counting_load)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", counting_array)
    x = images[1]
    assert calls == []  # the header was read on construction, once per process
    assert decoded == [images.paths[1]]  # one image decoded on access, no other
    np.testing.assert_array_equal(x, nib.load(images.paths[1]).get_fdata(dtype=np.float32))
    sub = images[1:]
    assert isinstance(sub, NiftiImageSet) and sub.participant_ids == ["sub-2", "sub-3"]


def test_missing_image_names_participant_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"participant 'p7'.*nope\.nii\.gz"):
        load_image(tmp_path / "nope.nii.gz", participant="p7")


def test_corrupt_image_names_file(tmp_path):
    bad = tmp_path / "sub-9.nii.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"this is not a nifti header" * 20)
    with pytest.raises(OSError, match=r"participant 'sub-9'.*sub-9\.nii\.gz"):
        load_image(bad, participant="sub-9")


def test_truncated_image_data_names_file(tmp_path):
    path = tmp_path / "sub-t.nii"
    _save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 200])
    with pytest.raises(OSError, match="sub-t"):
        load_image(path, participant="sub-t")


def test_nan_voxels_and_wrong_shape(tmp_path):
    data = np.ones(SHAPE, dtype="float32")
    data[1, 2, 3] = np.nan
    path = _save(tmp_path / "n.nii", data)
    with pytest.raises(ValueError, match=r"participant 'pn'.*1 NaN"):
        load_image(path, participant="pn")
    assert np.isnan(load_image(path, allow_nan=True)).sum() == 1
    with pytest.raises(ValueError, match=r"differs from the expected shape \(9, 9, 9\)"):
        load_image(path, expected_shape=(9, 9, 9), allow_nan=True)


def test_images_of_different_shapes_or_affines(tmp_path):
    a = _save(tmp_path / "a.nii")
    b = _save(tmp_path / "b.nii", np.zeros((6, 7, 9), "float32"))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    c = _save(tmp_path / "c.nii", affine=shifted)
    assert check_image_headers([a, a])[0] == SHAPE
    with pytest.raises(ValueError, match=r"differ in shape.*participant 'B'.*\(6, 7, 9\)"):
        check_image_headers([a, b], ["A", "B"])
    with pytest.raises(ValueError, match=r"differ in affine.*participant 'C'"):
        check_image_headers([a, c], ["A", "C"])


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="No NIfTI images"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_image_paths_csv(tmp_path, image_dir):
    pd.DataFrame({"participant_id": ["sub-2", "sub-1"], "image": ["images/sub-2.nii.gz", "images/sub-1.nii.gz"]}).to_csv(
        tmp_path / "paths.csv", index=False
    )
    paths = read_image_paths(tmp_path / "paths.csv")
    assert paths.index.tolist() == ["sub-2", "sub-1"]
    assert all(os.path.isabs(p) and os.path.exists(p) for p in paths)


# ----------------------------------------------------------------------------- genotypes
@pytest.fixture
def genotypes():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 3, size=(5, 4)).astype("float32")
    g[1, 2] = np.nan
    return pd.DataFrame(g, index=pd.Index([f"p{i}" for i in range(5)], name="participant_id"),
                        columns=["rs1", "rs2", "rs3", "rs4"])


def test_plink_and_csv_round_trip(tmp_path, genotypes):
    info = pd.DataFrame({"chrom": [1, 1, 2, 3], "pos": [10, 20, 30, 40], "a1": list("ACGT"), "a2": list("GTAC")},
                        index=genotypes.columns)
    write_plink(genotypes, tmp_path / "geno", snp_info=info, sex=[0, 1, 0, 1, 1])
    pd.testing.assert_frame_equal(read_genotypes(tmp_path / "geno"), genotypes)
    pd.testing.assert_frame_equal(read_genotypes(tmp_path / "geno.bed"), genotypes)
    bim = pd.read_csv(tmp_path / "geno.bim", sep="\t", header=None)
    assert bim[1].tolist() == ["rs1", "rs2", "rs3", "rs4"] and bim[3].tolist() == [10, 20, 30, 40]
    write_genotypes_csv(genotypes, tmp_path / "geno.csv")
    pd.testing.assert_frame_equal(read_genotypes(tmp_path / "geno.csv"), genotypes)


def test_genotype_code_outside_range_names_participant_and_snp(tmp_path, genotypes):
    table = genotypes.reset_index()
    table.loc[3, "rs4"] = 3
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"Genotype code 3\.0 for participant 'p3', SNP 'rs4'"):
        read_genotypes(tmp_path / "bad.csv")
    table.loc[3, "rs4"] = 1.5
    table.to_csv(tmp_path / "dosage.csv", index=False)
    assert read_genotypes(tmp_path / "dosage.csv", allow_dosage=True).loc["p3", "rs4"] == 1.5
    table = table.astype({"rs4": object})
    table.loc[3, "rs4"] = "AG"
    table.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(ValueError, match=r"Non-numeric genotype 'AG' for participant 'p3', SNP 'rs4'"):
        read_genotypes(tmp_path / "text.csv")


def test_missing_codes_in_csv(tmp_path, genotypes):
    table = genotypes.reset_index().astype({"rs1": object})
    table.loc[0, "rs1"] = "-9"
    table.loc[4, "rs1"] = "NA"
    table.to_csv(tmp_path / "na.csv", index=False)
    read = read_genotypes(tmp_path / "na.csv")
    assert np.isnan(read.loc["p0", "rs1"]) and np.isnan(read.loc["p4", "rs1"])


def test_duplicated_ids_and_incomplete_plink(tmp_path, genotypes):
    dup = pd.concat([genotypes, genotypes.iloc[[2]]])
    dup.reset_index().to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match=r"Duplicated participant ID\(s\).*'p2'"):
        read_genotypes(tmp_path / "dup.csv")
    write_plink(genotypes, tmp_path / "g")
    os.remove(tmp_path / "g.fam")
    with pytest.raises(FileNotFoundError, match=r"incomplete.*g\.fam"):
        read_genotypes(tmp_path / "g")


# ----------------------------------------------------------------------------- phenotypes
def test_phenotypes_required_columns_and_ids(tmp_path):
    pd.DataFrame({"participant_id": ["a", "b"], "age": [50, 60]}).to_csv(tmp_path / "ph.csv", index=False)
    ph = read_phenotypes(tmp_path / "ph.csv", required=("age",))
    assert ph.index.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['digit_span'\]"):
        read_phenotypes(tmp_path / "ph.csv", required=("digit_span",))
    with pytest.raises(ValueError, match="no participant ID column 'eid'"):
        read_phenotypes(tmp_path / "ph.csv", id_column="eid")
    pd.DataFrame({"participant_id": ["a", "a"], "age": [1, 2]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match=r"Duplicated participant ID\(s\).*'a'"):
        read_phenotypes(tmp_path / "dup.csv")


def test_ids_keep_leading_zeros(tmp_path):
    pd.DataFrame({"participant_id": ["007", "010"], "age": [50, 60]}).to_csv(tmp_path / "ph.csv", index=False)
    assert read_phenotypes(tmp_path / "ph.csv").index.tolist() == ["007", "010"]


# ----------------------------------------------------------------------------- alignment
def test_align_reports_what_it_dropped(genotypes):
    images = pd.Series({"p0": "a", "p1": "b", "p2": "c", "p9": "z"})
    pheno = pd.DataFrame({"digit_span": [3, 10, 4, 11]}, index=["p1", "p0", "p2", "p4"])
    with pytest.warns(UserWarning, match=r"dropped 3 participant\(s\).*no genotypes and no phenotypes: p9.*no image: p4"):
        cohort = align_cohort(images, genotypes, pheno)
    assert cohort.participant_ids == ["p0", "p1", "p2"]  # sorted by ID, whatever the files' row order
    assert cohort.genotypes.index.tolist() == cohort.participant_ids == cohort.images.index.tolist()
    dropped = dict(zip(cohort.dropped["participant_id"], cohort.dropped["reason"]))
    assert dropped == {"p4": "no image", "p3": "no image and no phenotypes", "p9": "no genotypes and no phenotypes"}


def test_align_errors(genotypes):
    with pytest.raises(ValueError, match="at least two"):
        align_cohort(genotypes=genotypes)
    with pytest.raises(ValueError, match="No participant ID is shared"):
        align_cohort(pd.Series({"x": "a"}), genotypes)
    dup = pd.Series(["a", "b"], index=["p0", "p0"])
    with pytest.raises(ValueError, match=r"Duplicated participant ID\(s\) in image: p0"):
        align_cohort(dup, genotypes)


# ----------------------------------------------------------------------------- WM groups
def test_working_memory_groups_default_and_custom_bounds():
    span = pd.Series([2, 5, 6, 7, 9, 12, np.nan, 8], index=list("abcdefgh"))
    with pytest.warns(UserWarning, match=r"excluded 4 participant\(s\).*\(1 of them missing\): c, d, g, h"):
        groups = working_memory_groups(span)
    assert groups.to_dict() == {"a": 0, "b": 0, "e": 1, "f": 1}
    with pytest.warns(UserWarning):
        custom = working_memory_groups(span, low=(2, 6), high=(8, 12))
    assert custom.to_dict() == {"a": 0, "b": 0, "c": 0, "e": 1, "f": 1, "h": 1}


def test_working_memory_groups_bad_input():
    with pytest.raises(ValueError, match="Only one working-memory group"):
        working_memory_groups(pd.Series([2, 3, 4], index=list("abc")))
    with pytest.raises(ValueError, match="must end below"):
        working_memory_groups(pd.Series([2, 10]), low=(2, 9), high=(9, 12))
    with pytest.raises(ValueError, match="not an increasing"):
        working_memory_groups(pd.Series([2, 10]), low=(5, 2))
    with pytest.raises(ValueError, match=r"Non-numeric digit-span.*b"):
        working_memory_groups(pd.Series([2, "ten"], index=["a", "b"]))


# ----------------------------------------------------------------------------- atlas
def test_default_atlas_is_aal2_and_resamples():
    from sklearn_cgni.io import load_gray_matter_template

    tmpl = load_gray_matter_template((24, 28, 24))
    atlas = load_atlas(target_img=tmpl)
    assert atlas.img.shape == (24, 28, 24)
    assert "AAL2" in atlas.name and len(atlas.labels) == 120
    assert {"Caudate_L", "Cerebelum_6_L"} <= set(atlas.labels["name"])
    present = set(np.unique(np.asarray(atlas.img.dataobj))) - {0}
    assert present == set(atlas.labels["index"])


def test_user_atlas_label_checks(tmp_path):
    data = np.zeros(SHAPE, dtype="int16")
    data[:2] = 1
    data[3:5] = 2
    path = _save(tmp_path / "atlas.nii", data)
    with pytest.raises(ValueError, match=r"label value\(s\) \[2\] that are missing"):
        load_atlas(path, pd.DataFrame({"index": [1], "name": ["A"]}))
    with pytest.warns(UserWarning, match=r"no voxel on this grid.*'C'"):
        atlas = load_atlas(path, pd.DataFrame({"index": [1, 2, 3], "name": ["A", "B", "C"]}))
    assert atlas.labels["name"].tolist() == ["A", "B"]
    with pytest.raises(ValueError, match="columns 'index'"):
        load_atlas(path, pd.DataFrame({"label": [1], "region": ["A"]}))
    with pytest.raises(ValueError, match="without a label table"):
        load_atlas(path)
