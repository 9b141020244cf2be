"""Typed phenotype and covariate columns, one gate (issue 31), and errors that name the right thing.

Every column the toolkit reads is numeric, categorical or sex (declared or inferred). A text cell
in a numeric column is refused naming the file, the column and up to five participants with their
cells; missing-value tokens (and declared codes) are missing values, never categories. Errors from
an image CSV or a lone image name the image input; the estimators name themselves and the input.
"""

import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.cli import main
from sklearn_cgni.io import PHENOTYPE_NA_VALUES, find_images, infer_column_type, read_phenotypes


def _pheno(tmp_path, **columns):
    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({"participant_id": [f"p{i:03d}" for i in range(n)], **columns})
    path = tmp_path / "pheno.csv"
    frame.to_csv(path, index=False)
    return path


def test_numeric_column_with_text_cells_is_refused_naming_file_column_and_participants(tmp_path):
    tiv = [str(1500 + i) for i in range(20)]
    tiv[2], tiv[7], tiv[11] = "big", "?", "1,5e3"
    path = _pheno(tmp_path, tiv=tiv, digit_span=[5] * 20)
    with pytest.raises(ValueError) as exc:
        read_phenotypes(path, required=("tiv",))  # inferred: 17 of 20 cells are numbers
    msg = str(exc.value)
    assert "pheno.csv" in msg and "'tiv' is numeric" in msg and "\n" not in msg
    assert "'p002': 'big'" in msg and "'p007': '?'" in msg and "'p011': '1,5e3'" in msg
    # more than five: five shown and the rest counted
    many = [str(50 + i) for i in range(20)]
    for i in range(8):
        many[i] = "unknown"
    path = _pheno(tmp_path, age=many)
    with pytest.raises(ValueError, match=r"column 'age' is numeric .*'p004': 'unknown' and 3 more") as exc:
        read_phenotypes(path, types={"age": "numeric"})
    assert "'p005'" not in str(exc.value)


def test_missing_tokens_and_declared_codes_are_missing_values(tmp_path):
    assert {"", "NA", "N/A", "n/a", "NaN", "."} <= set(PHENOTYPE_NA_VALUES)
    path = _pheno(tmp_path, tiv=["1500", "n/a", "", "NA", "-3", "1600.5"],
                  site=["A", "B", "n/a", "-1", "B", "A"], sex=["F", "M", "n/a", "F", "-3", "M"])
    ph = read_phenotypes(path, required=("tiv", "site", "sex"), missing_codes=[-1, -3])
    assert ph["tiv"].tolist()[0] == 1500.0 and ph["tiv"].isna().tolist() == [False, True, True, True, True, False]
    assert ph["site"].tolist()[:2] == ["A", "B"] and ph["site"].isna().sum() == 2  # n/a and -1: not levels
    assert ph["sex"].isna().tolist() == [False, False, True, False, True, False]
    without = read_phenotypes(path, required=("tiv",), types={"site": "categorical"}, codings={"sex": None})
    assert without["tiv"].tolist()[4] == -3.0 and "-1" in set(without["site"])


def test_declared_and_inferred_types(tmp_path):
    path = _pheno(tmp_path, site=[1, 2, 2, 1], scanner=["s1", "s2", "s1", "s1"], digit_span=[3, 9, 10, 4])
    ph = read_phenotypes(path, required=("site", "scanner"), types={"site": "categorical", "digit_span": "numeric"})
    assert ph["site"].tolist() == ["1", "2", "2", "1"]  # number codes as levels when declared
    assert ph["scanner"].tolist() == ["s1", "s2", "s1", "s1"]  # inferred categorical
    assert ph["digit_span"].dtype == float
    assert infer_column_type(["1", "2", "x"]) == "numeric" and infer_column_type(["a", "b", "1"]) == "categorical"
    with pytest.raises(ValueError, match="unknown column type"):
        read_phenotypes(path, types={"site": "ordinal"})


