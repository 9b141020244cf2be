"""Stage 3 of CGNI (working-memory classification) and the paper's baselines.

``CGNIClassifier`` is the MLP on ``z_g ⊕ h_v``; ``SparseGeneticNN`` (SNPs only, also a
transformer giving ``h_g``), ``ImagingGeneticSVM`` and ``ImagingGeneticNN`` (on ``h_v ⊕ h_g``)
are the baselines of Table 1. The imaging CNN baseline is stage 1 (``sklearn_cgni.imaging``).
"""

from ._baselines import ImagingGeneticNN, ImagingGeneticSVM, SparseGeneticNN
from ._cgni import CGNIClassifier

__all__ = ["CGNIClassifier", "ImagingGeneticNN", "ImagingGeneticSVM", "SparseGeneticNN"]
