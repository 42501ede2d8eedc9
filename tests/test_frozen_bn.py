"""The ``frozen_bn`` entry on real NNCF models: when BN freezes, that it stays frozen, restore, DDP."""

from __future__ import annotations

import copy
import itertools
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import digits_config
from torch import nn

from nncf_lossless import create_compressed_model
from nncf_lossless.algorithms.frozen_bn import modules as bn_freeze
from nncf_lossless.checkpoint import load_checkpoint, save_checkpoint
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.training import reference as reference_module
from nncf_lossless.training import trainer

INT4 = {"algorithm": "quantization", "subset_size": 128, "weights": {"bits": 4}, "activations": {"bits": 4}}
INT8 = {"algorithm": "quantization", "subset_size": 128}


def _config(*entries):
    return digits_config(compression=list(entries))


def _bn_state(model):
    """Running statistics of every BN layer, by name (weight/bias left out: they may still train)."""
    return {f"{name}.{key}": buf.clone() for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            for key, buf in m.named_buffers()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_steps(ctrl, model, batches, optimizer, snapshot=_bn_state):
    """Steps through ``batches`` calling ``model.train()`` before each; returns a snapshot after each."""
    snapshots = []
    for x, y in batches:
        ctrl.scheduler.step()
        model.train()  # what every training loop does, and what a hand-made freeze would lose to
        loss = F.cross_entropy(model(x), y) + ctrl.loss()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        snapshots.append(snapshot(model))
    return snapshots


def _batches(loader, n):
    return list(itertools.islice(loader, n))


def test_statistics_change_until_the_freeze_step_and_are_bit_identical_after(reference, calibration, train_loader):
    ctrl, model = create_compressed_model(reference, _config(INT4, {"algorithm": "frozen_bn", "at_step": 3}),
                                          calibration_data=calibration)
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(layers) == 3, "inside the NNCF-wrapped model the BN layers are still plain nn.BatchNorm2d"
    before = _bn_state(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    after = _train_steps(ctrl, model, _batches(train_loader, 8), optimizer)
    unfrozen = [before, *after[:3]]
    assert all(not torch.equal(a[k], b[k]) for a, b in itertools.pairwise(unfrozen)
               for k in a if k.endswith(("running_mean", "running_var"))), "the first 3 steps update every statistic"
    assert all(_same(after[2], s) for s in after[3:]), "from step index 3 on, not a bit changes"
    stats = ctrl.statistics()["frozen_bn"]
    assert stats == {"frozen": True, "frozen_at_step": 3, "frozen_at_epoch": None, "scheduled_at_step": 3,
                     "scheduled_at_epoch": None, "num_bn_layers": 3, "num_frozen_bn_layers": 3, "freeze_affine": False}
    assert not any(bn_freeze.is_frozen(m) for m in ctrl.reference.modules())
    # Frozen BN is eval-mode BN: in train mode the model now computes what it computes in eval mode.
    x = _batches(train_loader, 1)[0][0]
    with torch.no_grad():
        train_out = model.train()(x)
        assert torch.equal(train_out, model.eval()(x))


@pytest.mark.parametrize("stop_after", [2, 5], ids=["restored-before-freeze", "restored-after-freeze"])
def test_a_restored_model_freezes_at_the_same_step_and_stays_frozen(tmp_path, reference, calibration, train_loader,
                                                                    stop_after):
    cfg = _config(INT8, {"algorithm": "frozen_bn", "at_step": 3})
    ctrl, model = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=calibration)
    batches = _batches(train_loader, 8)
    # Straight through, against: stop after `stop_after` steps, save, restore (no calibration data), go on.
    straight = _train_steps(ctrl, model, batches, torch.optim.SGD(model.parameters(), lr=1e-2))
    ctrl, model = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=calibration)
    _train_steps(ctrl, model, batches[:stop_after], torch.optim.SGD(model.parameters(), lr=1e-2))
    save_checkpoint(ctrl.state_dict(), tmp_path / "ctrl.pt")
    ctrl2, model2 = create_compressed_model(copy.deepcopy(reference), cfg,
                                            compression_state=load_checkpoint(tmp_path / "ctrl.pt"))
    assert ctrl2.statistics() == ctrl.statistics()
    resumed = _train_steps(ctrl2, model2, batches[stop_after:], torch.optim.SGD(model2.parameters(), lr=1e-2))
    assert all(_same(a, b) for a, b in zip(straight[stop_after:], resumed))
    assert all(_same(straight[2], s) for s in resumed), "bit-identical to the statistics frozen before the save"
    assert ctrl2.statistics()["frozen_bn"]["frozen_at_step"] == 3
    assert ctrl2.statistics()["frozen_bn"]["num_frozen_bn_layers"] == 3


