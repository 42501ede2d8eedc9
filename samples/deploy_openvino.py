"""Classify images with an exported nncf-lossless IR on an OpenVINO device.

    python samples/deploy_openvino.py --model out/ir/compressed.xml IMAGE [IMAGE ...] [--device CPU]
    python samples/deploy_openvino.py --model out/ir/compressed.xml --npz samples.npz [--device GPU]

Needs only openvino, numpy and (for image files) pillow. Class names, the input shape and the
normalisation (mean/std per channel, for pixels scaled to [0, 1]) come from the IR's rt_info,
written by ``nncf-lossless export``; an ``.npz`` holds already normalised ``inputs``. An image
that does not fit the IR's input (size or channels) is refused unless ``--resize`` is given. Bad
input (a file, a shape, a device) is one line, ``error: ...``, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov


class UsageError(Exception):
    """Bad input: printed as one ``error: ...`` line, exit status 2."""


def openvino_reason(err: BaseException) -> str:
    """The line of an OpenVINO exception that says what is wrong (the rest are source locations)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    meaningful = [line for line in lines
                  if not line.startswith("Exception from ") and not (line.startswith("Check '") and " failed at " in line)]
    return (meaningful or lines or [type(err).__name__])[-1]


def read_ir(core: ov.Core, path: Path) -> ov.Model:
    if path.suffix != ".xml" or not path.is_file():
        raise UsageError(f"--model: {path} is not an existing OpenVINO .xml file")
    with path.open("rb") as f:
        if not f.read(256).lstrip().startswith(b"<"):
            raise UsageError(f"--model: {path} is not a readable OpenVINO IR (not XML)")
    try:
        return core.read_model(str(path))
    except RuntimeError as err:
        raise UsageError(f"--model: {path} is not a readable OpenVINO IR ({openvino_reason(err)})") from err


def rt_info(model: ov.Model) -> dict:
    out = {}
    for key in ("class_names", "input_shape", "mean", "std"):
        if model.has_rt_info(["nncf_lossless", key]):
            out[key] = json.loads(model.get_rt_info(["nncf_lossless", key]).astype(str))
    return out


def load_image(path: Path, shape: list[int], mean: list[float], std: list[float], resize: bool = False) -> np.ndarray:
    """The image normalised for the IR; one that does not fit its input is refused unless ``resize``."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape[1:]
    if not path.is_file():
        raise UsageError(f"{path}: image file does not exist")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"{path}: not a readable image ({err})") from err
    mode = "L" if channels == 1 else "RGB"
    got_channels = 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    if not resize and (image.size != (width, height) or got_channels != channels):
        # Resizing a photo down to the digits IR's 8x8 grey would classify noise with confidence.
        raise UsageError(f"{path}: a {image.size[0]}x{image.size[1]} image with {got_channels} channel(s) ({image.mode}) "
                         f"does not fit the IR's input {list(shape)} ({channels}x{height}x{width}); pass --resize to "
                         "convert and resize it anyway")
    image = image.convert(mode).resize((width, height))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
    return ((pixels - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


def load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "inputs" not in npz.files:
                raise UsageError(f"--npz: {path} has no 'inputs' array (found: {', '.join(npz.files) or 'none'})")
            return npz["inputs"].astype(np.float32)
    except (OSError, ValueError) as err:
        raise UsageError(f"--npz: {path} is not a readable .npz file ({err})") from err


def compile_for(core: ov.Core, model: ov.Model, device: str) -> ov.CompiledModel:
    family = device.split(".")[0].split(":")[0].upper()
    virtual = family in ("AUTO", "MULTI", "HETERO", "BATCH")
    available = list(core.available_devices)
    if not virtual and device.upper() not in available and family not in available:
        raise UsageError(f"--device: {device} is not available here (available: {', '.join(available) or 'none'})")
    try:
        return core.compile_model(model, device)
    except RuntimeError as err:  # e.g. a GPU plugin whose OpenCL runtime is missing
        raise UsageError(f"--device: cannot compile {device} ({openvino_reason(err)})") from err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="IR .xml exported by nncf-lossless")
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--npz", type=Path, help=".npz with normalised 'inputs' (N, C, H, W)")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--resize", action="store_true", help="convert and resize images that do not fit the IR's input")
    args = parser.parse_args()
    if not args.npz and not args.images:
        parser.error("give image files or --npz")
    try:
        return classify(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def classify(args: argparse.Namespace) -> int:
    core = ov.Core()
    model = read_ir(core, args.model)
    info = rt_info(model)
    shape, names = info.get("input_shape"), info.get("class_names") or []
    if args.npz:
        inputs = load_npz(args.npz)
        ids = [f"#{i}" for i in range(len(inputs))]
    else:
        if not shape or info.get("mean") is None or info.get("std") is None:
            raise UsageError(f"{args.model} has no nncf_lossless input_shape/mean/std rt_info")
        inputs = np.stack([load_image(p, shape, info["mean"], info["std"], args.resize) for p in args.images])
        ids = [str(p) for p in args.images]
    expected = model.input(0).get_partial_shape()
    if expected.rank.is_static and (expected.rank.get_length() != inputs.ndim or any(
            d.is_static and d.get_length() != n for d, n in zip(list(expected)[1:], inputs.shape[1:]))):
        raise UsageError(f"inputs of shape {list(inputs.shape[1:])} do not fit the IR's input {expected}")
    if args.device.startswith("NPU"):  # NPU compiles static shapes only
        model.reshape({0: ov.PartialShape([1, *inputs.shape[1:]])})
    compiled = compile_for(core, model, args.device)
    request = compiled.create_infer_request()
    for sample_id, x in zip(ids, inputs):
        logits = request.infer([x[None]])[0][0]
        top = np.argsort(-logits)[: args.top_k]
        shown = ", ".join(f"{names[c] if c < len(names) else c} ({logits[c]:.3f})" for c in top)
        print(f"{sample_id}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
