"""Per-fit generators: a fit neither reads nor changes torch's global generator, and two fits with
the same seed in two threads of one process give the same model."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from sklearn_cgni.classification import CGNIClassifier
from sklearn_cgni.genetics import ContrastiveSNPEncoder
from sklearn_cgni.imaging import BrainAgeCNNTransformer

# float reductions may be split over threads differently between runs; weights compare at this tolerance
ATOL = 1e-5


def _mlp_data():
    X, y = make_classification(n_samples=60, n_features=12, random_state=0)
    return X.astype(np.float32), y


def _fit_mlp(seed=0):
    X, y = _mlp_data()
    # dropout > 0: its masks come from the fit's generator
    return CGNIClassifier(hidden_layer_sizes=(16, 8), dropout=0.3, max_epochs=3, batch_size=16,
                          device="cpu", random_state=seed).fit(X, y).predict_proba(X)


def _fit_encoder(seed=0):
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(size=(40, 6)), rng.integers(0, 3, size=(40, 10))]).astype(np.float32)
    y = np.tile([0, 1], 20)
    enc = ContrastiveSNPEncoder(image_features=6, n_components=4, image_hidden=(8,), genetic_hidden=(8,),
                                batch_size=10, max_epochs=2, device="cpu", random_state=seed)
    return enc.fit_transform(X, y)


def _fit_cnn(seed=0):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 12, 14, 12)).astype(np.float32)
    age = rng.uniform(40, 80, size=12)
    cnn = BrainAgeCNNTransformer(channels=(4, 4), padding=1, pool_blocks=2, global_pool="avg", dropout=0.5,
                                 augment_shift=1, max_epochs=2, batch_size=4, early_stopping=False,
                                 lr_schedule="none", validation_fraction=0.0, device="cpu", random_state=seed)
    return cnn.fit(X, age).predict(X)


FITS = {"CGNIClassifier": _fit_mlp, "ContrastiveSNPEncoder": _fit_encoder, "BrainAgeCNNTransformer": _fit_cnn}


@pytest.mark.parametrize("name", list(FITS))
def test_fit_leaves_the_global_generator_alone(name):
    fit = FITS[name]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = fit()
    assert torch.equal(torch.random.get_rng_state(), state), "the fit changed torch's global generator"
    torch.manual_seed(999)  # a different global state: the fit does not read it
    np.testing.assert_allclose(fit(), first, atol=ATOL)
    assert not np.allclose(fit(seed=1), first, atol=ATOL)  # the seed does matter


@pytest.mark.parametrize("name", list(FITS))
def test_same_seed_in_two_threads_gives_the_same_model(name):
    fit = FITS[name]
    alone = fit()
    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(lambda _: fit(), range(2))
    np.testing.assert_allclose(a, b, atol=ATOL)
    np.testing.assert_allclose(a, alone, atol=ATOL)
