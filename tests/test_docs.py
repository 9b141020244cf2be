"""The API reference lists every public class and function of every subpackage.

Building the docs takes about a minute (see README, "Documentation"), too slow for the test
suite; this check keeps docs/api.rst complete as subpackages grow.
"""

import importlib
import inspect
import pathlib
import re

import pytest

API = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.rst"
SUBPACKAGES = ["io", "datasets", "imaging", "genetics", "classification", "explain", "evaluation",
               "persistence", "nn", "utils", "cli"]


def _public(sub):
    module = importlib.import_module(f"sklearn_cgni.{sub}")
    names = getattr(module, "__all__", None)
    if names is None:  # sklearn_cgni.nn re-exports without __all__
        names = [n for n, v in vars(module).items() if not n.startswith("_") and not inspect.ismodule(v)]
    return sorted(n for n in names if inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_api_reference_lists_every_public_name(sub):
    listed = set(re.findall(rf"^   {sub}\.(\w+)$", API.read_text(), flags=re.M))
    missing = sorted(set(_public(sub)) - listed)
    assert not missing, f"add to docs/api.rst under sklearn_cgni.{sub}: {missing}"
