"""Checks of estimators that take 3D images, in the spirit of scikit-learn's and nilearn's suites.

scikit-learn's :func:`~sklearn.utils.estimator_checks.check_estimator` feeds 2D arrays, which
an image CNN refuses. :func:`image_estimator_checks` yields checks that feed tiny 4D arrays
``(n, X, Y, Z)`` instead: unfitted clones, errors before ``fit``, output shapes, a second
fit with the same seed, invariance of ``transform`` to the order and the batching of the
samples, a skops round trip (:mod:`sklearn_cgni.persistence`; the package itself never
imports pickle) and a clear error for images of another shape.

Examples
--------
>>> import numpy as np
>>> from sklearn_cgni.imaging import BrainAgeCNNTransformer
>>> from sklearn_cgni.utils.estimator_checks import image_estimator_checks
>>> rng = np.random.default_rng(0)
>>> X, age = rng.normal(size=(8, 12, 14, 12)).astype("float32"), rng.uniform(40, 80, 8)
>>> est = BrainAgeCNNTransformer(channels=(2, 2), padding=1, global_pool="avg", max_epochs=1,
...                              early_stopping=False, lr_schedule="none", validation_fraction=0.0,
...                              device="cpu", random_state=0)
>>> for name, check in image_estimator_checks(est, X, age):
...     check()
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

__all__ = ["image_estimator_checks"]

_ATOL = 1e-5  # outputs of two fits agree to float32 rounding (intra-op threads may sum differently)


def _outputs(est, X):
    """What a fitted image estimator computes: its transform, and predict when it has one."""
    out = {"transform": np.asarray(est.transform(X))}
    if hasattr(est, "predict"):
        out["predict"] = np.asarray(est.predict(X))
    return out


def _assert_same(a, b, what):
    for key in a:
        if a[key].dtype.kind in "fc":
            np.testing.assert_allclose(a[key], b[key], atol=_ATOL, rtol=1e-5, err_msg=f"{what}: {key}")
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key}")


def image_estimator_checks(estimator, X, y=None):
    """Yield ``(name, check)`` pairs; each ``check()`` raises AssertionError when it fails.

    Parameters
    ----------
    estimator : estimator
        Unfitted, with ``fit(X, y)`` and ``transform``; keep it tiny (few channels, 1 epoch,
        ``random_state`` set) so the checks stay fast. It is cloned, never changed.
    X : ndarray of shape (n_samples, X, Y, Z)
        Images (at least 6); something like 12x14x12 voxels.
    y : array-like, optional
        Targets for ``fit``.

    Yields
    ------
    name : str
    check : callable
        No arguments. The estimator is fitted once, lazily, and shared by the checks.
    """
    X = np.asarray(X)
    fitted = {}

    def fit():
        if "est" not in fitted:
            est = clone(estimator)
            returned = est.fit(X, y)
            assert returned is est, f"{type(est).__name__}.fit must return self"
            fitted["est"] = est
            fitted["out"] = _outputs(est, X)
        return fitted["est"], fitted["out"]

    def check_clone_is_unfitted():
        est = clone(estimator)
        assert est.get_params().keys() == estimator.get_params().keys()
        for method in ("transform", "predict"):
            if hasattr(est, method):
                try:
                    getattr(est, method)(X)
                except NotFittedError:
                    continue
                raise AssertionError(f"{type(est).__name__}.{method} before fit must raise NotFittedError")

    def check_fit_and_output_shapes():
        est, out = fit()
        n = X.shape[0]
        assert tuple(est.image_shape_) == X.shape[1:], (est.image_shape_, X.shape)
        names = est.get_feature_names_out()
        assert out["transform"].shape == (n, len(names)), (out["transform"].shape, len(names))
        assert np.all(np.isfinite(out["transform"]))
        if "predict" in out:
            assert out["predict"].shape[0] == n

    def check_fit_twice_same_seed():
        _, out = fit()
        _assert_same(out, _outputs(clone(estimator).fit(X, y), X), "a second fit with the same random_state")

    def check_sample_order_invariance():
        est, out = fit()
        perm = np.random.default_rng(0).permutation(X.shape[0])
        _assert_same({k: v[perm] for k, v in out.items()}, _outputs(est, X[perm]), "permuted samples")

    def check_subset_invariance():
        est, out = fit()
        k = max(1, X.shape[0] // 2 - 1)  # not a multiple of the inference batch
        _assert_same({key: v[:k] for key, v in out.items()}, _outputs(est, X[:k]), "a subset of the samples")

    def check_skops_round_trip():
        import tempfile
        from pathlib import Path

        from ..persistence import load, save

        est, out = fit()
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load(save(est, Path(tmp) / "est.skops"), device="cpu")
        _assert_same(out, _outputs(loaded, X), "after a skops round trip")

    def check_other_image_shape_is_refused():
        est, _ = fit()
        other = np.zeros((2, X.shape[1] + 2, *X.shape[2:]), dtype=X.dtype)
        try:
            est.transform(other)
        except ValueError as exc:
            assert "shape" in str(exc), str(exc)
            return
        raise AssertionError(f"{type(est).__name__}.transform accepted images of another shape")

    checks = [check_clone_is_unfitted, check_fit_and_output_shapes, check_fit_twice_same_seed,
              check_sample_order_invariance, check_subset_invariance, check_skops_round_trip, check_other_image_shape_is_refused]
    for check in checks:
        yield check.__name__, check
