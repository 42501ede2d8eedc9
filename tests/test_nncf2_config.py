"""NNCF 2 configs: real ones from NNCF 2's examples load (mapped) or fail with the documented one-line error."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from conftest import REPO

from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError

NNCF2 = REPO / "tests" / "data" / "nncf2"


def test_resnet50_int8_maps_range_init_and_training_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="nncf_lossless.nncf2_config"):
        config = load_config(NNCF2 / "resnet50_imagenet_int8.json")
    [q] = config["compression"]
    assert q["algorithm"] == "quantization" and q["subset_size"] == 850
    assert config["model"]["name"] == "resnet50"
    assert config["training"]["batch_size"] == 85 and config["training"]["epochs"] == 1
    assert config["training"]["optimizer"] == "adam" and config["training"]["lr"] == 1e-5
    warned = caplog.text
    for key in ("pretrained", "num_classes", "multiprocessing_distributed"):
        assert f"NNCF 2 key {key} ignored" in warned


def test_mobilenet_per_tensor_maps_per_channel_and_bn_adaptation():
    config = load_config(NNCF2 / "mobilenet_v2_imagenet_int8_per_tensor.json")
    [q] = config["compression"]
    assert q["weights"]["per_channel"] is False and q["activations"]["per_channel"] is False
    assert q["batch_norm_adaptation"] == {"enabled": True, "num_samples": 4096, "num_iterations": None}
    assert q["subset_size"] == 7000 and config["input_info"]["sample_size"] == [2, 3, 224, 224]


def test_magnitude_sparsity_becomes_scheduled_global_pruning():
    config = load_config(NNCF2 / "mobilenet_v2_imagenet_magnitude_sparsity_int8.json")
    q, p = config["compression"]
    assert q["range_estimator"] == "minmax" and q["subset_size"] == 256
    assert p["algorithm"] == "pruning" and p["mode"] == "UNSTRUCTURED_MAGNITUDE_GLOBAL" and p["ratio"] == 0.7
    assert p["schedule"]["type"] == "multistep"
    assert p["schedule"]["steps"] == {"0": 0.2, "2": 0.3, "4": 0.4, "6": 0.5, "10": 0.6, "14": 0.7}


def test_inception_ignored_scopes_become_ignored_scope_names():
    config = load_config(NNCF2 / "inception_v3_imagenet_int8.json")
    scope = config["compression"][0]["ignored_scope"]
    assert scope["names"][0] == "Inception3/__add___0" and len(scope["names"]) == 7 and "patterns" not in scope


def test_filter_pruning_fails_with_one_line_naming_the_replacement():
    with pytest.raises(ConfigError) as err:
        load_config(NNCF2 / "resnet50_pruning_geometric_median.json")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("compression[0].algorithm: NNCF 2's 'filter_pruning' has no NNCF 3 counterpart")
    assert '"algorithm": "pruning"' in message


def test_cli_prints_one_error_line_and_exits_2_on_an_nncf2_config_it_cannot_map():
    result = subprocess.run([sys.executable, "-m", "nncf_lossless", "validate-config",
                             str(NNCF2 / "resnet50_pruning_geometric_median.json")],
                            capture_output=True, text=True, cwd=REPO, env=_env(), check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def _minimal(**entry):
    return {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "quantization", **entry}}


def test_regex_scopes_become_patterns_and_plain_ones_names():
    config = load_config(_minimal(ignored_scopes=["{re}.*conv1.*", "Net/Linear[fc]"]))
    assert config["compression"][0]["ignored_scope"] == {"patterns": [".*conv1.*"], "names": ["Net/Linear[fc]"],
                                                          "validate": True}


def test_top_level_ignored_scopes_reach_every_entry_with_a_scope():
    config = load_config({"input_info": {"sample_size": [1, 1, 8, 8]}, "ignored_scopes": ["{re}.*fc.*"],
                          "compression": [{"algorithm": "quantization"}, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.3},
                                          {"algorithm": "label_preserving_distillation"}]})
    quantization, sparsity, distillation = config["compression"]
    assert quantization["ignored_scope"]["patterns"] == [".*fc.*"] and sparsity["ignored_scope"]["patterns"] == [".*fc.*"]
    assert sparsity["ratio"] == 0.3 and sparsity["schedule"]["type"] == "constant" and "ignored_scope" not in distillation


def test_top_level_target_device_reaches_quantization_and_vpu_is_npu():
    config = load_config({**_minimal(), "target_device": "VPU"})
    assert config["compression"][0]["target_device"] == "NPU"


def test_single_input_info_list_is_taken():
    config = load_config({**_minimal(), "input_info": [{"sample_size": [1, 1, 8, 8], "type": "float"}]})
    assert config["input_info"] == {"sample_size": [1, 1, 8, 8]}


@pytest.mark.parametrize(("raw", "expected"), [
    ({**_minimal(), "input_info": [{"sample_size": [1, 3, 8, 8]}, {"sample_size": [1, 4]}]},
     "input_info: 2 inputs given; nncf-lossless compresses models with one input"),
    (_minimal(target_scopes=["{re}.*conv.*"]), "compression[0].target_scopes: NNCF 2 key with no NNCF 3 counterpart; list"),
    (_minimal(initializer={"range": {"type": "threesigma"}}), "compression[0].initializer.range.type: 'threesigma' has no"),
    (_minimal(initializer={"precision": {"type": "hawq"}}), "compression[0].initializer.precision: NNCF 2 key"),
    (_minimal(params={"batch_multiplier": 2}), "compression[0].params: NNCF 2 key with no NNCF 3 counterpart"),
    (_minimal(scope_overrides={"activations": {}}), "compression[0].scope_overrides: NNCF 2 key"),
    ({**_minimal(), "target_device": "TRIAL"}, "target_device: 'TRIAL' is not an NNCF 3 target device"),
    ({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": [
        {"algorithm": "magnitude_sparsity", "params": {"schedule": "polynomial", "sparsity_target": 0.5}}]},
     "compression[0].params.schedule: 'polynomial' has no NNCF 3 scheduler"),
])
def test_unmappable_nncf2_keys_fail_in_one_line(raw, expected):
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_saturation_fix_rb_sparsity_and_knowledge_distillation_map():
    config = load_config({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": [
        {"algorithm": "quantization", "disable_saturation_fix": True},
        {"algorithm": "rb_sparsity", "sparsity_init": 0.05,
         "params": {"schedule": "exponential", "sparsity_target": 0.6, "sparsity_target_epoch": 4}},
        {"algorithm": "knowledge_distillation", "type": "mse", "scale": 0.5}]})
    q, p, kd = config["compression"]
    assert q["overflow_fix"] == "disable"
    assert p["mode"] == "UNSTRUCTURED_REGULARIZATION_BASED" and p["ratio"] == 0.6
    assert p["schedule"] == {"type": "exponential", "initial_ratio": 0.05, "target_epoch": 4}
    assert kd["algorithm"] == "label_preserving_distillation"
    assert kd["weights"]["label_ce"] == 1.0 and kd["weights"]["mse"] == 0.5 and kd["weights"]["kd"] == 0.0


def test_our_own_configs_pass_through_unchanged():
    from nncf_lossless.nncf2_config import from_nncf2

    for path in sorted((REPO / "configs").glob("*.json")):
        import json

        raw = json.loads(path.read_text())
        assert from_nncf2(raw) == raw, path.name
