"""From significant SNPs and regions to genes, tables and enrichment (seed paper II.F.2, Tables 4-5).

* :func:`map_snps_to_genes`: SNP -> gene symbol / Ensembl ID from a user table (e.g. an eQTL
  annotation such as PsychENCODE's); SNPs missing from the table are listed in a warning.
* :func:`genes_per_component` (Table 4) and :func:`regions_per_component` (Table 5, with the
  sign of each region's effect).
* :func:`read_gmt` and :func:`enrichment_test`: an offline over-representation test
  (hypergeometric, multiple-testing corrected with statsmodels) against gene sets in a GMT file.
* :func:`gprofiler_query`: the optional online g:Profiler query the paper used (plain urllib),
  failing with a clear message when the service cannot be reached.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import warnings

import numpy as np
import pandas as pd

__all__ = [
    "map_snps_to_genes",
    "genes_per_component",
    "regions_per_component",
    "read_gmt",
    "enrichment_test",
    "gprofiler_query",
    "GPROFILER_URL",
]

#: g:Profiler g:GOSt REST endpoint.
GPROFILER_URL = "https://biit.cs.ut.ee/gprofiler/api/gost/profile/"

_SNP_COLUMNS = ("snp", "snp_id", "rsid", "variant", "variant_id", "id")
_SYMBOL_COLUMNS = ("gene", "gene_symbol", "symbol", "gene_name", "hgnc_symbol")
_ENSEMBL_COLUMNS = ("ensembl_id", "ensembl", "gene_id", "ensembl_gene_id")


def _pick(columns, wanted, given, what, source):
    if given is not None:
        if given not in columns:
            raise ValueError(f"{source} has no column {given!r} ({what}); columns: {list(columns)}.")
        return given
    lower = {str(c).lower(): c for c in columns}
    for name in wanted:
        if name in lower:
            return lower[name]
    return None


def _read_table(table):
    if isinstance(table, (str, os.PathLike)):
        path = os.fspath(table)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Gene table {path!r} does not exist.")
        sep = "\t" if path.endswith((".tsv", ".txt", ".tsv.gz", ".txt.gz")) else ","
        return pd.read_csv(path, sep=sep), f"gene table {path!r}"
    if isinstance(table, pd.DataFrame):
        return table.copy(), "the gene table"
    raise TypeError(f"The gene table must be a path or a DataFrame; got {type(table).__name__}.")


def map_snps_to_genes(snps, table, *, snp_column=None, gene_column=None, ensembl_column=None):
    """Map SNPs to genes with a user table (SNP -> gene symbol and/or Ensembl ID).

    Parameters
    ----------
    snps : sequence of str
        SNP IDs to map (e.g. ``significant_snps_["snp"]``).
    table : DataFrame or path (CSV, or TSV for .tsv/.txt)
        One row per (SNP, gene) pair; a SNP regulating several genes has several rows. A
        DataFrame may carry the SNP IDs in its index instead of a column.
    snp_column, gene_column, ensembl_column : str, optional
        Column names; by default the first of ``snp/snp_id/rsid/variant/id``,
        ``gene/gene_symbol/symbol/gene_name`` and ``ensembl_id/ensembl/gene_id`` found
        (case-insensitive). At least one gene column is required.

    Returns
    -------
    mapping : DataFrame
        Columns ``snp``, ``gene`` (symbol, or the Ensembl ID when the table has no symbol)
        and ``ensembl_id`` (when available), in the order of ``snps``.

    Warns
    -----
    UserWarning
        Listing the SNPs absent from the table (they are not silently lost: they are also
        in ``mapping.attrs["unmapped"]``).
    """
    df, source = _read_table(table)
    col = _pick(df.columns, _SNP_COLUMNS, snp_column, "SNP IDs", source)
    if col is None:
        if df.index.name is not None or not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
            col = df.columns[0]
        else:
            raise ValueError(
                f"{source} needs a SNP column (one of {list(_SNP_COLUMNS)}, or pass snp_column=); "
                f"columns: {list(df.columns)}."
            )
    sym = _pick(df.columns, _SYMBOL_COLUMNS, gene_column, "gene symbols", source)
    ens = _pick(df.columns, _ENSEMBL_COLUMNS, ensembl_column, "Ensembl IDs", source)
    if sym is None and ens is None:
        raise ValueError(
            f"{source} needs a gene column: a symbol ({list(_SYMBOL_COLUMNS)}) or an Ensembl ID "
            f"({list(_ENSEMBL_COLUMNS)}); columns: {list(df.columns)}."
        )
    df[col] = df[col].astype(str)
    snps = [str(s) for s in snps]
    known = set(df[col])
    unmapped = [s for s in dict.fromkeys(snps) if s not in known]
    if unmapped:
        warnings.warn(
            f"{len(unmapped)} SNP(s) are not in {source} and have no gene: {unmapped}",
            UserWarning,
            stacklevel=2,
        )
    order = {s: i for i, s in enumerate(dict.fromkeys(snps))}
    sub = df[df[col].isin(order)].copy()
    out = pd.DataFrame({"snp": sub[col].to_numpy()})
    out["gene"] = (sub[sym] if sym is not None else sub[ens]).astype(str).to_numpy()
    if ens is not None:
        out["ensembl_id"] = sub[ens].astype(str).to_numpy()
    out["_order"] = out["snp"].map(order)
    out = out.sort_values("_order", kind="stable").drop(columns="_order").drop_duplicates()
    out = out.reset_index(drop=True)
    out.attrs["unmapped"] = unmapped
    return out


def genes_per_component(significant_snps, table, **columns):
    """Genes of each component's significant SNPs (the paper's Table 4).

    Parameters
    ----------
    significant_snps : DataFrame
        ``OcclusionExplainer.significant_snps_`` (columns ``component``, ``snp``,
        ``contribution``, ``sign``).
    table : DataFrame or path
        SNP -> gene table, see :func:`map_snps_to_genes`.
    **columns
        ``snp_column``, ``gene_column``, ``ensembl_column`` for :func:`map_snps_to_genes`.

    Returns
    -------
    genes : DataFrame
        One row per component: ``component``, ``genes`` (comma-separated, unique, ordered
        by the largest |contribution| of their SNPs), ``n_snps``, ``unmapped_snps``.
    """
    _require(significant_snps, ("component", "snp"), "significant_snps")
    mapping = map_snps_to_genes(significant_snps["snp"].unique(), table, **columns)
    genes_of = mapping.groupby("snp", sort=False)["gene"].apply(list).to_dict()
    rows = []
    for comp, grp in significant_snps.groupby("component", sort=True):
        if "contribution" in grp:
            grp = grp.reindex(grp["contribution"].abs().sort_values(ascending=False).index)
        genes = list(dict.fromkeys(g for s in grp["snp"] for g in genes_of.get(str(s), [])))
        rows.append({
            "component": int(comp),
            "genes": ", ".join(genes),
            "n_snps": len(grp),
            "unmapped_snps": [str(s) for s in grp["snp"] if str(s) not in genes_of],
        })
    return pd.DataFrame(rows, columns=["component", "genes", "n_snps", "unmapped_snps"])


def _pretty_region(name):
    """AAL style ``Caudate_L`` -> ``Left Caudate``; other names are returned unchanged."""
    parts = str(name).split("_")
    side = {"L": "Left", "R": "Right"}.get(parts[-1]) if len(parts) > 1 else None
    if side is None:
        return str(name).replace("_", " ")
    return f"{side} {' '.join(parts[:-1])}"


def regions_per_component(significant_regions, *, pretty_names=True):
    """Regions of each component with the sign of their effect (the paper's Table 5).

    Parameters
    ----------
    significant_regions : DataFrame
        ``OcclusionExplainer.significant_regions_`` (``component``, ``region``, ``sign``).
    pretty_names : bool, default=True
        Write AAL names as in the paper (``Caudate_L`` -> ``Left Caudate``).

    Returns
    -------
    regions : DataFrame
        One row per component: ``component``, ``regions`` (comma-separated, each followed by
        ``(+)`` for more gray matter with the oriented component, i.e. with more minor
        alleles of its significant SNPs, or ``(-)``), ``increased`` and ``decreased`` (lists).
    """
    _require(significant_regions, ("component", "region", "sign"), "significant_regions")
    rows = []
    for comp, grp in significant_regions.groupby("component", sort=True):
        name = _pretty_region if pretty_names else str
        labelled = [f"{name(r)} ({'+' if s > 0 else '-'})" for r, s in zip(grp["region"], grp["sign"])]
        rows.append({
            "component": int(comp),
            "regions": ", ".join(labelled),
            "increased": [name(r) for r, s in zip(grp["region"], grp["sign"]) if s > 0],
            "decreased": [name(r) for r, s in zip(grp["region"], grp["sign"]) if s <= 0],
        })
    return pd.DataFrame(rows, columns=["component", "regions", "increased", "decreased"])


def _require(df, cols, name):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a DataFrame; got {type(df).__name__}.")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; columns: {list(df.columns)}.")


def read_gmt(path):
    """Read gene sets from a GMT file (``name<TAB>description<TAB>gene<TAB>gene...`` per line).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    gene_sets : dict
        ``name -> {"description": str, "genes": frozenset of str}``, in file order.

    Raises
    ------
    ValueError
        Naming the file and line of a line that does not parse (fewer than three
        tab-separated fields, an empty name or no gene) or of a set name seen twice.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"GMT file {path!r} does not exist.")
    sets = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            genes = [g.strip() for g in fields[2:] if g.strip()]
            if len(fields) < 3 or not fields[0].strip() or not genes:
                raise ValueError(
                    f"GMT file {path!r}, line {lineno}: expected 'name<TAB>description<TAB>gene"
                    f"<TAB>...' with at least one gene; got {line[:80]!r}."
                )
            name = fields[0].strip()
            if name in sets:
                raise ValueError(f"GMT file {path!r}, line {lineno}: gene set {name!r} appears twice.")
            sets[name] = {"description": fields[1].strip(), "genes": frozenset(genes)}
    if not sets:
        raise ValueError(f"GMT file {path!r} holds no gene set.")
    return sets


