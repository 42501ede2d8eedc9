"""``weights: "auto"``: tune distillation weights and temperature with Optuna, before the real run.

Each trial compresses a copy of the trained reference with suggested weights (every student term
in [0, 1]) and temperature (in [1, ``auto.max_temperature``]), fine-tunes it for
``auto.epochs_per_trial`` epochs on the training split and scored on ``dataset.validation`` if the
config has one, else on a held-out part of the training split (``auto.validation_fraction`` of
the training samples; never the test set), or on a fixed random
``auto.train_samples`` of what remains, and is scored by its
validation mismatches against the reference, with accuracy breaking ties. Trials reuse the
trainer's own functions, so they train exactly as the real run will. Optuna's TPE sampler is seeded
with ``training.seed``.

The trail (every trial's parameters and results, and the best) is written atomically to
``tuning.json`` in the run directory after every trial; a finished trail is reused on resume.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Subset

from nncf_lossless.algorithms.distillation.algo import DEFAULT_WEIGHTS, NAME, TERMS
from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import write_json
from nncf_lossless.controller import create_compressed_model
from nncf_lossless.data import DataBundle
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.loop import fit_epoch, make_lr_schedule, make_optimizer, predict, seed_everything

TUNING = "tuning.json"


def auto_entry(config: dict[str, Any]) -> int | None:
    """Index of the compression entry whose weights are ``"auto"``, or ``None``."""
    for i, entry in enumerate(config["compression"]):
        if entry["algorithm"] == NAME and entry.get("weights") == "auto":
            return i
    return None


def tune(config: dict[str, Any], reference: nn.Module, data: DataBundle, out: Path,
         console: Console | None = None) -> dict[str, Any]:
    """Returns ``config`` with the auto entry's weights and temperature replaced by the best trial's."""
    index = auto_entry(config)
    if index is None:
        return config
    try:
        import optuna
    except ImportError:
        raise ConfigError(f'compression[{index}].weights: "auto" needs Optuna; pip install "nncf-lossless[auto]"') from None
    console = console or Console(stderr=True)
    entry, train_cfg = config["compression"][index], config["training"]
    auto, seed = entry["auto"], train_cfg["seed"]
    path = out / TUNING
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous and previous.get("best") and previous.get("auto") == entry["auto"]:
        console.print(f"reusing the tuned weights in {path}")
        return _from_best(config, index, previous["best"]["params"])
    trail: dict[str, Any] = {"entry": index, "auto": auto, "objective": "validation mismatches - validation accuracy",
                             "trials": [], "best": None}

    perm = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed)).tolist()
    batch = train_cfg["batch_size"]
    if getattr(data, "validation", None) is not None:
        # The run's own validation split (dataset.validation): trials train on the training split only.
        train_idx, val_set = perm[: auto["train_samples"]], data.validation
        trail["validation"] = "dataset.validation"
    else:
        n_val = max(1, int(len(perm) * auto["validation_fraction"]))
        train_idx, val_idx = perm[n_val:][: auto["train_samples"]], perm[:n_val]
        val_set = Subset(data.calibration, val_idx)
        trail["validation"] = f"auto.validation_fraction {auto['validation_fraction']} of the training split"
    n_val = len(val_set)
    val = DataLoader(val_set, batch_size=train_cfg["eval_batch_size"])
    calibration = DataLoader(Subset(data.calibration, train_idx), batch_size=batch)
    ref_val, val_labels = predict(reference, val)
    trail["validation_samples"], trail["train_samples"] = n_val, len(train_idx)

    def objective(trial: optuna.Trial) -> float:
        # targets: "teacher" keeps the ground-truth term at 0 in every trial.
        weights = {t: trial.suggest_float(t, 0.0, 1.0) if not (t == "label_ce" and entry["targets"] == "teacher") else 0.0
                   for t in TERMS}
        temperature = trial.suggest_float("temperature", 1.0, auto["max_temperature"])
        trial_config = _resolved(config, index, {**weights, "teacher": DEFAULT_WEIGHTS["teacher"]}, temperature)
        seed_everything(seed)
        train = DataLoader(Subset(data.train, train_idx), batch_size=batch, shuffle=True)
        ctrl, cmodel = create_compressed_model(copy.deepcopy(reference), trial_config, calibration_data=calibration,
                                               epochs=auto["epochs_per_trial"], steps_per_epoch=len(train))
        optimizer = make_optimizer(ctrl.trainable_parameters(), train_cfg)
        lr_schedule = make_lr_schedule(optimizer, train_cfg, auto["epochs_per_trial"] * len(train))
        for epoch in range(auto["epochs_per_trial"]):
            fit_epoch(cmodel, train, optimizer, lr_schedule, ctrl, console,
                      description=f"tuning trial {trial.number + 1}/{auto['trials']} epoch {epoch + 1}")
        teacher_val = predict(ctrl.reference, val)[0] if entry["scheme"] == "A" else ref_val
        m = compare(teacher_val, predict(cmodel, val)[0], val_labels)
        score = m["mismatches"] - m["compressed"]["accuracy"]
        trail["trials"].append({"number": trial.number, "params": trial.params, "score": score,
                                "mismatches": m["mismatches"], "accuracy": m["compressed"]["accuracy"],
                                "mismatches_reference_correct": m["mismatches_reference_correct"]})
        write_json(trail, path)
        console.print(f"tuning trial {trial.number + 1}/{auto['trials']}: validation mismatches {m['mismatches']} "
                      f"of {n_val}, accuracy {m['compressed']['accuracy']:.2%}")
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=auto["trials"])
    best = dict(study.best_trial.params)
    trail["best"] = {"number": study.best_trial.number, "params": best, "score": study.best_value}
    write_json(trail, path)
    return _from_best(config, index, best)


def _from_best(config: dict[str, Any], index: int, params: dict[str, float]) -> dict[str, Any]:
    weights = {t: params.get(t, 0.0) for t in TERMS}
    return _resolved(config, index, {**weights, "teacher": DEFAULT_WEIGHTS["teacher"]}, params["temperature"])


def _resolved(config: dict[str, Any], index: int, weights: dict[str, float], temperature: float) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["compression"][index].update(weights=weights, temperature=temperature)
    return config
