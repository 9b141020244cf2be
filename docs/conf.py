"""Sphinx configuration for the sklearn_cgni documentation.

Build (about a minute; no network needed)::

    .venv/bin/python -m sphinx -W -b html docs docs/_build/html
"""

import os

import sklearn_cgni

project = "sklearn_cgni"
author = "sklearn_cgni developers"
release = sklearn_cgni.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]
# Links to other projects' docs need their inventories from the internet: opt in.
if os.environ.get("SKLEARN_CGNI_DOCS_INTERSPHINX"):
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }
autosummary_generate = True
autodoc_default_options = {"inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
html_theme = "pydata_sphinx_theme"
html_theme_options = {"navigation_with_keys": False}
exclude_patterns = ["_build", "generated/*.examples"]
suppress_warnings = ["autosummary.import_cycle"]
templates_path = ["_templates"]

# --------------------------------------------------------------------------------------
# Docstrings are written for ``help()`` first: names such as ``n_components_`` or the
# ColumnTransformer prefix ``image__`` and absolute values ``|z|`` appear as plain text.
# In reStructuredText a trailing underscore makes a hyperlink reference and ``|x|`` a
# substitution, so escape them outside literals before docutils sees the text.
import re  # noqa: E402

_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")
_TRAILING_UNDERSCORE = re.compile(r"(?<![\w\\])([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)(_+)(?![\w`])")
_PIPES = re.compile(r"(?<!\\)\|")


def _escape_plain(text):
    text = _TRAILING_UNDERSCORE.sub(lambda m: m.group(1) + "\\_" * len(m.group(2)), text)
    return _PIPES.sub(r"\\|", text)


def _escape_docstring(app, what, name, obj, options, lines):
    in_code = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>") or stripped.startswith("..."):
            continue
        if stripped.endswith("::"):
            in_code = True
        elif in_code and stripped and not line.startswith((" ", "\t")):
            in_code = False
        if in_code or stripped.startswith(("|", "+", ".. ")):
            continue
        parts = _LITERAL.split(line)
        lines[i] = "".join(p if j % 2 else _escape_plain(p) for j, p in enumerate(parts))


def _skip_member(app, what, name, obj, skip, options):
    """Document the toolkit's own methods, not scikit-learn's generated ``set_*_request``."""
    if re.fullmatch(r"set_\w+_request", name):
        return True
    module = getattr(obj, "__module__", None)
    if what == "class" and callable(obj) and module and not module.startswith("sklearn_cgni"):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _escape_docstring, priority=400)
    app.connect("autodoc-skip-member", _skip_member)