def enrichment_test(genes, gene_sets, background=None, *, method="fdr_bh", min_set_size=1,
                    max_set_size=None):
    """Over-representation of ``genes`` in gene sets: hypergeometric test, corrected.

    Parameters
    ----------
    genes : sequence of str
        Query genes (e.g. the genes of the significant SNPs, all components together).
    gene_sets : dict or path
        Output of :func:`read_gmt` (``name -> {"genes": ...}`` or ``name -> iterable``), or
        a GMT path.
    background : sequence of str, optional
        The universe the query was drawn from, e.g. the genes of all 1,060 analysed SNPs
        (the right choice here: the SNPs were preselected). Default: the union of all sets
        and the query. Query genes outside the background raise an error.
    method : str, default="fdr_bh"
        Correction of :func:`statsmodels.stats.multitest.multipletests` over the tested sets
        (e.g. ``"bonferroni"``, ``"fdr_bh"``).
    min_set_size, max_set_size : int
        Sets whose size within the background lies outside this range are not tested.

    Returns
    -------
    result : DataFrame
        One row per tested set, by increasing p-value: ``term``, ``description``,
        ``n_overlap``, ``set_size``, ``n_query``, ``n_background``, ``p_value``,
        ``p_adjusted``, ``overlap`` (sorted genes).
    """
    from scipy.stats import hypergeom
    from statsmodels.stats.multitest import multipletests

    if isinstance(gene_sets, (str, os.PathLike)):
        gene_sets = read_gmt(gene_sets)
    sets = {name: frozenset(v["genes"] if isinstance(v, dict) else v) for name, v in gene_sets.items()}
    desc = {name: (v.get("description", "") if isinstance(v, dict) else "") for name, v in gene_sets.items()}
    query = set(str(g) for g in genes)
    if not query:
        raise ValueError("enrichment_test: the query gene list is empty.")
    if background is None:
        universe = set().union(*sets.values()) | query
    else:
        universe = set(str(g) for g in background)
        outside = sorted(query - universe)
        if outside:
            raise ValueError(f"enrichment_test: query gene(s) {outside} are not in the background.")
    M, n = len(universe), len(query)
    rows = []
    for name, members in sets.items():
        members = members & universe
        K = len(members)
        if K < min_set_size or (max_set_size is not None and K > max_set_size):
            continue
        overlap = sorted(members & query)
        k = len(overlap)
        p = float(hypergeom.sf(k - 1, M, K, n)) if k > 0 else 1.0
        rows.append({"term": name, "description": desc[name], "n_overlap": k, "set_size": K,
                     "n_query": n, "n_background": M, "p_value": p, "overlap": overlap})
    columns = ["term", "description", "n_overlap", "set_size", "n_query", "n_background",
               "p_value", "p_adjusted", "overlap"]
    if not rows:
        warnings.warn("enrichment_test: no gene set passed the size filters.", UserWarning, stacklevel=2)
        return pd.DataFrame(columns=columns)
    result = pd.DataFrame(rows)
    result["p_adjusted"] = multipletests(result["p_value"].to_numpy(), method=method)[1]
    return result[columns].sort_values(["p_value", "term"], kind="stable").reset_index(drop=True)


