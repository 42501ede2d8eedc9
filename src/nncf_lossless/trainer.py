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
    ir/               reference.xml, compressed.xml

Every file is written atomically. A resumed run continues from the last checkpoint and, given
the same config, ends with the same weights as an uninterrupted one: the data order and
augmentation come from torch's global RNG, whose state is checkpointed.

Under torchrun (``WORLD_SIZE`` > 1) the same run is data-parallel (:mod:`nncf_lossless.distributed`):
rank 0 calibrates and the others rebuild the model from its broadcast state, every rank trains
its shard inside DistributedDataParallel, evaluation gathers every rank's logits so counts are the
single-process ones, and only rank 0 writes. Each epoch's data order and augmentation then come
from (seed, epoch, rank), so a resumed run, with the same number of processes, is bit-identical to
an uninterrupted one; a different number of processes resumes too, on its own shards.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from nncf_lossless import distributed
from nncf_lossless.checker import check_pair
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint, write_json
from nncf_lossless.config import load_config
from nncf_lossless.controller import CompressionController, create_compressed_model
from nncf_lossless.data import DataBundle, load_dataset
from nncf_lossless.errors import ConfigError
from nncf_lossless.ir_eval import evaluate_on_ir
from nncf_lossless.metrics import compare
from nncf_lossless.models import build_model

CHECKPOINT = "checkpoint.pt"
REFERENCE = "reference.pt"
REFERENCE_PROGRESS = "reference_progress.pt"
RESULTS = "results.json"
BEST = "best.pt"
IR_EVAL_DIR = ".ir-eval"
CONFIG = "config.json"
TUNING = "tuning.json"


