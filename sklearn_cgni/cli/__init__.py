"""The ``sklearn-cgni`` command line: ``simulate``, ``run`` (the whole method, resumable) and ``report``.

Python access to the same machinery:

``main(argv)``
    The console entry point (``python -m sklearn_cgni.cli``).
``load_config(path, preset=..., overrides=...)``
    The checked configuration (defaults in ``default_config.toml``).
``run_pipeline(output, config, inputs)``, ``resolve_inputs(...)``
    The stage runner.
``paper_splits``, ``paper_models``, ``classical_models``, ``combo_params``, ``summarize_scores``,
``table_markdown``, ``search_grid``, ``tuned``
    The paper's protocol for Tables 1-2 and Table 1's classical rows (also used by
    ``benchmarks/bench_table1.py``).
"""

from ._config import ConfigError, load_config
from ._main import main
from ._protocol import (
    CLASSICAL_MODELS,
    COMBOS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    TERM_WEIGHTS,
    classical_models,
    combo_params,
    paper_models,
    paper_splits,
    search_grid,
    summarise_scores,
    summarize_scores,
    table_markdown,
    tuned,
)
from ._inputs import InputError, Inputs, resolve_inputs
from ._run import run_pipeline
from ._stages import OutputFolderError

__all__ = [
    "CLASSICAL_MODELS",
    "COMBOS",
    "ConfigError",
    "InputError",
    "Inputs",
    "OutputFolderError",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "TERM_WEIGHTS",
    "classical_models",
    "combo_params",
    "load_config",
    "main",
    "paper_models",
    "paper_splits",
    "resolve_inputs",
    "run_pipeline",
    "search_grid",
    "summarize_scores",
    "table_markdown",
    "tuned",
]
