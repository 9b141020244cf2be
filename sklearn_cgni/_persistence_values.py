"""Plain encodings of tensors and pandas objects for :mod:`sklearn_cgni.persistence` (not public).

A tensor becomes a dtype name and a numpy array; a DataFrame or Series becomes its index,
columns, dtypes and data as plain lists and numeric arrays, which skops can write.
"""

from __future__ import annotations

import numpy as np

_FORMAT = "sklearn_cgni.torch/1"
_TENSOR_KEY = "__sklearn_cgni_tensor__"
_FRAME_KEY = "__sklearn_cgni_pandas__"


def _tensor_to_state(t):
    import torch

    t = t.detach().cpu()
    if t.layout != torch.strided:  # oneDNN / sparse copies
        t = t.to_dense()
    dtype = str(t.dtype)
    if t.dtype == torch.bfloat16:
        t = t.float()
    return {_TENSOR_KEY: _FORMAT, "dtype": dtype, "data": t.numpy().copy()}


def _tensor_from_state(state):
    import torch

    dtype = state["dtype"]
    if not (isinstance(dtype, str) and dtype.startswith("torch.")
            and isinstance(getattr(torch, dtype[len("torch."):], None), torch.dtype)):
        raise ValueError(f"sklearn_cgni.persistence: unknown tensor dtype {dtype!r} in file.")
    data = np.asarray(state["data"])
    if data.dtype == object:
        raise ValueError("sklearn_cgni.persistence: tensor data of dtype object in file.")
    return torch.from_numpy(data.copy()).to(getattr(torch, dtype[len("torch."):]))


def _array_to_state(values):
    """1-D values as a numeric ndarray, or a list of plain Python objects."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biufcmM":
        return arr.copy()
    return [v.item() if isinstance(v, np.generic) else v for v in arr.tolist()]


def _index_to_state(index):
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        return {"multi": True, "values": [list(t) for t in index.tolist()], "names": list(index.names)}
    return {"multi": False, "values": _array_to_state(index), "name": index.name, "dtype": str(index.dtype)}


def _index_from_state(state):
    import pandas as pd

    if state["multi"]:
        return pd.MultiIndex.from_tuples([tuple(v) for v in state["values"]], names=state["names"])
    return pd.Index(state["values"], name=state["name"]).astype(_dtype_from_state(state["dtype"]))


def _dtype_to_state(dtype):
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return {"categories": _array_to_state(dtype.categories), "ordered": bool(dtype.ordered),
                "categories_dtype": str(dtype.categories.dtype)}
    return str(dtype)


def _dtype_from_state(state):
    import pandas as pd

    if isinstance(state, dict):
        categories = pd.Index(state["categories"]).astype(state["categories_dtype"])
        return pd.CategoricalDtype(categories, ordered=state["ordered"])
    return state


def _frame_to_state(obj):
    """A pandas DataFrame / Series as plain lists and numeric arrays (skops has no handler)."""
    import pandas as pd

    if isinstance(obj, pd.Series):
        return {_FRAME_KEY: _FORMAT, "kind": "Series", "name": obj.name, "index": _index_to_state(obj.index),
                "data": _array_to_state(obj.to_numpy()), "dtype": _dtype_to_state(obj.dtype)}
    return {
        _FRAME_KEY: _FORMAT, "kind": "DataFrame", "index": _index_to_state(obj.index),
        "columns": _index_to_state(obj.columns),
        "data": [_array_to_state(obj.iloc[:, i].to_numpy()) for i in range(obj.shape[1])],
        "dtypes": [_dtype_to_state(d) for d in obj.dtypes],
        "attrs": dict(obj.attrs),
    }


def _frame_from_state(state):
    import pandas as pd

    index = _index_from_state(state["index"])
    if state["kind"] == "Series":
        return pd.Series(state["data"], index=index, name=state["name"]).astype(_dtype_from_state(state["dtype"]))
    columns = _index_from_state(state["columns"])
    frame = pd.DataFrame({i: pd.Series(col, index=index, dtype=object if isinstance(col, list) else None).astype(_dtype_from_state(dtype))
                          for i, (col, dtype) in enumerate(zip(state["data"], state["dtypes"]))})
    if frame.shape[1] == 0:
        frame = pd.DataFrame(index=index)
    frame.columns = columns
    frame.attrs.update(state.get("attrs", {}))
    return frame
