"""Where a flip-first row's remaining flips come from: its quantizers switched off by kind and one at a time.

    python bench/flip_sources.py --data ../shared/data/cifar10-jpeg.zip --rows int8_mse_fbn_hist5k

For each row (a finished ``bench/flip_first.py`` run: its config and the checkpoint it exported), the
compressed model runs in PyTorch on the development split of ``bench/flip_first_dev.py`` (the 43,000
training images no row trained or selected on; never the test set) with
- every quantizer on (the model as exported; PyTorch counts are within a few flips of the IR's),
- only the weight quantizers on, only the activation quantizers on,
- each activation quantizer off in turn (the others on): the flips that quantizer alone adds.
The mismatches against the FP32 reference go to ``bench/results/flip_sources.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from flip_first_dev import RUNS, development_split
from nncf.torch.quantization.layers import BaseQuantizer
from rich.progress import track

from nncf_lossless.checker.atomic import write_json, write_text
from nncf_lossless.config import load_config
from nncf_lossless.training.trainer import load_compressed


def main() -> int:
    parser = common.parser(__doc__, "flip_sources")
    parser.add_argument("--runs", type=Path, default=RUNS, help="the flip-first bench's run directories")
    parser.add_argument("--rows", nargs="+", default=["int8_mse_fbn_hist5k"], help="finished flip-first rows")
    parser.add_argument("--max-samples", type=int, default=15000,
                        help="a fixed random N of the development images, for time: every pass runs them all")
    return common.run_main(bench, parser.parse_args())


@torch.no_grad()
def labels_of(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()


def sources(row: str, runs: Path, max_samples: int) -> dict[str, Any]:
    run = runs / row
    checkpoint = run / "best.pt" if (run / "best.pt").exists() else run / "checkpoint.pt"
    config = load_config(run / "config.json")
    ctrl, model, _ = load_compressed(config, checkpoint)
    x, _, _ = development_split(config)
    keep = np.sort(np.random.default_rng(0).permutation(len(x))[:max_samples])  # the split is in class order
    x = torch.from_numpy(x[keep])
    started = time.perf_counter()
    reference = labels_of(ctrl.reference, x)
    print(f"{row}: one pass over {len(x)} images takes {time.perf_counter() - started:.0f} s (FP32)", file=sys.stderr)
    quantizers = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseQuantizer)]
    # Weights are quantized per output channel here, activations per tensor (NNCF's ANY hardware config).
    weights = [m for _, m in quantizers if m.scale.numel() > 1]
    activations = [(name, m) for name, m in quantizers if m.scale.numel() == 1]

    def flips(off: list[BaseQuantizer]) -> int:
        for m in off:
            m.disable_quantization()
        try:
            return int((labels_of(model, x) != reference).sum())
        finally:
            for m in off:
                m.enable_quantization()

    result = {"checkpoint": str(checkpoint.relative_to(common.ROOT)) if checkpoint.is_relative_to(common.ROOT)
              else str(checkpoint), "dev_size": len(x), "all_quantizers": flips([]),
              "weights_only": flips([m for _, m in activations]), "activations_only": flips(weights),
              "num_weight_quantizers": len(weights), "num_activation_quantizers": len(activations)}
    per = {name.split("__nncf_hooks.")[-1]: flips([m]) for name, m in track(activations, description=f"{row}: one off")}
    result["without_one_activation_quantizer"] = dict(sorted(per.items(), key=lambda kv: kv[1]))
    return result


def bench(args: argparse.Namespace) -> int:
    report = json.loads(args.output.read_text()) if args.output.exists() else {"rows": {}}
    if not args.report_only:
        for row in args.rows:
            report["rows"][row] = sources(row, args.runs, args.max_samples)
            print(f"{row}: {json.dumps({k: v for k, v in report['rows'][row].items() if 'without' not in k})}",
                  file=sys.stderr)
            write_json(report, args.output)
    write_text(table(report), args.output.with_suffix(".md"))
    print(f"wrote {args.output} (+ .md)", file=sys.stderr)
    return 0


def table(report: dict[str, Any]) -> str:
    lines = []
    for row, r in report["rows"].items():
        lines += [f"### `{row}` ({r['dev_size']} development images, PyTorch)", "",
                  "| quantizers on | mismatches |", "|---|---|",
                  (f"| all ({r['num_weight_quantizers']} weight, {r['num_activation_quantizers']} activation) | "
                   f"{r['all_quantizers']} |"),
                  f"| weights only | {r['weights_only']} |", f"| activations only | {r['activations_only']} |", "",
                  "| activation quantizer switched off (the rest on) | mismatches |", "|---|---|"]
        lines += [f"| `{name}` | {n} |" for name, n in r["without_one_activation_quantizer"].items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
