"""The built-in trainer: an optional loop over the controller.

``run(config, output_dir)`` trains (or loads) the FP32 reference, compresses it through
:func:`create_compressed_model`, fine-tunes, evaluates both models, exports the IR pair and runs
it on OpenVINO CPU. The output directory holds::

    config.json       the validated config the run started with
    reference.pt      FP32 reference weights
    reference_progress.pt  while the reference trains: its last finished epoch (--resume continues it)
    checkpoint.pt     last finished epoch (controller state, optimizer, RNG): --resume starts here
    best.pt           with select_checkpoint=fewest_mismatches: the controller state of the best epoch
    results.json      accuracies, mismatches, flip matrix, history, OpenVINO results
    ir/               reference.xml, compressed.xml (multi-bit: compressed_w8.xml, compressed_w4.xml, ...)

Every file is written atomically. A resumed run continues from the last checkpoint and, given
the same config, ends with the same weights as an uninterrupted one: the data order and
augmentation come from torch's global RNG, whose state is checkpointed.

Under torchrun (``WORLD_SIZE`` > 1) the same run is data-parallel (:mod:`nncf_lossless.distributed`):
rank 0 calibrates and the others rebuild the model from its broadcast state, every rank trains
its shard inside DistributedDataParallel, evaluation gathers every rank's logits so counts are the
single-process ones, and only rank 0 writes. Each epoch's data order and augmentation then come
from (seed, epoch, rank), so a resumed run, with the same number of processes, is bit-identical to
an uninterrupted one; a different number of processes resumes too, on its own shards.

With ``dataset.validation``, each epoch is evaluated on the validation split only (``history``
records say ``"split": "validation"``), checkpoint selection and ``weights: "auto"`` score there,
and the test split is read only after the last epoch, to report. Without it, each epoch is
evaluated on the test split for the record, and ``select_checkpoint`` must stay ``last``. Selection
considers only fully compressed epochs (NNCF 2's rule): never one before a pruning schedule reaches its ratio.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from nncf_lossless import distributed
from nncf_lossless.algorithm import CompressionStage
from nncf_lossless.checker.core import check_pair
from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint, write_json
from nncf_lossless.config import load_config
from nncf_lossless.controller import CompressionController, create_compressed_model
from nncf_lossless.data import DataBundle, load_dataset
from nncf_lossless.errors import ConfigError
from nncf_lossless.export.ir_eval import evaluate_on_ir
from nncf_lossless.models import build_model
from nncf_lossless.training.loop import (
    Loaders,
    evaluate,
    fit_epoch,
    make_loaders,
    make_lr_schedule,
    make_optimizer,
    resolve_device,
    seed_everything,
    start_epoch,
    wrap_ddp,
)
from nncf_lossless.training.reference import REFERENCE, REFERENCE_PROGRESS, load_or_train_reference
from nncf_lossless.training.repair_step import check_repair_config, repair_after_export, repair_requested
from nncf_lossless.training.selection import CheckpointSelection
from nncf_lossless.training.tuning import TUNING
from nncf_lossless.training.weight_ema import WeightEMA

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
BEST = "best.pt"
IR_EVAL_DIR = ".ir-eval"
CONFIG = "config.json"


def run(config: dict[str, Any] | str | Path, output_dir: str | Path, *, resume: bool = False,
        overwrite: bool = False, console: Console | None = None, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Runs the whole job and returns the results that are also written to ``results.json``.

    An output directory that already holds a run is continued with ``resume``, started over
    with ``overwrite`` (its reference, checkpoint and results are discarded), and refused otherwise.
    ``stop_after_epoch`` ends this run after that fine-tuning epoch's checkpoint (a job slot's time
    limit); ``resume`` continues it. The results then say ``stopped_after_epoch`` and nothing is exported.
    """
    config = load_config(config)
    out = Path(output_dir)
    train_cfg = config["training"]
    owns_group = not torch.distributed.is_initialized()
    dctx = distributed.setup(train_cfg["device"])
    try:
        return _run(config, out, resume, overwrite, console or Console(stderr=True, quiet=not dctx.is_main),
                    stop_after_epoch, dctx)
    finally:
        if owns_group:
            distributed.teardown(dctx)


