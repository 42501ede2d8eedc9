"""An example nncf-lossless plugin: the ``logit_l2`` compression entry.

``{"algorithm": "logit_l2", "weight": 0.1}`` adds ``weight * mean((z_compressed - z_reference)^2)``
to the training loss: the compressed model's logits pulled towards its FP32 reference's.

This module is what the entry point names, and it stays torch-free: it declares the schema and
names the algorithm class as a string, so ``nncf-lossless validate-config`` validates a config
using this entry without importing torch. The class lives in :mod:`nncf_lossless_logit_l2.algo`.
"""

from __future__ import annotations

from typing import Any

from nncf_lossless.errors import ConfigError
from nncf_lossless.registry import Entry, Stage

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "properties": {
        "algorithm": {"const": "logit_l2"},
        "weight": {"type": "number", "minimum": 0, "default": 0.1},
        # Stop adding the term from this epoch index on (null: never).
        "until_epoch": {"type": ["integer", "null"], "minimum": 1, "default": None},
    },
}


def check(params: dict[str, Any]) -> None:
    """Cross-field rules (here a trivial one): messages are relative to the entry."""
    if params["weight"] == 0 and params["until_epoch"] is not None:
        raise ConfigError("until_epoch: has no effect with weight 0")


ENTRY = Entry("logit_l2", SCHEMA, "nncf_lossless_logit_l2.algo:LogitL2", stage=Stage.LOSS, check=check)
