"""NNCF 2 configs: each NNCF 2 key mapped to its meaning here, or refused with what to use instead.

:func:`from_nncf2` runs once inside :func:`nncf_lossless.config.load_config`, before validation.
It rewrites a raw config in NNCF 2's shape (``examples/torch/classification/configs``) into ours
and leaves our own keys alone, so it is a no-op on a config written for nncf-lossless. Three
tables hold every rule: :data:`TOP_LEVEL` (keys beside ``compression``), :data:`ALGORITHMS`
(NNCF 2 algorithm names) and :data:`ENTRY_KEYS` (keys inside a compression entry). A rule either

- maps the value (``batch_size`` -> ``training.batch_size``, ``ignored_scopes`` -> ``ignored_scope``),
- drops a training-script key that has no effect here with a logged warning (``pretrained``, ``log_dir``), or
- raises a one-line :class:`ConfigError` naming the key and what to use instead (``target_scopes``).

The README's "NNCF 2 configs" table lists them all. Torch-free, like the rest of config loading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nncf_lossless.errors import ConfigError

log = logging.getLogger(__name__)

REGEX_PREFIX = "{re}"
# nncf.TargetDevice has no VPU (renamed NPU) and no TRIAL.
TARGET_DEVICES = {"ANY": "ANY", "CPU": "CPU", "GPU": "GPU", "VPU": "NPU", "NPU": "NPU", "CPU_SPR": "CPU_SPR"}
# NNCF 2's initializer.range.type -> our range_estimator (nncf.RangeEstimatorParametersSet).
RANGE_TYPES = {"min_max": "minmax", "mean_min_max": "mean_minmax"}
OPTIMIZERS = {"sgd": "sgd", "adam": "adam", "adamw": "adamw"}

Rule = Callable[[dict[str, Any], Any, str, dict[str, Any]], None]
"""``rule(node, value, path, config)``: the key is already popped from ``node``; ``path`` names it in messages."""


def from_nncf2(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (not modified) in nncf-lossless's shape; raises ConfigError on an NNCF 2 key with no meaning here."""
    config = dict(raw)
    if isinstance(config.get("compression"), dict):  # NNCF 2 took a single entry in place of a list
        config["compression"] = [config["compression"]]
    _apply(TOP_LEVEL, config, "", config)
    compression = config.get("compression")
    if isinstance(compression, list):
        config["compression"] = [_entry(e, f"compression[{i}]", config) if isinstance(e, dict) else e
                                 for i, e in enumerate(compression)]
    return config


def _apply(rules: dict[str, Rule], node: dict[str, Any], prefix: str, config: dict[str, Any]) -> None:
    for key in [k for k in node if k in rules]:
        rules[key](node, node.pop(key), f"{prefix}{key}", config)


def _entry(entry: dict[str, Any], path: str, config: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    name = entry.get("algorithm")
    if name not in NNCF2_ALGORITHMS:
        return entry  # ours (or a plugin's): its keys mean what its schema says
    if name in ALGORITHMS:
        entry = ALGORITHMS[name](entry, f"{path}.algorithm")
    _apply(ENTRY_KEYS, entry, f"{path}.", config)
    return entry


# --- rule builders ---------------------------------------------------------------------------

def to(dest: str, convert: Callable[[Any, str], Any] = lambda v, _path: v) -> Rule:
    """Moves the value to ``dest`` (a dotted path from the top), unless the config already sets it."""
    *parents, last = dest.split(".")

    def rule(node, value, path, config):
        target = config
        for part in parents:
            target = target.setdefault(part, {})
        target.setdefault(last, convert(value, path))
    return rule


def here(dest: str, convert: Callable[[Any, str], Any] = lambda v, _path: v) -> Rule:
    """Renames the key within its own node (a compression entry)."""
    def rule(node, value, path, config):
        node.setdefault(dest, convert(value, path))
    return rule


def ignored(why: str) -> Rule:
    def rule(node, value, path, config):
        log.warning("warning: NNCF 2 key %s ignored: %s", path, why)
    return rule


def reject(instead: str) -> Rule:
    def rule(node, value, path, config):
        raise ConfigError(f"{path}: NNCF 2 key with no NNCF 3 counterpart; {instead}")
    return rule


def keep_if(accepts: Callable[[Any], bool], otherwise: Rule) -> Rule:
    """Leaves a value of our own shape in place (``model`` as an object); applies ``otherwise`` to NNCF 2's."""
    def rule(node, value, path, config):
        if accepts(value):
            node[path.rsplit(".", 1)[-1]] = value
        else:
            otherwise(node, value, path, config)
    return rule


# --- top level -------------------------------------------------------------------------------

def _input_info(node, value, path, config):
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"{path}: {len(value)} inputs given; nncf-lossless compresses models with one input "
                              "(give input_info as one {\"sample_size\": [...]})")
        value = value[0]
    if isinstance(value, dict):
        value = dict(value)
        if value.get("type", "float") in ("float", "float32"):
            value.pop("type", None)
        for key in ("type", "filler", "keyword"):
            if key in value:
                raise ConfigError(f"{path}.{key}: NNCF 2 key with no NNCF 3 counterpart; the one input is a float "
                                  "tensor of input_info.sample_size (remove it)")
    node["input_info"] = value


