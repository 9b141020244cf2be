"""Saving and loading fitted estimators and pipelines without pickle.

:func:`save` writes any fitted scikit-learn object of this toolkit (an estimator, a
``Pipeline``, a ``GridSearchCV``...) with :mod:`skops.io`; :func:`load` reads it back and
refuses every type that is not trusted, so opening a file never executes code that the
file names (a tampered file holding ``os.system`` raises instead of running it).

pandas DataFrames and Series held by fitted estimators (QC exclusion lists, result
tables), which skops cannot write, are stored as plain lists and numeric arrays.

Torch state never goes through pickle either. Before the object is handed to skops, every
skorch net and torch module found in it (``net_`` of the CNN, encoder and classifier
estimators) is replaced by a plain description: the module tree as class names and
constructor-free attributes, and every parameter and buffer as a numpy array. On loading,
each class named there is checked against an allowlist (``torch.nn`` layers, the modules
of ``sklearn_cgni`` and skorch's net classes, plus whatever the caller passes in
``trusted``) *before* it is imported, and the net is rebuilt with those weights.

The loaded nets are for inference and for use inside pipelines (``predict``,
``transform``, explainers); optimizer state, callbacks and data loaders are not saved, and
``fit`` builds a new net anyway. Weight files of the CNNs (``save_weights``) are separate:
they are read with ``torch.load(weights_only=True)``.

Examples
--------
>>> import numpy as np
>>> from sklearn_cgni.classification import CGNIClassifier
>>> from sklearn_cgni.persistence import save, load
>>> rng = np.random.RandomState(0)
>>> X, y = rng.normal(size=(40, 6)), np.repeat([0, 1], 20)
>>> clf = CGNIClassifier(hidden_layer_sizes=(8,), max_epochs=2).fit(X, y)
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "clf.skops")
>>> _ = save(clf, path)
>>> clf2 = load(path)
>>> bool(np.allclose(clf.predict_proba(X), clf2.predict_proba(X)))
True
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

from ._persistence_values import (
    _FORMAT,
    _FRAME_KEY,
    _TENSOR_KEY,
    _frame_from_state,
    _frame_to_state,
    _tensor_from_state,
    _tensor_to_state,
)

__all__ = ["save", "load", "get_untrusted_types", "TRUSTED_MODULE_PREFIXES"]

#: Module paths whose ``torch.nn.Module``, optimizer and skorch net classes are rebuilt
#: without being listed in ``trusted`` (each is also checked to subclass the expected base).
TRUSTED_MODULE_PREFIXES = ("torch.nn.", "torch.optim.", "sklearn_cgni.", "skorch.")

_NET_KEY = "__sklearn_cgni_net__"
_MODULE_KEY = "__sklearn_cgni_module__"
_TORCH_OBJ_KEY = "__sklearn_cgni_torch_obj__"
_PLAIN = (bool, int, float, str, type(None), np.integer, np.floating, np.bool_)


# --------------------------------------------------------------------------- helpers
def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_plain(value):
    """Numbers, strings, None and (nested) tuples/lists of them."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return False


def _torch_obj_from_state(state):
    import torch

    kind, value = state[_TORCH_OBJ_KEY], state["value"]
    if kind == "device":
        return torch.device(_resolve_load_device(str(value)))
    if kind == "dtype" and isinstance(value, str) and value.startswith("torch."):
        dtype = getattr(torch, value[len("torch."):], None)
        if isinstance(dtype, torch.dtype):
            return dtype
    raise ValueError(f"sklearn_cgni.persistence: invalid torch {kind} {value!r} in file.")


def _module_internal_keys():
    import torch

    keys = set(torch.nn.Module().__dict__)
    keys.discard("training")
    return keys


def _module_to_state(module, memo):
    """A torch module tree as dicts of plain values and numpy arrays."""
    import torch

    if id(module) in memo:
        return memo[id(module)]
    internal = _module_internal_keys()
    attrs = {}
    for key, value in module.__dict__.items():
        if key in internal:
            continue
        if isinstance(value, torch.Tensor):
            attrs[key] = _tensor_to_state(value)
        elif isinstance(value, (torch.dtype, torch.device)):
            attrs[key] = {_TORCH_OBJ_KEY: type(value).__name__, "value": str(value)}
        elif isinstance(value, torch.nn.Module):  # pragma: no cover - torch keeps these in _modules
            attrs[key] = _module_to_state(value, memo)
        else:
            attrs[key] = value  # plain values; anything else is left to skops's audit
    state = {
        _MODULE_KEY: _FORMAT,
        "class": _qualname(type(module)),
        "attrs": attrs,
        "parameters": {
            name: None if p is None else {"tensor": _tensor_to_state(p), "requires_grad": bool(p.requires_grad)}
            for name, p in module._parameters.items()
        },
        "buffers": {name: None if b is None else _tensor_to_state(b) for name, b in module._buffers.items()},
        "non_persistent_buffers": sorted(module._non_persistent_buffers_set),
        "children": {
            name: None if child is None else _module_to_state(child, memo)
            for name, child in module._modules.items()
        },
    }
    memo[id(module)] = state
    return state


