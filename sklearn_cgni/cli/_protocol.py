"""The CGNI paper's evaluation protocol (Tables 1 and 2), reusable outside the command line.

Suresh et al., section II.G: a stratified 90 % / 10 % split into a training part and a
holdout; stratified 5-fold cross-validation on the training part; each model fitted on a
fold's training part and scored (balanced accuracy) on that training part, on the fold's
validation part and on the common holdout; mean ± sd over the folds.

The models of Table 1 and the 14 loss-term combinations of Table 2 take one array
``[h_v ⊕ SNPs]`` whose first ``n_image_features`` columns are the stage-1 CNN features.
The classical rows of Table 1 (:func:`classical_models`, not in the paper) take
``[regional gray-matter means ⊕ SNPs]`` instead. ``benchmarks/bench_table1.py`` and
``sklearn-cgni run`` share these definitions.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from ..utils._linear import l2_logistic_cv

__all__ = [
    "BASELINE_KEYS",
    "CLASSICAL_MODELS",
    "COMBOS",
    "CONFOUND_MODELS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "TABLE1_CGNI",
    "TERM_WEIGHTS",
    "classical_models",
    "combo_params",
    "paper_models",
    "paper_splits",
    "score_model",
    "search_grid",
    "summarize_scores",
    "table_markdown",
    "tuned",
]

_MLP = ("lr", "max_epochs", "batch_size", "early_stopping", "validation_fraction", "n_iter_no_change")
#: The config's ``[baselines]`` keys of each baseline estimator, ``(module, class, {key: parameter})``:
#: :func:`paper_models` builds the baselines from them, and ``_config.ESTIMATOR_KEYS`` validates them.
BASELINE_KEYS = (
    ("sklearn_cgni.classification", "SparseGeneticNN",
     {"sparse_hidden": "hidden_layer_sizes", "sparse_l1": "l1", "sparse_weight_decay": "weight_decay",
      **{k: k for k in _MLP}}),
    ("sklearn_cgni.classification", "ImagingGeneticNN", {"ig_hidden": "hidden_layer_sizes", **{k: k for k in _MLP}}),
    ("sklearn_cgni.classification", "ImagingGeneticSVM", {"svm_C": "C"}),
)

PAPER_TABLE1 = {
    "Imaging CNN": ("81.34 ± 2.34", "75.32 ± 0.49", "87.02 ± 1.31"),
    "Sparse Genetic NN": ("59.80 ± 0.42", "59.35 ± 0.45", "59.28 ± 0.57"),
    "Imaging-Genetic SVM (linear)": ("95.5 ± 2.59", "65.08 ± 1.56", "65.23 ± 2.38"),
    "Imaging-Genetic NN (non-linear)": ("87.47 ± 0.45", "87.08 ± 0.80", "87.02 ± 0.67"),
    "CGNI contrastive (terms 1+2+4)": ("91.37 ± 0.30", "90.39 ± 0.11", "88.91 ± 0.66"),
}
TABLE1_CGNI = "CGNI contrastive (terms 1+2+4)"
#: Table 1 rows the command line adds to the paper's: the CNN features alone -> logistic regression,
#: and CGNI on regional means (``contrastive.regional_row``)
HV_LOGISTIC = "CNN features h_v -> logistic"
REGIONAL_CGNI = "CGNI on regional GM means"
#: Table 1 rows with polygenic scores (``data.pgs``): the scores alone and beside h_v into the classical
#: logistic regression, and CGNI with the scores beside z_g in stage 3; each compared with h_v alone
PGS_LOGISTIC = "PGS -> logistic"
HV_PGS_LOGISTIC = "h_v + PGS -> logistic"
#: ... and the two stacked as the classical "regional GM + SNPs (stacked)" row is: a final logistic regression on
#: the out-of-fold probabilities of h_v -> logistic and PGS -> logistic, so the score is not one column among
#: hundreds under one L2 penalty
HV_PGS_STACKED = "h_v + PGS (stacked)"
PGS_CGNI = "CGNI with the PGS beside z_g"
PGS_MODELS = (PGS_LOGISTIC, HV_PGS_LOGISTIC, HV_PGS_STACKED, PGS_CGNI)
#: ... and CGNI whose contrastive loss also fine-tunes the CNN's last blocks (``contrastive.finetune_blocks``)
FINETUNED_CGNI = "CGNI fine-tuning the last CNN blocks"
PAPER_TABLE2 = {
    "L1": ("89.96 ± 0.80", "88.55 ± 1.10", "88.31 ± 0.31"),
    "L2": ("89.81 ± 0.95", "87.97 ± 0.91", "87.51 ± 0.20"),
    "L3": ("88.99 ± 0.74", "87.45 ± 1.60", "86.80 ± 0.34"),
    "L4": ("90.03 ± 0.87", "88.04 ± 0.76", "88.1 ± 0.41"),
    "L1+L2": ("88.98 ± 1.13", "88.03 ± 1.26", "87.76 ± 0.94"),
    "L1+L3": ("90.09 ± 1.1", "88.14 ± 0.98", "88.19 ± 0.67"),
    "L1+L4": ("89.75 ± 1.21", "89.33 ± 0.11", "88.01 ± 0.08"),
    "L2+L3": ("90.45 ± 0.37", "87.89 ± 0.87", "89.66 ± 0.31"),
    "L2+L4": ("90.49 ± 0.84", "88.27 ± 1.31", "88.07 ± 0.83"),
    "L3+L4": ("88.95 ± 1.71", "87.96 ± 0.86", "87.74 ± 0.43"),
    "L1+L2+L3": ("89.60 ± 0.98", "88.22 ± 1.03", "88.18 ± 0.34"),
    "L2+L3+L4": ("90.00 ± 1.09", "88.14 ± 1.01", "87.79 ± 0.33"),
    "L1+L2+L4": ("91.37 ± 0.30", "90.39 ± 0.11", "88.91 ± 0.66"),
    "L1+L2+L3+L4": ("89.81 ± 0.73", "88.38 ± 0.99", "88.61 ± 0.56"),
}
# weight of each term when included (paper: lambda .7, sigma .3, theta .4; gamma not reported)
TERM_WEIGHTS = {"L1": ("lambda_vg", 0.7), "L2": ("sigma_gv", 0.3), "L3": ("gamma_vv", 0.4),
                "L4": ("theta_gg", 0.4)}
# Table 1's classical rows (not in the paper): linear models on regional means and SNPs
CLASSICAL_MODELS = ("classical: regional GM -> logistic", "classical: SNPs -> logistic",
                    "classical: regional GM + SNPs (stacked)")
# what `confounds.models` may list: short names of the deep rows, then the classical rows
CONFOUND_MODELS = ("Imaging CNN", "Brain-age CNN features", "CGNI", "Imaging-Genetic NN", "Imaging-Genetic SVM",
                   "Sparse Genetic NN", *CLASSICAL_MODELS)
COMBOS = list(PAPER_TABLE2)  # the 15 non-empty subsets minus L1+L3+L4, absent in the paper
SPLITS = ("train", "validation", "holdout")


def combo_params(combo, weights=None):
    """Loss weights of a Table-2 combination, e.g. ``"L1+L4"`` -> lambda 0.7, theta 0.4, others 0.

    ``weights`` maps a term's parameter name to the weight it takes when included; a term
    missing from it, or whose weight there is 0 (switched off, as ``gamma_vv`` is in the
    paper's Table 1 model), takes the paper's weight, :data:`TERM_WEIGHTS`.

    Examples
    --------
    >>> from sklearn_cgni.cli import combo_params
    >>> combo_params("L1+L3", {"lambda_vg": 0.5, "gamma_vv": 0.0})
    {'lambda_vg': 0.5, 'sigma_gv': 0.0, 'gamma_vv': 0.4, 'theta_gg': 0.0}
    """
    weights = {name: (weights or {}).get(name) or paper for name, paper in TERM_WEIGHTS.values()}
    params = {name: 0.0 for name, _ in TERM_WEIGHTS.values()}
    for term in combo.split("+"):
        if term not in TERM_WEIGHTS:
            raise ValueError(f"Unknown loss term {term!r} in {combo!r}; terms are {list(TERM_WEIGHTS)}.")
        name = TERM_WEIGHTS[term][0]
        params[name] = weights[name]
    return params


def paper_splits(y, *, holdout=0.1, folds=5, random_state=0):
    """Stratified holdout and stratified K folds on the rest.

    Returns
    -------
    train : ndarray of int
        Positions (into ``y``) of the training part.
    holdout : ndarray of int
        Positions of the holdout.
    cv : list of (ndarray, ndarray)
        Per fold, positions *into y* of the fold's training and validation participants.
    """
    y = np.asarray(y)
    idx = np.arange(len(y))
    train, hold = train_test_split(idx, test_size=holdout, stratify=y, random_state=random_state)
    train, hold = np.sort(train), np.sort(hold)
    skf = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    cv = [(train[tr], train[va]) for tr, va in skf.split(train, y[train])]
    return train, hold, cv


def _snp_columns(n_image_features):
    return ColumnTransformer([("snp", "passthrough", slice(n_image_features, None))])


def paper_models(n_image_features, *, contrastive=None, classifier=None, baselines=None,
                 class_weight="balanced", device="auto", random_state=0, table2=False,
                 term_weights=None, cross_fit=0):
    """The models of Table 1 (and optionally Table 2) on ``[h_v ⊕ SNPs]`` arrays.

    Parameters
    ----------
    n_image_features : int
        Width of ``h_v`` (the first columns of X).
    contrastive, classifier : dict, optional
        Keyword arguments of :class:`~sklearn_cgni.genetics.ContrastiveSNPEncoder` and
        :class:`~sklearn_cgni.classification.CGNIClassifier`.
    baselines : dict, optional
        Keys of the config's ``[baselines]`` section: ``sparse_hidden``, ``sparse_l1``,
        ``sparse_weight_decay``, ``ig_hidden``, ``svm_C``, ``lr``, ``max_epochs``,
        ``batch_size``, given to the estimators as :data:`BASELINE_KEYS` maps them; a key left
        out takes the estimator's default.
    class_weight : "balanced" or None
        For every classifier (the WM groups are ~36/64 %, the metric is balanced accuracy).
    table2 : bool, default=False
        Add one CGNI pipeline per loss-term combination (names ``"L1"``, ``"L1+L2"``...).
    cross_fit : int, default=0
        ``k >= 2``: CGNI's stage 3 learns on out-of-fold ``z_g`` (the encoder wrapped in
        :class:`~sklearn_cgni.evaluation.CrossFitTransformer` with ``k`` stratified folds), so
        it never trains on embeddings of participants the encoder was fitted on. 0: the
        paper's single encoder fit.

    Returns
    -------
    models : dict of (table, name) -> estimator
        The "Imaging CNN" row is not here: it is the fine-tuned stage-1 CNN itself.
    """
    from ..classification import CGNIClassifier, ImagingGeneticNN, ImagingGeneticSVM, SparseGeneticNN
    from ..genetics import ContrastiveSNPEncoder

    k = int(n_image_features)
    contrastive = dict(contrastive or {})
    classifier = dict(classifier or {})
    b = dict(baselines or {})
    unknown = set(b) - {key for _, _, keys in BASELINE_KEYS for key in keys}
    if unknown:
        raise ValueError(f"paper_models: unknown baselines key(s) {sorted(unknown)}.")
    given = {name: {param: tuple(b[key]) if isinstance(b[key], list) else b[key]
                    for key, param in keys.items() if key in b}
             for _, name, keys in BASELINE_KEYS}
    common = dict(device=device, random_state=random_state)

    def sparse():
        return SparseGeneticNN(**given["SparseGeneticNN"], class_weight=class_weight, **common)

    def cgni(**weights):
        enc_kw = {**contrastive, **weights}
        encoder = ContrastiveSNPEncoder(image_features=k, **enc_kw, **common)
        if cross_fit:
            from sklearn.model_selection import StratifiedKFold

            from ..evaluation import CrossFitTransformer

            encoder = CrossFitTransformer(encoder, cv=StratifiedKFold(int(cross_fit), shuffle=True,
                                                                       random_state=random_state))
        return Pipeline([
            ("contrastive", encoder),
            ("classifier", CGNIClassifier(class_weight=class_weight, **classifier, **common)),
        ])

    models = {
        ("Table 1", "Sparse Genetic NN"): Pipeline([("snps", _snp_columns(k)), ("model", sparse())]),
        ("Table 1", "Imaging-Genetic SVM (linear)"): ImagingGeneticSVM(
            image_features=k, genetic_encoder=sparse(), **given["ImagingGeneticSVM"], class_weight=class_weight,
            random_state=random_state),
        ("Table 1", "Imaging-Genetic NN (non-linear)"): ImagingGeneticNN(
            image_features=k, genetic_encoder=sparse(), **given["ImagingGeneticNN"], class_weight=class_weight,
            **common),
        ("Table 1", TABLE1_CGNI): cgni(),
    }
    if table2:
        for combo in COMBOS:
            models[("Table 2", combo)] = cgni(**combo_params(combo, term_weights))
    return models


def search_grid(model, grid, *, combo=None):
    """A configuration-style grid as the parameter grid of a CGNI pipeline.

    Parameters
    ----------
    model : Pipeline
        A CGNI pipeline of :func:`paper_models` (steps ``contrastive`` and ``classifier``).
    grid : dict of str -> list
        ``{"contrastive.temperature": [0.1, 0.5], "classifier.dropout": [0.0, 0.3]}``: keys
        ``"<step>.<parameter>"``, values the candidates (lists become tuples: layer sizes).
    combo : str, optional
        A Table-2 combination such as ``"L1+L4"``: the weights of the loss terms it leaves
        out stay 0, so their grid entries are dropped.

    Returns
    -------
    param_grid : dict
        For :class:`~sklearn.model_selection.GridSearchCV`: ``contrastive__temperature``, or
        ``contrastive__transformer__temperature`` when the encoder is cross-fitted.

    Examples
    --------
    >>> from sklearn_cgni.cli import paper_models, search_grid
    >>> cgni = paper_models(8, cross_fit=3)[("Table 1", "CGNI contrastive (terms 1+2+4)")]
    >>> search_grid(cgni, {"contrastive.temperature": [0.1, 0.5], "contrastive.genetic_hidden": [[], [64]]})
    {'contrastive__transformer__temperature': [0.1, 0.5], 'contrastive__transformer__genetic_hidden': [(), (64,)]}
    """
    from ..evaluation import CrossFitTransformer

    params = model.get_params()
    left_out = set() if combo is None else {name for name, value in combo_params(combo).items() if value == 0}
    out = {}
    for key, values in grid.items():
        section, _, name = key.partition(".")
        if section not in ("contrastive", "classifier") or not name:
            raise ValueError(f"search.grid: {key!r} must be 'contrastive.<parameter>' or "
                             "'classifier.<parameter>'.")
        if name in left_out:
            continue
        step = model.named_steps[section]
        path = f"{section}__transformer__{name}" if isinstance(step, CrossFitTransformer) else f"{section}__{name}"
        if path not in params:
            inner = getattr(step, "transformer", step)
            raise ValueError(f"search.grid: {key!r} is not a parameter of {type(inner).__name__}.")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"search.grid: {key!r} must list at least one candidate value; got {values!r}.")
        out[path] = [tuple(v) if isinstance(v, list) else v for v in values]
    return out


def tuned(model, grid, *, inner_cv=1, validation_fraction=0.2, combo=None, random_state=0):
    """A CGNI pipeline tuned by an inner search on the rows it is fitted on.

    The search sees only the training rows given to ``fit`` (in the protocol: one outer
    fold's training part), so the outer validation fold and the holdout stay unseen. The
    inputs (``[h_v ⊕ SNPs]``) are computed once; every candidate trains stages 2-3 only.

    Parameters
    ----------
    model : Pipeline
        A CGNI pipeline of :func:`paper_models`.
    grid : dict of str -> list
        See :func:`search_grid`.
    inner_cv : int, default=1
        1: one stratified split holding out ``validation_fraction`` of the rows (each
        candidate costs one fit); ``k >= 2``: stratified k-fold (k fits per candidate).
    validation_fraction : float, default=0.2
        Share of the rows held out when ``inner_cv=1``.
    combo : str, optional
        Table-2 combination (see :func:`search_grid`).
    random_state : int, default=0
        Seed of the inner split(s).

    Returns
    -------
    search : GridSearchCV
        Scored by balanced accuracy and refitted on all rows with the best candidate
        (``best_params_``, ``cv_results_``).
    """
    from sklearn.model_selection import GridSearchCV, StratifiedShuffleSplit

    if isinstance(inner_cv, bool) or not isinstance(inner_cv, Integral) or inner_cv < 1:
        raise ValueError(f"tuned: inner_cv must be an integer >= 1; got {inner_cv!r}.")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"tuned: validation_fraction must be in (0, 1); got {validation_fraction!r}.")
    cv = (StratifiedShuffleSplit(1, test_size=validation_fraction, random_state=random_state) if inner_cv == 1
          else StratifiedKFold(int(inner_cv), shuffle=True, random_state=random_state))
    return GridSearchCV(model, search_grid(model, grid, combo=combo), scoring="balanced_accuracy", cv=cv,
                        refit=True, error_score="raise")


def classical_models(n_regions, *, cv=5, Cs=10, class_weight="balanced", random_state=0):
    """The classical rows of Table 1 on ``[regional means ⊕ SNPs]`` arrays.

    Linear models on atlas-region gray-matter means are as accurate as deep models on brain
    scans at UK Biobank sample sizes (Schulz et al. 2020, Nat Commun 11:4238); a deep row
    has shown something only when it beats them on the same folds.

    Parameters
    ----------
    n_regions : int
        Number of regional gray-matter means (the first columns of X); the other columns
        are SNPs.
    cv : int, default=5
        Inner stratified folds (shuffled with ``random_state``) on the training rows: they
        choose each logistic regression's C and give the stacked model its out-of-fold
        probabilities.
    Cs : int, default=10
        Number of values of C tried (log-spaced from 1e-4 to 1e4, as
        :class:`~sklearn.linear_model.LogisticRegressionCV` does).
    class_weight : "balanced" or None, default="balanced"
        For every logistic regression (the metric is balanced accuracy).
    random_state : int, default=0
        Seed of the inner folds.

    Returns
    -------
    models : dict of str -> estimator
        :data:`CLASSICAL_MODELS` in order: regional means -> StandardScaler ->
        LogisticRegressionCV; SNPs -> the same; both stacked: a
        :class:`~sklearn.ensemble.StackingClassifier` whose final logistic regression
        takes the two models' out-of-fold probabilities of the high group (inner ``cv``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cgni.cli import classical_models
    >>> rng = np.random.default_rng(0)
    >>> y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    >>> X = np.hstack([rng.normal(size=(80, 5)) + y[:, None], rng.integers(0, 3, size=(80, 20))])
    >>> models = classical_models(5, cv=3)
    >>> list(models)
    ['classical: regional GM -> logistic', 'classical: SNPs -> logistic', 'classical: regional GM + SNPs (stacked)']
    >>> bool(models["classical: regional GM -> logistic"].fit(X, y).score(X, y) > 0.8)
    True
    """
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    for name, value, low in (("n_regions", n_regions, 1), ("cv", cv, 2), ("Cs", Cs, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"classical_models: {name} must be an integer >= {low}; got {value!r}.")
    if class_weight not in ("balanced", None):
        raise ValueError(f"classical_models: class_weight must be 'balanced' or None; got {class_weight!r}.")
    inner = StratifiedKFold(int(cv), shuffle=True, random_state=random_state)

    def logistic(block, columns):
        return Pipeline([
            (block, ColumnTransformer([(block, "passthrough", columns)])),
            ("scale", StandardScaler()),
            ("logistic", l2_logistic_cv(Cs=Cs, cv=inner, class_weight=class_weight)),
        ])

    regions, snps = slice(0, int(n_regions)), slice(int(n_regions), None)
    names = dict(zip(("regions", "snps", "stacked"), CLASSICAL_MODELS))
    return {
        names["regions"]: logistic("regions", regions),
        names["snps"]: logistic("snps", snps),
        names["stacked"]: StackingClassifier(
            [("regions", logistic("regions", regions)), ("snps", logistic("snps", snps))],
            final_estimator=LogisticRegression(class_weight=class_weight), cv=inner,
            stack_method="predict_proba", passthrough=False),
    }


def score_model(predict, splits, *, table, model, fold):
    """Balanced accuracy of ``predict(X)`` on named ``splits`` (``{name: (X, y)}``) as records."""
    return [dict(table=table, model=model, fold=fold, split=name,
                 balanced_accuracy=float(balanced_accuracy_score(y, predict(X))))
            for name, (X, y) in splits.items()]


def summarize_scores(records):
    """Per table, model and split: mean and sd (over folds) of the balanced accuracy, in %."""
    df = pd.DataFrame(records)
    return (df.groupby(["table", "model", "split"], sort=False)["balanced_accuracy"]
            .agg(["mean", "std"]).mul(100).reset_index())


def summarise_scores(records):
    """Deprecated spelling of :func:`summarize_scores` (a FutureWarning); it will be removed."""
    import warnings

    warnings.warn("summarise_scores is deprecated and will be removed; use summarize_scores.", FutureWarning,
                  stacklevel=2)
    return summarize_scores(records)


def _fmt(summary, table, model, split):
    r = summary[(summary.table == table) & (summary.model == model) & (summary.split == split)]
    if not len(r):
        return "n/a"
    sd = r["std"].iloc[0]
    return f"{r['mean'].iloc[0]:.2f} ± {0.0 if np.isnan(sd) else sd:.2f}"


def table_markdown(summary, table="Table 1", paper=None, *, label="model"):
    """A markdown table ``model | train | validation | holdout`` with paper values in brackets."""
    paper = (PAPER_TABLE1 if table == "Table 1" else PAPER_TABLE2) if paper is None else paper
    models = list(dict.fromkeys(summary.loc[summary.table == table, "model"]))
    order = [m for m in paper if m in models] + [m for m in models if m not in paper]
    lines = [f"| {label} | train | validation | holdout |", "|---|---|---|---|"]
    for name in order:
        ours = [_fmt(summary, table, name, s) for s in SPLITS]
        ref = paper.get(name)
        cells = [f"{o} [{p}]" for o, p in zip(ours, ref)] if ref else ours
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