def _target_device(node, value, path, config):
    device = _device(value, path)
    for entry in config.get("compression") or []:
        if isinstance(entry, dict) and entry.get("algorithm") == "quantization":
            entry.setdefault("target_device", device)


def _device(value, path):
    if value not in TARGET_DEVICES:
        raise ConfigError(f"{path}: {value!r} is not an NNCF 3 target device; use one of {', '.join(sorted(set(TARGET_DEVICES.values())))}")
    return TARGET_DEVICES[value]


def _optimizer(node, value, path, config):
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected NNCF 2's optimizer object; the optimizer is training.optimizer")
    value = dict(value)
    training = config.setdefault("training", {})
    kind = str(value.pop("type", "adam")).lower()
    if kind not in OPTIMIZERS:
        raise ConfigError(f"{path}.type: {kind!r} is not supported; use one of {', '.join(OPTIMIZERS)} (training.optimizer)")
    training.setdefault("optimizer", OPTIMIZERS[kind])
    if "base_lr" in value:
        training.setdefault("lr", value.pop("base_lr"))
    if "weight_decay" in value:
        training.setdefault("weight_decay", value.pop("weight_decay"))
    params = dict(value.pop("optimizer_params", {}) or {})
    if "momentum" in params:
        training.setdefault("momentum", params.pop("momentum"))
    if value.get("schedule_type") in ("cosine", "constant"):
        training.setdefault("lr_schedule", value.pop("schedule_type"))
    rest = sorted(value) + [f"optimizer_params.{k}" for k in sorted(params)]
    if rest:
        log.warning("warning: NNCF 2 key(s) %s ignored: the learning rate follows training.lr_schedule (cosine or constant)",
                    ", ".join(f"{path}.{k}" for k in rest))


def _global_scopes(node, value, path, config):
    """NNCF 2's top-level ``ignored_scopes`` applied to every entry that has an ignored scope."""
    for entry in config.get("compression") or []:
        if isinstance(entry, dict) and entry.get("algorithm") in ("quantization", "pruning", *SPARSITY_MODES):
            _ignored_scopes(entry, value, path, config)


_DDP = ignored("launch the built-in trainer with torchrun for data-parallel training (README, 'Several GPUs')")

TOP_LEVEL: dict[str, Rule] = {
    "input_info": _input_info,
    "target_device": _target_device,
    "model": keep_if(lambda v: isinstance(v, dict), to("model.name")),
    "dataset": keep_if(lambda v: isinstance(v, dict), ignored(
        "NNCF 2's example-script dataset name; give dataset.name ('digits' or 'image_folder') and dataset.path")),
    "pretrained": ignored("the FP32 reference is model.checkpoint (a state dict), or the built-in trainer trains it"),
    "num_classes": ignored("the number of classes comes from the dataset"),
    "batch_size": to("training.batch_size"),
    "batch_size_val": to("training.eval_batch_size"),
    "epochs": to("training.epochs"),
    "seed": to("training.seed"),
    "workers": to("training.num_workers"),
    "optimizer": _optimizer,
    "log_dir": ignored("the run writes into train --output-dir"),
    "checkpoint_save_dir": ignored("the run writes its checkpoints into train --output-dir"),
    "multiprocessing_distributed": _DDP,
    "world_size": _DDP,
    "dist_url": _DDP,
    "dist_backend": _DDP,
    "rank": _DDP,
    "gpu_id": _DDP,
    "export_to_onnx_standard_ops": ignored("export writes OpenVINO IR (export.dir), not ONNX"),
    "ignored_scopes": _global_scopes,
    "target_scopes": reject("list what to leave out in each entry's ignored_scope instead"),
    "accuracy_aware_training": reject("use training.select_checkpoint: fewest_mismatches (and training.evaluate_ir)"),
}


# --- compression entries ---------------------------------------------------------------------

def _scopes(value, path):
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: expected a string or a list of strings")
    scope: dict[str, list[str]] = {}
    for name in names:
        if name.startswith(REGEX_PREFIX):
            scope.setdefault("patterns", []).append(name[len(REGEX_PREFIX):])
        else:
            scope.setdefault("names", []).append(name)
    return scope


