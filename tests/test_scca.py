"""Tests for SparseCCA (sparse CCA of z_v, z_g with cca-zoo's IPLSCCA)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cgni.explain import SparseCCA, canonical_correlations


def _two_views(n=240, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 2))
    wx = np.zeros((2, 12))
    wx[0, :3] = 1.0
    wx[1, 3:6] = 1.0
    wy = np.zeros((2, 10))
    wy[0, :2] = 1.0
    wy[1, 2:4] = 1.0
    X = latent @ wx + noise * rng.standard_normal((n, 12))
    Y = latent @ wy + noise * rng.standard_normal((n, 10))
    return X, Y


@parametrize_with_checks([SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01, random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_recovers_planted_components_and_sparsity():
    X, Y = _two_views()
    Xte, Yte = _two_views(seed=1)
    scca = SparseCCA(n_components=[1, 2], alpha_x=[0.05, 0.1], alpha_y=[0.05, 0.1], random_state=0)
    scca.fit(X, Y)
    assert scca.best_params_["n_components"] == 2
    held_out = scca.score_components(Xte, Yte)
    assert held_out.shape == (2,)
    assert np.all(np.abs(held_out) > 0.5)
    # each component's weights live on the planted support of X (features 0..5)
    support = np.abs(scca.x_weights_) > 1e-8
    assert not support[6:].any()
    # the top node of each component is inside the planted blocks
    x_nodes, y_nodes = scca.top_nodes()
    assert set(x_nodes) <= set(range(6)) and set(y_nodes) <= set(range(4))
    assert len(scca.cv_results_["params"]) == 2 * 2 * 2
    assert scca.cv_results_["rank_test_score"].min() == 1


def test_components_are_nested_so_one_fit_scores_every_candidate():
    from cca_zoo.sparse import IPLSCCA

    X, Y = _two_views()
    Xs, Ys = (X - X.mean(0)) / X.std(0), (Y - Y.mean(0)) / Y.std(0)
    big = IPLSCCA(n_components=3, alpha=[0.05, 0.05], random_state=0).fit([Xs, Ys])
    small = IPLSCCA(n_components=2, alpha=[0.05, 0.05], random_state=0).fit([Xs, Ys])
    np.testing.assert_allclose(big.weights_[0][:, :2], small.weights_[0], atol=1e-10)
    np.testing.assert_allclose(big.weights_[1][:, :2], small.weights_[1], atol=1e-10)


def test_correlation_table_and_permutation_p_values():
    X, Y = _two_views()
    Xv, Yv = _two_views(seed=2)
    scca = SparseCCA(n_components=2, alpha_x=0.05, alpha_y=0.05, n_permutations=19,
                     random_state=0).fit(X, Y)
    assert scca.best_score_ is None and scca.cv_results_ is None
    table = scca.correlation_table(train=(X, Y), validation=(Xv, Yv))
    assert list(table.columns) == ["train", "validation", "p_value"]
    assert list(table.index) == [1, 2]
    np.testing.assert_allclose(table["train"], scca.canonical_correlations_)
    assert table["p_value"].iloc[0] == pytest.approx(1 / 20)

    rng = np.random.default_rng(5)
    null = SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01, n_permutations=19,
                     random_state=0).fit(rng.standard_normal((120, 6)), rng.standard_normal((120, 5)))
    assert null.p_values_[0] > 0.05


def test_transform_returns_both_views_and_scores():
    X, Y = _two_views()
    scca = SparseCCA(n_components=2, alpha_x=0.05, alpha_y=0.05, random_state=0).fit(X, Y)
    xs = scca.transform(X)
    xs2, ys = scca.transform(X, Y)
    np.testing.assert_allclose(xs, xs2)
    np.testing.assert_allclose(canonical_correlations(xs2, ys), scca.canonical_correlations_)
    assert scca.score(X, Y) == pytest.approx(scca.canonical_correlations_.sum())
    assert SparseCCA(n_components=2, alpha_x=0.05, alpha_y=0.05, scoring="mean",
                     random_state=0).fit(X, Y).score(X, Y) == pytest.approx(
        scca.canonical_correlations_.mean())


def test_constant_variate_gets_zero_correlation():
    assert canonical_correlations(np.ones((5, 1)), np.arange(5.0)[:, None])[0] == 0.0


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": [2, 20]}, r"n_components candidate\(s\) \[20\] exceed 10"),
        ({"n_components": []}, "non-empty list"),
        ({"alpha_x": [0.1, -1.0]}, "alpha_x candidates must be >= 0"),
    ],
)
def test_bad_parameters(params, match):
    X, Y = _two_views(n=40)
    with pytest.raises(ValueError, match=match):
        SparseCCA(**params).fit(X, Y)


def test_bad_inputs():
    X, Y = _two_views(n=40)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01).fit(X, Y[:30])
    scca = SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match="fitted with 10 feature"):
        scca.transform(X, Y[:, :3])
    with pytest.raises(ValueError, match="X has 40 samples but y has 39"):
        scca.transform(X, Y[:39])
    with pytest.raises(ValueError, match="at least one split"):
        scca.correlation_table()
    with pytest.raises(ValueError, match="at least 2 training and 2 test"):
        SparseCCA(n_components=[1, 2], alpha_x=0.01, alpha_y=0.01, cv=5).fit(X[:6], Y[:6])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01).fit(Xn, Y)
    # a DataFrame keeps feature names for the imaging view
    df = pd.DataFrame(X, columns=[f"zv{i}" for i in range(X.shape[1])])
    fitted = SparseCCA(n_components=1, alpha_x=0.01, alpha_y=0.01, random_state=0).fit(df, Y)
    assert list(fitted.feature_names_in_)[:2] == ["zv0", "zv1"]