@dataclass
class Loaders:
    train: DataLoader
    test: DataLoader
    calibration: DataLoader


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
    loaders = make_loaders(data, train_cfg, dctx)
    if dctx.is_main:
        write_json(config, out / CONFIG)
    distributed.barrier(dctx)

    device = distributed.device_for(dctx, resolve_device(train_cfg["device"]))
    model = build_model(config["model"], num_classes=len(data.class_names), in_channels=data.sample_size[1]).to(device)
    if dctx.enabled and train_cfg["sync_batch_norm"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    reference_seconds = _load_or_train_reference(model, config, loaders, out, console, dctx)
    ref_logits, labels = evaluate(model, loaders.test, dctx)
    tuned = _tune_if_auto(config, model, data, out, console)

    state = load_checkpoint(out / CHECKPOINT) if resume and (out / CHECKPOINT).exists() else None
    if resume and state is None:
        console.print(f"[yellow]no checkpoint in {out}; starting the compressed fine-tuning from the beginning")
    epochs = train_cfg["epochs"]
    ctrl, cmodel = _compress(model, tuned, loaders, state, epochs, dctx)
    train_model = _wrap_ddp(cmodel, tuned, dctx)
    outside_ddp = _outside(ctrl.trainable_parameters(), cmodel) if dctx.enabled else []
    optimizer = make_optimizer(ctrl.trainable_parameters(), train_cfg)
    lr_schedule = make_lr_schedule(optimizer, train_cfg, epochs * len(loaders.train))
    history: list[dict[str, Any]] = []
    start_epoch = 0
    best: dict[str, Any] | None = None  # {"epoch", "score"} of the epoch select_checkpoint keeps
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(state["rng"])
        history, start_epoch, best = state["history"], int(state["epoch"]), state.get("best")
        console.print(f"resumed from {out / CHECKPOINT} after epoch {start_epoch}")
    test_inputs = torch.cat([x for x, _ in loaders.test]).numpy() if train_cfg["evaluate_ir"] else None
    ir_reference_logits = None

    # Apprentice scheme A trains the teacher: mismatches then count against the teacher as it is now.
    teacher_trains = any(p.requires_grad for p in ctrl.reference.parameters())
    started = time.perf_counter()
    comp_logits = None
    stopped = False
    for epoch in range(start_epoch, epochs):
        _start_epoch(loaders, dctx, train_cfg["seed"], epoch)
        loss = fit_epoch(train_model, loaders.train, optimizer, lr_schedule, ctrl, console,
                         description=f"fine-tuning epoch {epoch + 1}/{epochs}",
                         after_backward=lambda: distributed.average_gradients(dctx, outside_ddp))
        if teacher_trains:
            ref_logits, _ = evaluate(ctrl.reference, loaders.test, dctx)
        comp_logits, _ = evaluate(cmodel, loaders.test, dctx)
        metrics = compare(ref_logits, comp_logits, labels)
        record = {"epoch": epoch + 1, "train_loss": loss, "compressed_accuracy": metrics["compressed"]["accuracy"],
                  "mismatches": metrics["mismatches"], "statistics": ctrl.statistics()}
        line = (f"fine-tuning epoch {epoch + 1}/{epochs}: loss {loss:.4f}, compressed accuracy "
                f"{metrics['compressed']['accuracy']:.2%}, mismatches {metrics['mismatches']} of {len(labels)}")
        if train_cfg["evaluate_ir"]:
            ir_record = None
            if dctx.is_main:  # one OpenVINO evaluation, shared: every rank must pick the same best epoch
                ir_metrics, ir_reference_logits = evaluate_on_ir(ctrl, out / IR_EVAL_DIR, test_inputs, labels,
                                                                 None if teacher_trains else ir_reference_logits)
                ir_record = {"ir_mismatches": ir_metrics["mismatches"],
                             "ir_compressed_accuracy": ir_metrics["compressed"]["accuracy"]}
            record.update(distributed.broadcast_object(dctx, ir_record))
            line += f" (on the IRs: {record['ir_mismatches']})"
        history.append(record)
        console.print(line)
        score = [record.get("ir_mismatches", record["mismatches"]), -record.get("ir_compressed_accuracy", record["compressed_accuracy"])]
        if train_cfg["select_checkpoint"] == "fewest_mismatches" and (best is None or score < best["score"]):
            best = {"epoch": epoch + 1, "score": score}
            if dctx.is_main:
                save_checkpoint({"epoch": epoch + 1, "ctrl": ctrl.state_dict()}, out / BEST)
        if dctx.is_main:
            save_checkpoint({"epoch": epoch + 1, "ctrl": ctrl.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict(), "rng": torch.get_rng_state(), "history": history,
                             "best": best, "world_size": dctx.world_size}, out / CHECKPOINT)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < epochs:
            stopped = True
            break
    fine_tune_seconds = time.perf_counter() - started
    distributed.barrier(dctx)  # rank 0's checkpoints are on disk before anyone reads best.pt or leaves
    if stopped:
        console.print(f"stopped after epoch {len(history)} of {epochs} (stop_after_epoch); continue with --resume")
        return {"stopped_after_epoch": len(history), "history": history}

    if best is not None and best["epoch"] != len(history):
        ctrl.load_state_dict(load_checkpoint(out / BEST)["ctrl"])
        console.print(f"kept the weights of epoch {best['epoch']} (select_checkpoint: fewest_mismatches)")
        comp_logits = None
    if comp_logits is None:  # resumed after the last epoch, or a best epoch restored
        comp_logits, _ = evaluate(cmodel, loaders.test, dctx)
        if teacher_trains:
            ref_logits, _ = evaluate(ctrl.reference, loaders.test, dctx)
    results: dict[str, Any] = {**compare(ref_logits, comp_logits, labels), "statistics": ctrl.statistics(),
                               "history": history, "selected_epoch": best["epoch"] if best else len(history),
                               "timing": {"reference_training_seconds": reference_seconds,
                                          "fine_tuning_seconds_this_run": fine_tune_seconds}}
    if dctx.enabled:
        digests = distributed.all_digests(dctx, cmodel)
        results["distributed"] = {"world_size": dctx.world_size, "backend": dctx.backend,
                                  "weights_sha256_by_rank": digests, "ranks_identical": len(set(digests)) == 1}
    if not dctx.is_main:
        distributed.barrier(dctx)  # rank 0 exports, checks and writes
        return results
    if config["export"]["enabled"]:
        results["openvino"] = export_and_check(ctrl, data, loaders, out, (ref_logits, comp_logits), labels)
        # The same count, measured where it is made and where it ships.
        results["mismatches_by_side"] = {"pytorch": results["mismatches"], **{
            f"openvino {r['device']} {r['precision']}": r["mismatches"] for r in results["openvino"]["runs"]}}
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


def _wrap_ddp(model: nn.Module, config: dict[str, Any], dctx: distributed.Context) -> nn.Module:
    """The model the training loop runs: DDP-wrapped under torchrun, else the model itself."""
    if not dctx.enabled:
        return model
    entries = config["compression"]
    # Parameters that stop getting gradients mid-run (BN affine frozen, hints-only epochs) need DDP's unused-parameter scan.
    unused = any(e.get("freeze_affine") for e in entries if e["algorithm"] == "frozen_bn") or any(
        e.get("hints_only_epochs", 0) > 0 for e in entries if e["algorithm"] == "hint_distillation")
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=unused)


