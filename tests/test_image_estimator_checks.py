"""The image estimators pass the image-aware checks of sklearn_cgni.utils.estimator_checks."""

import pickle

import numpy as np
import pytest

from sklearn_cgni.imaging import BrainAgeCNNTransformer, BrainGenotypeScorer, ImagingCNNClassifier
from sklearn_cgni.utils.estimator_checks import image_estimator_checks

TINY = dict(channels=(2, 4), padding=1, global_pool="avg", max_epochs=1, batch_size=4, device="cpu",
            random_state=0)
NO_VALIDATION = dict(early_stopping=False, lr_schedule="none", validation_fraction=0.0)

rng = np.random.default_rng(0)
X = rng.normal(size=(10, 12, 14, 12)).astype(np.float32)
TARGETS = {
    "BrainAgeCNNTransformer": (BrainAgeCNNTransformer(**TINY, **NO_VALIDATION), rng.uniform(40, 80, 10)),
    # early stopping on a validation split: the fitted net holds validation-metric callbacks
    "BrainAgeCNNTransformer(early stopping)": (
        BrainAgeCNNTransformer(**{**TINY, "max_epochs": 2}, validation_fraction=0.3), rng.uniform(40, 80, 10)),
    "ImagingCNNClassifier": (ImagingCNNClassifier(**TINY, **NO_VALIDATION), np.tile([0, 1], 5)),
    "ImagingCNNClassifier(early stopping)": (
        ImagingCNNClassifier(**{**TINY, "max_epochs": 2}, validation_fraction=0.4, scoring="balanced_accuracy"),
        np.tile([0, 1], 5)),
    "BrainGenotypeScorer": (BrainGenotypeScorer(**TINY), rng.integers(0, 3, size=(10, 3)).astype(float)),
}
CASES = [(name, check_name, check) for name, (est, y) in TARGETS.items()
         for check_name, check in image_estimator_checks(est, X, y)]


@pytest.mark.parametrize("name, check_name, check", CASES, ids=[f"{n}-{c}" for n, c, _ in CASES])
def test_image_estimator(name, check_name, check):
    check()


def test_a_broken_estimator_fails_the_checks():
    """The checks can fail: a transform that depends on the other samples of the batch."""

    class BatchDependent(BrainAgeCNNTransformer):
        def transform(self, X):
            out = super().transform(X)
            return out - out.mean(axis=0)

    est, y = BatchDependent(**TINY, **NO_VALIDATION), TARGETS["BrainAgeCNNTransformer"][1]
    checks = dict(image_estimator_checks(est, X, y))
    with pytest.raises(AssertionError, match="subset"):
        checks["check_subset_invariance"]()


@pytest.mark.parametrize("name", list(TARGETS))
def test_fitted_image_estimator_pickles(name):
    """Fitted nets hold no local classes or lambdas (validation metrics, early stopping)."""
    est, y = TARGETS[name]
    fitted = est.__sklearn_clone__().fit(X, y)
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(loaded.transform(X), fitted.transform(X), rtol=1e-5, atol=1e-5)
