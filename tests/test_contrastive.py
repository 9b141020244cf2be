"""ContrastiveSNPEncoder (stage 2) and its class-balanced batch sampler."""

import numpy as np
import pandas as pd
import pytest
import torch

from sklearn_cgni.genetics import ContrastiveSNPEncoder, StratifiedBatchSampler

SMALL = dict(n_components=6, image_hidden=(16,), genetic_hidden=(24, 16), device="cpu", random_state=0)


def _data(n=120, n_img=8, n_snp=30, seed=0):
    """h_v driven by a few SNPs, and a WM label driven by both (unbalanced, ~35 % high)."""
    rng = np.random.default_rng(seed)
    snps = rng.binomial(2, 0.3, size=(n, n_snp)).astype(float)
    w = np.zeros((n_snp, n_img))
    w[:4] = rng.normal(size=(4, n_img))
    h_v = snps @ w + 0.5 * rng.normal(size=(n, n_img))
    score = h_v[:, 0] + snps[:, 0] + rng.normal(size=n)
    y = (score > np.quantile(score, 0.65)).astype(int)
    return h_v, snps, y


# ----------------------------------------------------------------- sampler
def test_sampler_every_batch_holds_every_class_and_covers_each_sample_once():
    y = np.array([0] * 91 + [1] * 9)
    sampler = StratifiedBatchSampler(y, batch_size=12, random_state=0)
    assert len(sampler) == 9
    epoch1, epoch2 = list(sampler), list(sampler)
    for epoch in (epoch1, epoch2):
        assert len(epoch) == 9
        assert sorted(i for b in epoch for i in b) == list(range(100))
        assert all(set(y[b]) == {0, 1} for b in epoch)
        assert max(map(len, epoch)) - min(map(len, epoch)) <= 2
    assert epoch1 != epoch2  # reshuffled every epoch


def test_sampler_min_per_class_and_clear_error_when_class_too_small():
    y = np.array([0] * 40 + [1] * 8)
    batches = list(StratifiedBatchSampler(y, batch_size=15, min_per_class=2, random_state=0))
    assert len(batches) == 4 and all(np.sum(y[b] == 1) >= 2 for b in batches)
    y = np.array([0] * 40 + [1] * 6)
    with pytest.raises(ValueError, match=r"class 1 has 6 sample\(s\).*batch_size >= 8"):
        StratifiedBatchSampler(y, batch_size=5, random_state=0)


