"""Real cohorts as users hold them (issue 15): column mapping and codings, image path templates
and BIDS derivatives folders, and one-line errors (no traceback) for bad input files.

The end-to-end test writes one simulated cohort twice, in today's layout and in a UK-Biobank-like
one (``eid``, renamed phenotype columns, letter-coded sex, a BIDS image tree, BGEN genotypes with a
release-named .sample, a bgenix index and an mfi info table, and a PLINK 2 copy of them), runs
them up to the last fold's models (tiny configuration, one thread) and compares Table 1's records.
"""

import functools
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sklearn_cgni.cli import ConfigError, load_config, main
from sklearn_cgni.io import (
    find_images,
    images_from_template,
    list_bids_images,
    read_genotypes,
    read_phenotypes,
    write_bgen,
    write_genotypes_csv,
    write_pgen,
    write_plink,
)

from _tiny_config import TINY_CONFIG  # tests/ is on sys.path

SHAPE = (6, 7, 8)
UKB_COLUMNS = {"digit_span": "4282-2.0", "age": "21003-2.0", "sex": "31-0.0"}


def _save(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).random(SHAPE).astype("float32")
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _one_line_error(capsys, code, *needles):
    """The CLI exited with status 2 and one error line naming every needle, without a traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("sklearn-cgni: error: ")]
    assert errors == [len(lines) - 1], err  # one error line, the last (with -q, nothing else is logged)
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


# ----------------------------------------------------------------------------- phenotypes
def test_phenotype_columns_are_mapped_and_sex_codes_recoded(tmp_path):
    path = tmp_path / "ukb.csv"
    pd.DataFrame({"eid": ["1001", "1002", "1003", "1004", "1005"], "4282-2.0": [4, 10, 3, 11, 9],
                  "21003-2.0": [60, 55, 70, 48, 66], "31-0.0": ["Female", "m", "F", "MALE", None],
                  "6348-2.0": [1.0, 2.0, 3.0, 4.0, 5.0]}).to_csv(path, index=False)
    ph = read_phenotypes(path, id_column="eid", required=("digit_span", "age", "sex"),
                         columns={**UKB_COLUMNS, "reaction_time": "6348-2.0"})
    assert ph.index.tolist() == ["1001", "1002", "1003", "1004", "1005"]
    assert list(ph.columns) == ["digit_span", "age", "sex", "reaction_time"]
    assert ph["sex"].tolist()[:4] == [0.0, 1.0, 0.0, 1.0] and np.isnan(ph["sex"].iloc[4])  # missing stays missing
    # numeric UK Biobank coding (0 = Female, 1 = Male), also as floats
    pd.DataFrame({"participant_id": ["a", "b"], "sex": [0.0, 1.0]}).to_csv(tmp_path / "num.csv", index=False)
    assert read_phenotypes(tmp_path / "num.csv")["sex"].tolist() == [0.0, 1.0]
    # a user coding (PLINK's 1 = male, 2 = female)
    pd.DataFrame({"participant_id": ["a", "b"], "sex": [2, 1]}).to_csv(tmp_path / "plink.csv", index=False)
    assert read_phenotypes(tmp_path / "plink.csv", codings={"sex": {1: 1, 2: 0}})["sex"].tolist() == [0.0, 1.0]


def test_unknown_sex_code_names_participants_column_and_file(tmp_path):
    path = tmp_path / "ukb.csv"
    pd.DataFrame({"eid": ["1001", "1002", "1003"], "31-0.0": ["Female", "X", "unknown"]}).to_csv(path, index=False)
    with pytest.raises(ValueError) as exc:
        read_phenotypes(path, id_column="eid", columns={"sex": "31-0.0"})
    msg = str(exc.value)
    for needle in ("'1002'", "'1003'", "'31-0.0'", "'sex'", "ukb.csv", "'X'"):
        assert needle in msg, (needle, msg)
    assert "'1001'" not in msg


def test_mapped_column_missing_or_clashing(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"eid": ["1"], "4282-2.0": [4], "digit_span": [5]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"p\.csv.*no column\(s\) \['21003-2.0'\].*\['age'\]"):
        read_phenotypes(path, id_column="eid", columns={"age": "21003-2.0"})
    with pytest.raises(ValueError, match=r"has column\(s\) \['digit_span'\] and also maps"):
        read_phenotypes(path, id_column="eid", columns={"digit_span": "4282-2.0"})
    with pytest.raises(ValueError, match=r"no participant ID column 'participant_id'.*id_column"):
        read_phenotypes(path)


@pytest.mark.parametrize("content", ["", "\n", "participant_id,age,sex\n"])
def test_empty_phenotype_file_is_named(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"Phenotype file .*empty\.csv.*(empty|no participant rows)"):
        read_phenotypes(path)


# ----------------------------------------------------------------------------- genotypes
def test_repeated_snp_column_in_genotype_csv_is_refused(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("participant_id,rs1,rs2,rs1\na,0,1,2\nb,1,1,0\n")
    with pytest.raises(ValueError, match=r"g\.csv.*repeats SNP column\(s\) \['rs1'\]"):
        read_genotypes(path)


@pytest.mark.parametrize("content", ["", "participant_id,rs1\n", "participant_id\na\n"])
def test_empty_genotype_csv_is_named(tmp_path, content):
    path = tmp_path / "geno.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"Genotype file .*geno\.csv"):
        read_genotypes(path)


def test_genotype_csv_with_another_id_column(tmp_path):
    g = pd.DataFrame({"rs1": [0.0, 2.0]}, index=pd.Index(["1001", "1002"], name="participant_id"))
    write_genotypes_csv(g, tmp_path / "g.csv")
    table = pd.read_csv(tmp_path / "g.csv").rename(columns={"participant_id": "eid"})
    table.to_csv(tmp_path / "eid.csv", index=False)
    assert read_genotypes(tmp_path / "eid.csv", id_column="eid").index.tolist() == ["1001", "1002"]


def test_unreadable_plink_file_is_an_oserror_naming_it(tmp_path):
    g = pd.DataFrame(np.zeros((3, 2), "float32"), index=["a", "b", "c"], columns=["rs1", "rs2"])
    write_plink(g, tmp_path / "g")
    (tmp_path / "g.bed").write_bytes(b"not a bed file")
    with pytest.raises(OSError, match=r"Could not read PLINK file set .*g'"):
        read_genotypes(tmp_path / "g.bed")


# ----------------------------------------------------------------------------- images
def test_path_template_resolves_the_participants_images(tmp_path, monkeypatch):
    for pid in ("1001", "1002"):
        _save(tmp_path / "derivatives" / "cat12" / f"sub-{pid}" / "anat" / f"mwp1sub-{pid}_T1w.nii.gz")
    monkeypatch.chdir(tmp_path)  # relative templates are taken from the current folder
    template = "derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz"
    paths = images_from_template(template, ["1002", "1001", "1003"])
    assert paths.index.tolist() == ["1002", "1001"]  # 1003 has no image: left to align_cohort's warning
    assert all(os.path.isabs(p) and os.path.exists(p) for p in paths)
    assert find_images(template, ["1001"]).index.tolist() == ["1001"]
    with pytest.raises(ValueError, match=r"No image found with the template .*for any of the 1 participant"):
        images_from_template(template, ["9999"])
    with pytest.raises(ValueError, match="no {id} placeholder"):
        images_from_template("derivatives/x.nii.gz", ["1"])


def test_bids_folder_with_suffix_and_space_filters(tmp_path):
    root = tmp_path / "fmriprep"
    for pid in ("1001", "1002"):
        anat = root / f"sub-{pid}" / "anat"
        _save(anat / f"sub-{pid}_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz")
        _save(anat / f"sub-{pid}_space-T1w_label-GM_probseg.nii.gz")
        _save(anat / f"sub-{pid}_space-MNI152NLin2009cAsym_label-WM_probseg.nii.gz")
    _save(root / "sub-1003" / "ses-2" / "anat" / "sub-1003_ses-2_space-MNI152NLin2009cAsym_label-GM_probseg.nii")
    (root / "dataset_description.json").write_text("{}")
    with pytest.raises(ValueError) as exc:
        list_bids_images(root, suffix="label-GM")
    msg = str(exc.value)
    assert "'1001'" in msg and "space-T1w_label-GM" in msg and "space-MNI152NLin2009cAsym_label-GM" in msg
    paths = list_bids_images(root, suffix="label-GM", space="MNI152NLin2009cAsym")
    assert paths.index.tolist() == ["1001", "1002", "1003"]
    assert all("space-MNI152NLin2009cAsym_label-GM" in p for p in paths)
    # only the participants asked for; the same through find_images
    paths = find_images(root, ["1002", "4000"], suffix="label-GM", space="MNI152NLin2009cAsym")
    assert paths.index.tolist() == ["1002"]
    with pytest.raises(ValueError, match=r"No image in BIDS folder .*containing 'mwp1'"):
        list_bids_images(root, suffix="mwp1")


def test_find_images_keeps_the_flat_folder_and_csv_forms(tmp_path):
    flat = tmp_path / "images"
    for pid in ("a", "b"):
        _save(flat / f"{pid}.nii.gz")
    assert find_images(flat).index.tolist() == ["a", "b"]
    pd.DataFrame({"eid": ["a"], "image": ["images/a.nii.gz"]}).to_csv(tmp_path / "images.csv", index=False)
    assert find_images(tmp_path / "images.csv", id_column="eid").tolist() == [os.fspath((flat / "a.nii.gz").resolve())]
    with pytest.raises(ValueError, match="applies to a BIDS folder"):
        find_images(flat, suffix="mwp1")


# ----------------------------------------------------------------------------- configuration
def test_data_config_keys_and_column_flags(capsys):
    cfg = load_config(overrides=[{"data": {"id_column": "eid", "columns": UKB_COLUMNS,
                                           "sex_coding": {"1": 1, "2": 0}}}])
    assert cfg["data"]["columns"]["digit_span"] == "4282-2.0" and cfg["data"]["sex_coding"] == {"1": 1, "2": 0}
    with pytest.raises(ConfigError, match="'digit_spam' is not a column the toolkit reads; did you mean 'digit_span'"):
        load_config(overrides=[{"data": {"columns": {"digit_spam": "4282-2.0"}}}])
    with pytest.raises(ConfigError, match="data.sex_coding: code 'U' must map to 0"):
        load_config(overrides=[{"data": {"sex_coding": {"U": 2}}}])
    assert main(["run", "--id-column", "eid", "--column", "digit_span=4282-2.0", "--column", "age = 21003-2.0",
                 "--image-suffix", "mwp1", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert 'id_column = "eid"' in out and 'columns = {"digit_span" = "4282-2.0", "age" = "21003-2.0"}' in out
    assert 'image_suffix = "mwp1"' in out
    assert main(["run", "--column", "digit_span", "--print-config"]) == 2
    assert "--column expects NAME=COLUMN" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command line


def _to_eid(pid):
    return str(1_000_000 + int(pid.split("-")[1]))  # sub-007 -> 1000007 (same order)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """The same simulated cohort in today's layout and in a UK-Biobank-like one."""
    from sklearn_cgni.datasets import make_cohort

    root = tmp_path_factory.mktemp("real")
    today = root / "today"
    make_cohort(60, 40, shape=(24, 28, 24), output_dir=today, random_state=0, n_jobs=1)
    ukb = root / "ukb"
    pheno = pd.read_csv(today / "phenotypes.csv", dtype={"participant_id": str})
    pheno.insert(0, "eid", pheno.pop("participant_id").map(_to_eid))
    pheno["sex"] = pheno["sex"].map({0: "Female", 1: "Male"})
    pheno = pheno.rename(columns=UKB_COLUMNS)
    (ukb / "showcase").mkdir(parents=True)
    pheno.to_csv(ukb / "showcase" / "ukb_export.csv", index=False)
    for img in sorted((today / "images").glob("*.nii.gz")):
        eid = _to_eid(img.name[: -len(".nii.gz")])
        anat = ukb / "derivatives" / "cat12" / f"sub-{eid}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(img, anat / f"mwp1sub-{eid}_T1w.nii.gz")
        shutil.copy(img, anat / f"wm_sub-{eid}_T1w.nii.gz")  # a second map: the filter chooses
    geno = read_genotypes(today / "genotypes.bed")
    geno.index = geno.index.map(_to_eid)
    info = pd.read_csv(today / "snp_info.csv", dtype={"snp": str}).set_index("snp")
    write_plink(geno, ukb / "genotypes", snp_info=info)
    (ukb / "plink2").mkdir()
    write_pgen(geno, ukb / "plink2" / "ukb_chr1", snp_info=info)
    # UK Biobank's imputed release: BGEN v1.2 (zlib, 8 bits) + bgenix index, a .sample named after
    # the release, and an mfi table (no header) holding each variant's info
    (ukb / "imputed").mkdir()
    bgen = write_bgen(geno, ukb / "imputed" / "ukb22828_c1_b0_v3.bgen", snp_info=info)
    bgen.with_suffix(".sample").rename(ukb / "imputed" / "ukb22828_c1_b0_v3_s100.sample")
    snps = info.loc[geno.columns]
    maf = (geno.mean() / 2).clip(upper=1)
    pd.DataFrame({"alt_id": [f"1:{p}_{a}_{b}" for p, a, b in zip(snps["pos"], snps["a2"], snps["a1"])],
                  "rsid": snps.index, "pos": snps["pos"], "a1": snps["a2"], "a2": snps["a1"],
                  "maf": np.minimum(maf, 1 - maf).round(4), "minor_allele": snps["a1"], "info": snps["info_r2"]}
                 ).to_csv(ukb / "imputed" / "ukb_mfi_chr1_v3.txt", sep="\t", header=False, index=False)
    for name in ("snp_info.csv", "snp_genes.csv", "atlas.nii.gz", "atlas_labels.csv"):
        shutil.copy(today / name, ukb / name)
    (root / "tiny.toml").write_text(TINY_CONFIG)
    (root / "ukb.toml").write_text(TINY_CONFIG + '[data]\nid_column = "eid"\n'
                                   '[data.columns]\ndigit_span = "4282-2.0"\nage = "21003-2.0"\n')
    return root