def _run(config: dict[str, Any], out: Path, resume: bool, overwrite: bool, console: Console,
         stop_after_epoch: int | None, dctx: distributed.Context) -> dict[str, Any]:
    train_cfg = config["training"]
    _prepare_run_dir(config, out, resume, overwrite, remove=dctx.is_main)
    if dctx.enabled:
        _check_distributed(config, out)
    seed_everything(train_cfg["seed"])
    data = load_dataset(config["dataset"], seed=train_cfg["seed"])
    _check_sample_size(config, data)
    check_repair_config(config, data)
    loaders = make_loaders(data, train_cfg, dctx)
    if dctx.is_main:
        write_json(config, out / CONFIG)
    distributed.barrier(dctx)

    device = distributed.device_for(dctx, resolve_device(train_cfg["device"]))
    model = build_model(config["model"], num_classes=len(data.class_names), in_channels=data.sample_size[1]).to(device)
    if dctx.enabled and train_cfg["sync_batch_norm"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    reference_seconds = load_or_train_reference(model, config, loaders, out, console, dctx)
    # The split every epoch is scored on: validation if there is one (selection reads only it), else the test split.
    split = "validation" if loaders.validation is not None else "test"
    eval_loader = loaders.validation if loaders.validation is not None else loaders.test
    ref_logits, labels = evaluate(model, eval_loader, dctx)
    tuned = _tune_if_auto(config, model, data, out, console)
    sampler = getattr(loaders.train, "sampler", None)
    if not hasattr(sampler, "set_reference"):
        sampler = None
    if sampler is not None:  # flip-focused sampling: the reference's margins on the clean training images
        sampler.set_reference(torch.from_numpy(evaluate(model, loaders.calibration, dctx)[0]))

    state = load_checkpoint(out / CHECKPOINT) if resume and (out / CHECKPOINT).exists() else None
    if resume and state is None:
        console.print(f"[yellow]no checkpoint in {out}; starting the compressed fine-tuning from the beginning")
    epochs = train_cfg["epochs"]
    ctrl, cmodel = _compress(model, tuned, loaders, state, epochs, dctx)
    train_model = wrap_ddp(cmodel, tuned, dctx)
    outside_ddp = _outside(ctrl.trainable_parameters(), cmodel) if dctx.enabled else []
    optimizer = make_optimizer(ctrl.trainable_parameters(), train_cfg)
    lr_schedule = make_lr_schedule(optimizer, train_cfg, epochs * len(loaders.train))
    ema = WeightEMA(cmodel, train_cfg["ema_decay"]) if train_cfg["ema_decay"] else None
    history: list[dict[str, Any]] = []
    epoch_seconds: list[float] = []  # wall time of each epoch's training steps (not in history: runs differ in it)
    first_epoch = 0
    selection = CheckpointSelection(train_cfg["select_checkpoint"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(state["rng"])
        history, first_epoch, selection.best = state["history"], int(state["epoch"]), state.get("best")
        epoch_seconds = list(state.get("epoch_train_seconds", []))
        if sampler is not None and state.get("sampler") is not None:
            sampler.load_state_dict(state["sampler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        console.print(f"resumed from {out / CHECKPOINT} after epoch {first_epoch}")
    eval_inputs = torch.cat([x for x, _ in eval_loader]).numpy() if train_cfg["evaluate_ir"] else None
    ir_reference_logits = None

    # Apprentice scheme A trains the teacher: mismatches then count against the teacher as it is now.
    teacher_trains = any(p.requires_grad for p in ctrl.reference.parameters())
    started = time.perf_counter()
    comp_logits = None
    stopped = False
    for epoch in range(first_epoch, epochs):
        start_epoch(loaders, dctx, train_cfg["seed"], epoch)
        epoch_started = time.perf_counter()
        loss = fit_epoch(train_model, loaders.train, optimizer, lr_schedule, ctrl, console,
                         description=f"fine-tuning epoch {epoch + 1}/{epochs}",
                         after_backward=lambda: distributed.average_gradients(dctx, outside_ddp),
                         after_step=None if ema is None else ema.update)
        train_seconds = time.perf_counter() - epoch_started  # the training steps alone, without evaluation
        # Checked on the weights, which DDP keeps equal on every rank (a check of the rank-local loss could stop
        # one rank and leave the others waiting), and before this epoch's checkpoint, so the last one is finite.
        if not all(torch.isfinite(p).all() for p in cmodel.parameters()):
            raise ConfigError(f"training.lr: fine-tuning diverged in epoch {epoch + 1} (the weights are no longer "
                              f"finite); lower the learning rate ({train_cfg['lr']} now)")
        if sampler is not None:
            sampler.end_epoch()  # every rank's flips, in the checkpoint and the next epoch's draw
        if teacher_trains:
            ref_logits, _ = evaluate(ctrl.reference, eval_loader, dctx)
        # The weights scored and saved as best are the ones export would write (the averages, with ema_decay).
        with ema.swapped() if ema is not None else contextlib.nullcontext():
            comp_logits, _ = evaluate(cmodel, eval_loader, dctx)
            metrics = compare(ref_logits, comp_logits, labels)
            epoch_seconds.append(train_seconds)
            record = {"epoch": epoch + 1, "train_loss": loss, "split": split,
                      "compressed_accuracy": metrics["compressed"]["accuracy"], "mismatches": metrics["mismatches"],
                      "fully_compressed": ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED,
                      "statistics": ctrl.statistics()}
            line = (f"fine-tuning epoch {epoch + 1}/{epochs}: loss {loss:.4f}, {split} compressed accuracy "
                    f"{metrics['compressed']['accuracy']:.2%}, mismatches {metrics['mismatches']} of {len(labels)}")
            if train_cfg["evaluate_ir"]:
                ir_record = None
                if dctx.is_main:  # one OpenVINO evaluation, shared: every rank must pick the same best epoch
                    ir_metrics, ir_reference_logits = evaluate_on_ir(ctrl, out / IR_EVAL_DIR, eval_inputs, labels,
                                                                     None if teacher_trains else ir_reference_logits)
                    ir_record = {"ir_mismatches": ir_metrics["mismatches"],
                                 "ir_compressed_accuracy": ir_metrics["compressed"]["accuracy"]}
                record.update(distributed.broadcast_object(dctx, ir_record))
                line += f" (on the IRs: {record['ir_mismatches']})"
            history.append(record)
            console.print(line)
            if selection.offer(record) and dctx.is_main:
                save_checkpoint({"epoch": epoch + 1, "ctrl": ctrl.state_dict()}, out / BEST)
        if dctx.is_main:
            save_checkpoint({"epoch": epoch + 1, "ctrl": ctrl.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict(), "rng": torch.get_rng_state(), "history": history,
                             "best": selection.best, "world_size": dctx.world_size,
                             "sampler": None if sampler is None else sampler.state_dict(),
                             "ema": None if ema is None else ema.state_dict(),
                             "epoch_train_seconds": epoch_seconds}, out / CHECKPOINT)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < epochs:
            stopped = True
            break
    fine_tune_seconds = time.perf_counter() - started
    distributed.barrier(dctx)  # rank 0's checkpoints are on disk before anyone reads best.pt or leaves
    if stopped:
        console.print(f"stopped after epoch {len(history)} of {epochs} (stop_after_epoch); continue with --resume")
        return {"stopped_after_epoch": len(history), "history": history}

    if ema is not None:  # the run ends with the averages: the last epoch's, unless selection kept another's
        ema.copy_to_model()  # comp_logits were already scored with these averages swapped in
    if selection.mode == "fewest_mismatches" and selection.best is None:
        console.print("select_checkpoint: no epoch was fully compressed (a schedule ends after training): "
                      "kept the last epoch's weights")
    if selection.selected_epoch(len(history)) != len(history):
        ctrl.load_state_dict(load_checkpoint(out / BEST)["ctrl"])
        console.print(f"kept the weights of epoch {selection.best['epoch']} (select_checkpoint: fewest_mismatches)")
        comp_logits = None
    if split != "test":  # selection is over: now, and only now, the test split is read, to report
        ref_logits, labels = evaluate(ctrl.reference, loaders.test, dctx)  # the frozen FP32 copy (scheme A: as trained)
        comp_logits = None
    if comp_logits is None:  # resumed after the last epoch, a best epoch restored, or scored on validation
        comp_logits, _ = evaluate(cmodel, loaders.test, dctx)
        if teacher_trains:
            ref_logits, _ = evaluate(ctrl.reference, loaders.test, dctx)
    results: dict[str, Any] = {**compare(ref_logits, comp_logits, labels), "statistics": ctrl.statistics(),
                               "history": history, "selected_epoch": selection.selected_epoch(len(history)),
                               "timing": {"reference_training_seconds": reference_seconds,
                                          "fine_tuning_seconds_this_run": fine_tune_seconds,
                                          "train_seconds_by_epoch": epoch_seconds, "train_steps_per_epoch": len(loaders.train)}}
    if data.validation_info is not None:
        # A reference from model.checkpoint was trained elsewhere, perhaps on these images; one this run
        # trained saw only data.train, which the validation split was carved out of.
        results["validation"] = {**data.validation_info,
                                 "held_out_of_reference_training": not config["model"]["checkpoint"]}
    bit_logits = _logits_by_bits(ctrl, cmodel, loaders, dctx)
    if bit_logits:  # a multi-bit model: every bit-width against the reference (the top-level counts are the highest's)
        results["by_bits"] = {str(b): {"mismatches": m["mismatches"], "compressed_accuracy": m["compressed"]["accuracy"]}
                              for b, m in ((b, compare(ref_logits, lg, labels)) for b, lg in bit_logits.items())}
    if dctx.enabled:
        digests = distributed.all_digests(dctx, cmodel)
        results["distributed"] = {"world_size": dctx.world_size, "backend": dctx.backend,
                                  "weights_sha256_by_rank": digests, "ranks_identical": len(set(digests)) == 1}
    if not dctx.is_main:
        distributed.barrier(dctx)  # rank 0 exports, checks and writes
        return results
    if config["export"]["enabled"]:
        results["openvino"] = export_and_check(ctrl, data, loaders, out, (ref_logits, comp_logits), labels, bit_logits)
        # The same count, measured where it is made and where it ships.
        results["mismatches_by_side"] = {"pytorch": results["mismatches"], **{
            f"openvino {r['device']} {r['precision']}": r["mismatches"] for r in results["openvino"]["runs"]}}
        for bits, ir in results["openvino"].get("by_bits", {}).items():
            results["by_bits"][bits]["mismatches_by_side"] = {"pytorch": results["by_bits"][bits]["mismatches"], **{
                f"openvino {r['device']} {r['precision']}": r["mismatches"] for r in ir["runs"]}}
            console.print(f"{bits}-bit mismatches: " + ", ".join(
                f"{side} {n}" for side, n in results["by_bits"][bits]["mismatches_by_side"].items()))
        if repair_requested(config):
            paths = {k: results["openvino"][f"{k}_ir"] for k in ("reference", "compressed")}
            results["repair"] = repair_after_export(config, data, paths, out)
    shutil.rmtree(out / IR_EVAL_DIR, ignore_errors=True)
    write_json(results, out / RESULTS)
    distributed.barrier(dctx)
    return results


def _compress(model: nn.Module, config: dict[str, Any], loaders: Loaders, state: dict[str, Any] | None, epochs: int,
              dctx: distributed.Context) -> tuple[CompressionController, nn.Module]:
    """``create_compressed_model``; under DDP, rank 0 calibrates once and the others restore its state."""
    kwargs = {"calibration_data": loaders.calibration, "epochs": epochs, "steps_per_epoch": len(loaders.train)}
    if not dctx.enabled or state is not None:
        return create_compressed_model(model, config, compression_state=state["ctrl"] if state else None, **kwargs)
    ctrl = cmodel = None
    if dctx.is_main:
        ctrl, cmodel = create_compressed_model(copy.deepcopy(model), config, **kwargs)
    initial = distributed.broadcast_object(dctx, ctrl.state_dict() if dctx.is_main else None)
    if not dctx.is_main:
        ctrl, cmodel = create_compressed_model(model, config, compression_state=initial, **kwargs)
    return ctrl, cmodel


def _outside(params: list[nn.Parameter], model: nn.Module) -> list[nn.Parameter]:
    inside = {id(p) for p in model.parameters()}
    return [p for p in params if id(p) not in inside]


def _check_distributed(config: dict[str, Any], out: Path) -> None:
    from nncf_lossless.training import tuning

    index = tuning.auto_entry(config)
    if index is not None and not (out / TUNING).exists():
        raise ConfigError(f'compression[{index}].weights: "auto" tunes in one process; run it once without torchrun '
                          "(it writes tuning.json), then continue with torchrun and --resume")
    if config["training"]["sync_batch_norm"] and not torch.cuda.is_available():
        raise ConfigError("training.sync_batch_norm: torch's SyncBatchNorm runs on GPUs only; this run is on the CPU")


def _tune_if_auto(config: dict[str, Any], reference: nn.Module, data: DataBundle, out: Path,
                  console: Console) -> dict[str, Any]:
    """``config`` with distillation ``weights: "auto"`` resolved by :mod:`nncf_lossless.training.tuning` (trail in tuning.json)."""
    from nncf_lossless.training import tuning

    if tuning.auto_entry(config) is None:
        return config
    tuned = tuning.tune(config, reference, data, out, console)
    seed_everything(config["training"]["seed"])  # the real run starts from the same RNG state as without tuning
    return tuned


def export_and_check(ctrl: CompressionController, data: DataBundle, loaders: Loaders, out: Path,
                     torch_logits: tuple[np.ndarray, np.ndarray], labels: np.ndarray,
                     bit_logits: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
    """Exports the IR pair and measures it on OpenVINO CPU at f32 and at the CPU's default precision.

    A multi-bit model's every ``compressed_w{b}.xml`` is measured too (``by_bits``; ``bit_logits``:
    its PyTorch logits per bit-width, for the IR-vs-PyTorch drift); ``runs`` is the highest bit-width's.
    """
    paths = ctrl.export(out / ctrl.config["export"]["dir"],
                        metadata={"class_names": data.class_names, "mean": data.mean, "std": data.std})
    inputs = torch.cat([x for x, _ in loaders.test]).numpy()
    runs = check_pair(paths["reference"], paths["compressed"], inputs, labels, source_logits=torch_logits)
    result = {"reference_ir": str(paths["reference"]), "compressed_ir": str(paths["compressed"]), "runs": runs}
    variants = {role.removeprefix("compressed_w"): path for role, path in paths.items() if role.startswith("compressed_w")}
    if variants:
        result["by_bits"] = {bits: {"compressed_ir": str(path), "runs": runs if path == paths["compressed"] else check_pair(
            paths["reference"], path, inputs, labels,
            source_logits=(torch_logits[0], bit_logits[int(bits)]) if bit_logits else None)}
            for bits, path in variants.items()}
    return result


def _logits_by_bits(ctrl: CompressionController, model: nn.Module, loaders: Loaders,
                    dctx: distributed.Context) -> dict[int, np.ndarray]:
    """The compressed model's test logits at each of its bit-widths (``{}`` unless it switches bits)."""
    if not ctrl.bit_widths:
        return {}
    active, logits = ctrl.active_bits, {}
    try:
        for bits in ctrl.bit_widths:
            ctrl.set_bits(bits)
            logits[bits] = evaluate(model, loaders.test, dctx)[0]
    finally:
        ctrl.set_bits(active)
    return logits


def export_from_checkpoint(config: dict[str, Any] | str | Path, checkpoint: str | Path,
                           out_dir: str | Path) -> dict[str, Path]:
    """Rebuilds the compressed model of a training checkpoint and exports its IR pair."""
    ctrl, _, data = load_compressed(config, checkpoint)
    return ctrl.export(Path(out_dir), metadata={"class_names": data.class_names, "mean": data.mean, "std": data.std})


def load_compressed(config: dict[str, Any] | str | Path, checkpoint: str | Path | None = None,
                    ) -> tuple[CompressionController, nn.Module, DataBundle]:
    """The compressed model of a training checkpoint, or (without one) as the config compresses it.

    Without a checkpoint the FP32 reference comes from ``model.checkpoint`` and is calibrated
    afresh with the config's seed, which reproduces a post-training-quantized model.
    """
    config = load_config(config)
    seed_everything(config["training"]["seed"])
    data = load_dataset(config["dataset"], seed=config["training"]["seed"])
    model = build_model(config["model"], num_classes=len(data.class_names), in_channels=data.sample_size[1])
    model.to(resolve_device(config["training"]["device"]))
    loaders = make_loaders(data, config["training"])
    if checkpoint is not None:
        state = load_checkpoint(Path(checkpoint))
        if "ctrl" not in state:
            raise ConfigError(f"--checkpoint: {checkpoint} is not a training checkpoint (no 'ctrl' entry)")
        # Schedules given as fractions of training (frozen_bn at_fraction) need its length to restore.
        ctrl, cmodel = create_compressed_model(model, config, compression_state=state["ctrl"],
                                               epochs=config["training"]["epochs"], steps_per_epoch=len(loaders.train))
        if state.get("ema") is not None:  # checkpoint.pt of an ema_decay run: the averages are what it exports
            ema = WeightEMA(cmodel, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to_model()
        return ctrl, cmodel, data
    if not config["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint: without a training checkpoint, the config must name the FP32 reference weights")
    load_or_train_reference(model, config, loaders, Path("."), Console(stderr=True))  # loads: the file exists
    ctrl, cmodel = create_compressed_model(model, config, calibration_data=loaders.calibration)
    return ctrl, cmodel, data


def _prepare_run_dir(config: dict[str, Any], out: Path, resume: bool, overwrite: bool, remove: bool = True) -> None:
    saved = out / CONFIG
    if resume:
        if saved.exists() and load_config(saved) != config:
            raise ConfigError(f"--resume: the config differs from {saved}, the one this run started with")
        return
    previous = [name for name in (CONFIG, REFERENCE_PROGRESS, REFERENCE, CHECKPOINT, BEST, RESULTS, TUNING)
                if (out / name).exists()]
    if previous and not overwrite:
        raise ConfigError(f"--output-dir: {out} already holds a run ({', '.join(previous)}); "
                          "pass --resume to continue it or --overwrite to start over")
    for name in previous if remove else []:
        (out / name).unlink(missing_ok=True)


def _check_sample_size(config: dict[str, Any], data: DataBundle) -> None:
    given = list(config["input_info"]["sample_size"])
    if given[1:] != list(data.sample_size[1:]):
        raise ConfigError(f"input_info.sample_size: {given} does not match the dataset's samples {list(data.sample_size)}")
