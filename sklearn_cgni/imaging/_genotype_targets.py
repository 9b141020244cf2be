"""Genotype targets of the brain-genotype scorers: validation, encoding, per-SNP accuracy.

Private module; :func:`check_genotype_targets` and :func:`per_snp_correlation` are also importable from
:mod:`sklearn_cgni.imaging._genotype_scorer`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

_MISSING_CLASS = -100  # torch's CrossEntropyLoss ignore_index

def check_genotype_targets(G, participant_ids=None, *, task="classes", caller="estimator"):
    """Validate a genotype matrix: ``(values float64 (n, S) with NaN = missing, snp names)``.

    Parameters
    ----------
    G : DataFrame, array-like of shape (n, n_snps) or (n,)
        Genotypes: minor-allele counts 0/1/2 (``task="classes"``) or dosages (any real
        values, e.g. imputed dosages in [0, 2], for ``task="dosage"``). NaN marks a missing
        call; it is masked out of the training loss.
    participant_ids : list of str, optional
        For error messages (row ``i`` is participant ``participant_ids[i]``).
    task : {"classes", "dosage"}

    Raises
    ------
    ValueError
        Infinite values; values other than 0/1/2 in class mode; SNPs with no observed call;
        SNPs with no variation among their observed calls (all named).
    """
    if G is None:
        raise ValueError(f"{caller} requires y to be passed, but the target y is None: fit needs "
                         f"the genotypes G (n_participants, n_snps) as y.")
    if isinstance(G, pd.Series):
        G = G.to_frame()
    if isinstance(G, pd.DataFrame):
        names = np.asarray([str(c) for c in G.columns], dtype=object)
        if participant_ids is None or all(str(i).startswith("index ") for i in participant_ids):
            participant_ids = [str(i) for i in G.index]
        try:
            values = G.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{caller}: genotypes must be numeric; {exc}") from exc
    else:
        values = np.asarray(G, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        names = np.asarray([f"snp{i}" for i in range(values.shape[1])], dtype=object)
    if values.ndim != 2:
        raise ValueError(f"{caller}: genotypes must be 2-D (n_participants, n_snps); got shape {values.shape}.")
    if values.shape[1] == 0:
        raise ValueError(f"{caller}: genotypes have no SNP column.")
    n = values.shape[0]
    ids = list(participant_ids) if participant_ids is not None else [f"index {i}" for i in range(n)]
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise ValueError(f"{caller}: genotype of participant {ids[r]!r} for SNP {names[c]!r} is infinite.")
    observed = ~np.isnan(values)
    if task == "classes":
        bad = observed & ~np.isin(values, (0.0, 1.0, 2.0))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{caller}(task='classes') needs genotype classes 0, 1 or 2 (NaN = missing); "
                f"participant {ids[r]!r} has {float(values[r, c])!r} for SNP {names[c]!r} "
                f"({int(bad.sum())} such value(s)). Use task='dosage' for imputed dosages."
            )
    empty = ~observed.any(axis=0)
    if empty.any():
        raise ValueError(f"{caller}: SNP(s) with no observed call (all NaN): "
                         f"{names[empty].tolist()[:20]}. Remove them before fitting.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(values, axis=0) - np.nanmin(values, axis=0)
    flat = span == 0
    if flat.any():
        raise ValueError(
            f"{caller}: {int(flat.sum())} SNP(s) have no variation among the observed calls "
            f"(monomorphic here, nothing to predict): {names[flat].tolist()[:20]}"
            f"{' ...' if flat.sum() > 20 else ''}. Remove them (e.g. with SNPQualityFilter's "
            f"MAF filter) before fitting."
        )
    return values, names


def per_snp_correlation(scores, genotypes):
    """Pearson r per column between scores and genotypes, over rows where both are observed."""
    scores = np.asarray(scores, dtype=np.float64)
    G = np.asarray(genotypes, dtype=np.float64)
    r = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        ok = np.isfinite(G[:, j]) & np.isfinite(scores[:, j])
        a, b = scores[ok, j], G[ok, j]
        if ok.sum() > 2 and a.std() > 0 and b.std() > 0:
            r[j] = float(np.corrcoef(a, b)[0, 1])
    return r
