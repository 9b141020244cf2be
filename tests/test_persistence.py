"""skops-based persistence: round trips of every torch-holding estimator, refusal of tampered files."""

import ast
import json
import pathlib
import warnings
import zipfile

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skops.io.exceptions import UntrustedTypesFoundException
from skorch import NeuralNet

import sklearn_cgni
from sklearn_cgni.classification import CGNIClassifier, ImagingGeneticNN, ImagingGeneticSVM, SparseGeneticNN
from sklearn_cgni.genetics import ContrastiveSNPEncoder
from sklearn_cgni.imaging import BrainAgeCNNTransformer, BrainGenotypeScorer, ImagingCNNClassifier
from sklearn_cgni.persistence import get_untrusted_types, load, save

TINY_CNN = dict(channels=(4, 4, 8, 8, 8), padding=1, pool_blocks=4, device="cpu")


@pytest.fixture(autouse=True)
def _quiet():
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 20)
    X = rng.normal(size=(40, 12))
    X[:, 0] += y  # some signal
    return X, y


def _cgni_pipeline():
    return Pipeline([
        ("contrastive", ContrastiveSNPEncoder(image_features=4, image_hidden=(8,), genetic_hidden=(8,),
                                              n_components=4, max_epochs=2, batch_size=20, random_state=0,
                                              device="cpu")),
        ("classifier", CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=2, random_state=0, device="cpu")),
    ])


def test_pipeline_round_trip_predicts_the_same_and_leaves_the_original_alone(tabular, tmp_path):
    X, y = tabular
    pipe = _cgni_pipeline().fit(X, y)
    net_before = pipe[-1].net_
    path = save(pipe, tmp_path / "pipe.skops")
    assert pipe[-1].net_ is net_before and isinstance(net_before, NeuralNet)
    assert get_untrusted_types(path) == []
    loaded = load(path)
    assert isinstance(loaded, Pipeline)
    np.testing.assert_allclose(loaded.predict_proba(X), pipe.predict_proba(X), rtol=1e-6)
    np.testing.assert_allclose(loaded[0].transform(X), pipe[0].transform(X), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))
    # fitted state beyond the weights survives too
    assert loaded[0].loss_curve_ == pipe[0].loss_curve_
    assert len(loaded[0].net_.history) == len(pipe[0].net_.history)
    # and the loaded pipeline can be refitted (fit builds a new net)
    loaded.fit(X, y)
    assert loaded.predict(X).shape == y.shape


@pytest.mark.parametrize("make", [
    lambda: SparseGeneticNN(hidden_layer_sizes=(8, 4), max_epochs=2, random_state=0, device="cpu"),
    lambda: ImagingGeneticNN(image_features=4, hidden_layer_sizes=(8,), max_epochs=2, random_state=0,
                             device="cpu", genetic_encoder=SparseGeneticNN(hidden_layer_sizes=(8, 4),
                                                                           max_epochs=2, device="cpu")),
    lambda: ImagingGeneticSVM(image_features=4, genetic_encoder=SparseGeneticNN(
        hidden_layer_sizes=(8, 4), max_epochs=2, device="cpu")),
], ids=["SparseGeneticNN", "ImagingGeneticNN", "ImagingGeneticSVM"])
def test_baselines_round_trip(make, tabular, tmp_path):
    X, y = tabular
    est = make().fit(X, y)
    loaded = load(save(est, tmp_path / "est.skops"))
    np.testing.assert_allclose(loaded.decision_function(X), est.decision_function(X), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(10, 24, 28, 24)).astype(np.float32)
    return X, rng.uniform(50, 80, 10), np.repeat([0, 1], 5), rng.randint(0, 3, size=(10, 3)).astype(float)