def _snapshot(folder):
    return sorted((os.fspath(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(folder).rglob("*"))


def test_uk_biobank_layout_gives_the_same_table1(cohorts, tmp_path, monkeypatch):
    """eid, renamed columns, letter-coded sex, a BIDS tree, PLINK 2 and BGEN genotypes (+ .sample and
    an mfi table for the info filter), with flags and config only: the same per-fold Table 1 records
    as today's layout; the inputs are untouched (no index is written next to the BGEN)."""
    from sklearn_cgni.cli import _run

    monkeypatch.setattr(_run, "run_pipeline", functools.partial(_run.run_pipeline, only="models_f1"))
    before = _snapshot(cohorts)
    common = ["--preset", "cpu", "--no-progress", "--device", "cpu", "-q"]
    assert main(["run", "--cohort", str(cohorts / "today"), "--config", str(cohorts / "tiny.toml"),
                 "-o", str(tmp_path / "today"), *common]) == 0
    monkeypatch.chdir(cohorts / "ukb")  # the template is relative to the current folder
    assert main(["run", "--images", "derivatives/cat12/sub-{id}/anat/mwp1sub-{id}_T1w.nii.gz",
                 "--genotypes", "plink2/ukb_chr1", "--phenotypes", "showcase/ukb_export.csv",
                 "--snp-info", "snp_info.csv", "--atlas", "atlas.nii.gz", "--atlas-labels", "atlas_labels.csv",
                 "--config", str(cohorts / "ukb.toml"), "--column", "sex=31-0.0", "-o", str(tmp_path / "ukb"),
                 *common]) == 0
    # and the BIDS root with the suffix filter finds the same images; BGEN genotypes whose info
    # comes from the mfi table (no info_r2 in a --snp-info: the genes come from --snp-genes)
    assert main(["run", "--images", "derivatives/cat12", "--image-suffix", "mwp1",
                 "--genotypes", "imputed/ukb22828_c1_b0_v3.bgen", "--sample", "imputed/ukb22828_c1_b0_v3_s100.sample",
                 "--info-table", "imputed/ukb_mfi_chr1_v3.txt", "--snp-genes", "snp_genes.csv",
                 "--phenotypes", "showcase/ukb_export.csv",
                 "--atlas", "atlas.nii.gz", "--atlas-labels", "atlas_labels.csv",
                 "--config", str(cohorts / "ukb.toml"), "--column", "sex=31-0.0",
                 "-o", str(tmp_path / "bids"), *common]) == 0

    def records(out):
        recs = []
        for k in (0, 1):
            done = json.loads((out / "stages" / f"models_f{k}" / "_done.json").read_text())
            recs += [{key: v for key, v in r.items() if key != "seconds"} for r in done["result"]["records"]]
        return recs

    reference = records(tmp_path / "today")
    assert len(reference) > 10
    assert records(tmp_path / "ukb") == reference
    assert records(tmp_path / "bids") == reference
    snp_qc = {k: pd.read_csv(tmp_path / k / "stages" / "data" / "snp_qc.csv") for k in ("today", "ukb", "bids")}
    pd.testing.assert_frame_equal(snp_qc["bids"], snp_qc["today"])
    pd.testing.assert_frame_equal(snp_qc["ukb"], snp_qc["today"])
    parts = pd.read_csv(tmp_path / "ukb" / "stages" / "data" / "participants.csv", dtype={"participant_id": str})
    ref = pd.read_csv(tmp_path / "today" / "stages" / "data" / "participants.csv", dtype={"participant_id": str})
    assert parts["participant_id"].tolist() == ref["participant_id"].map(_to_eid).tolist()
    np.testing.assert_array_equal(parts["sex"], ref["sex"])
    assert _snapshot(cohorts) == before  # nothing in the input folders changed


def test_bgen_info_table_selection_and_dosages_reach_the_data_stage(cohorts, tmp_path):
    """data.info_table feeds qc.min_info_r2; data.snps / data.genes select before decoding;
    imputed dosages need data.allow_dosage (the message says so)."""
    from sklearn_cgni.cli import resolve_inputs, run_pipeline

    ukb = cohorts / "ukb"
    imputed = ukb / "imputed"
    mfi = pd.read_csv(imputed / "ukb_mfi_chr1_v3.txt", sep="\t", header=None)
    low = mfi.iloc[3, 1]
    mfi.iloc[3, 7] = 0.1
    mfi.to_csv(tmp_path / "mfi.txt", sep="\t", header=False, index=False)
    genes = pd.read_csv(ukb / "snp_genes.csv", dtype=str)
    gene = genes.loc[genes["snp"] == low, "gene"].iloc[0]
    in_gene = sorted(genes.loc[genes["gene"] == gene, "snp"])
    (tmp_path / "snps.txt").write_text("\n".join([low, mfi.iloc[5, 1], "rs_not_there"]) + "\n")
    inputs = resolve_inputs(images=str(ukb / "derivatives" / "cat12"),
                            genotypes=str(imputed / "ukb22828_c1_b0_v3.bgen"),
                            phenotypes=str(ukb / "showcase" / "ukb_export.csv"), snp_genes=str(ukb / "snp_genes.csv"))
    base = ['data.id_column="eid"', 'data.image_suffix="mwp1"', "run.device=cpu",
            f'data.sample="{imputed / "ukb22828_c1_b0_v3_s100.sample"}"', f'data.info_table="{tmp_path / "mfi.txt"}"',
            {"data": {"columns": {**UKB_COLUMNS}}}]
    config = load_config(cohorts / "tiny.toml", preset="cpu",
                         overrides=[*base, f'data.snp_list="{tmp_path / "snps.txt"}"', f'data.genes=["{gene}"]'])
    run_pipeline(tmp_path / "sel", config, inputs, progress=False, only="data")
    data = tmp_path / "sel" / "stages" / "data"
    qc = pd.read_csv(data / "snp_qc.csv")
    assert low in set(qc.loc[qc["reason"].str.contains("info"), "snp"])  # the mfi table's info 0.1
    kept = pd.read_csv(data / "snps.csv")["snp"].tolist()
    assert set(kept) | set(qc["snp"]) == {low, mfi.iloc[5, 1]} & set(in_gene)  # snp_list ∩ genes
    config = load_config(cohorts / "tiny.toml", preset="cpu", overrides=[*base, f'data.genes=["{gene}"]'])
    run_pipeline(tmp_path / "gene", config, inputs, progress=False, only="data")
    data = tmp_path / "gene" / "stages" / "data"
    assert sorted(pd.read_csv(data / "snps.csv")["snp"].tolist() + pd.read_csv(data / "snp_qc.csv")["snp"].tolist()
                  ) == in_gene


@pytest.mark.parametrize("failure", ["sex_letters", "empty_phenotypes", "empty_genotypes", "repeated_snp",
                                     "unreadable_image", "unreadable_plink", "two_images", "missing_column",
                                     "bgen_dosage", "bgen_no_sample", "pgen_no_psam", "snp_not_found"])
def test_bad_inputs_end_in_one_line_naming_file_participant_column(cohorts, tmp_path, capsys, failure):
    today = cohorts / "today"
    pheno = pd.read_csv(today / "phenotypes.csv", dtype={"participant_id": str})
    ids = pheno["participant_id"].tolist()
    images, genotypes, phenotypes = today / "images", today / "genotypes.csv", tmp_path / "pheno.csv"
    pheno.to_csv(phenotypes, index=False)
    extra, needles = [], []
    if failure == "sex_letters":
        pheno["sex"] = pheno["sex"].map({0: "F", 1: "M"})
        pheno.loc[3, "sex"] = "unknown"
        pheno.to_csv(phenotypes, index=False)
        needles = [ids[3], "'sex'", "pheno.csv", "unknown"]
    elif failure == "empty_phenotypes":
        phenotypes.write_text("")
        needles = ["pheno.csv", "empty"]
    elif failure == "empty_genotypes":
        genotypes = tmp_path / "geno.csv"
        genotypes.write_text("participant_id,rs1\n")
        needles = ["geno.csv"]
    elif failure == "repeated_snp":
        table = pd.read_csv(today / "genotypes.csv", dtype={"participant_id": str})
        snp = table.columns[2]
        table.insert(len(table.columns), snp + "_copy", table[snp])
        table.to_csv(tmp_path / "geno.csv", index=False)
        text = (tmp_path / "geno.csv").read_text().replace(snp + "_copy", snp, 1)
        genotypes = tmp_path / "geno.csv"
        genotypes.write_text(text)
        needles = ["geno.csv", snp]
    elif failure == "unreadable_image":
        images = tmp_path / "images"
        shutil.copytree(today / "images", images)
        (images / f"{ids[5]}.nii.gz").write_bytes(b"\x1f\x8b broken")
        needles = [ids[5], f"{ids[5]}.nii.gz"]
    elif failure == "unreadable_plink":
        for suffix in (".bed", ".bim", ".fam"):
            shutil.copy(today / f"genotypes{suffix}", tmp_path / f"g{suffix}")
        (tmp_path / "g.bed").write_bytes(b"garbage")
        genotypes = tmp_path / "g.bed"
        needles = ["g'", "PLINK"]
    elif failure == "two_images":
        images = tmp_path / "bids"
        for pid in ids:
            anat = images / f"sub-{pid}" / "anat"
            anat.mkdir(parents=True)
            shutil.copy(today / "images" / f"{pid}.nii.gz", anat / f"mwp1sub-{pid}_T1w.nii.gz")
        shutil.copy(today / "images" / f"{ids[0]}.nii.gz", images / f"sub-{ids[0]}" / "anat" / "mwp1extra.nii.gz")
        extra = ["--image-suffix", "mwp1"]
        needles = [f"'{ids[0]}'", "mwp1extra.nii.gz", f"mwp1sub-{ids[0]}_T1w.nii.gz"]
    elif failure in ("bgen_dosage", "bgen_no_sample"):
        geno = read_genotypes(today / "genotypes.bed")
        if failure == "bgen_dosage":
            geno.iloc[4, 2] = 0.7
        genotypes = write_bgen(geno, tmp_path / "chr1.bgen")
        if failure == "bgen_dosage":
            needles = ["chr1.bgen", f"'{geno.index[4]}'", f"'{geno.columns[2]}'", "--allow-dosage"]
        else:
            genotypes.with_suffix(".sample").rename(tmp_path / "chr1_s60.sample")
            extra = ["--sample", str(tmp_path / "chr1.sample")]
            needles = ["chr1.sample", "chr1.bgen", "does not exist"]
    elif failure == "pgen_no_psam":
        genotypes = write_pgen(read_genotypes(today / "genotypes.bed"), tmp_path / "g2").with_suffix(".pgen")
        (tmp_path / "g2.psam").unlink()
        needles = ["g2.psam", "incomplete"]
    elif failure == "snp_not_found":
        (tmp_path / "snps.txt").write_text("rs_nowhere\n")
        extra = ["--snps", str(tmp_path / "snps.txt")]
        needles = ["genotypes.csv", "rs_nowhere"]
    elif failure == "missing_column":
        extra = ["--column", "digit_span=4282-2.0"]
        needles = ["pheno.csv", "4282-2.0", "digit_span"]
    code = main(["run", "--images", str(images), "--genotypes", str(genotypes), "--phenotypes", str(phenotypes),
                 "--config", str(cohorts / "tiny.toml"), "--preset", "cpu", "--device", "cpu", "--no-progress",
                 "-q", "-o", str(tmp_path / "out"), *extra])
    _one_line_error(capsys, code, *needles)
    assert not (tmp_path / "out" / "stages" / "data" / "_done.json").exists()


def test_output_path_that_is_a_file_or_not_writable(cohorts, tmp_path, capsys):
    base = ["run", "--cohort", str(cohorts / "today"), "--config", str(cohorts / "tiny.toml"), "--preset", "cpu",
            "--no-progress", "-q"]
    target = tmp_path / "report.txt"
    target.write_text("mine")
    _one_line_error(capsys, main([*base, "-o", str(target)]), "report.txt", "is a file")
    _one_line_error(capsys, main([*base, "-o", str(target / "out")]), "report.txt", "is a file")
    assert target.read_text() == "mine"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            _one_line_error(capsys, main([*base, "-o", str(locked / "out")]), "locked", "not writable")
        finally:
            locked.chmod(0o700)


def test_significant_snp_missing_from_the_gene_table_is_a_gap_not_a_failure(cohorts, tmp_path):
    """The genes stage notes the unmapped SNPs (Table 4, enrichment) and the report is still written."""
    from sklearn_cgni.cli import Inputs
    from sklearn_cgni.cli.stages import Run

    out = tmp_path / "out"
    occ = out / "stages" / "occlusion"
    occ.mkdir(parents=True)
    data = out / "stages" / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"snp": ["rs1", "rs2", "rs3"]}).to_csv(data / "snps.csv", index=False)
    pd.DataFrame({"participant_id": ["a"], "wm_group": [0]}).to_csv(data / "participants.csv", index=False)
    np.save(data / "genotypes_qc.npy", np.zeros((1, 3), "float32"))
    pd.DataFrame({"component": [1, 1, 2], "snp": ["rs1", "rs2", "rs3"], "contribution": [3.5, -4.0, 3.1],
                  "sign": [1, -1, 1]}).to_csv(occ / "significant_snps.csv", index=False)
    pd.DataFrame(columns=["component", "region", "sign"]).to_csv(occ / "significant_regions.csv", index=False)
    (tmp_path / "genes.csv").write_text("snp,gene\nrs9,GENE9\n")  # none of the significant SNPs
    (tmp_path / "sets.gmt").write_text("SET1\tdesc\tGENE9\tGENE1\n")
    inputs = Inputs(snp_genes=os.fspath(tmp_path / "genes.csv"), gene_sets=os.fspath(tmp_path / "sets.gmt"))
    run = Run(out, load_config(preset="tiny"), inputs, progress=False, device="cpu")
    folder = out / "stages" / "genes"
    folder.mkdir()
    result = run.call("genes", folder)
    text = " ".join(result["notes"])
    assert "3 significant SNP(s) are not in the SNP -> gene table" in text and "rs2" in text and "genes.csv" in text
    assert "Enrichment skipped" in text
    assert pd.read_csv(folder / "table4.csv")["genes"].isna().all()
    # an unreadable gene table is a note too
    (tmp_path / "genes.csv").write_bytes(b"")
    result = run.call("genes", folder)
    assert "could not be read" in " ".join(result["notes"])


