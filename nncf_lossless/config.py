"""Loading and validating nncf-lossless configs.

A config has NNCF 2's shape: ``input_info`` and a ``compression`` list of
``{"algorithm": NAME, ...}`` entries, plus the sections the built-in trainer reads (``model``,
``dataset``, ``training``, ``export``). Each compression entry is checked against the JSON Schema
its registry entry declares. :func:`load_config` returns a new dict with every default filled in,
so the rest of the code never guesses a default; errors are one line naming the JSON path and the
rule broken, e.g. ``compression[1].ratio: 1.5 is greater than or equal to the maximum of 1``.
NNCF 2 configs are first mapped to this shape (:mod:`nncf_lossless.nncf2_config`). Nothing here
imports torch or NNCF.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from nncf_lossless import registry
from nncf_lossless.errors import ConfigError
from nncf_lossless.nncf2_config import from_nncf2

_POS_INT = {"type": "integer", "minimum": 1}
_NUMBERS = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 1, "default": None}
_OPTIMIZER = {
    "optimizer": {"enum": ["sgd", "adam", "adamw"], "default": "adam"},
    "lr": {"type": "number", "exclusiveMinimum": 0},
    "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9},
    "weight_decay": {"type": "number", "minimum": 0, "default": 0.0},
    "lr_schedule": {"enum": ["constant", "cosine"], "default": "cosine"},
}

TOP_LEVEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["input_info", "compression"],
    "properties": {
        "description": {"type": "string"},
        "input_info": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sample_size"],
            "properties": {"sample_size": {"type": "array", "items": _POS_INT, "minItems": 2}},
        },
        "model": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "name": {"type": "string", "default": "digits_cnn"},
                # FP32 reference weights (a state dict saved with torch.save); trained if absent.
                "checkpoint": {"type": ["string", "null"], "default": None},
            },
        },
        "dataset": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "name": {"enum": ["digits", "image_folder"], "default": "digits"},
                "path": {"type": "string"},
                "test_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.25},
                "image_size": {**_POS_INT, "type": ["integer", "null"], "default": None},
                "mean": _NUMBERS,
                "std": _NUMBERS,
                # true: random crop (pad 4) + horizontal flip; "trivial": those + TrivialAugmentWide.
                "augment": {"enum": [True, False, "trivial"], "default": True},
                "max_train_samples": {**_POS_INT, "type": ["integer", "null"], "default": None},
                "max_test_samples": {**_POS_INT, "type": ["integer", "null"], "default": None},
                # Held out of the training split before max_train_samples (or a separate folder/zip of
                # <class>/* images): checkpoint selection and tuning score here, never on the test set.
                "validation": {
                    "default": None,
                    "oneOf": [
                        {"type": "null"},
                        {"type": "object", "additionalProperties": False, "minProperties": 1,
                         "properties": {"fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                        "count": _POS_INT, "path": {"type": "string", "minLength": 1},
                                        "seed": {"type": "integer", "minimum": 0, "default": 0}},
                         "oneOf": [{"required": ["fraction"]}, {"required": ["count"]}, {"required": ["path"]}]},
                    ],
                },
            },
            "if": {"properties": {"name": {"const": "image_folder"}}, "required": ["name"]},
            "then": {"required": ["path"]},
        },
        "training": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "seed": {"type": "integer", "minimum": 0, "default": 0},
                "epochs": {**_POS_INT, "default": 3},
                "batch_size": {**_POS_INT, "default": 64},
                "eval_batch_size": {**_POS_INT, "default": 256},
                "num_workers": {"type": "integer", "minimum": 0, "default": 0},
                # "auto": CUDA when torch sees a GPU, else CPU.
                "device": {"enum": ["auto", "cpu", "cuda"], "default": "auto"},
                # Also measure mismatches on the exported IRs (OpenVINO CPU, f32) at each evaluation.
                "evaluate_ir": {"type": "boolean", "default": False},
                # Under torchrun on GPUs: BatchNorm statistics over all processes' batches (before any freeze).
                "sync_batch_norm": {"type": "boolean", "default": False},
                # Which epoch's weights the run ends with: the last, or the one with the fewest
                # mismatches (IR-measured with evaluate_ir; compressed accuracy breaks ties).
                "select_checkpoint": {"enum": ["last", "fewest_mismatches"], "default": "last"},
                # Evaluate, select and export an exponential moving average of the weights (decay per
                # step, e.g. 0.99); null: the weights as the last step left them (training/weight_ema.py).
                "ema_decay": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": None},
                # How each epoch draws the training images: uniformly, or oversampling the ones the
                # compressed model flipped / the reference is unsure of (nncf_lossless/training/flip_sampler.py).
                "sampling": {
                    "type": "object",
                    "additionalProperties": False,
                    "default": {},
                    "properties": {
                        "mode": {"enum": ["uniform", "flip_focused"], "default": "uniform"},
                        "floor": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                        "flip_weight": {"type": "number", "minimum": 0, "default": 1.0},
                        "margin_weight": {"type": "number", "minimum": 0, "default": 1.0},
                    },
                },
                **_OPTIMIZER,
                "lr": {**_OPTIMIZER["lr"], "default": 1e-4},
                "reference": {
                    "type": "object",
                    "additionalProperties": False,
                    "default": {},
                    "properties": {
                        "epochs": {**_POS_INT, "default": 20},
                        **_OPTIMIZER,
                        "lr": {**_OPTIMIZER["lr"], "default": 1e-3},
                    },
                },
            },
        },
        "export": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "enabled": {"type": "boolean", "default": True},
                "dir": {"type": "string", "default": "ir"},
                # Batch dimension of the IR input: an integer for a static shape, null for dynamic.
                "batch": {"type": ["integer", "null"], "minimum": 1, "default": None},
            },
        },
        # Flip repair of the exported IR (nncf_lossless.repair) on the validation split, after export.
        # No section default: configs without it stay as they were.
        "repair": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean", "default": True},
                "max_mismatches": {"type": "integer", "minimum": 0, "default": 0},
                "device": {"type": "string", "default": "CPU"},
                "precision": {"enum": ["f32", "default"], "default": "f32"},
                "restore_mode": {"enum": ["activations_and_weights", "only_activations"], "default": "activations_and_weights"},
                "dir": {"type": "string", "default": "repair"},
            },
        },
        "compression": {
            "type": "array",
            "items": {"type": "object", "required": ["algorithm"], "properties": {"algorithm": {"type": "string"}}},
        },
    },
}


def load_config(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Reads (JSON or YAML) and validates a config; returns a copy with all defaults filled in.

    ``overrides`` are ``KEY=VALUE`` strings (``training.epochs=1``, ``compression[0].ratio=0.7``)
    applied before validation; VALUE is read as JSON, or taken as a string if it is not JSON.
    Raises :class:`ConfigError` with a one-line message on any problem.
    """
    if isinstance(source, ValidatedConfig) and not overrides and source.unchanged():
        return source  # validated once: the trainer and the controller pass the same dict on
    raw = read_config_file(Path(source)) if isinstance(source, (str, Path)) else copy.deepcopy(dict(source))
    for override in overrides:
        apply_override(raw, override)
    return validate(from_nncf2(raw))