def test_freeze_affine_stops_weight_and_bias_even_with_momentum_and_weight_decay(reference, calibration, train_loader):
    ctrl, model = create_compressed_model(
        reference, _config(INT8, {"algorithm": "frozen_bn", "at_step": 2, "freeze_affine": True}),
        calibration_data=calibration)
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-2)

    def affine(_):
        return [p.detach().clone() for m in layers for p in (m.weight, m.bias)]

    after = _train_steps(ctrl, model, _batches(train_loader, 6), optimizer, snapshot=affine)
    assert not all(torch.equal(a, b) for a, b in zip(after[0], after[1])), "affine trains before the freeze"
    for snap in after[2:]:
        assert all(torch.equal(a, b) for a, b in zip(after[1], snap))
    assert all(p.grad is None and not p.requires_grad for m in layers for p in (m.weight, m.bias))
    convs = [p for n, p in model.named_parameters() if p.requires_grad]
    assert convs and all(p.grad is not None for p in convs), "the rest of the model still trains"


def _run_schedule(reference, calibration, loader, epochs, point):
    torch.manual_seed(0)
    pruning = {"algorithm": "pruning", "ratio": 0.5}
    ctrl, model = create_compressed_model(copy.deepcopy(reference), _config(pruning, {"algorithm": "frozen_bn", **point}),
                                          calibration_data=calibration, epochs=epochs, steps_per_epoch=len(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = []
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        per_epoch.append(_train_steps(ctrl, model, loader, optimizer)[-1])
    return ctrl.statistics()["frozen_bn"], per_epoch, model.state_dict()


def test_at_epoch_at_step_and_at_fraction_freeze_at_the_same_point(reference, calibration, train_loader):
    loader = _batches(train_loader, 4)
    runs = [_run_schedule(reference, calibration, loader, 3, point)
            for point in ({"at_epoch": 1}, {"at_step": 4}, {"at_fraction": 1 / 3})]
    for stats, per_epoch, weights in runs:
        assert (stats["frozen_at_step"], stats["frozen_at_epoch"]) == (4, 1)
        assert _same(per_epoch[0], per_epoch[1]) and _same(per_epoch[1], per_epoch[2]), "frozen from epoch index 1"
        assert _same(weights, runs[0][2]), "the three schedules train to the same bits"
    late = _run_schedule(reference, calibration, loader, 3, {"at_epoch": 2})[1]
    assert not _same(late[0], late[1]) and _same(late[1], late[2])


def test_config_errors_are_one_line(reference, calibration):
    with pytest.raises(ConfigError, match=r"^compression\[1\]\.at_step: give only one of at_epoch, at_step, "
                                          r"at_fraction \(also given: at_epoch\)$"):
        load_config(_config(INT8, {"algorithm": "frozen_bn", "at_epoch": 1, "at_step": 3}))
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.at_fraction: 1\.5 is greater than the maximum of 1$"):
        load_config(_config({"algorithm": "frozen_bn", "at_fraction": 1.5}))
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.at_fraction: 0\.5 of the planned training needs epochs "
                                          r"and steps_per_epoch passed to create_compressed_model; or give at_epoch or "
                                          r"at_step$"):
        create_compressed_model(copy.deepcopy(reference), _config({"algorithm": "frozen_bn"}))
    adapt = {"algorithm": "frozen_bn", "at_step": 3, "batch_norm_adaptation": {"enabled": True}}
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.batch_norm_adaptation needs calibration_data$"):
        create_compressed_model(copy.deepcopy(reference), _config(adapt))
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(ConfigError, match=r"^compression\[0\]\.algorithm: frozen_bn found no BatchNorm layers"):
        create_compressed_model(seq, _config({"algorithm": "frozen_bn", "at_step": 1}))


def test_batch_norm_adaptation_runs_right_before_freezing_and_needs_data_on_restore(reference, calibration, train_loader):
    adapt = {"algorithm": "frozen_bn", "at_step": 2, "batch_norm_adaptation": {"enabled": True, "num_iterations": 2}}
    cfg = _config(INT8, adapt)
    ctrl, model = create_compressed_model(copy.deepcopy(reference), cfg, calibration_data=calibration)
    unfrozen_state = copy.deepcopy(ctrl.state_dict())
    batches = _batches(train_loader, 3)
    plain_ctrl, plain = create_compressed_model(copy.deepcopy(reference), _config(INT8, {**adapt, "batch_norm_adaptation": {}}),
                                                calibration_data=calibration)
    adapted = _train_steps(ctrl, model, batches, torch.optim.SGD(model.parameters(), lr=1e-2))
    not_adapted = _train_steps(plain_ctrl, plain, batches, torch.optim.SGD(plain.parameters(), lr=1e-2))
    assert _same(adapted[1], not_adapted[1]) and not _same(adapted[2], not_adapted[2])
    # Restored before its freeze point without calibration data, the pass could not run: refused up front.
    with pytest.raises(ConfigError, match=r"^frozen_bn\.batch_norm_adaptation needs calibration_data: "
                                          r"the restored schedule has not frozen BN yet$"):
        create_compressed_model(copy.deepcopy(reference), cfg, compression_state=unfrozen_state)
    restored, _ = create_compressed_model(copy.deepcopy(reference), cfg, compression_state=ctrl.state_dict())
    assert restored.statistics()["frozen_bn"]["frozen"]


def test_frozen_bn_stays_frozen_inside_distributed_data_parallel(tmp_path, reference, calibration, train_loader):
    ctrl, model = create_compressed_model(
        reference, _config(INT8, {"algorithm": "frozen_bn", "at_step": 2, "freeze_affine": True}),
        calibration_data=calibration)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        # Parameters that stop requiring grad after wrapping need find_unused_parameters (see README).
        ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        after = _train_steps(ctrl, ddp, _batches(train_loader, 5), torch.optim.SGD(ddp.parameters(), lr=1e-2))
    finally:
        dist.destroy_process_group()
    assert not _same(after[0], after[1])
    assert all(_same(after[1], s) for s in after[2:])


def test_trainer_resume_keeps_bn_frozen_and_ends_on_the_same_weights(tmp_path, monkeypatch):
    config = digits_config(training={"seed": 1, "epochs": 3, "batch_size": 64, "lr": 1e-3, "reference": {"epochs": 1}},
                           dataset={"name": "digits", "max_train_samples": 256},
                           compression=[{"algorithm": "quantization", "subset_size": 64},
                                        {"algorithm": "frozen_bn", "at_fraction": 0.5}],
                           export={"enabled": False})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    real_save = trainer.save_checkpoint

    def keep_epoch_2(state, path):  # the checkpoint a run killed during epoch 3 would leave behind
        real_save(state, path)
        if state.get("epoch") == 2:
            shutil.copy(path, tmp_path / "epoch2.pt")

    monkeypatch.setattr(trainer, "save_checkpoint", keep_epoch_2)
    trainer.run(config, straight)
    monkeypatch.undo()
    killed.mkdir()
    for name in (trainer.CONFIG, reference_module.REFERENCE):
        shutil.copy(straight / name, killed / name)
    shutil.copy(tmp_path / "epoch2.pt", killed / trainer.CHECKPOINT)
    trainer.run(config, killed, resume=True)

    a, b = load_checkpoint(straight / trainer.CHECKPOINT), load_checkpoint(killed / trainer.CHECKPOINT)
    assert all(torch.equal(v, b["ctrl"]["model"][k]) for k, v in a["ctrl"]["model"].items())
    assert a["history"] == b["history"]
    stats = [h["statistics"]["frozen_bn"] for h in a["history"]]
    # 4 steps per epoch, 3 epochs: frozen from step round(0.5 * 12) = 6, in epoch index 1.
    assert [s["frozen"] for s in stats] == [False, True, True] and stats[-1]["frozen_at_step"] == 6
    epoch2 = load_checkpoint(tmp_path / "epoch2.pt")["ctrl"]["model"]
    running = [k for k in epoch2 if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert running and all(torch.equal(epoch2[k], b["ctrl"]["model"][k]) for k in running)


def test_a_checkpoint_of_an_at_fraction_run_is_exported_again_with_the_labels_the_run_reported(tmp_path, reference_checkpoint):
    from torch.utils.data import DataLoader

    from nncf_lossless.training.loop import predict

    cfg = digits_config(model={"name": "digits_cnn", "checkpoint": str(reference_checkpoint)},
                        dataset={"name": "digits", "max_train_samples": 256},
                        training={"epochs": 2, "batch_size": 64, "lr": 3e-3},
                        compression=[{"algorithm": "quantization", "subset_size": 64},
                                     {"algorithm": "frozen_bn", "at_fraction": 0.5}])
    results = trainer.run(cfg, tmp_path / "run")
    # What `nncf-lossless export --checkpoint` rebuilds: the schedule's fraction needs the run's length.
    ctrl, model, data = trainer.load_compressed(tmp_path / "run" / "config.json", tmp_path / "run" / trainer.CHECKPOINT)
    assert bn_freeze.batch_norms(model) and all(bn_freeze.is_frozen(m) for m in bn_freeze.batch_norms(model))
    test = DataLoader(data.test, batch_size=256)
    ref, comp = predict(ctrl.reference, test)[0].argmax(1), predict(model, test)[0].argmax(1)
    assert int((ref != comp).sum()) == results["mismatches"]
    paths = trainer.export_from_checkpoint(tmp_path / "run" / "config.json", tmp_path / "run" / trainer.CHECKPOINT,
                                           tmp_path / "again")
    assert paths["compressed"].is_file() and paths["reference"].is_file()