# ----------------------------------------------------------------------------- covariates beyond age and sex


def test_categorical_site_covariate_is_used_everywhere(cohorts, tmp_path):
    """A letter-coded site among the covariates: one-hot encoded in the covariate-only rows, the
    associations and the confound table (covariate-adjusted models and the imaging CNN's voxels)."""
    today = cohorts / "today"
    pheno = pd.read_csv(today / "phenotypes.csv", dtype={"participant_id": str})
    # level names with a slash and a space (they name files, escaped); a one-level scanner (dropped, warned);
    # a numeric tiv with missing-value tokens (missing, not categories) and UK Biobank's -3 declared missing
    pheno["site"] = pheno["site"].map(lambda s: "ABCDEFGH"[int(s)] + "/x y")
    pheno["scanner"] = "S1"
    pheno["tiv"] = np.linspace(1400, 1600, len(pheno)).round(1).astype(object)
    pheno.loc[[3, 10, 20], "tiv"] = ["n/a", "NA", "-3"]
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    (tmp_path / "cfg.toml").write_text(TINY_CONFIG + '[data]\ncovariates = ["age", "sex", "site", "scanner", "tiv"]\n'
                                       'missing_codes = [-3]\n')
    out = tmp_path / "out"
    assert main(["run", "--images", str(today / "images"), "--genotypes", str(today / "genotypes.bed"),
                 "--phenotypes", str(tmp_path / "pheno.csv"), "--snp-info", str(today / "snp_info.csv"),
                 "--snp-genes", str(today / "snp_genes.csv"), "--config", str(tmp_path / "cfg.toml"),
                 "--preset", "cpu", "--device", "cpu", "--no-progress", "-q", "-o", str(out)]) == 0
    data = json.loads((out / "stages" / "data" / "_done.json").read_text())["result"]
    assert data["categorical_covariates"] == ["site"]
    assert data["covariates"] == ["age", "sex", "site", "tiv"] and data["covariates_dropped"] == ["scanner"]
    log = (out / "run.log").read_text()
    assert "covariate 'scanner' is categorical with one level ('S1')" in log and "dropped" in log
    missing = pheno.loc[[3, 10, 20], "participant_id"].tolist()  # missing tiv: left out, listed
    line = next(line for line in log.splitlines() if "miss a covariate" in line)
    assert line.split()[3] == "3" and all(repr(pid) in line for pid in missing), line
    table1 = pd.read_csv(out / "tables" / "table1.csv")
    assert table1.astype(str).apply(lambda c: c.str.contains("covariates: age \\+ sex \\+ site \\+ tiv")).any().any()
    effects = sorted(p.name for p in (out / "stages" / "confounds").glob("covariate_effect_*.nii.gz"))
    assert any("site" in name for name in effects) and not any("site=A" in name for name in effects), effects
    assert "covariate_effect_site=B%2Fx%20y.nii.gz" in effects, effects  # escaped, not a sub-folder
    confounds = pd.read_csv(out / "stages" / "confounds" / "confound_scores.csv")
    assert "covariates: age + sex + site + tiv" in set(confounds["model"])
    assert {"raw", "adjusted"} <= set(confounds["evaluation"])
    assoc = out / "stages" / "scores" / "associations.csv"
    assert assoc.exists()
    # a numeric site code is categorical when listed in data.categorical (data stage only)
    from sklearn_cgni.cli import resolve_inputs, run_pipeline

    config = load_config(tmp_path / "cfg.toml", preset="cpu",
                         overrides=['data.covariates=["age", "sex", "site"]', 'data.categorical=["site"]',
                                    'data.missing_codes=[]', "run.device=cpu"])
    inputs = resolve_inputs(images=str(today / "images"), genotypes=str(today / "genotypes.bed"),
                            phenotypes=str(today / "phenotypes.csv"))
    run_pipeline(tmp_path / "numeric", config, inputs, progress=False, only="data")
    data = json.loads((tmp_path / "numeric" / "stages" / "data" / "_done.json").read_text())["result"]
    assert data["categorical_covariates"] == ["site"]
    with pytest.raises(ConfigError, match=r"data.categorical lists \['tiv'\]"):
        load_config(overrides=['data.categorical=["tiv"]'])


