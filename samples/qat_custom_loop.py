"""QAT with your own training loop, through the controller API (NNCF 2's shape, on NNCF 3).

    python samples/qat_custom_loop.py --output-dir /tmp/qat-sample [--bits 4]

Trains a small FP32 reference on scikit-learn's digits, compresses it with
``create_compressed_model``, fine-tunes it in a hand-written loop, saves a resumable controller
state, exports the IR pair and counts label flips on OpenVINO CPU in true FP32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.checker.core import check_pair
from nncf_lossless.checkpoint import save_checkpoint
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("qat-sample"))
    parser.add_argument("--bits", type=int, default=8, help="weights and activations bits")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    data = load_dataset({"name": "digits"})
    train = DataLoader(data.train, batch_size=64, shuffle=True)
    model = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    fit(model, train, epochs=20, lr=3e-3)  # the FP32 reference

    config = {
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": [{"algorithm": "quantization", "weights": {"bits": args.bits}, "activations": {"bits": args.bits}}],
    }
    ctrl, qmodel = create_compressed_model(model, config, calibration_data=DataLoader(data.calibration, batch_size=64))
    optimizer = torch.optim.Adam(qmodel.parameters(), lr=1e-4)
    for epoch in range(args.epochs):
        ctrl.scheduler.epoch_step()
        qmodel.train()
        total = 0.0
        for x, y in train:
            ctrl.scheduler.step()
            out = qmodel(x)
            loss = F.cross_entropy(out, y) + ctrl.loss(out, y, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        print(f"epoch {epoch + 1}: mean loss {total / len(data.train):.4f}; {ctrl.statistics()}")
    # Everything needed to resume: create_compressed_model(model, config, compression_state=state).
    save_checkpoint(ctrl.state_dict(), args.output_dir / "ctrl.pt")

    paths = ctrl.export(args.output_dir / "ir", metadata={"class_names": data.class_names, "mean": data.mean, "std": data.std})
    inputs = torch.stack([data.test[i][0] for i in range(len(data.test))]).numpy()
    labels = data.test.labels.numpy()
    for run in check_pair(paths["reference"], paths["compressed"], inputs, labels):
        print(f"OpenVINO {run['device']} {run['precision']}: reference {run['reference']['accuracy']:.2%}, "
              f"compressed {run['compressed']['accuracy']:.2%}, mismatches {run['mismatches']} of {run['num_samples']}")


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
