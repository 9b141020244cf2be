"""Configuration of ``sklearn-cgni run``: TOML files, presets and overrides, strictly checked.

The shipped ``default_config.toml`` lists every key with the reference paper's value; it is
the schema. A user file, a preset (``preset_<name>.toml`` next to this module) and
``--set section.key=value`` overrides are merged on top of it in that order:
``defaults < preset < user file < --set / named flags``. A key that is not in the defaults
is refused with the nearest valid key (``difflib``); a value whose type differs from the
default's is refused naming the key.

The sections that configure estimators map their keys onto the estimators' parameters
(:data:`ESTIMATOR_KEYS`, the one place where a config key is tied to a parameter). Loading a
config runs those estimators' own parameter validation on the merged values, so a value an
estimator would refuse (``stage1.lr = -1``, ``contrastive.temperature = 0``) is refused
before any stage runs, naming the key and the estimator's constraint. The keys that are the
command line's own (protocol, budgets, stage switches) are range-checked here.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import tomllib
from pathlib import Path

from ._protocol import BASELINE_KEYS, CONFOUND_MODELS

__all__ = [
    "ConfigError",
    "ESTIMATOR_KEYS",
    "PRESETS",
    "EXECUTION_KEYS",
    "OWN_STAGE_KEYS",
    "config_fingerprint",
    "default_config",
    "dotted_keys",
    "load_config",
    "parse_override",
]

_HERE = Path(__file__).parent
DEFAULT_CONFIG = _HERE / "default_config.toml"
PRESETS = ("paper", "cpu", "tiny")
# keys that choose *how* to compute, not *what*: changing them never invalidates outputs
EXECUTION_KEYS = frozenset({"run.device", "run.threads", "run.scheduler", "data.genotype_block_mb"})
# keys that one stage alone reads: that stage names them ("section.key") and the other readers of the section leave
# them out of their fingerprints, so that changing them recomputes that stage and what reads its outputs, no more
# (adding a polygenic score to a finished run scores it and refits the models, without retraining a CNN)
OWN_STAGE_KEYS = frozenset({"data.pgs", "data.pgs_keep_ambiguous", "data.pgs_min_coverage", "stage1.image_cache"})


class ConfigError(ValueError):
    """A configuration file or override that cannot be used (unknown key, wrong type...)."""


_SHARED_CNN = ("dropout", "batch_size", "lr", "weight_decay", "num_workers",
               "min_epochs", "warmup_epochs", "budget_growth", "max_restarts")  # the training recipe too
_STAGE1_CNN = (*_SHARED_CNN, "channels", "padding", "pool_blocks", "global_pool", "early_stopping",
               "validation_fraction", "n_iter_no_change", "lr_schedule", "standardize_voxels", "augment_shift")

#: Per config section, the estimators it configures: ``(module, class, {config key: parameter})``.
#: A key may configure several estimators (``stage1.lr`` sets every CNN's learning rate);
#: keys of a section not listed here are the command line's own.
ESTIMATOR_KEYS = {
    "qc": (("sklearn_cgni.genetics", "SNPQualityFilter",
            {k: k for k in ("min_info_r2", "max_missing", "min_maf", "min_hwe_p")}),),
    "stage1": (
        ("sklearn_cgni.imaging", "BrainAgeCNNTransformer",
         {**{k: k for k in _STAGE1_CNN}, "pretrain_max_epochs": "max_epochs"}),
        ("sklearn_cgni.imaging", "ImagingCNNClassifier",
         {**{k: k for k in _STAGE1_CNN}, "finetune_max_epochs": "max_epochs", "finetune_scoring": "scoring", "refit_head": "refit_head",
          "n_transfer_blocks": "n_transfer_blocks", "freeze_transferred": "freeze_transferred"}),
        # the genotype-score CNN shares stage 1's training settings (the [scores] section sets the rest)
        ("sklearn_cgni.imaging", "BrainGenotypeScorer", {k: k for k in _SHARED_CNN}),
    ),
    "contrastive": (("sklearn_cgni.genetics", "ContrastiveSNPEncoder",
                     {k: k for k in ("n_components", "image_hidden", "genetic_hidden", "lambda_vg", "sigma_gv",
                                     "gamma_vv", "theta_gg", "temperature", "denominator", "reduction",
                                     "batch_size", "lr", "weight_decay", "dropout", "snp_dropout", "standardize", "max_epochs",
                                     "early_stopping", "scoring", "validation_fraction", "n_iter_no_change")}),),
    "classifier": (("sklearn_cgni.classification", "CGNIClassifier",
                    {k: k for k in ("hidden_layer_sizes", "dropout", "lr", "weight_decay", "max_epochs",
                                    "batch_size", "early_stopping", "validation_fraction", "n_iter_no_change")}),),
    "baselines": BASELINE_KEYS,  # the protocol's models read them (paper_models)
    "scca": (("sklearn_cgni.explain", "SparseCCA",
              {k: k for k in ("n_components", "alpha_x", "alpha_y", "cv", "n_permutations")}),),
    "occlusion": (("sklearn_cgni.explain", "OcclusionExplainer",
                   {k: k for k in ("region_threshold", "snp_threshold", "batch_size")}),),
    "scores": (
        ("sklearn_cgni.imaging", "BrainGenotypeScorer",
         {k: k for k in ("task", "max_epochs", "early_stopping", "lr_schedule", "validation_fraction",
                         "n_iter_no_change", "n_transfer_blocks")}),
        ("sklearn_cgni.imaging", "IDPGenotypeScorer", {"idp_alpha": "alpha"}),
    ),
}


def estimator_params(config, section, estimator):
    """The parameters that ``config[section]`` gives ``estimator`` (a class name), by :data:`ESTIMATOR_KEYS`.

    List values become tuples (TOML has no tuples).
    """
    for _, name, keys in ESTIMATOR_KEYS[section]:
        if name == estimator:
            return {param: tuple(v) if isinstance(v := config[section][key], list) else v
                    for key, param in keys.items()}
    raise KeyError(f"[{section}] configures no {estimator}.")


def _broken_constraint(cls, param, value):
    """The rule of ``cls._parameter_constraints[param]`` that ``value`` breaks (text), or None."""
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    try:
        validate_parameter_constraints({param: cls._parameter_constraints[param]}, {param: value},
                                       caller_name=cls.__name__)
    except InvalidParameterError as exc:
        return str(exc).split(" must be ", 1)[-1].rsplit(". Got ", 1)[0]
    return None


def _check_estimators(config):
    """Run each configured estimator's parameter validation on its config values.

    The constraints (``_parameter_constraints``) are checked one parameter at a time so
    the error names the key; then the estimator's further checks (``_check_params``, e.g.
    layer widths >= 1), which also run in its ``fit``.
    """
    import importlib

    for section, estimators in ESTIMATOR_KEYS.items():
        for module, name, keys in estimators:
            cls = getattr(importlib.import_module(module), name)
            params = estimator_params(config, section, name)
            for key, param in keys.items():
                rule = _broken_constraint(cls, param, params[param])
                if rule:
                    raise ConfigError(f"{section}.{key} = {config[section][key]!r} is refused: {name}'s "
                                      f"{param} must be {rule}.")
            if not hasattr(cls, "_check_params"):
                continue
            est = cls(**params)  # the estimators with further checks need no argument
            try:
                est._check_params()
            except ValueError as exc:
                named = [key for key, param in keys.items() if f"{param} must" in str(exc)]
                where = f"{section}.{named[0]} = {config[section][named[0]]!r}" if named else f"[{section}]"
                raise ConfigError(f"{where} is refused: {exc}") from None


def _read_toml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}") from exc


def default_config():
    """The shipped defaults (the paper's values) as a nested dict."""
    return _read_toml(DEFAULT_CONFIG)


def dotted_keys(config):
    """``["run.seed", "run.device", ...]`` for a nested config."""
    return [f"{section}.{key}" for section, values in config.items() for key in values]


def _nearest(name, candidates):
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if not match:  # compare the last part alone (a key put in the wrong section)
        tail = name.rsplit(".", 1)[-1]
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.6)
        match = [tails[close[0]]] if close else []
    return match[0] if match else None