def _outside(params: list[nn.Parameter], model: nn.Module) -> list[nn.Parameter]:
    inside = {id(p) for p in model.parameters()}
    return [p for p in params if id(p) not in inside]


def _start_epoch(loaders: Loaders, dctx: distributed.Context, seed: int, epoch: int) -> None:
    """Under DDP: the sampler's shuffle for this epoch and this rank's augmentation seed."""
    if dctx.enabled:
        loaders.train.sampler.set_epoch(epoch)
        torch.manual_seed(distributed.epoch_seed(seed, epoch, dctx.rank))


def _check_distributed(config: dict[str, Any], out: Path) -> None:
    from nncf_lossless import tuning

    index = tuning.auto_entry(config)
    if index is not None and not (out / TUNING).exists():
        raise ConfigError(f'compression[{index}].weights: "auto" tunes in one process; run it once without torchrun '
                          "(it writes tuning.json), then continue with torchrun and --resume")
    if config["training"]["sync_batch_norm"] and not torch.cuda.is_available():
        raise ConfigError("training.sync_batch_norm: torch's SyncBatchNorm runs on GPUs only; this run is on the CPU")


def _tune_if_auto(config: dict[str, Any], reference: nn.Module, data: DataBundle, out: Path,
                  console: Console) -> dict[str, Any]:
    """``config`` with distillation ``weights: "auto"`` resolved by :mod:`nncf_lossless.tuning` (trail in tuning.json)."""
    from nncf_lossless import tuning

    if tuning.auto_entry(config) is None:
        return config
    tuned = tuning.tune(config, reference, data, out, console)
    seed_everything(config["training"]["seed"])  # the real run starts from the same RNG state as without tuning
    return tuned