def _ignored_scopes(node, value, path, config):
    scope = node.setdefault("ignored_scope", {})
    for key, items in _scopes(value, path).items():
        scope[key] = [*scope.get(key, []), *items]


def _initializer(node, value, path, config):
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected NNCF 2's initializer object")
    value = dict(value)
    quantization = node.get("algorithm") == "quantization"
    if "range" in value:
        _range(node, value.pop("range"), f"{path}.range", quantization)
    if "batchnorm_adaptation" in value:
        _bn_adaptation(node, value.pop("batchnorm_adaptation"), f"{path}.batchnorm_adaptation")
    if "precision" in value:
        raise ConfigError(f"{path}.precision: NNCF 2 key with no NNCF 3 counterpart; mixed-precision search is not "
                          "available, give weights.bits / activations.bits")
    for key in value:
        raise ConfigError(f"{path}.{key}: NNCF 2 key with no NNCF 3 counterpart; remove it")


def _range(node, value, path, quantization):
    if not quantization:
        log.warning("warning: NNCF 2 key %s ignored: only quantization calibrates ranges", path)
        return
    if isinstance(value, list):
        raise ConfigError(f"{path}: per-scope range initializers have no NNCF 3 counterpart; give one object "
                          "{num_init_samples, type}")
    value = dict(value)
    if "num_init_samples" in value:
        node.setdefault("subset_size", value.pop("num_init_samples"))
    if "type" in value:
        kind = value.pop("type")
        if kind not in RANGE_TYPES:
            raise ConfigError(f"{path}.type: {kind!r} has no NNCF 3 counterpart; use {' or '.join(RANGE_TYPES)}, "
                              "or our range_estimator (e.g. mean_quantile)")
        node.setdefault("range_estimator", RANGE_TYPES[kind])
    for key in value:
        raise ConfigError(f"{path}.{key}: NNCF 2 key with no NNCF 3 counterpart; NNCF 3 takes num_init_samples and type only")


def _bn_adaptation(node, value, path):
    value = dict(value or {})
    samples = value.pop("num_bn_adaptation_samples", 2000)
    value.pop("num_bn_forget_samples", None)  # NNCF 3 resets the statistics itself
    for key in value:
        raise ConfigError(f"{path}.{key}: NNCF 2 key with no NNCF 3 counterpart; remove it")
    node.setdefault("batch_norm_adaptation", {"enabled": samples > 0, **({"num_samples": samples} if samples > 0 else {})})


def _saturation_fix(node, value, path, config):
    node.setdefault("overflow_fix", "disable" if value else "enable")


def _tensor_params(node, value, path, config):
    """``weights`` / ``activations``: NNCF 2's mode/per_channel/signed/bits stay; per-scope keys are refused."""
    if isinstance(value, dict):
        for key in ("ignored_scopes", "target_scopes", "logarithm_scale", "unified_scale_ops"):
            if key in value:
                raise ConfigError(f"{path}.{key}: NNCF 2 key with no NNCF 3 counterpart; per-tensor-kind scopes and scales "
                                  "are not available (use the entry's ignored_scope)")
    node[path.rsplit(".", 1)[-1]] = value


def _quantize_outputs(node, value, path, config):
    if value:
        raise ConfigError(f"{path}: NNCF 2 key with no counterpart here; the model outputs stay in float")


ENTRY_KEYS: dict[str, Rule] = {
    "ignored_scopes": _ignored_scopes,
    "target_scopes": reject("list what to leave out in ignored_scope (names, patterns, types) instead"),
    "initializer": _initializer,
    "disable_saturation_fix": _saturation_fix,
    "weights": _tensor_params,
    "activations": _tensor_params,
    "scope_overrides": reject("per-layer quantizer settings are not available; use ignored_scope, or weights/activations for all"),
    "params": reject("NNCF 2's staged quantization (batch_multiplier, *_quant_start_epoch, lr_poly_drop_*) is not "
                     "available; remove params and set training.epochs / training.lr / training.batch_size"),
    "quantizer_setup_type": ignored("NNCF 3 always places quantizers by propagation"),
    "quantizer_setup": ignored("NNCF 3 always places quantizers by propagation"),
    "quantize_inputs": ignored("NNCF 3 always quantizes the model input"),
    "quantize_outputs": _quantize_outputs,
    "export_to_onnx_standard_ops": ignored("export writes OpenVINO IR, not ONNX"),
    "compression_lr_multiplier": reject("quantizer ranges train at training.lr"),
}


# --- NNCF 2 algorithm names ------------------------------------------------------------------

SPARSITY_MODES = {"magnitude_sparsity": "UNSTRUCTURED_MAGNITUDE", "rb_sparsity": "UNSTRUCTURED_REGULARIZATION_BASED"}
_SPARSITY_PARAMS = ("schedule", "sparsity_target", "sparsity_target_epoch", "multistep_steps",
                    "multistep_sparsity_levels", "sparsity_level_setting_mode", "steps_per_epoch")


