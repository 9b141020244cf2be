"""GridSearchCV and cross_validate run unchanged through joblib on a Dask (and Ray) cluster.

The estimators are not told about the cluster: the only change is the joblib backend
context. Tiny data and a local cluster on the loopback address (worker threads for the quick tests,
worker processes for the exact comparison with a local run); the same code runs on a real cluster with ``Client("tcp://...")``.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
from joblib import parallel_backend
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from sklearn_cgni.classification import CGNIClassifier
from sklearn_cgni.genetics import ContrastiveSNPEncoder


@pytest.fixture(autouse=True)
def _quiet():
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 16)
    X = rng.normal(size=(32, 10))
    X[:, 0] += 1.5 * y
    X[:, 5] += 1.0 * y
    return X, y


def _pipe():
    return Pipeline([
        ("contrastive", ContrastiveSNPEncoder(image_features=4, image_hidden=(8,), genetic_hidden=(8,),
                                              n_components=4, max_epochs=2, batch_size=16, random_state=0,
                                              device="cpu")),
        ("classifier", CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=3, random_state=0, device="cpu")),
    ])


GRID = {"contrastive__lambda_vg": [0.3, 0.7]}
CV = StratifiedKFold(2, shuffle=True, random_state=0)


def _local_cluster(processes):
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=processes, protocol="tcp", host="127.0.0.1",
        scheduler_port=0, dashboard_address=None, silence_logs=40,
        **({"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}} if processes else {}),
    )


@pytest.fixture(scope="module")
def dask_client():
    """Two worker threads in this process, talking TCP on 127.0.0.1 (starts in ~1 s)."""
    from distributed import Client

    cluster = _local_cluster(processes=False)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _check_search(search, X, y):
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 2 and np.all((scores >= 0) & (scores <= 1))
    assert search.best_params_ in [{"contrastive__lambda_vg": v} for v in GRID["contrastive__lambda_vg"]]
    assert search.predict(X).shape == y.shape


def test_grid_search_runs_unchanged_on_dask(data, dask_client):
    from distributed import get_task_stream

    X, y = data
    assert dask_client.scheduler_info()["address"].startswith("tcp://127.0.0.1:")
    with get_task_stream(dask_client) as stream, parallel_backend("dask"):
        search = GridSearchCV(_pipe(), GRID, cv=CV, scoring="balanced_accuracy", n_jobs=-1).fit(X, y)
    assert len(stream.data) >= 4, "the 2 candidates x 2 folds did not run as Dask tasks"
    _check_search(search, X, y)


def test_cross_validate_runs_unchanged_on_dask(data, dask_client):
    from distributed import get_task_stream

    X, y = data
    with get_task_stream(dask_client) as stream, parallel_backend("dask"):
        res = cross_validate(_pipe(), X, y, cv=CV, scoring="balanced_accuracy", n_jobs=-1,
                             return_estimator=True)
    assert len(stream.data) >= 2
    assert np.all((res["test_score"] >= 0) & (res["test_score"] <= 1))
    # fitted estimators come back from the workers usable
    for est in res["estimator"]:
        assert est.predict_proba(X).shape == (len(y), 2)


@pytest.mark.slow
def test_dask_process_workers_reproduce_the_local_search(data):
    """On worker processes (a real cluster) the search gives exactly the local results.

    Worker threads of one process share torch's global RNG, which every fit seeds, so two
    fits running at the same time there can interleave their draws: use process workers
    (``processes=True`` / ``dask-worker --nthreads 1``) when results must be reproducible.
    Spawning the two workers and importing torch in them takes 10-60 s on a busy 2-core box.
    """
    from distributed import Client

    X, y = data
    local = GridSearchCV(_pipe(), GRID, cv=CV, scoring="balanced_accuracy").fit(X, y)
    cluster = _local_cluster(processes=True)
    try:
        with Client(cluster), parallel_backend("dask"):
            remote = GridSearchCV(_pipe(), GRID, cv=CV, scoring="balanced_accuracy", n_jobs=-1).fit(X, y)
            cv_remote = cross_validate(_pipe(), X, y, cv=CV, scoring="balanced_accuracy", n_jobs=-1)
    finally:
        cluster.close()
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))
    np.testing.assert_allclose(
        cv_remote["test_score"], cross_validate(_pipe(), X, y, cv=CV, scoring="balanced_accuracy")["test_score"])


def test_fitted_pipeline_survives_pickling_as_on_a_multi_process_cluster(data):
    # workers in other processes send fitted estimators back pickled (cloudpickle)
    X, y = data
    pipe = _pipe().fit(X, y)
    copy = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(copy.predict_proba(X), pipe.predict_proba(X), rtol=1e-6)


@pytest.mark.slow
def test_grid_search_on_ray_matches_local(data):
    """Ray's joblib backend, if ray is installed (it is not a dependency)."""
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    X, y = data
    local = GridSearchCV(_pipe(), GRID, cv=CV, scoring="balanced_accuracy").fit(X, y)
    register_ray()
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        with parallel_backend("ray"):
            remote = GridSearchCV(_pipe(), GRID, cv=CV, scoring="balanced_accuracy", n_jobs=-1).fit(X, y)
    finally:
        ray.shutdown()
    # ray workers are processes: exactly the local results
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
