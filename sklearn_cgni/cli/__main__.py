"""``python -m sklearn_cgni.cli``: the same as the ``sklearn-cgni`` command."""

import sys

from ._main import console

sys.exit(console())