def export_and_check(ctrl: CompressionController, data: DataBundle, loaders: Loaders, out: Path,
                     torch_logits: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Exports the IR pair and measures it on OpenVINO CPU at f32 and at the CPU's default precision."""
    paths = ctrl.export(out / ctrl.config["export"]["dir"],
                        metadata={"class_names": data.class_names, "mean": data.mean, "std": data.std})
    inputs = torch.cat([x for x, _ in loaders.test]).numpy()
    runs = check_pair(paths["reference"], paths["compressed"], inputs, labels, source_logits=torch_logits)
    return {"reference_ir": str(paths["reference"]), "compressed_ir": str(paths["compressed"]), "runs": runs}


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
    if checkpoint is not None:
        state = load_checkpoint(Path(checkpoint))
        if "ctrl" not in state:
            raise ConfigError(f"--checkpoint: {checkpoint} is not a training checkpoint (no 'ctrl' entry)")
        ctrl, cmodel = create_compressed_model(model, config, compression_state=state["ctrl"])
        return ctrl, cmodel, data
    if not config["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint: without a training checkpoint, the config must name the FP32 reference weights")
    loaders = make_loaders(data, config["training"])
    _load_or_train_reference(model, config, loaders, Path("."), Console(stderr=True))  # loads: the file exists
    ctrl, cmodel = create_compressed_model(model, config, calibration_data=loaders.calibration)
    return ctrl, cmodel, data


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' asked for, but torch sees no CUDA device")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(data: DataBundle, train_cfg: dict[str, Any], dctx: distributed.Context | None = None) -> Loaders:
    """Train, test and calibration loaders; under DDP the train loader reads this rank's shard
    (``batch_size`` is per process)."""
    workers = train_cfg["num_workers"]
    if dctx is not None and dctx.enabled:
        sampler = DistributedSampler(data.train, num_replicas=dctx.world_size, rank=dctx.rank, shuffle=True,
                                     seed=train_cfg["seed"])
        train = DataLoader(data.train, batch_size=train_cfg["batch_size"], sampler=sampler, num_workers=workers)
    else:
        train = DataLoader(data.train, batch_size=train_cfg["batch_size"], shuffle=True, num_workers=workers)
    return Loaders(
        train=train,
        test=DataLoader(data.test, batch_size=train_cfg["eval_batch_size"], num_workers=workers),
        calibration=DataLoader(data.calibration, batch_size=train_cfg["batch_size"], num_workers=workers),
    )


def make_optimizer(params: Any, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    cls = torch.optim.Adam if cfg["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_lr_schedule(optimizer: torch.optim.Optimizer, cfg: dict[str, Any],
                     total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True,
                    disable=not console.is_terminal)


def fit_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
              lr_schedule: torch.optim.lr_scheduler.LRScheduler, ctrl: CompressionController | None,
              console: Console, description: str, after_backward: Any = None) -> float:
    """One epoch of cross-entropy plus the controller's terms (or the controller's loss alone if it
    owns the task loss); returns the mean training loss. ``after_backward()``, if given, runs
    between the backward pass and the optimizer step (DDP: averaging gradients DDP does not own)."""
    model.train()
    device = next(model.parameters()).device
    if ctrl is not None:
        ctrl.scheduler.epoch_step()
    total, count = 0.0, 0
    with progress_bar(console) as bar:
        task = bar.add_task(description, total=len(loader), loss=0.0)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if ctrl is not None:
                ctrl.scheduler.step()
            out = model(x)
            if ctrl is not None and ctrl.owns_task_loss:
                loss = ctrl.loss(out, y, x)
            else:
                loss = F.cross_entropy(out, y) + (ctrl.loss(out, y, x) if ctrl is not None else 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            lr_schedule.step()
            total, count = total + loss.item() * len(y), count + len(y)
            bar.update(task, advance=1, loss=total / count)
    return total / max(count, 1)


def evaluate(model: nn.Module, loader: DataLoader, dctx: distributed.Context) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` over the whole evaluation set; under DDP each rank runs its shard and all get every row."""
    if not dctx.enabled:
        return predict(model, loader)
    indices = distributed.shard(dctx, len(loader.dataset))
    logits, labels = predict(model, DataLoader(Subset(loader.dataset, indices.tolist()), batch_size=loader.batch_size))
    n = len(loader.dataset)
    return distributed.gather_in_order(dctx, logits, indices, n), distributed.gather_in_order(dctx, labels, indices, n)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pairs = [(model(x.to(device)).cpu(), y) for x, y in loader]
    finally:
        model.train(was_training)
    return torch.cat([p[0] for p in pairs]).numpy(), torch.cat([p[1] for p in pairs]).numpy()


def _load_or_train_reference(model: nn.Module, config: dict[str, Any], loaders: Loaders, out: Path,
                             console: Console, dctx: distributed.Context | None = None) -> float:
    """Loads the FP32 reference (``model.checkpoint``, or this run's ``reference.pt``) or trains it."""
    given = config["model"]["checkpoint"]
    if given and not Path(given).is_file():
        raise ConfigError(f"model.checkpoint: {given} does not exist")
    path = Path(given) if given else out / REFERENCE
    if path.exists():
        state = load_checkpoint(path)
        try:
            model.load_state_dict(state.get("state_dict", state))
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
            raise ConfigError(f"model.checkpoint: {path} does not fit model {config['model']['name']!r} ({first})") from err
        return 0.0
    dctx = dctx or distributed.Context()
    ref_cfg = config["training"]["reference"]
    train_model = _wrap_ddp(model, {"compression": []}, dctx)
    optimizer = make_optimizer(model.parameters(), ref_cfg)
    lr_schedule = make_lr_schedule(optimizer, ref_cfg, ref_cfg["epochs"] * len(loaders.train))
    # A long reference (CIFAR-10: hours) must survive a kill too: every epoch is checkpointed, and
    # a run started in this directory again (only --resume gets this far) continues from it.
    progress, start = out / REFERENCE_PROGRESS, 0
    if progress.exists():
        state = load_checkpoint(progress)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(state["rng"])
        start = int(state["epoch"])
        console.print(f"FP32 reference: resumed after epoch {start}/{ref_cfg['epochs']}")
    started = time.perf_counter()
    for epoch in range(start, ref_cfg["epochs"]):
        _start_epoch(loaders, dctx, config["training"]["seed"], epoch)
        loss = fit_epoch(train_model, loaders.train, optimizer, lr_schedule, None, console,
                         description=f"FP32 reference epoch {epoch + 1}/{ref_cfg['epochs']}")
        if dctx.is_main:
            save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_schedule": lr_schedule.state_dict(), "rng": torch.get_rng_state()}, progress)
        if not console.is_terminal and (epoch + 1) % max(1, ref_cfg["epochs"] // 10) == 0:
            # Without a live progress bar, a line every tenth of the way shows the run is alive.
            console.print(f"FP32 reference epoch {epoch + 1}/{ref_cfg['epochs']}: loss {loss:.4f}")
    if dctx.is_main:
        save_checkpoint({"state_dict": model.state_dict()}, path)
        progress.unlink(missing_ok=True)
    distributed.barrier(dctx)
    return time.perf_counter() - started


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