def _check_class_name(name, trusted, base, what):
    """Import ``name`` only if it is allowlisted, and check it subclasses ``base``."""
    if not isinstance(name, str) or "." not in name:
        raise ValueError(f"sklearn_cgni.persistence: invalid {what} class name {name!r} in file.")
    if not (name.startswith(TRUSTED_MODULE_PREFIXES) or name in trusted):
        raise _untrusted_error([name])
    module_name, _, qual = name.rpartition(".")
    # nested qualnames (Outer.Inner): find the importable module prefix
    parts = name.split(".")
    obj = None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        break
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise ValueError(f"sklearn_cgni.persistence: {name!r} in file is not a {what} class.")
    return obj


def _module_from_state(state, trusted, memo):
    import torch

    key = id(state)
    if key in memo:
        return memo[key]
    cls = _check_class_name(state["class"], trusted, torch.nn.Module, "torch.nn.Module")
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    for name, value in state["attrs"].items():
        if not isinstance(name, str) or name.startswith("__") or callable(getattr(cls, name, None)):
            raise ValueError(f"sklearn_cgni.persistence: attribute {name!r} of {state['class']} in the "
                             "file would replace a method; refusing it.")
        if isinstance(value, dict) and _TENSOR_KEY in value:
            value = _tensor_from_state(value)
        elif isinstance(value, dict) and _TORCH_OBJ_KEY in value:
            value = _torch_obj_from_state(value)
        elif isinstance(value, dict) and _MODULE_KEY in value:  # pragma: no cover
            value = _module_from_state(value, trusted, memo)
        object.__setattr__(module, name, value)
    for name, p in state["parameters"].items():
        if p is None:
            module._parameters[name] = None
        else:
            module._parameters[name] = torch.nn.Parameter(
                _tensor_from_state(p["tensor"]), requires_grad=bool(p["requires_grad"]))
    for name, b in state["buffers"].items():
        module._buffers[name] = None if b is None else _tensor_from_state(b)
    module._non_persistent_buffers_set = set(state["non_persistent_buffers"])
    for name, child in state["children"].items():
        module._modules[name] = None if child is None else _module_from_state(child, trusted, memo)
    memo[key] = module
    return module


# skorch parameters rebuilt from the saved module/criterion instances, or not restorable
_DROP_PARAM_PREFIXES = ("module__", "criterion__", "callbacks__", "iterator_train__", "iterator_valid__",
                        "dataset__")


def _net_to_state(net, memo):
    import torch

    params = {}
    dropped = []
    for key, value in net.get_params(deep=False).items():
        if key in ("module", "criterion") or key.startswith(_DROP_PARAM_PREFIXES):
            continue
        if key == "optimizer" and isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            params[key] = {"__class__": _qualname(value)}
        elif _is_plain(value):
            params[key] = value
        else:
            dropped.append(key)
    history = []
    for row in net.history:
        history.append(_plain_history(row))
    state = {
        _NET_KEY: _FORMAT,
        "class": _qualname(type(net)),
        "params": params,
        "not_saved": sorted(dropped),
        "module": _module_to_state(net.module_, memo),
        "criterion": _module_to_state(net.criterion_, memo) if isinstance(
            getattr(net, "criterion_", None), torch.nn.Module) else None,
        "history": history,
    }
    return state


