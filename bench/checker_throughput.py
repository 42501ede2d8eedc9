"""Checker throughput (images/s) as a ratio of OpenVINO's ``benchmark_app`` on the same IR and device.

    python bench/checker_throughput.py [--ir extra.xml ...] [--seconds 10]
        [--output bench/results/checker_throughput.json]

IRs: the digits CNN and a ResNet-20 at 32x32 (random weights: speed does not depend on them),
exported with the package's own models and exporter, plus any ``--ir``. For each IR, precision
(f32 and the CPU default) and checker batch size (1 = what benchmark_app runs with
``-shape [1,...]``, and the checker's default 8), the checker's inference (``run_check``: async
queue, THROUGHPUT hint) is timed and set against ``benchmark_app -d CPU -hint throughput -t S``
at batch 1 with the same inference precision. Writes JSON and a bar plot of the ratios.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from nncf_lossless.checker.atomic import write_json
from nncf_lossless.checker.core import run_check
from nncf_lossless.checker.ov_runner import compile_ir
from nncf_lossless.export.ir import export_pair
from nncf_lossless.models import build_model


def export_random(name: str, shape: list[int], out: Path) -> Path:
    torch.manual_seed(0)
    model = build_model({"name": name}, num_classes=10, in_channels=shape[1]).eval()
    paths = export_pair(model, model, out / name, example_input=torch.zeros(shape), config={}, metadata={})
    return paths["reference"]


def benchmark_app(ir: Path, shape: list[int], precision: str, seconds: int) -> float:
    cmd = ["benchmark_app", "-m", str(ir), "-d", "CPU", "-hint", "throughput", "-t", str(seconds),
           "-shape", str([1, *shape[1:]]).replace(" ", ""), "-infer_precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds * 10 + 120)
    match = re.search(r"Throughput:\s+([\d.]+)\s+FPS", proc.stdout)
    if not match:
        raise RuntimeError(f"no 'Throughput:' line in benchmark_app output:\n{proc.stdout[-2000:]}")
    return float(match.group(1))


def checker_rate(ir: Path, shape: list[int], precision: str, batch: int, seconds: float) -> float:
    # Size the sample set so the timed part lasts about `seconds`, as benchmark_app's -t does.
    probe = np.random.default_rng(0).normal(size=(256, *shape[1:])).astype(np.float32)
    rate = 0.0
    n = len(probe)
    for _ in range(2):
        inputs = np.resize(probe, (n, *shape[1:]))
        report = run_check(ir, [ir], inputs, np.zeros(n, dtype=np.int64), devices=["CPU"],
                           precisions=[precision], batch_size=batch)
        rate = report["runs"][0]["images_per_second"]
        n = max(256, int(rate * seconds))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, nargs="*", default=[])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path("bench/results/checker_throughput.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        irs = [(export_random("digits_cnn", [1, 1, 8, 8], Path(tmp)), "digits_cnn"),
               (export_random("resnet20", [1, 3, 32, 32], Path(tmp)), "resnet20_32x32"),
               *[(p, p.name) for p in args.ir]]
        for ir, name in irs:
            shape = [d.get_length() if d.is_static else 1 for d in ov.Core().read_model(str(ir)).input(0).get_partial_shape()]
            default = compile_ir(ir, "CPU", None).precision
            for precision in ("f32", default):
                bench = benchmark_app(ir, shape, precision, args.seconds)
                for batch in (1, 8):
                    rate = checker_rate(ir, shape, "default" if precision == default else precision, batch,
                                        min(args.seconds, 5))
                    rows.append({"ir": name, "precision": precision, "checker_batch": batch,
                                 "checker_images_per_second": rate, "benchmark_app_fps": bench,
                                 "ratio": rate / bench})
                    print(f"{name:16s} {precision:5s} batch {batch}: checker {rate:9.0f} img/s, "
                          f"benchmark_app {bench:9.0f} FPS, ratio {rate / bench:.2f}", file=sys.stderr)
    result = {"device": "CPU", "benchmark_app": f"-hint throughput -t {args.seconds} -shape [1,...] -infer_precision P", "rows": rows}
    write_json(result, args.output)
    _plot(rows, args.output.with_suffix(".png"))
    print(f"wrote {args.output}")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['ir']}\n{r['precision']} b{r['checker_batch']}" for r in rows]
    ax.bar(range(len(rows)), [r["ratio"] for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("checker / benchmark_app throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