def _tables(out):
    """Every table of a finished run (tables/*.csv), with the timing columns left out."""
    tables = {}
    for path in sorted((out / "tables").glob("*.csv")):
        t = pd.read_csv(path)
        tables[path.name] = t[[c for c in t.columns if "second" not in c and c not in ("time", "finished")]]
    return tables


def test_plink_and_shuffled_bgen_give_identical_tables(cohorts, tmp_path):
    """One cohort as PLINK 1, and as BGEN with its variants and participants shuffled (and the phenotype rows
    too): the whole tiny run gives identical tables, since participants enter every model sorted by ID and
    variants by chromosome and position."""
    today = cohorts / "today"
    rng = np.random.default_rng(1)
    geno = read_genotypes(today / "genotypes.bed")
    info = pd.read_csv(today / "snp_info.csv", dtype={"snp": str}).set_index("snp")
    shuffled = geno.iloc[rng.permutation(len(geno)), rng.permutation(geno.shape[1])]
    assert list(shuffled.columns) != list(geno.columns) and list(shuffled.index) != list(geno.index)
    (tmp_path / "in").mkdir()
    bgen = write_bgen(shuffled, tmp_path / "in" / "chr1.bgen", snp_info=info)
    pheno = pd.read_csv(today / "phenotypes.csv", dtype={"participant_id": str})
    pheno.sample(frac=1.0, random_state=2).to_csv(tmp_path / "in" / "phenotypes.csv", index=False)
    back = read_genotypes(bgen)
    pd.testing.assert_frame_equal(back.loc[geno.index], geno, check_names=False)  # the same calls
    assert list(back.columns) == list(geno.columns)  # in one order: chromosome and position
    before = _snapshot(cohorts)
    common = ["--images", str(today / "images"), "--snp-info", str(today / "snp_info.csv"),
              "--snp-genes", str(today / "snp_genes.csv"), "--gene-sets", str(today / "gene_sets.gmt"),
              "--atlas", str(today / "atlas.nii.gz"), "--atlas-labels", str(today / "atlas_labels.csv"),
              "--preset", "tiny", "--set", "run.threads=1", "--device", "cpu", "--no-progress", "-q"]
    assert main(["run", "--genotypes", str(today / "genotypes.bed"), "--phenotypes", str(today / "phenotypes.csv"),
                 *common, "-o", str(tmp_path / "plink")]) == 0
    assert main(["run", "--genotypes", str(bgen), "--phenotypes", str(tmp_path / "in" / "phenotypes.csv"),
                 *common, "-o", str(tmp_path / "bgen")]) == 0
    plink, shuffled_tables = _tables(tmp_path / "plink"), _tables(tmp_path / "bgen")
    assert list(plink) == list(shuffled_tables) and "table1.csv" in plink
    for name in plink:
        pd.testing.assert_frame_equal(plink[name], shuffled_tables[name], obj=name)
    assert _snapshot(cohorts) == before  # no input file changed