def _unknown(name, candidates, source):
    near = _nearest(name, candidates)
    hint = f"; did you mean {near!r}?" if near else f". Valid keys: {', '.join(candidates)}"
    return ConfigError(f"Unknown config key {name!r} in {source}{hint}")


#: Keys whose number may also be one of these words (the estimator parameter accepts both).
WORD_VALUES = {"stage1.pool_blocks": ("auto",)}


def _check_value(key, value, default, source):
    """The value's type must be the default's (int accepted for float, lists element-wise).

    The words of :data:`WORD_VALUES` are accepted too for their keys.
    """
    words = WORD_VALUES.get(key, ())
    if isinstance(value, str) and value in words:
        return value
    if isinstance(default, str) and default in words:  # a layer below set the word: a number is fine too
        default = 0

    def kind(v):
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        if isinstance(v, str):
            return "str"
        if isinstance(v, list):
            return "list"
        return type(v).__name__

    if kind(value) != kind(default):
        raise ConfigError(
            f"Config key {key!r} in {source} must be a {kind(default)} like the default "
            f"{default!r}; got {value!r}."
        )
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"Config key {key!r} in {source} must be an integer; got {value!r}.")
        value = int(value)
    if isinstance(default, list) and default and value:
        items = []
        for item in value:
            if kind(item) != kind(default[0]):
                raise ConfigError(
                    f"Config key {key!r} in {source} must be a list of {kind(default[0])}s like the "
                    f"default {default!r}; got {value!r}."
                )
            items.append(_check_value(key, item, default[0], source))
        value = items
    return value