def _plain_history(value):
    if isinstance(value, dict):
        return {str(k): _plain_history(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_history(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, _PLAIN):
        return value
    return repr(value)


def _resolve_load_device(device):
    import torch

    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return device


def _net_from_state(state, trusted, memo, device):
    import torch
    from skorch import NeuralNet
    from skorch.history import History

    cls = _check_class_name(state["class"], trusted, NeuralNet, "skorch NeuralNet")
    params = dict(state["params"])
    for key, value in params.items():
        bad_key = (not isinstance(key, str) or key in ("module", "criterion")
                   or key.startswith(_DROP_PARAM_PREFIXES))
        if bad_key or not (_is_plain(value) or (key == "optimizer" and isinstance(value, dict))):
            raise ValueError(f"sklearn_cgni.persistence: unexpected net parameter {key!r} in the file.")
    if isinstance(params.get("optimizer"), dict):
        params["optimizer"] = _check_class_name(
            params["optimizer"]["__class__"], trusted, torch.optim.Optimizer, "torch optimizer")
    if params.get("optimizer") is None or isinstance(params.get("optimizer"), dict):
        params.pop("optimizer", None)
    params["device"] = _resolve_load_device(params.get("device", "cpu")) if device is None else device
    params.setdefault("verbose", 0)
    module = _module_from_state(state["module"], trusted, memo)
    kwargs = {"module": module}
    if state["criterion"] is not None:
        kwargs["criterion"] = _module_from_state(state["criterion"], trusted, memo)
    else:  # pragma: no cover - every net of the toolkit has a module criterion
        kwargs["criterion"] = torch.nn.MSELoss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = cls(**kwargs, **params)
        net.initialize()
    net.history = History(state["history"])
    net.module_.eval()
    return net


def _export(obj, memo):
    """Copy of ``obj`` with skorch nets / torch modules replaced by plain descriptions.

    Only the path from the root to each net is copied (shallow); ``obj`` is not modified.
    """
    import pandas as pd
    import torch
    from skorch import NeuralNet
    from sklearn.base import BaseEstimator

    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, NeuralNet):
        if not getattr(obj, "initialized_", False):
            return obj
        out = _net_to_state(obj, memo.setdefault("__modules__", {}))
    elif isinstance(obj, torch.nn.Module):
        out = _module_to_state(obj, memo.setdefault("__modules__", {}))
    elif isinstance(obj, torch.Tensor):
        out = _tensor_to_state(obj)
    elif isinstance(obj, (pd.DataFrame, pd.Series)):
        out = _frame_to_state(obj)
    elif isinstance(obj, BaseEstimator):
        changed = {}
        for name, value in vars(obj).items():
            new = _export(value, memo)
            if new is not value:
                changed[name] = new
        if changed:
            import copy

            out = copy.copy(obj)
            out.__dict__.update(changed)
        else:
            out = obj
    elif isinstance(obj, list):
        items = [_export(v, memo) for v in obj]
        out = obj if all(a is b for a, b in zip(items, obj)) else type(obj)(items) if type(obj) is list else items
    elif isinstance(obj, tuple):
        items = [_export(v, memo) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            out = obj
        else:
            out = type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    elif isinstance(obj, dict):
        items = {k: _export(v, memo) for k, v in obj.items()}
        if all(items[k] is obj[k] for k in obj):
            out = obj
        else:
            import copy

            out = copy.copy(obj)
            for k, v in items.items():
                out[k] = v
    else:
        out = obj
    memo[key] = out
    return out


def _import(obj, trusted, memo, device):
    """Inverse of :func:`_export` on a freshly loaded object (modified in place)."""
    from sklearn.base import BaseEstimator

    key = id(obj)
    if key in memo:
        return memo[key]
    out = obj
    if isinstance(obj, dict) and _NET_KEY in obj:
        out = _net_from_state(obj, trusted, memo.setdefault("__modules__", {}), device)
    elif isinstance(obj, dict) and _MODULE_KEY in obj:
        out = _module_from_state(obj, trusted, memo.setdefault("__modules__", {}))
    elif isinstance(obj, dict) and _TENSOR_KEY in obj:
        out = _tensor_from_state(obj)
    elif isinstance(obj, dict) and _FRAME_KEY in obj:
        out = _frame_from_state(obj)
    elif isinstance(obj, BaseEstimator):
        memo[key] = obj
        for name, value in list(vars(obj).items()):
            new = _import(value, trusted, memo, device)
            if new is not value:
                obj.__dict__[name] = new
        if device is not None and hasattr(obj, "device_"):
            obj.device_ = device
        elif isinstance(getattr(obj, "device_", None), str):
            obj.device_ = _resolve_load_device(obj.device_)
    elif isinstance(obj, list):
        memo[key] = obj
        for i, v in enumerate(obj):
            obj[i] = _import(v, trusted, memo, device)
    elif isinstance(obj, tuple):
        items = [_import(v, trusted, memo, device) for v in obj]
        if not all(a is b for a, b in zip(items, obj)):
            out = type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    elif isinstance(obj, dict):
        memo[key] = obj
        for k in list(obj):
            obj[k] = _import(obj[k], trusted, memo, device)
    memo[key] = out
    return out


def _collect_class_names(obj, seen, names):
    """Class names named by the torch descriptions inside a loaded-but-not-rebuilt tree."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        if _NET_KEY in obj or _MODULE_KEY in obj:
            names.add(obj.get("class"))
            opt = obj.get("params", {}).get("optimizer") if _NET_KEY in obj else None
            if isinstance(opt, dict):
                names.add(opt.get("__class__"))
        for v in obj.values():
            _collect_class_names(v, seen, names)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_class_names(v, seen, names)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for v in vars(obj).values():
            _collect_class_names(v, seen, names)


def _untrusted_error(names):
    from skops.io.exceptions import UntrustedTypesFoundException

    exc = UntrustedTypesFoundException(list(names))
    exc.add_note(
        "Inspect them with sklearn_cgni.persistence.get_untrusted_types(path) and pass only "
        "the ones you have reviewed as load(path, trusted=[...])."
    )
    return exc


def _own_types(names):
    """Untrusted type names that are estimator classes of this package (trusted by default)."""
    from sklearn.base import BaseEstimator

    own = []
    for name in names:
        if not name.startswith("sklearn_cgni."):
            continue
        module_name, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            continue
        if isinstance(obj, type) and issubclass(obj, BaseEstimator):
            own.append(name)
    return own


# --------------------------------------------------------------------------- public API
def save(obj, path, *, compression=None):
    """Save a fitted estimator, pipeline or search with :mod:`skops.io`.

    Parameters
    ----------
    obj : estimator, Pipeline, GridSearchCV or any object skops can persist
        Skorch nets and torch modules inside it (e.g. ``net_``) are stored as class names
        and numpy arrays, never pickled. ``obj`` itself is not modified.
    path : str or path-like
        Destination file (conventionally ``*.skops``); overwritten if it exists.
    compression : int, default=None
        A :mod:`zipfile` compression constant; ``None`` means ``zipfile.ZIP_DEFLATED``.

    Returns
    -------
    path : str
        The path written.

    See Also
    --------
    load : Read the file back, refusing untrusted types.
    """
    import zipfile

    from skops.io import dump

    path = os.fspath(path)
    exported = _export(obj, {})
    dump(exported, path, compression=zipfile.ZIP_DEFLATED if compression is None else compression)
    return path


def get_untrusted_types(path):
    """Types in ``path`` that :func:`load` would refuse unless passed in ``trusted``.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    names : list of str
        Fully qualified type names: those skops does not trust by default (classes of
        ``sklearn_cgni`` are trusted by :func:`load` and not listed), and torch / skorch
        classes named by the saved networks outside :data:`TRUSTED_MODULE_PREFIXES`.
    """
    from skops.io import get_untrusted_types as _skops_untrusted

    path = os.fspath(path)
    names = _skops_untrusted(file=path)
    own = set(_own_types(names))
    out = [n for n in names if n not in own]
    # torch class names only become visible after skops's own audit passed
    if not out:
        from skops.io import load as _skops_load

        loaded = _skops_load(path, trusted=sorted(own))
        class_names = set()
        _collect_class_names(loaded, set(), class_names)
        out = sorted(n for n in class_names if not (isinstance(n, str) and n.startswith(TRUSTED_MODULE_PREFIXES)))
    return sorted(out)


def load(path, trusted=None, *, device=None):
    """Load an object written by :func:`save`, refusing untrusted types.

    Nothing named in the file is imported or called before it is checked: skops refuses
    types outside its default trusted set (scikit-learn, numpy, scipy and builtins), the
    estimator classes of ``sklearn_cgni`` and anything in ``trusted``; torch module and skorch net
    classes must come from :data:`TRUSTED_MODULE_PREFIXES` or be in ``trusted``.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    trusted : list of str, default=None
        Additional fully qualified type names to trust, e.g. from
        :func:`get_untrusted_types` after checking them.
    device : str, default=None
        Device for the rebuilt networks (``"cpu"``, ``"cuda"``). ``None``: the device they
        were saved from when available, else the CPU.

    Returns
    -------
    obj : object
        The fitted estimator / pipeline, ready for ``predict`` / ``transform``.

    Raises
    ------
    skops.io.exceptions.UntrustedTypesFoundException
        If the file names a type that is not trusted (e.g. a tampered file naming
        ``os.system``).
    """
    from skops.io import get_untrusted_types as _skops_untrusted
    from skops.io import load as _skops_load

    path = os.fspath(path)
    trusted = list(trusted or [])
    untrusted = _skops_untrusted(file=path)
    own = _own_types(untrusted)
    remaining = [n for n in untrusted if n not in own and n not in trusted]
    if remaining:
        raise _untrusted_error(remaining)
    loaded = _skops_load(path, trusted=sorted(set(own) | set(trusted)))
    return _import(loaded, set(trusted), {}, device)
