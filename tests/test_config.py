"""Config loading and validation: every shipped config builds; every bad one says where and why."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, digits_config

from nncf_lossless import registry
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError

SHIPPED = sorted(p for p in (REPO / "configs").iterdir() if p.suffix in (".json", ".yaml", ".yml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config["compression"], "every shipped config compresses something"
    for entry in config["compression"]:
        assert registry.get(entry["algorithm"]) is not None


def test_defaults_are_filled_from_the_schemas():
    config = load_config({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": [{"algorithm": "quantization"}]})
    q = config["compression"][0]
    assert q["weights"]["bits"] == 8 and q["activations"]["bits"] == 8
    assert q["subset_size"] == 300 and q["preset"] == "performance"
    assert config["training"]["reference"]["epochs"] == 20
    assert config["dataset"]["name"] == "digits" and config["model"]["name"] == "digits_cnn"


def test_nncf2_single_entry_compression_is_accepted():
    config = load_config({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "pruning"}})
    assert [e["algorithm"] for e in config["compression"]] == ["pruning"]


def test_yaml_and_json_give_the_same_config(tmp_path):
    raw = digits_config()
    (tmp_path / "c.json").write_text(json.dumps(raw))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path / "c.json") == load_config(tmp_path / "c.yaml")


def _with_compression(*entries):
    return digits_config(compression=list(entries))


INVALID = [
    (_with_compression({"algorithm": "quantization"}, {"algorithm": "pruning", "ratio": 1.5}),
     "compression[1].ratio: 1.5 is greater than or equal to the maximum of 1"),
    (_with_compression({"algorithm": "distill"}),
     "compression[0].algorithm: unknown algorithm 'distill'; known: frozen_bn, hint_distillation, label_preserving_distillation, multi_bit, pruning, quantization"),
    (_with_compression({"algorithm": "quantization", "weights": {"bits": 1}}),
     "compression[0].weights.bits: 1 is less than the minimum of 2"),
    (_with_compression({"algorithm": "quantization", "preset": "fast"}),
     "compression[0].preset: 'fast' is not one of ['performance', 'mixed']"),
    (_with_compression({"algorithm": "quantization", "subset_sise": 10}),
     "compression[0]: Additional properties are not allowed ('subset_sise' was unexpected)"),
    (_with_compression({"algorithm": "pruning", "schedule": {"type": "multistep"}}),
     "compression[0].schedule: 'steps' is a required property"),
    (_with_compression({"algorithm": "pruning", "ratio": 0.5, "schedule": {"type": "exponential", "initial_ratio": 0.6}}),
     "compression[0].schedule.initial_ratio: 0.6 must be below ratio 0.5"),
    (_with_compression({"algorithm": "pruning"}, {"algorithm": "pruning"}),
     "compression[1].algorithm: 'pruning' is already given in compression[0]"),
    (_with_compression({"ratio": 0.5}), "compression[0]: 'algorithm' is a required property"),
    ({"compression": []}, "config: 'input_info' is a required property"),
    (digits_config(input_info={"sample_size": [1, 0, 8]}), "input_info.sample_size[1]: 0 is less than the minimum of 1"),
    (digits_config(training={"epochs": 0}), "training.epochs: 0 is less than the minimum of 1"),
    (digits_config(dataset={"name": "image_folder"}), "dataset: 'path' is a required property"),
    (digits_config(dataset={"name": "image_folder", "path": "d", "augment": "strong"}),
     "dataset.augment: 'strong' is not one of [True, False, 'trivial']"),
    (digits_config(training={"reference": {"optimizer": "lion"}}),
     "training.reference.optimizer: 'lion' is not one of ['sgd', 'adam', 'adamw']"),
]


@pytest.mark.parametrize("raw,message", INVALID, ids=[m.split(":")[0] for _, m in INVALID])
def test_invalid_configs_name_the_path_and_the_rule(raw, message):
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,suffix,expected", [
    ('{"input_info": ', ".json", "invalid JSON at line 1 column 16"),
    ("input_info: [unclosed", ".yaml", "invalid YAML at line 1"),
    ("[1, 2]", ".json", "a config must be a mapping at the top level, got list"),
    ("!!python/object/apply:os.system ['true']", ".yaml", "invalid YAML"),
])
def test_unreadable_config_files(tmp_path, text, suffix, expected):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: {expected}"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'nope.json'}: cannot read config"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize("raw,message", INVALID[:4], ids=[m.split(":")[0] for _, m in INVALID[:4]])
def test_cli_prints_one_line_and_no_traceback(tmp_path, raw, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    proc = subprocess.run([sys.executable, "-m", "nncf_lossless", "train", "--config", str(path),
                           "--output-dir", str(tmp_path / "out")], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("override,check", [
    ("training.epochs=7", lambda c: c["training"]["epochs"] == 7),
    ("compression[0].weights.bits=4", lambda c: c["compression"][0]["weights"]["bits"] == 4),
    ("dataset.path=some dir/data.zip", lambda c: c["dataset"]["path"] == "some dir/data.zip"),
    ('dataset.mean=[0.5]', lambda c: c["dataset"]["mean"] == [0.5]),
])
def test_overrides_apply_before_validation(override, check):
    assert check(load_config(digits_config(), [override]))


@pytest.mark.parametrize("override,message", [
    ("training.epochs", "--set training.epochs: expected KEY=VALUE"),
    ("a..b=1", "--set a..b=1: expected KEY=VALUE"),
    ("compression[5].ratio=0.1", "--set compression[5].ratio=0.1: compression[5] does not exist"),
    ("training.epochs=-1", "training.epochs: -1 is less than the minimum of 1"),
    ("training.epohcs=1", "training: Additional properties are not allowed ('epohcs' was unexpected)"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(digits_config(), [override])
    assert str(err.value).startswith(message)


def test_a_validated_config_is_not_validated_again(monkeypatch):
    import copy

    import nncf_lossless.config as config_module

    config = load_config(digits_config())
    calls = []
    real = config_module.validate
    monkeypatch.setattr(config_module, "validate", lambda raw: calls.append(1) or real(raw))
    assert load_config(config) is config, "the trainer and the controller pass the validated dict on as it is"
    assert calls == []
    edited = copy.deepcopy(config)
    edited["training"]["epochs"] = 0
    with pytest.raises(ConfigError, match="training.epochs: 0 is less than the minimum of 1"):
        load_config(edited)  # a copy is for editing: validated again
    assert load_config(config, ["training.epochs=2"])["training"]["epochs"] == 2 and len(calls) == 2
    assert json.loads(json.dumps(config)) == config


def test_a_validated_config_edited_in_place_is_validated_again():
    config = load_config(digits_config())
    config["compression"] = [{"algorithm": "quantization"}]  # as a benchmark swaps in a recipe's entries
    again = load_config(config)
    assert again is not config and again["compression"][0]["weights"]["bits"] == 8, "defaults filled in"
    config["training"]["epochs"] = 0
    with pytest.raises(ConfigError, match="training.epochs: 0 is less than the minimum of 1"):
        load_config(config)
