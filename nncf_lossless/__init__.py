"""nncf-lossless: label-preserving compression on NNCF 3 and OpenVINO.

The compressed (INT8 / pruned) model must give the same class as its FP32 reference, sample by
sample. Entry points: :func:`create_compressed_model` (your own training loop), :func:`load_config`,
and the ``nncf-lossless`` command line.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from nncf_lossless.errors import ConfigError, DataError, UserError

__version__ = "0.1.0"

# Imported on first use, so that the torch-free parts (checker, metrics, ov_runner) can be
# imported on a device machine that has only openvino and numpy.
_LAZY = {
    "create_compressed_model": "nncf_lossless.controller",
    "CompressionController": "nncf_lossless.controller",
    "load_config": "nncf_lossless.config",
}

__all__ = ["CompressionController", "ConfigError", "DataError", "UserError", "create_compressed_model", "load_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nncf_lossless' has no attribute {name!r}")