class ValidatedConfig(dict):
    """What :func:`load_config` returns: a plain dict (JSON, ``==``) that is not validated again.

    A copy (``copy.deepcopy``) is a plain ``dict`` again, since copies are made to be edited:
    ``load_config`` validates those. One edited in place no longer matches the snapshot taken when it
    was validated, so ``load_config`` validates it again too (a JSON dump: microseconds for a config).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._snapshot = json.dumps(self, sort_keys=True, default=str)

    def unchanged(self) -> bool:
        return json.dumps(self, sort_keys=True, default=str) == self._snapshot

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self):  # pickled (e.g. to DDP workers) as a plain dict, like a copy
        return dict, (dict(self),)


_OVERRIDE_KEY = re.compile(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*")


def apply_override(config: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not _OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"--set {override}: expected KEY=VALUE with KEY like training.epochs or compression[0].ratio")
    parts: list[str | int] = [int(i) if i else name for name, i in re.findall(r"(\w+)|\[(\d+)\]", key)]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    node: Any = config
    for i, part in enumerate(parts[:-1]):
        try:
            node = node.setdefault(part, {}) if isinstance(part, str) and isinstance(node, dict) else node[part]
        except (IndexError, KeyError, TypeError):
            raise ConfigError(f"--set {override}: {json_path(parts[: i + 1])} does not exist") from None
    try:
        node[parts[-1]] = value
    except (IndexError, TypeError):
        raise ConfigError(f"--set {override}: {json_path(parts)} does not exist") from None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from err
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level, got {type(data).__name__}")
    return data


def validate(raw: dict[str, Any]) -> ValidatedConfig:
    config = copy.deepcopy(raw)
    _check(TOP_LEVEL_SCHEMA, config, [])
    seen: dict[str, int] = {}
    for i, entry in enumerate(config["compression"]):
        name = entry["algorithm"]
        spec = registry.get(name)
        if spec is None:
            raise ConfigError(f"compression[{i}].algorithm: unknown algorithm {name!r}; known: {', '.join(registry.known())}")
        if name in seen:
            raise ConfigError(f"compression[{i}].algorithm: {name!r} is already given in compression[{seen[name]}]")
        seen[name] = i
        _check(spec.schema, entry, ["compression", i])
        fill_defaults(spec.schema, entry)
        with entry_errors(i):
            spec.validate(entry)  # cross-field rules the schema cannot state
    fill_defaults(TOP_LEVEL_SCHEMA, config)
    _check_selection_split(config)
    return ValidatedConfig(config)


def _check_selection_split(config: dict[str, Any]) -> None:
    # Selecting on the test set would make the reported test mismatches a selected (optimistic) number.
    if config["training"]["select_checkpoint"] != "last" and config["dataset"]["validation"] is None:
        raise ConfigError(f"training.select_checkpoint: {config['training']['select_checkpoint']!r} needs a validation "
                          "split (dataset.validation); the test set is only reported")


@contextlib.contextmanager
def entry_errors(index: int) -> Iterator[None]:
    """Prefixes a ConfigError raised for an entry (relative to it) with ``compression[index].``."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"compression[{index}].{err}") from err


def fill_defaults(schema: dict[str, Any], instance: Any) -> None:
    """Adds the schema's ``default`` of every absent property, recursively, in place."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(sub, instance[key])


def json_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _check(schema: dict[str, Any], instance: Any, prefix: list[str | int]) -> None:
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ConfigError(f"{json_path(prefix + list(err.absolute_path))}: {err.message}{more}")
