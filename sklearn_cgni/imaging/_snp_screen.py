"""Which SNPs to score: a screen of SNPs against image features, for nesting in cross-fitting."""

import numpy as np
import pandas as pd

__all__ = ["screen_snps"]


def screen_snps(X, G, n_snps):
    """The ``n_snps`` SNPs most associated with any image feature, strongest first.

    The statistic of a SNP is the largest absolute Pearson correlation, over the columns of
    ``X`` (e.g. regional gray-matter means from :class:`RegionalMeans`), between that column
    and the SNP's observed calls, over the participants whose call is not missing. SNPs
    with fewer than 3 observed calls or no variation among them are never chosen.

    Fit it on training participants only (e.g. inside ``cross_fit_scores(...,
    select=lambda train: screen_snps(X[train], G.iloc[train], k))``) so that the choice of
    SNPs never sees the participants whose scores it decides.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Image features, finite.
    G : DataFrame or array-like of shape (n_samples, n_snps_total)
        Genotype calls (dosages); NaN is a missing call.
    n_snps : int
        How many SNPs to return at most.

    Returns
    -------
    snps : list
        Column names of ``G`` (positions if ``G`` is not a DataFrame), strongest first;
        shorter than ``n_snps`` when fewer SNPs vary.

    See Also
    --------
    cross_fit_scores : held-out scores, with ``select`` for a screen nested in the folds.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_cgni.imaging import screen_snps
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3))
    >>> G = pd.DataFrame(rng.integers(0, 3, size=(50, 4)).astype(float), columns=["a", "b", "c", "d"])
    >>> G["c"] = np.digitize(X[:, 1], [-0.5, 0.5])  # follows the second feature
    >>> G["a"] = 1.0  # constant: never chosen
    >>> screen_snps(X, G, 2)[0]
    'c'
    """
    names = list(G.columns) if isinstance(G, pd.DataFrame) else None
    X = np.asarray(X)
    X = X if X.dtype.kind == "f" else X.astype(np.float64)  # float32 features stay float32
    G = np.asarray(G, dtype=np.float64)
    stat = np.full(G.shape[1], -np.inf)
    for j in range(G.shape[1]):
        ok = np.isfinite(G[:, j])
        g = G[ok, j]
        if ok.sum() < 3 or g.std() == 0:
            continue
        Xc = X[ok] - X[ok].mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (Xc * (g - g.mean())[:, None]).mean(axis=0) / (Xc.std(axis=0) * g.std())
        r = r[np.isfinite(r)]
        if r.size:
            stat[j] = np.abs(r).max()
    order = [j for j in np.argsort(-stat, kind="stable")[:n_snps] if np.isfinite(stat[j])]
    return [names[j] for j in order] if names is not None else [int(j) for j in order]