def merge(base, overlay, source):
    """Copy of ``base`` with ``overlay`` applied; unknown sections/keys raise ConfigError."""
    out = copy.deepcopy(base)
    candidates = dotted_keys(base)
    for section, values in overlay.items():
        if section not in base:
            raise _unknown(section if not isinstance(values, dict) else
                           f"{section}.{next(iter(values), '')}".rstrip("."), candidates, source)
        if not isinstance(values, dict):
            raise ConfigError(f"{section!r} in {source} must be a [section] of keys; got {values!r}.")
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in base[section]:
                raise _unknown(name, candidates, source)
            out[section][key] = _check_value(name, value, base[section][key], source)
    return out


def parse_override(text):
    """``"section.key=value"`` -> ``{"section": {"key": value}}``; the value is read as TOML
    (``5``, ``0.7``, ``true``, ``[1, 2]``, ``"cpu"``), or taken as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value; got {text!r}.")
    name, raw = (part.strip() for part in text.split("=", 1))
    if "." not in name:
        raise ConfigError(f"--set expects section.key=value (e.g. contrastive.max_epochs=20); got {text!r}.")
    section, key = name.split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return {section: {key: value}}


def load_config(path=None, *, preset="paper", overrides=()):
    """Merge defaults, a preset, a user TOML file and overrides into a checked config.

    Parameters
    ----------
    path : path-like, optional
        User TOML file (only the keys to change).
    preset : {"paper", "cpu", "tiny"}, default="paper"
        ``"paper"``: the defaults as they are; ``"cpu"``/``"tiny"``: overlay
        ``preset_cpu.toml`` / ``preset_tiny.toml`` (a smoke test in about a minute).
    overrides : sequence of str or dict
        ``"section.key=value"`` strings or nested dicts, applied last, in order.

    Returns
    -------
    config : dict
        Nested dict with every key of the defaults.
    """
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}; choose one of {list(PRESETS)}.")
    config = default_config()
    if preset != "paper":
        config = merge(config, _read_toml(_HERE / f"preset_{preset}.toml"), f"preset {preset!r}")
    if path is not None:
        config = merge(config, _read_toml(path), repr(str(path)))
    for item in overrides:
        item = parse_override(item) if isinstance(item, str) else item
        config = merge(config, item, "the command-line overrides")
    _check_semantics(config)
    _check_estimators(config)
    return config


def _check_semantics(config):
    p = config["protocol"]
    if not 0 < p["holdout"] < 1:
        raise ConfigError(f"protocol.holdout must be in (0, 1); got {p['holdout']!r}.")
    if p["folds"] < 2:
        raise ConfigError(f"protocol.folds must be at least 2; got {p['folds']!r}.")
    if p["class_weight"] not in ("balanced", "none"):
        raise ConfigError(f"protocol.class_weight must be 'balanced' or 'none'; got {p['class_weight']!r}.")
    if config["classifier"]["cross_fit"] == 1 or config["classifier"]["cross_fit"] < 0:
        raise ConfigError(f"classifier.cross_fit must be 0 (off) or a number of folds >= 2; "
                          f"got {config['classifier']['cross_fit']!r}.")
    s1 = config["stage1"]  # single values are checked by the estimators (_check_estimators)
    if (s1["early_stopping"] or s1["lr_schedule"] != "none") and s1["validation_fraction"] == 0:
        raise ConfigError("stage1.early_stopping and stage1.lr_schedule watch a validation split: set "
                          "stage1.validation_fraction > 0, or early_stopping = false and lr_schedule = 'none'.")
    if config["run"]["threads"] < 0:
        raise ConfigError(f"run.threads must be 0 (the libraries' defaults) or a number of threads; "
                          f"got {config['run']['threads']!r}.")
    _check_data(config["data"])
    _check_search(config["search"])
    n_blocks = len(s1["channels"])
    if not 0 <= config["contrastive"]["finetune_blocks"] <= n_blocks:
        raise ConfigError(f"contrastive.finetune_blocks must be 0 (off) or a number of CNN blocks up to "
                          f"{n_blocks} (len(stage1.channels)); got {config['contrastive']['finetune_blocks']!r}.")
    if config["cohort"]["effect_pattern"] not in ("region", "focal", "mixed"):
        raise ConfigError(f"cohort.effect_pattern must be 'region', 'focal' or 'mixed'; got "
                          f"{config['cohort']['effect_pattern']!r}.")
    if len(config["cohort"]["shape"]) != 3:
        raise ConfigError(f"cohort.shape must list 3 sizes; got {config['cohort']['shape']!r}.")
    sc = config["scores"]
    if sc["cv"] < 2:
        raise ConfigError(f"scores.cv must be at least 2; got {sc['cv']!r}.")
    if sc["saliency_fwhm"] < 0:
        raise ConfigError(f"scores.saliency_fwhm must be >= 0 (mm; 0 = no smoothing); got {sc['saliency_fwhm']!r}.")
    if (sc["early_stopping"] or sc["lr_schedule"] != "none") and sc["validation_fraction"] == 0:
        raise ConfigError("scores.early_stopping and scores.lr_schedule watch a validation split: set "
                          "scores.validation_fraction > 0, or early_stopping = false and lr_schedule = 'none'.")
    b = config["baselines"]
    if b["classical_cv"] < 2:
        raise ConfigError(f"baselines.classical_cv must be at least 2; got {b['classical_cv']!r}.")
    if b["classical_Cs"] < 1:
        raise ConfigError(f"baselines.classical_Cs must be at least 1; got {b['classical_Cs']!r}.")
    for name in config["confounds"]["models"]:
        if name not in CONFOUND_MODELS:
            near = difflib.get_close_matches(name, CONFOUND_MODELS, n=1)
            raise ConfigError(f"confounds.models: unknown model {name!r}"
                              + (f"; did you mean {near[0]!r}?" if near else f"; choose from {list(CONFOUND_MODELS)}."))


def _check_search(search):
    """The nested search's settings; every candidate of the grid must pass the estimator's own validation."""
    import importlib

    if search["inner_cv"] < 1:
        raise ConfigError(f"search.inner_cv must be 1 (one split) or a number of folds >= 2; got {search['inner_cv']!r}.")
    if not 0 < search["validation_fraction"] < 1:
        raise ConfigError(f"search.validation_fraction must be in (0, 1); got {search['validation_fraction']!r}.")
    for key, values in search["grid"].items():
        section, _, param = key.partition(".")
        if section not in ("contrastive", "classifier"):
            raise ConfigError(f"search.grid: {key!r} must be 'contrastive.<parameter>' or 'classifier.<parameter>'.")
        (module, name, _), = ESTIMATOR_KEYS[section]
        cls = getattr(importlib.import_module(module), name)
        if param not in cls._parameter_constraints:
            near = difflib.get_close_matches(param, cls._parameter_constraints, n=1)
            raise ConfigError(f"search.grid: {key!r} is not a parameter of {name}"
                              + (f"; did you mean '{section}.{near[0]}'?" if near else "."))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search.grid.{key} must list at least one candidate value; got {values!r}.")
        for value in values:
            rule = _broken_constraint(cls, param, tuple(value) if isinstance(value, list) else value)
            if rule:
                raise ConfigError(f"search.grid: candidate {value!r} of {key!r} is refused: {name}'s {param} "
                                  f"must be {rule}.")


def _check_data(d):
    names = list(dict.fromkeys(["digit_span", "age", "sex", *d["measures"], *d["covariates"]]))
    for name, column in d["columns"].items():
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"data.columns: {name!r} is not a column the toolkit reads"
                              + (f"; did you mean {near[0]!r}?" if near else f"; it reads {names}")
                              + " (add other measures or covariates to data.measures / data.covariates).")
        if not isinstance(column, str) or not column:
            raise ConfigError(f"data.columns.{name} must be a column name (a string); got {column!r}.")
    for code in d["missing_codes"]:
        if isinstance(code, bool) or not isinstance(code, (int, float, str)) or code == "":
            raise ConfigError(f"data.missing_codes must list numbers or non-empty strings; got {code!r}.")
    stray = [c for c in d["categorical"] if c not in d["covariates"]]
    if stray:
        raise ConfigError(f"data.categorical lists {stray}, which are not in data.covariates {d['covariates']}.")
    if not isinstance(d["id_column"], str) or not d["id_column"]:
        raise ConfigError(f"data.id_column must be a column name; got {d['id_column']!r}.")
    for code, value in d["sex_coding"].items():
        if isinstance(value, bool) or value not in (0, 1):
            raise ConfigError(f"data.sex_coding: code {code!r} must map to 0 (female) or 1 (male); got {value!r}.")
    if not all(isinstance(f, str) and f for f in d["pgs"]) or len(set(d["pgs"])) != len(d["pgs"]):
        raise ConfigError(f"data.pgs must list distinct scoring file paths (or \"simulated\"); got {d['pgs'][:20]!r}.")
    if isinstance(d["genotype_block_mb"], bool) or not d["genotype_block_mb"] > 0:
        raise ConfigError(f"data.genotype_block_mb must be a positive number of MB; got {d['genotype_block_mb']!r}.")
    if not 0 <= d["pgs_min_coverage"] <= 1:
        raise ConfigError(f"data.pgs_min_coverage must be in [0, 1]; got {d['pgs_min_coverage']!r}.")
    for key in ("snps", "genes"):
        blank = [v for v in d[key] if not v.strip()]
        if blank or len(set(d[key])) != len(d[key]):
            raise ConfigError(f"data.{key} must list distinct, non-empty names; got {d[key][:20]!r}.")


def config_slice(config, *sections, exclude=EXECUTION_KEYS):
    """The given sections without the ``exclude`` keys (what a stage's outputs depend on).

    An entry ``"section.key"`` is that key alone (left out only if it is an execution key).
    """
    out = {}
    for s in sections:
        if "." in s:
            section, key = s.split(".", 1)
            if s not in EXECUTION_KEYS:
                out.setdefault(section, {})[key] = config[section][key]
        else:
            out[s] = {k: v for k, v in config[s].items() if f"{s}.{k}" not in exclude}
    return out


def config_fingerprint(obj):
    """A short, stable hash of any JSON-able object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(old, new):
    """``["contrastive.max_epochs: 50 -> 20", ...]`` (execution keys left out)."""
    out = []
    for key in sorted(set(dotted_keys(old)) | set(dotted_keys(new))):
        if key in EXECUTION_KEYS:
            continue
        s, k = key.split(".", 1)
        a, b = old.get(s, {}).get(k, "<absent>"), new.get(s, {}).get(k, "<absent>")
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def to_toml(config):
    """Write a nested config back as TOML text (for the output folder's ``config.toml``)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {fmt(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
