"""Classify images with an exported nncf-lossless IR on an OpenVINO device.

    python samples/deploy_openvino.py --model out/ir/compressed.xml IMAGE [IMAGE ...] [--device CPU]
    python samples/deploy_openvino.py --model out/ir/compressed.xml --npz samples.npz [--device GPU]

Needs only openvino, numpy and (for image files) pillow. Class names, the input shape and the
normalisation (mean/std per channel, for pixels scaled to [0, 1]) come from the IR's rt_info,
written by ``nncf-lossless export``; an ``.npz`` holds already normalised ``inputs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov


def rt_info(model: ov.Model) -> dict:
    out = {}
    for key in ("class_names", "input_shape", "mean", "std"):
        if model.has_rt_info(["nncf_lossless", key]):
            out[key] = json.loads(model.get_rt_info(["nncf_lossless", key]).astype(str))
    return out


def load_image(path: Path, shape: list[int], mean: list[float], std: list[float]) -> np.ndarray:
    from PIL import Image

    channels, height, width = shape[1:]
    image = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
    return ((pixels - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="IR .xml exported by nncf-lossless")
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--npz", type=Path, help=".npz with normalised 'inputs' (N, C, H, W)")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--top-k", type=int, default=1)
    args = parser.parse_args()
    core = ov.Core()
    model = core.read_model(str(args.model))
    info = rt_info(model)
    shape, names = info.get("input_shape"), info.get("class_names") or []
    if args.npz:
        with np.load(args.npz, allow_pickle=False) as npz:
            inputs, ids = npz["inputs"].astype(np.float32), [f"#{i}" for i in range(len(npz["inputs"]))]
    elif args.images:
        if not shape or info.get("mean") is None or info.get("std") is None:
            print(f"error: {args.model} has no nncf_lossless input_shape/mean/std rt_info", file=sys.stderr)
            return 2
        inputs = np.stack([load_image(p, shape, info["mean"], info["std"]) for p in args.images])
        ids = [str(p) for p in args.images]
    else:
        parser.error("give image files or --npz")
    if args.device.startswith("NPU"):  # NPU compiles static shapes only
        model.reshape({0: ov.PartialShape([1, *inputs.shape[1:]])})
    compiled = core.compile_model(model, args.device)
    request = compiled.create_infer_request()
    for sample_id, x in zip(ids, inputs):
        logits = request.infer([x[None]])[0][0]
        top = np.argsort(-logits)[: args.top_k]
        shown = ", ".join(f"{names[c] if c < len(names) else c} ({logits[c]:.3f})" for c in top)
        print(f"{sample_id}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
