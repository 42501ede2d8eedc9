"""The controller API inside your own DistributedDataParallel loop.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 samples/ddp_custom_loop.py [--epochs 3]

Every rank trains the same small FP32 reference on digits (same seed), rank 0 calibrates NNCF's
quantizers once and broadcasts the compression state, the other ranks rebuild the identical model
from it, and all train their DistributedSampler shard with distillation and frozen BN inside DDP.
Prints, on rank 0, the mismatches and whether every rank ended with the same weights.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from nncf_lossless import create_compressed_model, distributed
from nncf_lossless.checker.metrics import compare
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ctx = distributed.setup("cpu")  # gloo here; nccl when you pass "cuda" on GPUs
    torch.manual_seed(0)
    data = load_dataset({"name": "digits"})
    model = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    fit(model, DataLoader(data.train, batch_size=64, shuffle=True), epochs=15, lr=3e-3)

    config = {"input_info": {"sample_size": [1, 1, 8, 8]},
              "compression": [{"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}},
                              {"algorithm": "label_preserving_distillation"}, {"algorithm": "frozen_bn", "at_epoch": 2}]}
    calibration = DataLoader(data.calibration, batch_size=64)
    state = None
    if ctx.is_main:
        ctrl, qmodel = create_compressed_model(model, config, calibration_data=calibration)
        state = ctrl.state_dict()
    state = distributed.broadcast_object(ctx, state)  # calibrated once, on rank 0
    if not ctx.is_main:
        ctrl, qmodel = create_compressed_model(model, config, calibration_data=calibration, compression_state=state)

    ddp = DistributedDataParallel(qmodel)
    sampler = DistributedSampler(data.train, num_replicas=ctx.world_size, rank=ctx.rank, seed=0)
    train = DataLoader(data.train, batch_size=32, sampler=sampler)  # 32 per process
    optimizer = torch.optim.Adam(ctrl.trainable_parameters(), lr=1e-4)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ctrl.scheduler.epoch_step()
        ddp.train()
        for x, y in train:
            ctrl.scheduler.step()
            out = ddp(x)
            loss = ctrl.loss(out, y, x) if ctrl.owns_task_loss else F.cross_entropy(out, y) + ctrl.loss(out, y, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    digests = distributed.all_digests(ctx, qmodel)
    if ctx.is_main:
        test = DataLoader(data.test, batch_size=256)
        with torch.no_grad():
            qmodel.eval()
            ref = torch.cat([ctrl.reference(x) for x, _ in test]).numpy()
            comp = torch.cat([qmodel(x) for x, _ in test]).numpy()
        m = compare(ref, comp, data.test.labels.numpy())
        print(f"{ctx.world_size} processes: mismatches {m['mismatches']} of {m['num_samples']}, "
              f"ranks identical: {len(set(digests)) == 1}, BN frozen: {ctrl.statistics()['frozen_bn']['frozen']}")
    dist.barrier()
    distributed.teardown(ctx)


def fit(model: torch.nn.Module, loader: DataLoader, epochs: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()


if __name__ == "__main__":
    main()