# ----------------------------------------------------------------- encoder
def test_fit_transform_layout_and_encoders():
    h_v, snps, y = _data()
    X = np.hstack([h_v, snps])
    enc = ContrastiveSNPEncoder(image_features=8, batch_size=30, max_epochs=3, **SMALL).fit(X, y)
    Xt = enc.transform(X)
    assert Xt.shape == (120, 6 + 8)
    np.testing.assert_array_equal(Xt[:, 6:], h_v)  # h_v passes through untouched
    z_g, z_v = enc.transform_genetic(X), enc.transform_image(X)
    np.testing.assert_allclose(Xt[:, :6], z_g)
    np.testing.assert_allclose(np.linalg.norm(z_g, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(z_v, axis=1), 1, rtol=1e-6)
    # the exposed torch encoders give the same embeddings (for occlusion / SCCA)
    assert not enc.genetic_encoder_.training and not enc.image_encoder_.training
    with torch.no_grad():
        z_g_torch = enc.genetic_encoder_(torch.as_tensor(snps, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(z_g_torch, z_g, atol=1e-5)
    assert list(enc.get_feature_names_out()[:2]) == ["z_g0", "z_g1"]
    assert enc.n_iter_ == 3 and len(enc.loss_curve_) == 3


def test_training_aligns_matched_pairs():
    h_v, snps, y = _data(n=200)
    X = np.hstack([h_v, snps])
    enc = ContrastiveSNPEncoder(image_features=8, batch_size=50, max_epochs=40, lr=3e-3, **SMALL).fit(X, y)
    assert enc.loss_curve_[-1] < enc.loss_curve_[0]
    sim = enc.transform_image(X) @ enc.transform_genetic(X).T
    # each participant's image embedding is closer to its own genetic embedding than to others'
    matched, unmatched = np.diag(sim).mean(), sim[~np.eye(200, dtype=bool)].mean()
    assert matched - unmatched > 0.3
    top5 = np.mean([i in np.argsort(-sim[i])[:5] for i in range(200)])
    assert top5 > 5 * 5 / 200  # > 5x chance


def test_dataframe_with_prefix_and_column_list():
    h_v, snps, y = _data(n=60)
    df = pd.DataFrame(
        np.hstack([snps, h_v]),
        columns=[f"snp__rs{i}" for i in range(30)] + [f"image__f{i}" for i in range(8)],
        index=[f"sub-{i:03d}" for i in range(60)],
    )
    enc = ContrastiveSNPEncoder(batch_size=30, max_epochs=1, **SMALL).fit(df, y)
    np.testing.assert_array_equal(enc.image_indices_, np.arange(30, 38))
    assert list(enc.get_feature_names_out()[6:8]) == ["image__f0", "image__f1"]
    enc2 = ContrastiveSNPEncoder(
        image_features=[f"image__f{i}" for i in range(8)], batch_size=30, max_epochs=1, **SMALL
    ).fit(df, y)
    np.testing.assert_allclose(enc.transform(df), enc2.transform(df))


# ----------------------------------------------------------------- bad input
def test_one_class_is_refused():
    h_v, snps, _ = _data(n=40)
    with pytest.raises(ValueError, match="only one class"):
        ContrastiveSNPEncoder(image_features=8, **SMALL).fit(np.hstack([h_v, snps]), np.ones(40))


def test_nan_snps_are_refused_naming_participant_and_column():
    h_v, snps, y = _data(n=40)
    snps[3, 5] = np.nan
    df = pd.DataFrame(
        np.hstack([h_v, snps]),
        columns=[f"image__{i}" for i in range(8)] + [f"rs{i}" for i in range(30)],
        index=[f"sub-{i}" for i in range(40)],
    )
    with pytest.raises(ValueError, match=r"NaN.*'rs5'.*'sub-3'.*SNPQualityFilter"):
        ContrastiveSNPEncoder(**SMALL).fit(df, y)


def test_feature_count_mismatch_at_transform():
    h_v, snps, y = _data(n=40)
    X = np.hstack([h_v, snps])
    enc = ContrastiveSNPEncoder(image_features=8, batch_size=20, max_epochs=1, **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="38 features"):
        enc.transform(X[:, :-1])


def test_all_loss_weights_zero_fails_before_training():
    h_v, snps, y = _data(n=40)
    enc = ContrastiveSNPEncoder(image_features=8, lambda_vg=0, sigma_gv=0, gamma_vv=0, theta_gg=0, **SMALL)
    with pytest.raises(ValueError, match="all four loss weights"):
        enc.fit(np.hstack([h_v, snps]), y)
    assert not hasattr(enc, "net_")


def test_batch_size_larger_than_data_is_clipped_with_warning():
    h_v, snps, y = _data(n=30)
    enc = ContrastiveSNPEncoder(image_features=8, batch_size=50, max_epochs=1, **SMALL)
    with pytest.warns(UserWarning, match="batch_size=50 is larger than the 30"):
        enc.fit(np.hstack([h_v, snps]), y)
    assert np.isfinite(enc.loss_curve_).all()


def test_batch_size_too_small_for_minority_class():
    h_v, snps, y = _data(n=100)  # 35 high-WM participants
    with pytest.raises(ValueError, match=r"class 1 has 35 sample\(s\)"):
        ContrastiveSNPEncoder(image_features=8, batch_size=2, **SMALL).fit(np.hstack([h_v, snps]), y)


@pytest.mark.parametrize(
    "spec, match",
    [(40, "at least one imaging and one genetic"), ("image__", "no column names"), ([99], "outside")],
)
def test_bad_image_features(spec, match):
    h_v, snps, y = _data(n=40)
    with pytest.raises(ValueError, match=match):
        ContrastiveSNPEncoder(image_features=spec, **SMALL).fit(np.hstack([h_v, snps]), y)


def _noise_cohort(n=240, n_snps=120, seed=0):
    """Labels carried by h_v only; the SNPs are noise, so label-supervised encoders can only memorise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    h_v = rng.normal(size=(n, 8)) + 0.8 * y[:, None]
    snps = rng.integers(0, 3, size=(n, n_snps)).astype(float)
    return np.hstack([h_v, snps]), y


def test_early_stopping_keeps_the_best_held_out_epoch():
    X, y = _noise_cohort()
    kw = dict(image_features=8, n_components=8, image_hidden=(32,), genetic_hidden=(64,), max_epochs=80,
              theta_gg=0.4, device="cpu", random_state=0)
    plain = ContrastiveSNPEncoder(**kw).fit(X, y)
    assert plain.validation_loss_curve_ is None and plain.best_epoch_ == plain.n_iter_ == 80
    es = ContrastiveSNPEncoder(early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, **kw).fit(X, y)
    curve = es.validation_loss_curve_
    assert len(curve) == es.n_iter_ == len(es.loss_curve_)
    # it stopped n_iter_no_change epochs after the best held-out loss, long before max_epochs
    assert es.best_epoch_ == int(np.argmin(curve)) + 1 and es.n_iter_ == es.best_epoch_ + 5 < 80
    assert curve[-1] > min(curve)  # the held-out loss rose while the training loss kept falling
    assert es.loss_curve_[-1] < es.loss_curve_[es.best_epoch_ - 1]
    # the kept weights are the best epoch's: their held-out loss is the minimum of the curve
    valid = es.net_.train_split.keywords["valid_ds"]
    with torch.no_grad():
        z = es.net_.module_(**{k: torch.as_tensor(v) for k, v in valid.X.items()})
        loss = float(es.net_.get_loss(z, valid.y))
    assert loss == pytest.approx(min(curve), rel=1e-5)
    # 20 % of 240 held out, stratified
    assert len(valid.y) == 48 and abs(valid.y.mean() - y.mean()) < 0.03


def test_early_stopping_limits_label_memorisation():
    """On noise SNPs, the theta term memorises training labels; early stopping stops it earlier."""
    X, y = _noise_cohort(n=300, seed=1)
    kw = dict(image_features=8, n_components=8, image_hidden=(32,), genetic_hidden=(64,), max_epochs=60,
              lambda_vg=0.0, sigma_gv=0.0, theta_gg=1.0, device="cpu", random_state=0)
    train, test = np.arange(240), np.arange(240, 300)

    def separation(enc, rows):  # |mean z_g difference between the groups| on these rows
        z = enc.transform_genetic(X[rows])
        return float(np.linalg.norm(z[y[rows] == 1].mean(0) - z[y[rows] == 0].mean(0)))

    plain = ContrastiveSNPEncoder(**kw).fit(X[train], y[train])
    es = ContrastiveSNPEncoder(early_stopping=True, n_iter_no_change=5, **kw).fit(X[train], y[train])
    assert separation(plain, train) > 1.0  # memorised: the groups sit apart on the training rows
    assert separation(es, train) < 0.5 * separation(plain, train)
    assert separation(plain, test) < 0.5 and separation(es, test) < 0.5  # and nowhere else (noise SNPs)


def test_early_stopping_refuses_too_few_samples():
    X, y = _noise_cohort(n=20)
    enc = ContrastiveSNPEncoder(image_features=8, n_components=4, image_hidden=(8,), genetic_hidden=(8,),
                                batch_size=10, early_stopping=True, validation_fraction=0.05, device="cpu")
    with pytest.raises(ValueError, match="validation_fraction=0.05 of 20 samples"):
        enc.fit(X, y)


def _shared_signal(n=240, seed=0):
    """h_v and SNPs that both carry a per-participant latent (the thing the cross-modal terms can learn)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    h_v = latent @ rng.normal(size=(3, 12)) + 0.5 * rng.normal(size=(n, 12))
    p = 1 / (1 + np.exp(-latent @ rng.normal(size=(3, 30))))
    snps = rng.binomial(2, 0.15 + 0.7 * p).astype(float)
    y = (latent[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return np.hstack([h_v, snps]), y


def test_matching_score_is_a_cross_modal_auc():
    from sklearn_cgni.genetics import matching_score

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 6))
    assert matching_score(z, z) == 1.0
    assert 0.45 < matching_score(z, rng.normal(size=(50, 6))) < 0.55  # chance, whatever n
    assert matching_score(z, z[::-1]) < 0.55
    # the same value for (z_v, z_g) and (z_g, z_v): both directions are averaged
    w = z + rng.normal(size=z.shape)
    assert matching_score(z, w) == pytest.approx(matching_score(w, z))
    with pytest.raises(ValueError, match="matched"):
        matching_score(z, z[:10])


def test_encoder_scores_held_out_matching_and_stops_on_it():
    from sklearn.model_selection import train_test_split

    X, y = _shared_signal()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    enc = ContrastiveSNPEncoder(image_features=12, n_components=8, image_hidden=(32,), genetic_hidden=(32,),
                                batch_size=40, max_epochs=60, early_stopping=True, scoring="matching",
                                validation_fraction=0.2, n_iter_no_change=8, dropout=0.1, snp_dropout=0.1,
                                random_state=0).fit(X_tr, y_tr)
    curve = enc.validation_matching_curve_
    assert len(curve) == enc.n_iter_ == len(enc.validation_loss_curve_)
    assert enc.best_epoch_ == int(np.argmax(curve)) + 1
    assert enc.n_iter_ < 60 or enc.best_epoch_ <= 60
    held_out = enc.score(X_te)
    assert held_out > 0.7, held_out  # the shared latent is found on participants never seen
    # an untrained encoder pair (one epoch at a tiny learning rate) is near chance
    untrained = ContrastiveSNPEncoder(image_features=12, n_components=8, image_hidden=(32,), genetic_hidden=(32,),
                                      batch_size=40, max_epochs=1, lr=1e-7, random_state=0).fit(X_tr, y_tr)
    assert untrained.score(X_te) < held_out - 0.1


def test_encoder_regularizers_are_validated_and_search_uses_score():
    from sklearn.model_selection import GridSearchCV
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = _shared_signal(n=120)
    with pytest.raises(InvalidParameterError, match="snp_dropout"):
        ContrastiveSNPEncoder(image_features=12, snp_dropout=1.0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="scoring"):
        ContrastiveSNPEncoder(image_features=12, scoring="accuracy").fit(X, y)
    enc = ContrastiveSNPEncoder(image_features=12, n_components=4, image_hidden=(16,), genetic_hidden=(16,),
                                batch_size=30, max_epochs=3, random_state=0)
    search = GridSearchCV(enc, {"snp_dropout": [0.0, 0.3]}, cv=2).fit(X, y)  # no scoring: encoder.score
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= 0) & (scores <= 1))


def test_genetic_l1_concentrates_the_snp_weights_on_the_snps_that_carry_the_signal():
    from sklearn.utils._param_validation import InvalidParameterError

    rng = np.random.default_rng(0)
    n = 600
    latent = rng.normal(size=(n, 2))
    h_v = latent @ rng.normal(size=(2, 8)) + 0.5 * rng.normal(size=(n, 8))
    p = 1 / (1 + np.exp(-2 * latent @ rng.normal(size=(2, 6))))
    signal = rng.binomial(2, 0.15 + 0.7 * p)
    noise = rng.binomial(2, 0.3, size=(n, 54))  # SNPs unrelated to the image
    X = np.hstack([h_v, signal, noise]).astype(float)
    y = (latent[:, 0] > 0).astype(int)

    def signal_share(l1):
        enc = ContrastiveSNPEncoder(image_features=8, n_components=4, image_hidden=(), genetic_hidden=(),
                                    standardize=True, genetic_l1=l1, batch_size=50, max_epochs=40,
                                    lr=1e-2, random_state=0).fit(X, y)
        w = enc.genetic_encoder_.output.weight.detach().abs().sum(dim=0).numpy()  # linear e_g: per SNP
        return w[:6].sum() / w.sum(), w.sum()

    share0, total0 = signal_share(0.0)
    share1, total1 = signal_share(0.1)
    assert total1 < 0.5 * total0, (total0, total1)  # measured 9.5 -> 2.3
    assert share1 > share0 + 0.1, (share0, share1)  # the noise SNPs lose their weights (0.33 -> 0.52)
    with pytest.raises(InvalidParameterError, match="genetic_l1"):
        ContrastiveSNPEncoder(image_features=8, genetic_l1=-1.0).fit(X, y)


# ----------------------------------------------------------------- weights
def test_save_weights_round_trip_is_weights_only_and_transforms_identically(tmp_path):
    h_v, snps, y = _data()
    X = pd.DataFrame(np.hstack([h_v, snps]), columns=[f"image__{i}" for i in range(8)] + [f"rs{i}" for i in range(30)])
    enc = ContrastiveSNPEncoder(max_epochs=3, early_stopping=True, validation_fraction=0.2, snp_dropout=0.1,
                                **SMALL).fit(X, np.where(y == 1, "high", "low"))
    path = enc.save_weights(tmp_path / "encoder.pt")
    state = torch.load(path, weights_only=True)  # nothing unpickled
    assert state["format"].startswith("sklearn_cgni.ContrastiveSNPEncoder")
    loaded = ContrastiveSNPEncoder.from_weights(path)
    for method in ("transform", "transform_image", "transform_genetic"):
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(enc, method)(X))
    assert loaded.score(X) == enc.score(X)
    assert list(loaded.classes_) == ["high", "low"] and loaded.best_epoch_ == enc.best_epoch_
    assert loaded.validation_matching_curve_ == enc.validation_matching_curve_
    assert list(loaded.get_feature_names_out()) == list(enc.get_feature_names_out())
    assert loaded.get_params()["snp_dropout"] == 0.1
    assert loaded.net_.module_.genetic_encoder.l1 == enc.net_.module_.genetic_encoder.l1 == 0.0
    with pytest.raises(ValueError, match="Feature names|feature names"):
        loaded.transform(X.rename(columns={"rs0": "other"}))
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a weights file written by save_weights"):
        ContrastiveSNPEncoder.from_weights(tmp_path / "bad.pt")


