"""Portable bundles: IRs, samples, FP32 reference outputs and a checker needing only openvino+numpy.

The bundle's checker is not a second implementation: it is this subpackage, ``nncf_lossless.checker``,
shipped whole as ``nncf_lossless_checker/`` (its modules import each other relatively and never
torch, for this reason), driven by a five-line ``check_bundle.py``. Run on the target machine it writes the same report as
``nncf-lossless check``, with the reference outputs of the machine that made the bundle as ground truth.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov

from .atomic import atomic_write, write_json, write_text
from .cli import BUNDLE_MANIFEST
from .core import check_compatible, read_classifier
from .errors import DataError
from .ov_runner import compile_ir, infer

CHECKER_PACKAGE = "nncf_lossless_checker"
SCRIPT = "check_bundle.py"

_SCRIPT_TEXT = '''#!/usr/bin/env python3
"""Label consistency of this bundle's IRs on this machine's OpenVINO devices (needs only openvino and numpy).

Usage: python check_bundle.py [--devices GPU NPU] [--skip-missing] [--max-mismatches N] [--output-dir DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nncf_lossless_checker.cli import bundle_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bundle_main(Path(__file__).resolve().parent))
'''


def _copy_ir(xml: Path, dest: Path) -> None:
    bin_path = xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise DataError(f"{xml}: its weights {bin_path.name} are missing")
    shutil.copyfile(bin_path, dest.with_suffix(".bin"))
    shutil.copyfile(xml, dest)


def write_bundle(reference: str | Path, compressed: Sequence[str | Path], inputs: np.ndarray, labels: np.ndarray,
                 out_dir: str | Path) -> Path:
    """Writes the bundle into ``out_dir`` and returns the path of its ``check_bundle.py``."""
    out, core = Path(out_dir), ov.Core()
    inputs = np.asarray(inputs, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    models = {f"--reference {reference}": read_classifier(reference, core, "--reference")}
    models.update({f"--compressed {c}": read_classifier(c, core, "--compressed") for c in compressed})
    check_compatible(models, inputs.shape[1:])
    out.mkdir(parents=True, exist_ok=True)
    _copy_ir(Path(reference), out / "reference.xml")
    names = []
    for i, path in enumerate(map(Path, compressed)):
        name = path.name if path.name not in names and path.name != "reference.xml" else f"{path.stem}_{i}.xml"
        _copy_ir(path, out / name)
        names.append(name)
    logits = infer(compile_ir(out / "reference.xml", "CPU", "f32", core), inputs)
    atomic_write(out / "samples.npz", lambda f: np.savez_compressed(f, inputs=inputs, labels=labels))
    atomic_write(out / "reference_outputs.npz", lambda f: np.savez_compressed(f, logits=logits))
    shutil.rmtree(out / CHECKER_PACKAGE, ignore_errors=True)
    shutil.copytree(Path(__file__).parent, out / CHECKER_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_text(_SCRIPT_TEXT, out / SCRIPT)
    write_json({"reference": "reference.xml", "compressed": names, "data": "samples.npz",
                "reference_outputs": "reference_outputs.npz", "created_on": platform.node(),
                "openvino": ov.get_version(), "reference_precision": "f32 on CPU"}, out / BUNDLE_MANIFEST)
    return out / SCRIPT
