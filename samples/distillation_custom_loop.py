"""Label-preserving distillation in your own training loop, through the controller API.

    python samples/distillation_custom_loop.py --output-dir /tmp/distill-sample [--bits 4] [--scheme C]

Trains a small FP32 reference on scikit-learn's digits, compresses it with a ``quantization``
entry plus a ``label_preserving_distillation`` entry, and fine-tunes in a hand-written loop. The
distillation entry owns the task loss, so the loop uses ``ctrl.loss(out, y, x)`` alone (it
already holds the weighted ground-truth CE); ``ctrl.trainable_parameters()`` adds the teacher's
parameters under scheme A. Prints each loss term (``ctrl.statistics()``) and the mismatches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from nncf_lossless import create_compressed_model
from nncf_lossless.checker.metrics import compare
from nncf_lossless.checkpoint import save_checkpoint
from nncf_lossless.data import load_dataset
from nncf_lossless.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("distillation-sample"))
    parser.add_argument("--bits", type=int, default=4, help="weights and activations bits")
    parser.add_argument("--scheme", choices=["A", "B", "C"], default="C")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    data = load_dataset({"name": "digits"})
    train = DataLoader(data.train, batch_size=64, shuffle=True)
    model = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    fit(model, train, epochs=20, lr=3e-3)  # the FP32 reference, and the teacher

    config = {
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": [
            {"algorithm": "quantization", "weights": {"bits": args.bits}, "activations": {"bits": args.bits}},
            {"algorithm": "label_preserving_distillation", "scheme": args.scheme, "temperature": 4.0,
             "weights": {"label_ce": 0.5, "kd": 0.5, "teacher_ce": 0.5, "margin": 0.5},
             "teacher_cache": args.scheme != "A"},
        ],
    }
    ctrl, qmodel = create_compressed_model(model, config, calibration_data=DataLoader(data.calibration, batch_size=64))
    optimizer = torch.optim.Adam(ctrl.trainable_parameters(), lr=1e-4)
    for epoch in range(args.epochs):
        ctrl.scheduler.epoch_step()
        qmodel.train()  # the teacher (ctrl.reference) stays in eval mode
        for x, y in train:
            ctrl.scheduler.step()
            out = qmodel(x)
            loss = ctrl.loss(out, y, x) if ctrl.owns_task_loss else F.cross_entropy(out, y) + ctrl.loss(out, y, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        terms = ctrl.statistics()["label_preserving_distillation"]["terms"]
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
    save_checkpoint(ctrl.state_dict(), args.output_dir / "ctrl.pt")

    test = DataLoader(data.test, batch_size=256)
    with torch.no_grad():
        qmodel.eval()
        ref = torch.cat([ctrl.reference(x) for x, _ in test]).numpy()  # the teacher as it ends up (scheme A)
        comp = torch.cat([qmodel(x) for x, _ in test]).numpy()
    m = compare(ref, comp, data.test.labels.numpy())
    print(f"reference {m['reference']['accuracy']:.2%}, compressed {m['compressed']['accuracy']:.2%}, "
          f"mismatches {m['mismatches']} of {m['num_samples']} ({m['mismatches_reference_correct']} where the reference was right)")


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
