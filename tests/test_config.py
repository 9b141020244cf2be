"""``sklearn-cgni run`` configuration: the estimators' own parameter validation at load time."""

import importlib
import inspect

import pytest

from sklearn_cgni.cli import ConfigError, load_config, main
from sklearn_cgni.cli._config import ESTIMATOR_KEYS, default_config, estimator_params
from sklearn_cgni.cli._protocol import combo_params

REFUSED = [
    # (override, key named, the estimator's constraint quoted)
    ("stage1.lr=-1", "stage1.lr = -1", "lr must be a float in the range (0.0, inf)"),
    ("contrastive.temperature=0", "contrastive.temperature = 0", "temperature must be a float in the range (0.0, inf)"),
    ("stage1.dropout=1.5", "stage1.dropout = 1.5", "dropout must be a float in the range [0.0, 1.0)"),
    ("classifier.hidden_layer_sizes=[0]", "classifier.hidden_layer_sizes = [0]", "integers >= 1"),
    ("baselines.sparse_hidden=[]", "baselines.sparse_hidden = []", "at least one layer"),
    ("baselines.svm_C=0", "baselines.svm_C = 0", "C must be a float in the range (0.0, inf)"),
    ('stage1.finetune_scoring="auc"', "stage1.finetune_scoring = 'auc'", "ImagingCNNClassifier's scoring"),
    ("scores.validation_fraction=1.0", "scores.validation_fraction = 1.0", "range [0.0, 1.0)"),
    ("qc.min_maf=0.7", "qc.min_maf = 0.7", "min_maf must be a float in the range [0.0, 0.5)"),
    ("stage1.channels=[4, -1]", "stage1.channels = [4, -1]", "integers >= 1"),
]


@pytest.mark.parametrize("override, key, rule", REFUSED)
def test_load_config_refuses_what_an_estimator_would_refuse(override, key, rule):
    with pytest.raises(ConfigError) as exc:
        load_config(preset="tiny", overrides=[override])
    message = str(exc.value)
    assert message.startswith(key) and rule in message and "\n" not in message


def test_all_weights_zero_is_refused_for_the_section():
    zero = [f"contrastive.{w}=0" for w in ("lambda_vg", "sigma_gv", "gamma_vv", "theta_gg")]
    with pytest.raises(ConfigError, match=r"^\[contrastive\] is refused: all four loss weights"):
        load_config(preset="tiny", overrides=zero)
    load_config(preset="tiny", overrides=zero[:3])  # theta_gg alone is a valid loss


@pytest.mark.parametrize("override", ["stage1.lr=-1", "contrastive.temperature=0", "stage1.dropout=1.5"])
def test_run_command_refuses_before_any_stage(override, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--preset", "tiny", "--set", override, "-o", str(out), "--no-progress", "--device", "cpu"])
    assert code == 2
    assert override.split("=")[0] in capsys.readouterr().err
    assert not out.exists()  # no stage folder, no cohort simulated


def test_every_mapped_key_is_a_parameter_with_constraints():
    config = default_config()
    for section, estimators in ESTIMATOR_KEYS.items():
        for module, name, keys in estimators:
            cls = getattr(importlib.import_module(module), name)
            for key, param in keys.items():
                assert key in config[section], f"{section}.{key}"
                assert param in cls._parameter_constraints, f"{name}.{param}"
            if name != "OcclusionExplainer":  # needs a fitted CCA; its parameters are checked alone
                cls(**estimator_params(config, section, name))


# config keys whose shipped value is not the estimator's default, on purpose: stage 1 spells out
# the paper's architecture (None in the estimators resolves to it) and the command line's
# early-stopping protocol; the genotype scorer trains longer, with early stopping, in the run.
# Every other mapped key must equal its default, so that there is one default per hyperparameter.
_NOT_THE_ESTIMATOR_DEFAULT = {
    "stage1": {"channels", "padding", "pool_blocks", "global_pool", "validation_fraction", "n_iter_no_change"},
    "scores": {"max_epochs", "early_stopping", "lr_schedule", "n_transfer_blocks"},
}


def test_shipped_defaults_are_the_estimators_defaults():
    config = default_config()
    differ = []
    for section, estimators in ESTIMATOR_KEYS.items():
        for module, name, keys in estimators:
            sig = inspect.signature(getattr(importlib.import_module(module), name))
            defaults = {p: v.default for p, v in sig.parameters.items()}
            for key, param in keys.items():
                value = config[section][key]
                value = tuple(value) if isinstance(value, list) else value
                if value != defaults[param] and key not in _NOT_THE_ESTIMATOR_DEFAULT.get(section, ()):
                    differ.append(f"{section}.{key} = {value!r} but {name}({param}={defaults[param]!r})")
    assert not differ, differ


def test_gamma_switched_off_takes_the_papers_weight_in_table2():
    weights = {"lambda_vg": 0.7, "sigma_gv": 0.3, "gamma_vv": 0.0, "theta_gg": 0.4}
    assert combo_params("L3", weights)["gamma_vv"] == 0.4
    assert combo_params("L1", {**weights, "lambda_vg": 0.5})["lambda_vg"] == 0.5


def test_saliency_fwhm_is_checked_at_load_time():
    from sklearn_cgni.cli import ConfigError, load_config

    with pytest.raises(ConfigError, match="scores.saliency_fwhm must be >= 0"):
        load_config(preset="cpu", overrides=["scores.saliency_fwhm=-8"])
    assert load_config(preset="cpu", overrides=["scores.saliency_fwhm=16"])["scores"]["saliency_fwhm"] == 16


def test_pool_blocks_takes_a_number_or_auto_in_any_layer():
    assert load_config(preset="cpu")["stage1"]["pool_blocks"] == "auto"
    assert load_config(preset="cpu", overrides=["stage1.pool_blocks=3"])["stage1"]["pool_blocks"] == 3
    assert load_config(preset="paper", overrides=["stage1.pool_blocks=auto"])["stage1"]["pool_blocks"] == "auto"
    with pytest.raises(ConfigError, match="stage1.pool_blocks"):
        load_config(preset="cpu", overrides=["stage1.pool_blocks=many"])