def test_image_errors_name_the_image_input(tmp_path):
    img = tmp_path / "sub-1.nii.gz"
    img.write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"Images .*sub-1\.nii\.gz.* is one NIfTI image; give a folder") as exc:
        find_images(str(img))
    assert "phenotype" not in str(exc.value).lower()
    bad = tmp_path / "images.csv"
    bad.write_text("participant_id,path\np1,a.nii.gz\n")
    with pytest.raises(ValueError, match=r"Image CSV file .*images\.csv.* lacks required column\(s\) \['image'\]") \
            as exc:
        find_images(str(bad))
    assert "phenotype" not in str(exc.value).lower() and "--column" not in str(exc.value)
    bad.write_text("participant_id,image\np1,a.nii.gz\np1,b.nii.gz\n")
    with pytest.raises(ValueError, match=r"Duplicated participant ID\(s\) in .*images\.csv.*'p1'"):
        find_images(str(bad))
    with pytest.raises(FileNotFoundError, match=r"Images .*nope.* no such folder or image CSV"):
        find_images(str(tmp_path / "nope"))


def test_nifti_image_set_refuses_duplicated_ids(tmp_path):
    import nibabel as nib

    from sklearn_cgni.io import NiftiImageSet

    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), p)
        paths.append(str(p))
    with pytest.raises(ValueError, match=r"NiftiImageSet: duplicated participant ID\(s\) \['s1'\]"):
        NiftiImageSet(pd.Series(paths, index=["s1", "s1"]))


@pytest.mark.parametrize("estimator", ["CGNIClassifier", "ContrastiveSNPEncoder"])
def test_estimators_name_themselves_and_the_input_on_text(estimator):
    from sklearn_cgni.classification import CGNIClassifier
    from sklearn_cgni.genetics import ContrastiveSNPEncoder

    X = np.array([["a", "1"], ["0", "1"], ["1", "2"], ["2", "0"]] * 5, dtype=object)
    y = np.arange(20) % 2
    est = CGNIClassifier() if estimator == "CGNIClassifier" else ContrastiveSNPEncoder(image_features=1)
    with pytest.raises(ValueError, match=rf"{estimator}.fit: X holds non-numeric values \(e.g. 'a'"):
        est.fit(X, y)


def _cli(tmp_path, pheno_path, cfg_extra=""):
    from sklearn_cgni.datasets import make_cohort

    cohort = tmp_path / "cohort"
    if not cohort.exists():
        make_cohort(24, 30, shape=(24, 28, 24), output_dir=cohort, random_state=0, n_jobs=1)
    (tmp_path / "cfg.toml").write_text("[data]\n" + cfg_extra)
    return ["run", "--images", str(cohort / "images"), "--genotypes", str(cohort / "genotypes.bed"),
            "--phenotypes", str(pheno_path), "--config", str(tmp_path / "cfg.toml"), "--preset", "tiny",
            "--no-progress", "-q", "-o", str(tmp_path / "out"), "--device", "cpu"]


@pytest.mark.parametrize("column, cfg", [("tiv", 'covariates = ["age", "sex", "tiv"]\n'), ("age", "")])
def test_cli_refuses_text_in_a_numeric_covariate_in_one_line(tmp_path, capsys, column, cfg):
    args = _cli(tmp_path, tmp_path / "pheno.csv", cfg)
    pheno = pd.read_csv(tmp_path / "cohort" / "phenotypes.csv", dtype={"participant_id": str})
    pheno["tiv"] = np.linspace(1400, 1600, len(pheno))
    pheno[column] = pheno[column].astype(object)
    pheno.loc[[1, 4, 6], column] = ["n/a", "unknown", "big"]  # n/a is missing; the others are refused
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    ids = pheno["participant_id"]
    assert f"column '{column}' is numeric" in err and "pheno.csv" in err
    assert f"'{ids[4]}': 'unknown'" in err and f"'{ids[6]}': 'big'" in err
    assert f"'{ids[1]}'" not in err  # its n/a is a missing value
