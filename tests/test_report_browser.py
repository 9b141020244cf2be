"""The report in a real browser: headless Chromium at 1,400 pixels (skipped where none is installed).

Renders the report of the tiny run (test_cli.py's session fixture ``finished_run``, with its
brain-genotype scores recomputed for four listed SNPs, because the tiny run's SNP screen picks
different SNPs per fold and so leaves no association to draw) and checks that every figure
decodes, that nothing sticks out past 1,400 pixels and that the page logs no error.
"""

import json
import shutil

import pandas as pd
import pytest
from _browser import find_chromium, probe

from sklearn_cgni.cli._main import main
from sklearn_cgni.cli._report_figures import FIGURES
from test_cli import _base_args, finished_run, tiny_cohort  # noqa: F401  (shared session fixtures)

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (Debian package 'chromium')")


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):  # noqa: F811
    cohort, cfg, out = finished_run
    dst = tmp_path_factory.mktemp("browser") / "out"
    shutil.copytree(out, dst)
    snps = list(pd.read_csv(out / "tables" / "score_accuracy.csv", dtype={"snp": str})["snp"].unique()[:4])
    assert main(_base_args(cohort, cfg, dst) + ["--set", f"scores.snps={json.dumps(snps)}", "--force"]) == 0
    return dst


def test_report_renders_in_chromium_without_overflow_or_errors(report, tmp_path):
    shot = tmp_path / "report.png"
    r = probe(report / "report.html", width=1400, screenshot=shot)
    # the page as it opens, and with every <details> opened (the four figures' tables at least)
    assert r["details"] >= 4
    assert r["scrollWidth"] <= 1400, r["overflowing"]
    assert not r["overflowing"]
    assert r["errors"] == [] and r["console"] == []
    images = {i["alt"]: i for i in r["images"]}
    for name, (title, _) in FIGURES.items():  # the four summary figures, each decoded
        assert title in images, name
        assert (report / "figures" / f"{name}.png").exists()
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in r["images"])
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_probe_sees_overflow_and_broken_images(tmp_path):
    """The checks above can fail: a too-wide table and an image that does not decode are reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                    "<table style='width:2600px'><tr><td>wide</td></tr></table>"
                    "<img alt='broken' src='data:image/png;base64,AAAA'></body></html>")
    r = probe(page, width=1400)
    assert r["scrollWidth"] > 1400 and r["overflowing"]
    assert r["images"][0]["naturalWidth"] == 0
    assert any("broken" in e for e in r["errors"])
