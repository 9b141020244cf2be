"""Age- and sex-matched subsets of two groups, with a balance report."""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = ["match_groups", "standardized_mean_difference"]


def _pooled_sd(x0, x1):
    return float(np.sqrt((np.var(x0, ddof=1) + np.var(x1, ddof=1)) / 2)) if min(len(x0), len(x1)) > 1 else np.nan


def standardized_mean_difference(x, groups, *, sd=None):
    """Standardised mean difference of ``x`` between two groups.

    ``(mean(x | group 1) - mean(x | group 0)) / sd`` where ``sd`` defaults to the pooled
    standard deviation ``sqrt((s0² + s1²) / 2)`` of the two groups (Austin 2009). For a 0/1
    variable this is the usual SMD of proportions.

    Parameters
    ----------
    x : array-like of shape (n_samples,)
    groups : array-like of shape (n_samples,)
        Exactly two distinct values; the larger one is "group 1".
    sd : float, optional
        Denominator to use instead of the pooled SD (e.g. the SD before matching, so that
        SMDs before and after matching share one scale).

    Returns
    -------
    smd : float
        NaN when the denominator is 0 or undefined.

    Examples
    --------
    >>> from sklearn_cgni.evaluation import standardized_mean_difference
    >>> round(standardized_mean_difference([1, 2, 3, 4], [0, 0, 1, 1]), 3)
    2.828
    """
    x = np.asarray(x, dtype=float)
    groups = np.asarray(groups)
    levels = np.unique(groups)
    if len(levels) != 2:
        raise ValueError(f"standardized_mean_difference needs exactly two groups; got {levels.tolist()}.")
    x0, x1 = x[groups == levels[0]], x[groups == levels[1]]
    denom = _pooled_sd(x0, x1) if sd is None else float(sd)
    if not np.isfinite(denom) or denom == 0:
        return np.nan
    return float((x1.mean() - x0.mean()) / denom)


def _caliper_graph(z0, z1, caliper):
    """The pairs of ``z0`` × ``z1`` rows within ``caliper`` (Euclidean), as a CSR matrix of their distances.

    Built from a k-d tree's radius queries, so memory grows with the number of pairs inside the
    caliper, never with ``len(z0) * len(z1)``: the dense distance matrix this replaced took 2.8 GB and
    71 s for 36,000 participants (``benchmarks/results/scale.md``). A distance of exactly 0 is an
    explicitly stored entry.
    """
    from scipy.sparse import csr_array
    from sklearn.neighbors import KDTree

    n0, n1 = len(z0), len(z1)
    tree = KDTree(z1)
    indices, data, counts = [], [], []
    for start in range(0, n0, 4096):  # the tree's per-row arrays of one chunk at a time
        ind, dist = tree.query_radius(z0[start:start + 4096], r=caliper, return_distance=True)
        counts += [len(i) for i in ind]
        indices.append(np.concatenate(ind).astype(np.int32))
        data.append(np.concatenate(dist))
    indptr = np.r_[0, np.cumsum(counts, dtype=np.int64)]
    return csr_array((np.concatenate(data) if data else np.zeros(0),
                      np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32), indptr), shape=(n0, n1))


