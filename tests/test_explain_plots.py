"""Tests for the post-analysis figures (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.utils import Bunch  # noqa: E402

from sklearn_cgni.explain import (  # noqa: E402
    plot_canonical_correlations,
    plot_region_effects,
    plot_snp_contributions,
    region_effect_map,
)


def _atlas():
    data = np.zeros((20, 24, 20), dtype=np.int32)
    data[2:9, 3:20, 4:16] = 5
    data[11:18, 3:20, 4:16] = 7
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-40, -56, -40]
    labels = pd.DataFrame({"index": [5, 7], "name": ["Caudate_L", "Cuneus_R"]})
    return Bunch(img=nib.Nifti1Image(data, affine), labels=labels)


SIG = pd.DataFrame({"component": [1, 1, 2], "region": ["Caudate_L", "Cuneus_R", "Cuneus_R"],
                    "label": [5, 7, 7], "contribution": [-0.2, 0.3, -0.1], "zscore": [-3.0, 4.0, -2.6],
                    "sign": [-1, 1, -1]})


def test_region_effect_map_values():
    atlas = _atlas()
    data = np.asarray(atlas.img.dataobj)
    m1 = np.asarray(region_effect_map(SIG, atlas, component=1).dataobj)
    assert set(np.unique(m1[data == 5])) == {-1.0} and set(np.unique(m1[data == 7])) == {1.0}
    assert (m1[data == 0] == 0).all()
    # all components: Cuneus_R is +1 in component 1 and -1 in component 2 -> 0 on average
    m_all = np.asarray(region_effect_map(SIG, atlas).dataobj)
    assert set(np.unique(m_all[data == 7])) == {0.0}
    mz = np.asarray(region_effect_map(SIG, atlas, component=1, value="zscore").dataobj)
    assert set(np.unique(mz[data == 7])) == {4.0}
    # without a label column the names are looked up in the atlas
    m_names = np.asarray(region_effect_map(SIG.drop(columns="label"), atlas, component=1).dataobj)
    np.testing.assert_array_equal(m_names, m1)


def test_region_effect_map_bad_input():
    atlas = _atlas()
    with pytest.raises(ValueError, match="Component 9 has no significant region"):
        region_effect_map(SIG, atlas, component=9)
    with pytest.raises(ValueError, match=r"Region\(s\) \['Insula_L'\] are not in the atlas"):
        region_effect_map(SIG.drop(columns="label").assign(region="Insula_L"), atlas)
    with pytest.raises(ValueError, match="value must be"):
        region_effect_map(SIG, atlas, value="p")


@pytest.mark.parametrize("kind", ["glass", "stat_map"])
def test_plot_region_effects_saves(tmp_path, kind):
    display = plot_region_effects(SIG, _atlas(), component=1, kind=kind)
    out = tmp_path / f"fig3_{kind}.png"
    display.savefig(out)
    display.close()
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="kind must be"):
        plot_region_effects(SIG, _atlas(), kind="surface")


def test_plot_snp_contributions_and_correlations(tmp_path):
    rng = np.random.default_rng(0)
    contrib = pd.DataFrame(rng.standard_normal((60, 3)), index=[f"rs{i}" for i in range(60)],
                           columns=pd.RangeIndex(1, 4, name="component"))
    contrib.iloc[7, 0] = 20.0
    fig = plot_snp_contributions(contrib, threshold=3.0)
    assert len(fig.axes) == 3
    assert any(t.get_text() == "rs7" for t in fig.axes[0].texts)
    fig.savefig(tmp_path / "snps.png")
    table = pd.DataFrame({"train": [0.68, 0.67], "validation": [0.67, 0.65], "holdout": [0.57, 0.54],
                          "p_value": [0.01, 0.02]}, index=pd.RangeIndex(1, 3, name="component"))
    fig2 = plot_canonical_correlations(table)
    ax = fig2.axes[0]
    assert len(ax.patches) == 6  # 2 components x 3 splits, p_value left out
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation", "holdout"]
    fig2.savefig(tmp_path / "cc.png")
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        plot_snp_contributions(pd.DataFrame())
    raw = plot_snp_contributions(contrib, standardize=False)
    assert raw.axes[0].get_ylabel() == "comp. 1"  # no "(z)": raw contributions
    with pytest.warns(FutureWarning, match="'standardise' is deprecated"):
        old = plot_snp_contributions(contrib, standardise=False)
    assert old.axes[0].get_ylabel() == "comp. 1"
    with pytest.raises(ValueError, match="no split column"):
        plot_canonical_correlations(table[["p_value"]])


def test_forest_plot_draws_one_interval_per_row_and_series():
    from sklearn_cgni.explain import plot_forest

    t = pd.DataFrame({"model": ["CNN", "logistic", "age"], "kind": ["deep", "classical", "covariates"],
                      "v": [80.0, 78.0, 85.0], "vlo": [72.0, 70.0, 80.0], "vhi": [88.0, 86.0, 90.0],
                      "h": [75.0, np.nan, 84.0]})
    fig = plot_forest(t, series={"validation": ("v", "vlo", "vhi"), "holdout": ("h", None, None)},
                      reference=(85.0, "age"), chance=50)
    ax = fig.axes[0]
    segments = [line.get_xdata() for line in ax.get_lines() if len(line.get_xdata()) == 2
                and line.get_xdata()[0] != line.get_xdata()[1]]
    assert sorted(map(tuple, segments)) == [(70.0, 86.0), (72.0, 88.0), (80.0, 90.0)]  # NaN holdout: no mark
    colors = [tick.get_color() for tick in ax.get_yticklabels()]
    assert len(set(colors)) == 3  # coloured by kind
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        plot_forest(t.iloc[:0], series={"v": ("v", None, None)})


def test_paired_scatter_marks_items_and_heatmap_stars_bonferroni_cells():
    from sklearn_cgni.explain import plot_association_heatmap, plot_paired_scatter

    fig = plot_paired_scatter([0.1, 0.2, 0.0], [0.3, 0.1, 0.05], marked=[True, False, False])
    sizes = [c.get_offsets().shape[0] for c in fig.axes[0].collections]
    assert sizes == [2, 1]  # two plain points, one marked
    with pytest.raises(ValueError, match="one length"):
        plot_paired_scatter([0.1], [0.1, 0.2])
    t = pd.DataFrame({"score": ["rs1", "rs1", "rs2", "rs2"], "measure": ["a", "b", "a", "b"],
                      "p": [1e-6, 0.5, 0.02, 0.9], "beta": [0.3, -0.1, -0.2, 0.01]})
    t["sig"] = t["p"] < 0.05 / 4
    fig = plot_association_heatmap(t, threshold=0.05 / 4, significant="sig")
    values = fig.axes[0].get_images()[0].get_array()
    assert values[0, 0] == pytest.approx(6) and values[1, 0] == pytest.approx(np.log10(0.02))  # signed -log10 p
    assert [x.get_text() for x in fig.axes[0].texts] == ["*"]  # the one association past Bonferroni
    with pytest.raises(ValueError, match="lacks the column"):
        plot_association_heatmap(t.drop(columns="beta"))
