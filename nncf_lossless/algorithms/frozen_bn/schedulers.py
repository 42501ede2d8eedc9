"""When ``frozen_bn`` freezes: the freeze point of the config, resolved against the planned training.

:func:`freeze_point` returns ``(at_step, at_epoch)``, one of them ``None``: ``at_epoch`` and
``at_step`` are taken as given; ``at_fraction`` (default :data:`DEFAULT_FRACTION`) becomes
``at_step = round(fraction * epochs * steps_per_epoch)``, halves up. :func:`due` says whether the
freeze is due once ``steps_started`` steps / ``epochs_started`` epochs have started.
"""

from __future__ import annotations

from typing import Any

from nncf_lossless.errors import ConfigError

DEFAULT_FRACTION = 0.5


def freeze_point(params: dict[str, Any], epochs: int | None, steps_per_epoch: int | None) -> tuple[int | None, int | None]:
    if "at_epoch" in params:
        return None, params["at_epoch"]
    if "at_step" in params:
        return params["at_step"], None
    fraction = params.get("at_fraction", DEFAULT_FRACTION)
    if epochs is None or steps_per_epoch is None:
        raise ConfigError(f"at_fraction: {fraction} of the planned training needs epochs and steps_per_epoch "
                          "passed to create_compressed_model; or give at_epoch or at_step")
    return int(fraction * epochs * steps_per_epoch + 0.5), None


def due(at_step: int | None, at_epoch: int | None, *, steps_started: int, epochs_started: int) -> bool:
    """At step index ``steps_started`` (before it runs) or after ``epochs_started`` ``epoch_step`` calls."""
    if at_step is not None:
        return steps_started >= at_step
    return at_epoch is not None and epochs_started - 1 >= at_epoch