def _pair_optimal(graph, caliper):
    """Maximum number of within-caliper pairs, then minimum total distance (``graph``: :func:`_caliper_graph`).

    A sparse assignment (LAPJVsp, :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`): each
    row may also take a column of its own at a cost larger than any total of real distances, so a
    full matching always exists and the cheapest one has as many real pairs as possible. Every weight
    is shifted by 1 (no stored zeros; the shift adds the same amount to every full matching). Several
    matchings are often optimal: with one continuous column, pairing a < b < c < d as (a, c), (b, d)
    or (a, d), (b, c) costs the same. The pairs returned may then differ from those of the dense
    Hungarian algorithm this replaced. With continuous ages, 120 random comparisons kept the same
    participants at the same total distance. With ages that tie (to a tenth of a year, as
    ``make_cohort`` writes them, or whole years) both keep as many pairs at the same total distance,
    but not always the same participants: both matchings are optimal (``tests/test_matching.py``).
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    n_r, n_c = graph.shape
    if graph.nnz == 0:
        return []
    lengths = np.diff(graph.indptr)
    big = (caliper + 1.0) * (n_r + 1) + 1.0  # more than any full matching's real pairs can add up to
    # each row: its real edges, then a column of its own (column n_c + row)
    real = np.arange(graph.nnz) + np.repeat(np.arange(n_r), lengths)
    stand_in = graph.indptr[1:] + np.arange(n_r)
    cols = np.empty(graph.nnz + n_r, dtype=np.int32)
    weights = np.empty(graph.nnz + n_r)
    cols[real], weights[real] = graph.indices, graph.data + 1.0
    cols[stand_in], weights[stand_in] = n_c + np.arange(n_r), big
    del real
    r, c = min_weight_full_bipartite_matching(csr_array((weights, cols, np.r_[0, stand_in + 1]),
                                                        shape=(n_r, n_c + n_r)))
    keep = c < n_c
    return list(zip(r[keep], c[keep]))


def _pair_greedy(graph, rng):
    """Each member of the smaller group, in random order, takes its nearest free partner within the caliper
    (the lowest index among equally near ones)."""
    transpose = graph.shape[0] > graph.shape[1]
    g = graph.T.tocsr() if transpose else graph
    free = np.ones(g.shape[1], dtype=bool)
    pairs = []
    for i in rng.permutation(g.shape[0]):
        cols, d = g.indices[g.indptr[i]:g.indptr[i + 1]], g.data[g.indptr[i]:g.indptr[i + 1]]
        for j in cols[np.lexsort((cols, d))]:
            if free[j]:
                free[j] = False
                pairs.append((j, i) if transpose else (i, j))
                break
    return pairs


def _pair_stratified(z0, z1, caliper, rng):
    """Coarsened exact matching: cells of width ``caliper`` SD; equal numbers per cell."""
    cell0 = [tuple(v) for v in np.floor(z0 / caliper).astype(np.int64)]
    cell1 = [tuple(v) for v in np.floor(z1 / caliper).astype(np.int64)]
    by0, by1 = {}, {}
    for i, c in enumerate(cell0):
        by0.setdefault(c, []).append(i)
    for j, c in enumerate(cell1):
        by1.setdefault(c, []).append(j)
    pairs = []
    for c in sorted(set(by0) & set(by1)):
        a, b = rng.permutation(by0[c]), rng.permutation(by1[c])
        k = min(len(a), len(b))
        pairs += list(zip(a[:k], b[:k]))
    return pairs


@validate_params(
    {
        "covariates": ["array-like"],
        "groups": ["array-like"],
        "continuous": ["array-like"],
        "exact": ["array-like"],
        "caliper": [Interval(numbers.Real, 0, None, closed="neither")],
        "method": [StrOptions({"optimal", "greedy", "stratified"})],
        "report": ["array-like", None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def match_groups(covariates, groups, *, continuous=("age",), exact=("sex",), caliper=0.2, method="optimal",
                 report=None, random_state=None):
    """Match the two working-memory groups on age within sex, 1:1 without replacement.

    Participants are matched exactly on the ``exact`` columns (e.g. sex) and, within each
    exact stratum, on the ``continuous`` columns standardised by their pooled SD (Euclidean
    distance in SD units), keeping only pairs closer than ``caliper`` SD. Participants with
    no partner inside the caliper are dropped, so the matched subset is the region of
    common support: with the reference study's 13.6-year age gap it is mostly the older
    high-span and the younger low-span participants.

    Parameters
    ----------
    covariates : DataFrame of shape (n_samples, n_columns)
        Indexed by participant ID (e.g. ``cohort.phenotypes``); must hold the
        ``continuous``, ``exact`` and ``report`` columns.
    groups : array-like or Series of shape (n_samples,)
        Group of each participant (e.g. ``phenotypes["wm_group"]``), exactly two values.
        A Series is aligned on the index of ``covariates``. Participants with a missing
        group (NaN: between the working-memory groups) are left out with a warning.
    continuous : list of str, default=("age",)
        Columns matched on by distance.
    exact : list of str, default=("sex",)
        Columns matched on exactly (strata). May be empty.
    caliper : float, default=0.2
        Largest allowed distance, in pooled SDs of the continuous columns (0.2 SD of age is
        about 1.5 years in the reference study). For ``method="stratified"`` it is the cell
        width.
    method : {"optimal", "greedy", "stratified"}, default="optimal"
        ``"optimal"``: the largest possible number of within-caliper pairs, and among those
        the smallest total distance (a sparse assignment per stratum, over the pairs
        inside the caliper).
        ``"greedy"``: nearest neighbour for each member of the smaller group, in random
        order. ``"stratified"``: coarsened exact matching on cells of ``caliper`` SD,
        keeping equal numbers of each group per cell at random.
    report : list of str, optional
        Further columns whose balance is reported (not matched on), e.g. ``["site"]``.
    random_state : int, RandomState instance or None, default=None
        Order of greedy matching and the draws of stratified matching.

    Returns
    -------
    result : Bunch
        ``ids`` (Index of matched participant IDs), ``pairs`` (DataFrame: one row per pair
        with the two IDs, the distance in SD and the stratum), ``balance`` (DataFrame, one
        row per covariate, or per level of an exact/report column with more than two
        levels, e.g. ``site=1``: group means and SMD before and after matching; both SMDs use
        the pooled SD *before* matching as denominator, so they are on one scale),
        ``counts`` (DataFrame per group: ``n_before``, ``n_after``, ``fraction_kept``),
        ``caliper_units`` (dict: the caliper in each continuous column's own units) and
        ``method``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_cgni.evaluation import match_groups
    >>> rng = np.random.default_rng(0)
    >>> g = np.r_[np.zeros(300), np.ones(200)]
    >>> cov = pd.DataFrame({"age": np.where(g == 0, 56, 42) + 7.5 * rng.standard_normal(500),
    ...                     "sex": (rng.random(500) < np.where(g == 0, 0.41, 0.57)).astype(int)})
    >>> m = match_groups(cov, g, random_state=0)
    >>> bool(abs(m.balance.loc["age", "smd_before"]) > 1.5)
    True
    >>> bool(abs(m.balance.loc["age", "smd_after"]) < 0.1)
    True
    """
    if not hasattr(covariates, "columns"):
        raise ValueError("match_groups: `covariates` must be a DataFrame indexed by participant ID.")
    continuous, exact = list(continuous), list(exact)
    report = [] if report is None else list(report)
    if not continuous and method != "stratified" and not exact:
        raise ValueError("match_groups: give at least one `continuous` or `exact` column.")
    needed = list(dict.fromkeys(continuous + exact + report))
    missing_cols = [c for c in needed if c not in covariates.columns]
    if missing_cols:
        raise ValueError(f"match_groups: columns {missing_cols} are not in `covariates` "
                         f"(columns: {list(covariates.columns)[:12]}).")
    if isinstance(groups, pd.Series):
        if not groups.index.equals(covariates.index):
            absent = covariates.index.difference(groups.index)
            if len(absent):
                raise ValueError(f"match_groups: no group for participants {list(absent[:10])}"
                                 f"{' ...' if len(absent) > 10 else ''}.")
            groups = groups.loc[covariates.index]
        groups = groups.to_numpy()
    groups = np.asarray(groups)
    if groups.shape != (len(covariates),):
        raise ValueError(f"match_groups: `groups` has shape {groups.shape}; expected ({len(covariates)},).")
    ids = covariates.index
    unlabelled = pd.isna(groups)
    if unlabelled.any():
        warnings.warn(
            f"match_groups: {int(unlabelled.sum())} participants without a group are left out: "
            f"{[str(v) for v in ids[unlabelled][:10]]}{' ...' if unlabelled.sum() > 10 else ''}.",
            UserWarning,
        )
    cov = covariates.loc[~unlabelled, needed]
    g = groups[~unlabelled]
    levels = np.unique(g)
    if len(levels) != 2:
        raise ValueError(f"match_groups needs exactly two groups; got {levels.tolist()}.")
    for c in needed:
        bad = cov.index[cov[c].isna().to_numpy()]
        if len(bad):
            raise ValueError(f"match_groups: column {c!r} is missing for participants {[str(v) for v in bad[:10]]}.")
    for c in continuous:
        if not pd.api.types.is_numeric_dtype(cov[c].dtype):
            raise ValueError(f"match_groups: continuous column {c!r} is not numeric (dtype {cov[c].dtype}).")
    rng = check_random_state(random_state)
    is0, is1 = g == levels[0], g == levels[1]

    # standardise continuous columns by their pooled SD before matching
    sds = {}
    for c in continuous:
        x = cov[c].to_numpy(dtype=float)
        sds[c] = _pooled_sd(x[is0], x[is1])
        if not np.isfinite(sds[c]) or sds[c] == 0:
            raise ValueError(f"match_groups: column {c!r} has no spread; it cannot be matched on.")
    Z = np.column_stack([cov[c].to_numpy(dtype=float) / sds[c] for c in continuous]) if continuous else \
        np.zeros((len(cov), 0))
    strata = cov[exact].astype(str).agg("|".join, axis=1).to_numpy() if exact else np.full(len(cov), "all")

    rows = []
    for s in sorted(set(strata)):
        i0 = np.flatnonzero((strata == s) & is0)
        i1 = np.flatnonzero((strata == s) & is1)
        if i0.size == 0 or i1.size == 0:
            continue
        if method == "stratified":
            pairs = _pair_stratified(Z[i0], Z[i1], caliper, rng) if continuous else \
                list(zip(rng.permutation(i0.size)[: min(i0.size, i1.size)], rng.permutation(i1.size)))
        elif not continuous:  # exact matching only: every pair of the stratum is at distance 0
            k = min(i0.size, i1.size)
            if method == "optimal":
                pairs = list(zip(range(k), range(k)))
            else:  # the smaller group in random order, each taking the first free member of the other
                order = rng.permutation(k)
                pairs = [(i, t) if i0.size <= i1.size else (t, i) for t, i in enumerate(order)]
        else:
            graph = _caliper_graph(Z[i0], Z[i1], caliper)
            pairs = _pair_optimal(graph, caliper) if method == "optimal" else _pair_greedy(graph, rng)
        for a, b in pairs:
            a, b = i0[a], i1[b]
            rows.append((cov.index[a], cov.index[b], float(np.sqrt(((Z[a] - Z[b]) ** 2).sum())), s))
    pairs = pd.DataFrame(rows, columns=[f"id_group_{levels[0]}", f"id_group_{levels[1]}", "distance_sd", "stratum"])
    matched = pd.Index(list(pairs.iloc[:, 0]) + list(pairs.iloc[:, 1]))
    matched = cov.index[cov.index.isin(matched)]  # keep the input order

    in_m = cov.index.isin(matched)
    bal = []
    columns = {}
    for c in needed:  # non-continuous columns with more than two levels: one row per level
        if c not in continuous and cov[c].nunique() > 2:
            for lev in sorted(cov[c].unique().tolist(), key=str):
                columns[f"{c}={lev}"] = (cov[c] == lev).to_numpy(dtype=float)
        else:
            columns[c] = cov[c].to_numpy()
    for c, x in columns.items():
        try:
            x = np.asarray(x, dtype=float)
        except (TypeError, ValueError):
            continue  # non-numeric two-level column: no mean difference
        sd0 = _pooled_sd(x[is0], x[is1])
        row = {"covariate": c, "mean_group_0_before": x[is0].mean(), "mean_group_1_before": x[is1].mean(),
               "smd_before": standardized_mean_difference(x, g, sd=sd0)}
        m0, m1 = x[is0 & in_m], x[is1 & in_m]
        row.update({"mean_group_0_after": m0.mean() if m0.size else np.nan,
                    "mean_group_1_after": m1.mean() if m1.size else np.nan,
                    "smd_after": (m1.mean() - m0.mean()) / sd0 if m0.size and m1.size and sd0 > 0 else np.nan})
        bal.append(row)
    balance = pd.DataFrame(bal).set_index("covariate")
    counts = pd.DataFrame(
        {"n_before": [int(is0.sum()), int(is1.sum())],
         "n_after": [int((is0 & in_m).sum()), int((is1 & in_m).sum())]},
        index=pd.Index(levels, name="group"),
    )
    counts["fraction_kept"] = counts["n_after"] / counts["n_before"]
    if len(matched) == 0:
        warnings.warn("match_groups: no pair within the caliper; the matched subset is empty.", UserWarning)
    return Bunch(ids=matched, pairs=pairs, balance=balance, counts=counts,
                 caliper_units={c: caliper * sds[c] for c in continuous}, method=method)