def _sparsity(entry: dict[str, Any], path: str) -> dict[str, Any]:
    """``magnitude_sparsity`` / ``rb_sparsity`` -> ``pruning`` (unstructured), with the schedule mapped."""
    entry = dict(entry)
    name = entry.pop("algorithm")
    at = path.rsplit(".", 1)[0]
    params = dict(entry.pop("params", {}) or {})
    init = entry.pop("sparsity_init", 0.0)
    level_mode = params.pop("sparsity_level_setting_mode", "global")
    if name == "rb_sparsity":
        if level_mode != "global":
            raise ConfigError(f"{at}.params.sparsity_level_setting_mode: NNCF 3's regularization-based pruning has a "
                              "global target only; use 'global'")
        mode = SPARSITY_MODES[name]
    else:
        mode = f"{SPARSITY_MODES[name]}_{'LOCAL' if level_mode == 'local' else 'GLOBAL'}"
    params.pop("steps_per_epoch", None)  # NNCF 3's schedules step per epoch
    schedule_type, target = params.pop("schedule", None), params.pop("sparsity_target", None)
    if schedule_type is None and target is None:
        ratio, schedule = init, {"type": "constant"}
    elif schedule_type == "multistep":
        steps, levels = params.pop("multistep_steps", None), params.pop("multistep_sparsity_levels", None)
        if not steps or not levels or len(levels) != len(steps) + 1:
            raise ConfigError(f"{at}.params.multistep_sparsity_levels: give one level more than multistep_steps "
                              "(the first applies from epoch 0)")
        ratio, schedule = levels[-1], {"type": "multistep", "steps": {"0": levels[0], **{str(s): lv for s, lv in zip(steps, levels[1:])}}}
    elif schedule_type == "exponential":
        if target is None or "sparsity_target_epoch" not in params:
            raise ConfigError(f"{at}.params: the exponential schedule needs sparsity_target and sparsity_target_epoch")
        ratio, schedule = target, {"type": "exponential", "initial_ratio": init, "target_epoch": params.pop("sparsity_target_epoch")}
    else:
        raise ConfigError(f"{at}.params.schedule: {schedule_type!r} has no NNCF 3 scheduler; use 'exponential' or 'multistep' "
                          "(give it explicitly: NNCF 2's default was polynomial)")
    for key in params:
        raise ConfigError(f"{at}.params.{key}: NNCF 2 key with no NNCF 3 counterpart; remove it")
    return {"algorithm": "pruning", "mode": mode, "ratio": ratio, "schedule": schedule, **entry}


def _knowledge_distillation(entry: dict[str, Any], path: str) -> dict[str, Any]:
    """NNCF 2's KD (task loss + scale * KD term) as our weighted sum with label_ce 1."""
    entry = dict(entry)
    entry.pop("algorithm")
    kind, scale = entry.pop("type", "softmax"), entry.pop("scale", 1.0)
    if kind not in ("softmax", "mse"):
        raise ConfigError(f"{path.rsplit('.', 1)[0]}.type: {kind!r}; NNCF 2's knowledge_distillation type is 'softmax' or 'mse'")
    weights = {"label_ce": 1.0, "kd": scale if kind == "softmax" else 0.0, "mse": scale if kind == "mse" else 0.0}
    return {"algorithm": "label_preserving_distillation", "temperature": entry.pop("temperature", 1.0),
            "weights": weights, **entry}


def _refuse(instead: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    def mapper(entry, path):
        raise ConfigError(f"{path}: NNCF 2's {entry['algorithm']!r} has no NNCF 3 counterpart; {instead}")
    return mapper


ALGORITHMS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "magnitude_sparsity": _sparsity,
    "rb_sparsity": _sparsity,
    "knowledge_distillation": _knowledge_distillation,
    "filter_pruning": _refuse('NNCF 3 prunes PyTorch models unstructured only; use {"algorithm": "pruning", '
                              '"mode": "UNSTRUCTURED_MAGNITUDE_LOCAL", "ratio": ...}'),
    "const_sparsity": _refuse('use {"algorithm": "pruning"} with a ratio'),
    "binarization": _refuse('use {"algorithm": "quantization"} with weights.bits / activations.bits down to 2'),
    "movement_sparsity": _refuse('use {"algorithm": "pruning", "mode": "UNSTRUCTURED_REGULARIZATION_BASED"}'),
    "progressive_shrinking": _refuse("NAS is not available"),
}

# Entries whose keys ENTRY_KEYS rewrites: NNCF 2's names (quantization is spelled alike).
NNCF2_ALGORITHMS = {"quantization", *ALGORITHMS}
