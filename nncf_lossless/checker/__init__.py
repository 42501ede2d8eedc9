"""The label-consistency checker: compressed IRs against their FP32 reference IR, per device and precision.

This subpackage needs only ``openvino`` and ``numpy`` (matplotlib for plots, if present). Its modules
import each other relatively and never torch or training code, so the folder ships alone to a device
machine: ``nncf-lossless bundle`` puts it, as it is, into the bundle as ``nncf_lossless_checker/``.

- :func:`run_check` / :func:`check_pair`: the checks; :func:`load_samples`: the ``.npz`` samples;
- ``cli``: the ``check`` / ``merge-reports`` commands and a bundle's entry point (``python -m`` this package).
"""

from .core import DeviceError, check_pair, load_samples, run_check
from .errors import DataError, UserError

__all__ = ["DataError", "DeviceError", "UserError", "check_pair", "load_samples", "run_check"]