def gprofiler_query(genes, *, organism="hsapiens", sources=("GO:BP", "GO:CC", "GO:MF"),
                    threshold=0.05, background=None, timeout=30.0, url=GPROFILER_URL):
    """Query g:Profiler's g:GOSt (as the paper did) over its REST API.

    Parameters
    ----------
    genes : sequence of str
        Gene symbols or Ensembl IDs.
    organism : str, default="hsapiens"
    sources : sequence of str, default=("GO:BP", "GO:CC", "GO:MF")
    threshold : float, default=0.05
        g:Profiler's ``user_threshold`` (g:SCS corrected).
    background : sequence of str, optional
        Custom domain (``domain_scope="custom"``).
    timeout : float, default=30.0
        Seconds before giving up on the connection.
    url : str, default=GPROFILER_URL

    Returns
    -------
    result : DataFrame
        ``source``, ``native``, ``name``, ``p_value``, ``term_size``, ``query_size``,
        ``intersection_size``, ordered by p-value.

    Raises
    ------
    ConnectionError
        When g:Profiler cannot be reached (no network, timeout, HTTP error), with a message
        pointing to the offline :func:`enrichment_test`.
    """
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("gprofiler_query: the query gene list is empty.")
    payload = {"organism": organism, "query": genes, "sources": list(sources),
               "user_threshold": float(threshold), "significance_threshold_method": "g_SCS"}
    if background is not None:
        payload.update(domain_scope="custom", background=[str(g) for g in background])
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode())
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"g:Profiler could not be reached at {url} ({type(exc).__name__}: {reason}). "
            "The query needs internet access; offline, run "
            "sklearn_cgni.explain.enrichment_test(genes, read_gmt('sets.gmt')) on gene sets "
            "downloaded beforehand (e.g. g:Profiler's or MSigDB's GMT files)."
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConnectionError(f"g:Profiler at {url} returned a response that is not JSON: {exc}") from exc
    cols = ["source", "native", "name", "p_value", "term_size", "query_size", "intersection_size"]
    result = pd.DataFrame(body.get("result", []))
    for c in cols:
        if c not in result:
            result[c] = np.nan if c != "name" else ""
    return result[cols].sort_values("p_value", kind="stable").reset_index(drop=True)