@pytest.mark.parametrize("kind", ["brain_age", "classifier", "genotype_scorer"])
def test_image_cnns_round_trip(kind, images, tmp_path):
    X, age, y, G = images
    if kind == "brain_age":
        est = BrainAgeCNNTransformer(**TINY_CNN, max_epochs=1, random_state=0).fit(X, age)
    elif kind == "classifier":
        est = ImagingCNNClassifier(**TINY_CNN, max_epochs=1, validation_fraction=0, early_stopping=False, lr_schedule="none", random_state=0).fit(X, y)
    else:
        est = BrainGenotypeScorer(**TINY_CNN, max_epochs=1, random_state=0).fit(X, G)
    loaded = load(save(est, tmp_path / "cnn.skops"), device="cpu")
    np.testing.assert_allclose(loaded.transform(X), est.transform(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(X), est.predict(X), rtol=1e-5, atol=1e-6)
    # the module tree is rebuilt with the same classes and buffers (BatchNorm running stats)
    assert [type(m) for m in loaded.module_.modules()] == [type(m) for m in est.module_.modules()]
    for (ka, a), (kb, b) in zip(est.module_.state_dict().items(), loaded.module_.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    assert not loaded.module_.training


def test_grid_search_round_trip(tabular, tmp_path):
    X, y = tabular
    search = GridSearchCV(
        Pipeline([("scale", StandardScaler()),
                  ("classifier", CGNIClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu",
                                                random_state=0))]),
        {"classifier__lr": [1e-3, 1e-2]}, cv=2, scoring="balanced_accuracy",
    ).fit(X, y)
    path = save(search, tmp_path / "search.skops")
    # the scorer and the CV splitter are scikit-learn types that skops does not trust by default
    untrusted = get_untrusted_types(path)
    assert all(name.startswith("sklearn.") for name in untrusted), untrusted
    with pytest.raises(UntrustedTypesFoundException):
        load(path)
    loaded = load(path, trusted=untrusted)
    assert loaded.best_params_ == search.best_params_
    np.testing.assert_allclose(loaded.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"])
    np.testing.assert_allclose(loaded.predict_proba(X), search.predict_proba(X), rtol=1e-6)


def _tamper(path, out, edit):
    """Copy the skops zip at ``path`` to ``out`` with ``edit(schema_dict)`` applied."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "schema.json":
                schema = json.loads(data)
                edit(schema)
                data = json.dumps(schema).encode()
            zout.writestr(item, data)
    return out


def test_tampered_file_with_os_system_is_refused_not_executed(tabular, tmp_path):
    X, y = tabular
    path = save(CGNIClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu").fit(X, y),
                tmp_path / "clf.skops")
    sentinel = tmp_path / "pwned"
    payload = {
        # skops rebuilds this node by calling os.system("touch <sentinel>") if it is trusted
        "__class__": "system", "__module__": "os", "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                    "content": [{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                                 "content": json.dumps(f"touch {sentinel}"), "is_json": True}]},
    }

    def inject(schema):
        schema["content"]["content"]["verbose"] = payload

    bad = _tamper(path, tmp_path / "tampered.skops", inject)
    assert "os.system" in get_untrusted_types(bad)
    with pytest.raises(UntrustedTypesFoundException, match="os.system"):
        load(bad)
    assert not sentinel.exists()
    # the payload is live: a loader told to trust it would have run the command
    import skops.io

    skops.io.load(bad, trusted=["os.system", "sklearn_cgni.classification._cgni.CGNIClassifier"])
    assert sentinel.exists()


def test_tampered_torch_class_name_is_refused_before_import(tabular, tmp_path):
    X, y = tabular
    path = save(CGNIClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu").fit(X, y),
                tmp_path / "clf.skops")

    def rename(target):
        def edit(schema):
            text = json.dumps(schema).replace(json.dumps(json.dumps("torch.nn.modules.linear.Linear"))[1:-1],
                                              json.dumps(json.dumps(target))[1:-1])
            schema.clear()
            schema.update(json.loads(text))
        return edit

    bad = _tamper(path, tmp_path / "t1.skops", rename("subprocess.Popen"))
    assert "subprocess.Popen" in get_untrusted_types(bad)
    with pytest.raises(UntrustedTypesFoundException, match="subprocess.Popen"):
        load(bad)
    # an allowlisted prefix that is not a torch module is refused too
    bad = _tamper(path, tmp_path / "t2.skops", rename("sklearn_cgni.persistence.save"))
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        load(bad)


def test_untrusted_third_party_types_need_explicit_trust(tmp_path):
    from sklearn_cgni.explain import SparseCCA

    rng = np.random.RandomState(0)
    X, Y = rng.normal(size=(30, 5)), rng.normal(size=(30, 4))
    scca = SparseCCA(n_components=2).fit(X, Y)
    path = save(scca, tmp_path / "scca.skops")
    untrusted = get_untrusted_types(path)
    assert untrusted == ["cca_zoo.sparse._ipls.IPLSCCA"]
    with pytest.raises(UntrustedTypesFoundException, match="IPLSCCA"):
        load(path)
    loaded = load(path, trusted=untrusted)
    np.testing.assert_allclose(loaded.x_weights_, scca.x_weights_)


def test_every_torch_load_in_the_package_is_weights_only():
    root = pathlib.Path(sklearn_cgni.__file__).parent
    calls = []
    for file in root.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((file.name, node.lineno, ok))
            if isinstance(node, ast.Import) and any(a.name in ("pickle", "dill", "cloudpickle") for a in node.names):
                calls.append((file.name, node.lineno, False))
    assert calls, "expected the CNN weight loaders to call torch.load"
    assert all(ok for _, _, ok in calls), [c for c in calls if not c[2]]


def test_pandas_tables_held_by_estimators_round_trip(tmp_path):
    import pandas as pd
    from sklearn.base import BaseEstimator

    class _Holder(BaseEstimator):
        pass

    frame = pd.DataFrame(
        {"snp": ["rs1", "rs2", "rs3"], "n": [1, 2, 3], "p": [0.1, np.nan, 0.3],
         "kept": [True, False, True], "reason": pd.Categorical(["maf", "hwe", "maf"])},
        index=pd.Index(["a", "b", "c"], name="participant_id"),
    )
    holder = _Holder()
    holder.table_ = frame
    holder.series_ = frame["p"]
    holder.nested_ = {"tables": [frame.iloc[:0]]}
    # a local class is not importable: persist an importable estimator holding the same state
    from sklearn_cgni.genetics import SNPQualityFilter

    est = SNPQualityFilter()
    est.__dict__.update(vars(holder))
    loaded = load(save(est, tmp_path / "tables.skops"))
    pd.testing.assert_frame_equal(loaded.table_, frame)
    pd.testing.assert_series_equal(loaded.series_, frame["p"])
    pd.testing.assert_frame_equal(loaded.nested_["tables"][0], frame.iloc[:0])


def test_rebuilt_modules_and_nets_refuse_method_overrides_and_odd_parameters():
    from sklearn_cgni.persistence import _module_from_state, _module_to_state, _net_from_state

    state = _module_to_state(torch.nn.Linear(3, 2), {})
    state["attrs"]["forward"] = 0
    with pytest.raises(ValueError, match="would replace a method"):
        _module_from_state(state, set(), {})
    net_state = {"class": "skorch.net.NeuralNet", "params": {"callbacks__print_log__sink": "x"},
                 "module": _module_to_state(torch.nn.Linear(3, 2), {}), "criterion": None, "history": []}
    with pytest.raises(ValueError, match="unexpected net parameter"):
        _net_from_state(net_state, set(), {}, None)