def test_standardize_makes_the_encoder_blind_to_the_inputs_units(tmp_path):
    h_v, snps, y = _data()
    X = np.hstack([h_v, snps])
    rng = np.random.default_rng(1)
    scale, shift = rng.uniform(0.01, 100, X.shape[1]), rng.normal(0, 50, X.shape[1])
    kw = dict(image_features=8, n_components=4, image_hidden=(8,), genetic_hidden=(8,), batch_size=20,
              max_epochs=3, snp_dropout=0.2, standardize=True, random_state=0)
    a = ContrastiveSNPEncoder(**kw).fit(X, y)
    b = ContrastiveSNPEncoder(**kw).fit(X * scale + shift, y)
    # the same z-scores reach the layers, so the same training and the same embeddings
    np.testing.assert_allclose(a.transform_genetic(X), b.transform_genetic(X * scale + shift), atol=1e-4)
    np.testing.assert_allclose(a.transform_image(X), b.transform_image(X * scale + shift), atol=1e-4)
    # transform returns z_g and the z-scored h_v (the training rows' mean 0, SD 1)
    h = a.transform(X)[:, 4:]
    np.testing.assert_allclose(h.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(h.std(0), 1, atol=1e-4)
    # the statistics travel with the weights: the reloaded encoder and its torch modules take raw inputs
    back = ContrastiveSNPEncoder.from_weights(a.save_weights(tmp_path / "enc.pt"))
    np.testing.assert_allclose(back.transform(X), a.transform(X), atol=1e-6)
    with torch.no_grad():
        z = back.genetic_encoder_(torch.as_tensor(X[:, 8:], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(z, a.transform_genetic(X), atol=1e-5)
    # unstandardised, the units matter
    plain = {**kw, "standardize": False}
    c = ContrastiveSNPEncoder(**plain).fit(X, y)
    d = ContrastiveSNPEncoder(**plain).fit(X * scale + shift, y)
    assert not np.allclose(c.transform_genetic(X), d.transform_genetic(X * scale + shift), atol=1e-2)


def test_image_tail_is_fine_tuned_as_a_copy_and_saved(tmp_path):
    from sklearn.base import clone

    from sklearn_cgni.nn import CNNBackbone3d, CNNTail

    rng = np.random.default_rng(0)
    backbone = CNNBackbone3d(channels=(4, 6), padding=1, global_pool="avg").eval()
    tail = CNNTail.from_backbone(backbone, 1, (6, 8, 6)).eval()
    _, snps, y = _data(n=120)
    a = rng.normal(size=(120, 4 * 3 * 4 * 3))  # activations entering the last block: 4 channels x (3, 4, 3)
    X = np.hstack([a, snps])
    before = {k: v.clone() for k, v in tail.state_dict().items()}
    enc = ContrastiveSNPEncoder(image_features=a.shape[1], image_tail=tail, standardize=True, max_epochs=3,
                                **SMALL).fit(X, y)
    assert all(torch.equal(before[k], v) for k, v in tail.state_dict().items())  # the parameter is untouched
    tuned = enc.net_.module_.image_tail
    assert not all(torch.equal(before[k], v) for k, v in tuned.state_dict().items())  # its copy was trained
    Z = enc.transform(X)
    assert Z.shape == (120, 6 + 6)  # z_g and the tail's h_v (6 channels, global pool), not the 144 activations
    with torch.no_grad():
        h = tuned(torch.as_tensor(a, dtype=torch.float32)).numpy()
    z = enc.net_.module_.image_encoder.standardize
    np.testing.assert_allclose(Z[:, 6:], (h - z.mean.numpy()[0]) / z.scale.numpy()[0], atol=1e-4)
    assert list(enc.get_feature_names_out()[6:8]) == ["h_v0", "h_v1"]
    assert enc.transform_image(X).shape == (120, 6)
    loaded = ContrastiveSNPEncoder.from_weights(enc.save_weights(tmp_path / "enc.pt"))
    np.testing.assert_array_equal(loaded.transform(X), Z)
    assert isinstance(clone(enc).image_tail, CNNTail)
    with pytest.raises(TypeError, match="image_tail must be a sklearn_cgni.nn.CNNTail"):
        ContrastiveSNPEncoder(image_features=a.shape[1], image_tail=torch.nn.Linear(3, 3), **SMALL).fit(X, y)
