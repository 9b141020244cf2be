"""Table 1's uncertainty: intervals and paired tests from the held-out predictions the stages saved.

:func:`held_out_predictions` gathers every Table 1 row's per-participant predictions of a run
(``models_f*/predictions.csv.gz`` and the imaging CNN's ``finetune_f*/cnn_proba.npy``);
:func:`table1_uncertainty` turns them into intervals per row and paired comparisons, with
:func:`~sklearn_cgni.evaluation.balanced_accuracy_interval` and
:func:`~sklearn_cgni.evaluation.paired_balanced_accuracy_test`:

* validation: balanced accuracy of the pooled out-of-fold predictions (each training-part
  participant once, by the fold model that did not see it) with a 95 % bootstrap interval;
* holdout: the mean over the fold models of their balanced accuracy on the common holdout,
  with a 95 % bootstrap interval over the holdout's participants;
* comparisons on the same participants: each deep row against the best classical row (chosen
  on validation) and against ``h_v`` alone (which covers CGNI against ``h_v``), Holm-adjusted
  within each split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ._protocol import CLASSICAL_MODELS, HV_LOGISTIC

__all__ = ["held_out_predictions", "table1_uncertainty", "verdict"]

#: the level below which a Holm-adjusted p counts as a detectable difference
ALPHA = 0.05


def held_out_predictions(out, table="Table 1"):
    """Per-participant held-out predictions of every ``table`` row of a finished run.

    Parameters
    ----------
    out : path
        The run's output folder.
    table : str, default="Table 1"

    Returns
    -------
    predictions : DataFrame or None
        ``participant_id``, ``model``, ``split`` (validation / holdout), ``fold``, ``predicted``
        and ``y`` (the working-memory group); ``None`` when the run saved none.
    """
    st = Path(out) / "stages"
    parts_file, split_file = st / "data" / "participants.csv", st / "data" / "splits.json"
    if not (parts_file.exists() and split_file.exists()):
        return None
    parts = pd.read_csv(parts_file, dtype={"participant_id": str}).set_index("participant_id")
    wm = parts[parts["wm_group"].notna() & parts["image_qc_passed"].astype(bool)]
    split = json.loads(split_file.read_text())
    frames = []
    for k in range(len(split["folds"])):
        f = st / f"models_f{k}" / "predictions.csv.gz"
        if (st / f"models_f{k}" / "_done.json").exists() and f.exists():
            frames.append(pd.read_csv(f, dtype={"participant_id": str}).assign(fold=k))
        proba = st / f"finetune_f{k}" / "cnn_proba.npy"
        if table == "Table 1" and (st / f"finetune_f{k}" / "_done.json").exists() and proba.exists():
            pred = np.load(proba).argmax(1)  # classes 0 (low) and 1 (high) in every fold
            for name, rows in (("validation", split["folds"][k][1]), ("holdout", split["holdout"])):
                frames.append(pd.DataFrame({"participant_id": wm.index[rows], "table": table, "model": "Imaging CNN",
                                            "split": name, "predicted": pred[rows], "fold": k}))
    if not frames:
        return None
    preds = pd.concat(frames, ignore_index=True)
    preds = preds[preds["table"] == table].drop(columns="table")
    preds["y"] = preds["participant_id"].map(wm["wm_group"].astype(int)).to_numpy()
    return preds.reset_index(drop=True)


def _matrix(preds, model, split):
    """``(participant ids, y, predictions)``: one column (validation, pooled) or one per fold (holdout)."""
    d = preds[(preds["model"] == model) & (preds["split"] == split)]
    if not len(d):
        return None
    if split == "validation":
        d = d.drop_duplicates("participant_id").set_index("participant_id").sort_index()
        return d.index, d["y"].to_numpy(), d[["predicted"]].to_numpy()
    wide = d.pivot_table(index="participant_id", columns="fold", values="predicted", aggfunc="first").dropna()
    y = d.drop_duplicates("participant_id").set_index("participant_id").loc[wide.index, "y"].to_numpy()
    return wide.index, y, wide.to_numpy().astype(int)


def table1_uncertainty(preds, kinds, *, n_resamples=1000, n_permutations=10000, random_state=0):
    """Intervals per row and paired comparisons for Table 1.

    Parameters
    ----------
    preds : DataFrame
        :func:`held_out_predictions`.
    kinds : dict
        Row name -> ``"deep"``, ``"classical"`` or ``"covariates"``, in the table's order.
    n_resamples, n_permutations : int
    random_state : int

    Returns
    -------
    rows : DataFrame
        ``model``, then per split ``<split>_ba``, ``<split>_ci_low``, ``<split>_ci_high`` (%) and
        ``<split>_n`` (participants).
    comparisons : DataFrame
        ``split``, ``model``, ``against``, ``difference``, ``ci_low``, ``ci_high`` (points),
        ``p``, ``p_holm`` (Holm over the comparisons of the split), ``n_comparisons``, ``n``.
    """
    from ..evaluation import balanced_accuracy_interval, holm_adjust, paired_balanced_accuracy_test

    rng = np.random.RandomState(random_state)
    rows = []
    for model in kinds:
        row = {"model": model}
        for split in ("validation", "holdout"):
            m = _matrix(preds, model, split)
            if m is None:
                continue
            res = balanced_accuracy_interval(m[1], m[2], n_resamples=n_resamples, random_state=rng)
            row.update({f"{split}_ba": 100 * res.score, f"{split}_ci_low": 100 * res.ci_low,
                        f"{split}_ci_high": 100 * res.ci_high, f"{split}_n": res.n})
        rows.append(row)
    rows = pd.DataFrame(rows)
    comps = []
    if "validation_ba" in rows:
        scored = rows.dropna(subset=["validation_ba"]).set_index("model")
        classical = [m for m in scored.index if kinds.get(m) == "classical"]
        best_classical = scored.loc[classical, "validation_ba"].idxmax() if classical else None
        deep = [m for m in scored.index if kinds.get(m) == "deep"]
        pairs = [(m, ref) for ref in (best_classical, HV_LOGISTIC) if ref in scored.index
                 for m in deep if m != ref]
        if HV_LOGISTIC in scored.index:  # polygenic-score rows: against h_v alone
            pairs += [(m, HV_LOGISTIC) for m in scored.index if kinds.get(m) == "pgs"]
        for split in ("validation", "holdout"):
            block = []
            for model, ref in pairs:
                a, b = _matrix(preds, model, split), _matrix(preds, ref, split)
                if a is None or b is None:
                    continue
                common = a[0].intersection(b[0])
                if split == "holdout" and a[2].shape[1] != b[2].shape[1]:
                    continue
                ia, ib = a[0].get_indexer(common), b[0].get_indexer(common)
                res = paired_balanced_accuracy_test(a[1][ia], a[2][ia], b[2][ib], n_resamples=n_resamples,
                                                    n_permutations=n_permutations, random_state=rng)
                block.append({"split": split, "model": model, "against": ref,
                              "against_role": "best classical row" if ref == best_classical else "h_v alone",
                              "difference": 100 * res.difference, "ci_low": 100 * res.ci_low,
                              "ci_high": 100 * res.ci_high, "p": res.pvalue, "n": res.n})
            if block:
                p_holm = holm_adjust([c["p"] for c in block])
                for c, ph in zip(block, p_holm):
                    c.update(p_holm=float(ph), n_comparisons=len(block))
                comps += block
    cols = ["split", "model", "against", "against_role", "difference", "ci_low", "ci_high", "p", "p_holm",
            "n_comparisons", "n"]
    return rows, pd.DataFrame(comps, columns=cols)


def verdict(c):
    """A comparison (a row of :func:`table1_uncertainty`'s ``comparisons``) in words.

    A difference is called detectable only when its 95 % interval excludes 0 and its
    Holm-adjusted p is below :data:`ALPHA`; otherwise "no detectable difference".

    Examples
    --------
    >>> verdict({"difference": 1.84, "ci_low": -5.1, "ci_high": 8.8, "p": 0.62, "p_holm": 1.0, "n_comparisons": 4})
    'no detectable difference (+1.84 points, 95 % CI [-5.10, 8.80], p = 0.62, Holm-adjusted over 4 comparisons: 1)'
    >>> verdict({"difference": 9.0, "ci_low": 4.0, "ci_high": 14.0, "p": 0.0004, "p_holm": 0.0016,
    ...          "n_comparisons": 4})
    '9.00 points better (95 % CI [4.00, 14.00], p = 0.0004, Holm-adjusted over 4 comparisons: 0.0016)'
    """
    d, lo, hi = c["difference"], c["ci_low"], c["ci_high"]
    n = c.get("n_comparisons") or 1
    p = f"p = {c['p']:.2g}" + (f", Holm-adjusted over {n} comparisons: {c['p_holm']:.2g}" if n > 1 else "")
    real = (lo > 0 or hi < 0) and c.get("p_holm", c["p"]) < ALPHA
    if not real:
        return f"no detectable difference ({d:+.2f} points, 95 % CI [{lo:.2f}, {hi:.2f}], {p})"
    return f"{abs(d):.2f} points {'better' if d > 0 else 'worse'} (95 % CI [{lo:.2f}, {hi:.2f}], {p})"
