"""Cost of reading selected variants out of a large genotype file (issue 15).

Writes a BGEN v1.2 file (zlib, 8 bits, with its bgenix index, as UK Biobank ships them) of
N participants × M variants and a BGEN of only 1,000 of those variants, plus the same two as
PLINK 2 file sets, then times ``read_genotypes(path, snps=<the 1,000 rsIDs>)`` on each (repeated,
interleaved; medians). The large BGEN is also read without its index (variant headers parsed,
genotypes of the selected variants only decoded). The target: reading the 1,000 variants out of
the large file costs at most 2× reading the small file.

Run::

    PYTHONPATH=. python benchmarks/bench_genotype_readers.py --participants 5000 --variants 100000 \\
        --out benchmarks/results/genotype_readers.md
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn_cgni.io import read_genotypes


def _probabilities(rng, n, fuzzy=0.1):
    """Hard calls for most participants, imputation-like probabilities for a ``fuzzy`` share."""
    g = rng.binomial(2, rng.uniform(0.05, 0.5), n)
    p = np.eye(3)[g]
    k = rng.random(n) < fuzzy
    noise = rng.dirichlet([1.0, 1.0, 1.0], int(k.sum()))
    p[k] = 0.6 * p[k] + 0.4 * noise
    return p, g


def write_files(folder, n, m, selected, seed=0):
    """The large and the selected-only BGEN and PLINK 2 files; returns their paths and write times."""
    import pgenlib
    from bgen import BgenWriter

    rng = np.random.default_rng(seed)
    ids = [str(1_000_000 + i) for i in range(n)]
    sel = set(selected)
    t0 = time.perf_counter()
    big, small = folder / "chr1.bgen", folder / "chr1_selected.bgen"
    pg_big = pgenlib.PgenWriter(os.fspath(folder / "chr1.pgen").encode(), n, variant_ct=m, nonref_flags=False)
    pg_small = pgenlib.PgenWriter(os.fspath(folder / "chr1_selected.pgen").encode(), n, variant_ct=len(sel),
                                  nonref_flags=False)
    pvar = []
    with BgenWriter(os.fspath(big), n, samples=ids, compression="zlib") as wb, \
            BgenWriter(os.fspath(small), n, samples=ids, compression="zlib") as ws:
        for j in range(m):
            rsid = f"rs{10_000_000 + j}"
            p, g = _probabilities(rng, n)
            args = (f"1:{j + 1}_C_T", rsid, "1", j + 1, ["C", "T"], p)
            wb.add_variant(*args)
            geno = np.ascontiguousarray(g, dtype=np.int8)
            pg_big.append_biallelic(geno)
            pvar.append(("1", j + 1, rsid, "C", "T"))
            if rsid in sel:
                ws.add_variant(*args)
                pg_small.append_biallelic(geno)
    pg_big.close()
    pg_small.close()
    t_write = time.perf_counter() - t0
    for stem in ("chr1", "chr1_selected"):
        with open(folder / f"{stem}.sample", "w") as fh:
            fh.write("ID_1 ID_2 missing sex\n0 0 0 D\n")
            fh.writelines(f"{i} {i} 0 NA\n" for i in ids)
        pd.DataFrame({"#IID": ids}).to_csv(folder / f"{stem}.psam", sep="\t", index=False)
    table = pd.DataFrame(pvar, columns=["#CHROM", "POS", "ID", "REF", "ALT"])
    table.to_csv(folder / "chr1.pvar", sep="\t", index=False)
    table[table["ID"].isin(sel)].to_csv(folder / "chr1_selected.pvar", sep="\t", index=False)
    return t_write


def _time(path, snps, **kw):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = read_genotypes(path, snps=snps, allow_dosage=True, **kw)
    return time.perf_counter() - t0, g


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=5000)
    ap.add_argument("--variants", type=int, default=100_000)
    ap.add_argument("--selected", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folder", default=None, help="where to write the files (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="write the results as Markdown here")
    args = ap.parse_args()

    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_geno_"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    chosen = np.sort(rng.choice(args.variants, args.selected, replace=False))
    snps = [f"rs{10_000_000 + j}" for j in chosen]
    t_write = write_files(folder, args.participants, args.variants, snps)
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}

    noindex = folder / "noindex"
    noindex.mkdir(exist_ok=True)
    for name in ("chr1.bgen", "chr1.sample"):  # the same BGEN without its .bgi
        dest = noindex / name
        if not dest.exists():
            os.link(folder / name, dest)
    k, m = f"{args.selected:,}", f"{args.variants:,}"
    cases = {
        f"BGEN, {k} of {m} (bgenix index)": folder / "chr1.bgen",
        f"BGEN, {k} of {m} (no index: headers parsed)": noindex / "chr1.bgen",
        f"BGEN, file of only the {k}": folder / "chr1_selected.bgen",
        f"PLINK 2, {k} of {m}": folder / "chr1.pgen",
        f"PLINK 2, file of only the {k}": folder / "chr1_selected.pgen",
    }
    names = list(cases)
    times = {k: [] for k in cases}
    ref = None
    for _ in range(args.repeats):  # interleaved, so the load changes hit every case alike
        for name, path in cases.items():
            t, g = _time(path, snps)
            times[name].append(t)
            if name.startswith("BGEN"):
                assert g.shape == (args.participants, args.selected), g.shape
                if ref is None:
                    ref = g
                else:
                    pd.testing.assert_frame_equal(g, ref)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [{"case": k, "median_s": round(med[k], 3), "runs_s": ", ".join(f"{t:.3f}" for t in times[k])}
            for k in cases]
    ratio_idx = med[names[0]] / med[names[2]]
    ratio_noidx = med[names[1]] / med[names[2]]
    ratio_pgen = med[names[3]] / med[names[4]]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = "\n".join([
        "# Reading selected variants: large file vs a file of only them",
        "",
        f"{args.participants:,} participants; {args.variants:,} variants in the large file; {args.selected:,} "
        f"selected rsIDs (random, spread over the file); {args.repeats} interleaved repeats, medians. BGEN v1.2, "
        "zlib, 8-bit probabilities (10 % of participants per variant with imputation-like probabilities), "
        "written with the `bgen` package (which also writes the bgenix `.bgi` index); PLINK 2 hard calls "
        f"written with pgenlib. Writing all files took {t_write:.0f} s.",
        "",
        "Sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items()) if k != "noindex"),
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
        f"**Ratio large / selected-only: BGEN {ratio_idx:.2f}× with the index, {ratio_noidx:.2f}× without it; "
        f"PLINK 2 {ratio_pgen:.2f}×** (target ≤ 2×).",
        "",
        f"Machine load at the end (`uptime`): `{load}` (a shared machine, {os.cpu_count()} CPUs).",
        "",
        "Reproduce: `PYTHONPATH=. python benchmarks/bench_genotype_readers.py "
        f"--participants {args.participants} --variants {args.variants} --selected {args.selected} "
        f"--repeats {args.repeats} --out benchmarks/results/genotype_readers.md`",
        "",
    ])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.folder is None:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
