"""Flip-first fine-tuning: the flip-focused sampler, teacher-only targets, focal distillation, mixed inputs."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import digits_config

from nncf_lossless.algorithms.distillation import losses as L
from nncf_lossless.algorithms.distillation.algo import Distillation
from nncf_lossless.checkpoint import load_checkpoint
from nncf_lossless.config import load_config
from nncf_lossless.errors import ConfigError
from nncf_lossless.training.flip_sampler import FlipFocusedSampler
from nncf_lossless.training.trainer import CHECKPOINT, run


def _confident_reference(n: int, unsure: list[int]) -> torch.Tensor:
    """Logits whose top-1 is class i % 10 with a huge margin, except the ``unsure`` rows (a near tie)."""
    logits = torch.zeros(n, 10)
    logits[torch.arange(n), torch.arange(n) % 10] = 20.0
    for i in unsure:
        logits[i, (i + 1) % 10] = 19.9
    return logits


def _observe_all(sampler: FlipFocusedSampler, flipped: set[int]) -> None:
    """One epoch in which the student disagrees with the reference exactly on ``flipped``."""
    order = list(sampler)
    for step in range(0, len(order), sampler.batch_size):
        idx = order[step:step + sampler.batch_size]
        student = sampler.reference_logits[idx].clone()
        for row, i in enumerate(idx):
            if i in flipped:
                student[row] = torch.roll(student[row], 1)
        sampler.observe(step // sampler.batch_size, student)
    sampler.end_epoch()


def test_the_sampler_weights_follow_the_flips_it_was_given_and_keep_the_floor():
    n, flipped, unsure = 200, {3, 50, 77}, [10, 11]
    sampler = FlipFocusedSampler(n, 16, seed=0, floor=0.5)
    sampler.set_reference(_confident_reference(n, unsure))
    sampler.set_epoch(0)
    first = sampler.draw()
    assert sorted(first.tolist()) == list(range(n)), "nothing observed yet: the first epoch is a permutation"
    _observe_all(sampler, flipped)
    sampler.set_epoch(1)
    e = sampler.expected_counts()
    assert e.sum().item() == pytest.approx(n)
    assert e.min().item() >= 0.5 - 1e-9
    others = [i for i in range(n) if i not in flipped and i not in unsure]
    assert min(e[list(flipped)]) > max(e[unsure]) > max(e[others])
    # Systematic sampling: each image is drawn floor(e) or ceil(e) times, and flips are drawn several times.
    counts = torch.bincount(sampler.draw(), minlength=n).double()
    assert torch.all(counts >= e.floor()) and torch.all(counts <= e.ceil())
    assert all(counts[i] >= 2 for i in flipped) and len(sampler.draw()) == n
    # The student fixes image 3: next epoch it falls back to a settled image's weight.
    _observe_all(sampler, flipped - {3})
    sampler.set_epoch(2)
    e2 = sampler.expected_counts()
    assert e2[3] < e2[50] and e2[3] == pytest.approx(e2[others[0]].item(), rel=0.05)


def test_floor_one_is_uniform_and_the_draw_depends_only_on_seed_and_epoch():
    sampler = FlipFocusedSampler(50, 8, seed=4, floor=1.0)
    sampler.set_reference(_confident_reference(50, [1]))
    _observe_all(sampler, {2, 3})
    sampler.set_epoch(1)
    assert sorted(sampler.draw().tolist()) == list(range(50))
    torch.manual_seed(0)
    a = sampler.draw()
    torch.manual_seed(1)
    assert torch.equal(a, sampler.draw())
    sampler.set_epoch(2)
    assert not torch.equal(a, sampler.draw())


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_disjoint_and_cover_the_draw(world):
    n = 101
    samplers = []
    for rank in range(world):
        s = FlipFocusedSampler(n, 8, seed=1, floor=0.3, num_replicas=world, rank=rank)
        s.set_reference(_confident_reference(n, [5]))
        s.flip = torch.zeros(n)
        s.flip[[7, 8]] = 1.0
        s.set_epoch(3)
        samplers.append(s)
    draw = samplers[0].draw().tolist()
    padded = draw + draw[: len(samplers[0]) * world - n]
    shards = [list(s) for s in samplers]
    assert all(len(shard) == len(samplers[0]) for shard in shards)
    # Disjoint by position in the padded draw, and together exactly the draw.
    assert sorted(p for r in range(world) for p in range(r, len(padded), world)) == list(range(len(padded)))
    for r, shard in enumerate(shards):
        assert shard == padded[r::world]
    assert sorted(i for shard in shards for i in shard) == sorted(padded)


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = 64
        s = FlipFocusedSampler(n, 8, seed=0, num_replicas=world, rank=rank)
        s.set_reference(_confident_reference(n, []))
        s.set_epoch(0)
        _observe_all(s, {i for i in range(n) if i % 9 == 0})  # each rank sees only its shard's flips
        s.set_epoch(1)
        queue.put((rank, s.expected_counts().tolist(), list(s)))
    finally:
        torch.distributed.destroy_process_group()


def test_under_ddp_every_rank_merges_all_flips_into_the_same_weights():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    got = {r: (e, shard) for r, e, shard in (queue.get() for _ in range(2))}
    assert got[0][0] == got[1][0]
    e = torch.tensor(got[0][0])
    flipped = [i for i in range(64) if i % 9 == 0]
    assert e[flipped].min() > e[[i for i in range(64) if i % 9]].max()
    assert len(got[0][1]) + len(got[1][1]) == 64


# ---- loss terms --------------------------------------------------------------------------------


def test_every_teacher_term_is_zero_when_the_student_equals_the_teacher_with_or_without_focal_weights():
    torch.manual_seed(0)
    teacher = torch.randn(32, 10)
    weights = L.focal_weights(teacher, torch.randint(0, 10, (32,)), 1.0, 4.0)
    for w in (None, weights):
        assert L.kd(teacher.clone(), teacher, 1.0, w).abs().item() < 1e-6
        assert L.logit_mse(teacher.clone(), teacher, w).item() == 0
        assert L.margin(teacher.clone(), teacher, 1.0, w).item() == 0
        assert L.kd(teacher + torch.randn(32, 10), teacher, 1.0, w).item() > 0


def test_focal_weights_are_larger_where_the_reference_is_right_and_move_the_loss_there():
    teacher = torch.eye(4) * 5
    targets = torch.tensor([0, 1, 3, 2])  # the reference is right on rows 0 and 1
    w = L.focal_weights(teacher, targets, 1.0, 4.0)
    assert w.tolist() == [5.0, 5.0, 1.0, 1.0]
    student = teacher.clone()
    student[0] = 0  # an error on a row the reference gets right...
    on_right = L.logit_mse(student, teacher, w)
    student = teacher.clone()
    student[2] = 0  # ...costs more than the same error on a row it gets wrong
    assert on_right > L.logit_mse(student, teacher, w)
    # Unweighted terms are the usual batch means.
    s = torch.randn(4, 4)
    assert torch.allclose(L.logit_mse(s, teacher), torch.nn.functional.mse_loss(s, teacher))
    assert torch.allclose(L.teacher_ce(s, teacher), torch.nn.functional.cross_entropy(s, teacher.argmax(1)))


def _distillation(**params) -> Distillation:
    entry = load_config(digits_config(compression=[{"algorithm": "label_preserving_distillation", **params}]))["compression"][0]
    algo = Distillation(entry)
    algo.teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    return algo


def test_teacher_targets_never_read_the_ground_truth():
    algo = _distillation(targets="teacher", weights={"kd": 1.0})
    assert algo.weights["label_ce"] == 0
    x = torch.randn(6, 4)
    loss = algo.loss(torch.randn(6, 3), None, x)  # no labels at all
    assert loss.item() > 0 and torch.equal(algo.last_teacher_logits, algo.teacher(x).detach())
    with pytest.raises(ConfigError, match=r"compression\[0\]\.weights\.label_ce: must be 0 with targets"):
        _distillation(targets="teacher", weights={"label_ce": 0.5})
    with pytest.raises(ConfigError, match=r"weights\.label_ce: must be 0 with mix"):
        _distillation(mix={"mode": "mixup"})
    # Without labels (NNCF 2's ctrl.loss()) the focal weighting, which reads them, is left out, not guessed.
    focal = _distillation(targets="teacher", weights={"kd": 1.0}, focal={"beta": 1.0})
    focal.teacher = algo.teacher
    student = torch.randn(6, 3)
    assert torch.allclose(focal.loss(student, None, x), algo.loss(student, None, x))


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixed_inputs_replace_a_fraction_of_the_batch_and_are_marked(mode):
    torch.manual_seed(0)
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 8, 8).clone()
    out, clean = L.mix_inputs(x, mode, 0.5, 1.0)
    assert clean.tolist() == [True] * 4 + [False] * 4
    assert torch.equal(out[:4], x[:4]) and out.shape == x.shape
    assert not torch.equal(out[4:], x[4:])
    algo = _distillation(targets="teacher", weights={"mse": 1.0}, mix={"mode": mode, "fraction": 0.25}, focal={"beta": 2.0})
    mixed = algo.prepare_inputs(torch.randn(8, 1, 2, 2))
    assert algo.last_clean_rows.sum().item() == 6 and mixed.shape == (8, 1, 2, 2)
    w = algo._focal_weights(algo.teacher(mixed), torch.zeros(8, dtype=torch.long), 8)
    assert torch.all(w[~algo.last_clean_rows] == 1.0)  # a mixed image has no label to be right about


def test_boundary_inputs_move_rows_toward_the_teachers_decision_boundary():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).requires_grad_(False)
    x = torch.randn(8, 3, 2, 2)
    out, clean = L.boundary_inputs(x, teacher, 0.5)
    assert clean.tolist() == [True] * 4 + [False] * 4 and torch.equal(out[:4], x[:4])
    before, after = teacher(x[4:]).topk(2, dim=1), teacher(out[4:]).topk(2, dim=1)
    lead_before = before.values[:, 0] - before.values[:, 1]
    # A linear teacher's lead over the same runner-up shrinks exactly by the drawn fraction f ~ U(0, 1).
    z = teacher(out[4:])
    lead_after = z.gather(1, before.indices[:, :1]).squeeze(1) - z.gather(1, before.indices[:, 1:]).squeeze(1)
    f = 1 - lead_after / lead_before
    assert torch.all(f > -1e-4) and torch.all(f < 1 + 1e-4) and f.std() > 0.05
    assert torch.all(after.values[:, 0] - after.values[:, 1] <= lead_before + 1e-5)
    assert all(p.grad is None for p in teacher.parameters())
    algo = _distillation(targets="teacher", weights={"mse": 1.0}, mix={"mode": "boundary", "fraction": 0.25})
    moved = algo.prepare_inputs(torch.randn(8, 1, 2, 2))
    assert algo.last_clean_rows.sum().item() == 6 and moved.shape == (8, 1, 2, 2)


# ---- in the trainer ----------------------------------------------------------------------------


def test_a_run_with_flip_sampling_and_mixing_resumes_bit_identically(tmp_path):
    cfg = digits_config(
        dataset={"name": "digits", "validation": {"fraction": 0.2}, "max_train_samples": 320},
        training={"seed": 1, "epochs": 2, "batch_size": 64, "lr": 3e-3, "reference": {"epochs": 1, "lr": 3e-3},
                  "sampling": {"mode": "flip_focused", "floor": 0.5}, "select_checkpoint": "fewest_mismatches"},
        compression=[{"algorithm": "quantization", "subset_size": 128},
                     {"algorithm": "label_preserving_distillation", "targets": "teacher", "weights": {"mse": 1.0},
                      "mix": {"mode": "cutmix"}, "focal": {"beta": 1.0}}],
        export={"enabled": False})
    full = run(cfg, tmp_path / "full")
    run(cfg, tmp_path / "killed", stop_after_epoch=1)
    resumed = run(cfg, tmp_path / "killed", resume=True)
    a, b = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(tmp_path / "killed" / CHECKPOINT)
    assert a["ctrl"]["model"].keys() == b["ctrl"]["model"].keys()
    assert all(torch.equal(a["ctrl"]["model"][k], b["ctrl"]["model"][k]) for k in a["ctrl"]["model"])
    assert torch.equal(a["sampler"]["flip"].nan_to_num(-1), b["sampler"]["flip"].nan_to_num(-1))
    assert full["mismatches"] == resumed["mismatches"]
    # The sampler observed the training images it drew unmixed (cutmix replaces half of each batch), and found flips.
    flip = a["sampler"]["flip"]
    assert (~torch.isnan(flip)).float().mean() > 0.5 and (flip == 1).any()
