"""What a nested search over CGNI's stages 2-3 costs against the fits it runs (issue 14, item 3).

``sklearn_cgni.cli.tuned`` wraps a CGNI pipeline of ``paper_models`` in a GridSearchCV on the
rows it is fitted on; the inputs ``[h_v ⊕ SNPs]`` are computed once, so each candidate trains
stages 2-3 only. This measures, in one run on the same data:

* ``fits``: each of the grid's candidates fitted once on all the rows, one after the other
  (the cost of 16 stage-2+3 fits);
* ``search``: ``tuned(model, grid, inner_cv=1).fit`` on the same rows (each candidate fitted on
  80 % and scored on 20 %, then the best refitted on all of them);

and reports ``search / fits`` (issue 14's bound: <= 1.3). ``h_v`` is a fixed array here, as in the
command line's ``models`` stage, which reads it from ``finetune_f*/hv.npy``.

Usage (the results file was written by this)::

    OMP_NUM_THREADS=1 python benchmarks/bench_nested_search.py

Writes ``benchmarks/results/nested_search.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from sklearn_cgni.cli import paper_models, search_grid, tuned

RESULTS = Path(__file__).parent / "results"
GRID = {"contrastive.genetic_hidden": [[], [64]], "contrastive.temperature": [0.1, 0.5],
        "contrastive.theta_gg": [0.0, 0.4], "contrastive.weight_decay": [1e-4, 1e-2]}  # 16 candidates


def data(n, n_hv, n_snps, seed):
    rng = np.random.default_rng(seed)
    G = rng.binomial(2, rng.uniform(0.05, 0.5, n_snps), size=(n, n_snps)).astype(np.float32)
    score = G[:, :10] @ rng.normal(size=10)
    hv = np.maximum(rng.normal(size=(n, n_hv)) + 0.3 * score[:, None] * rng.normal(size=n_hv), 0)
    y = (score + hv[:, 0] + rng.normal(size=n) > np.median(score + hv[:, 0])).astype(int)
    return np.hstack([hv, G]).astype(np.float32), y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=600, help="rows (one outer fold's training part)")
    ap.add_argument("--hv", type=int, default=32, help="width of h_v")
    ap.add_argument("--snps", type=int, default=1060)
    ap.add_argument("--cross-fit", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.fspath(RESULTS / "nested_search.md"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    X, y = data(args.n, args.hv, args.snps, args.seed)
    model = paper_models(args.hv, contrastive=dict(n_components=32, image_hidden=(), max_epochs=60, standardize=True,
                                                   early_stopping=True, scoring="matching", n_iter_no_change=10),
                         classifier=dict(hidden_layer_sizes=(64, 32), max_epochs=15), cross_fit=args.cross_fit,
                         device="cpu", random_state=args.seed)[("Table 1", "CGNI contrastive (terms 1+2+4)")]
    grid = search_grid(model, GRID)
    candidates = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    load0 = os.getloadavg()
    t = time.perf_counter()
    for params in candidates:
        clone(model).set_params(**params).fit(X, y)
    fits = time.perf_counter() - t
    t = time.perf_counter()
    search = tuned(model, GRID, inner_cv=1, random_state=args.seed).fit(X, y)
    searched = time.perf_counter() - t
    load1 = os.getloadavg()
    ratio = searched / fits
    lines = [f"# Nested search over CGNI's stages 2-3: cost against the fits it runs ({time.strftime('%Y-%m-%d')})", "",
             f"`OMP_NUM_THREADS=1 python benchmarks/bench_nested_search.py --n {args.n} --hv {args.hv} --snps "
             f"{args.snps} --cross-fit {args.cross_fit}` (one torch thread; {platform.machine()}, {os.cpu_count()} "
             f"cores, load average {load0[0]:.1f} at the start and {load1[0]:.1f} at the end: the other core ran "
             "another benchmark, which slows both parts alike).", "",
             f"A CGNI pipeline (encoder z-scoring its inputs, cross-fitted over {args.cross_fit} folds with early stopping "
             f"on held-out matching, CGNIClassifier) on {args.n} rows of [h_v ({args.hv}) ⊕ {args.snps} SNPs]; grid "
             f"{GRID} ({len(candidates)} candidates).", "",
             "| what | seconds |", "|---|---|",
             f"| {len(candidates)} stage-2+3 fits, one per candidate, on all rows | {fits:.1f} |",
             f"| `tuned(..., inner_cv=1).fit`: {len(candidates)} fits on 80 %, scored on 20 %, best refitted | "
             f"{searched:.1f} |",
             f"| **ratio search / fits** | **{ratio:.2f}** (bound 1.3) |", "",
             f"Chosen: {search.best_params_} (inner balanced accuracy {search.best_score_:.3f})."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return ratio


if __name__ == "__main__":
    main()
