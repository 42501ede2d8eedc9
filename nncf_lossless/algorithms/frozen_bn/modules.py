"""Keeping BatchNorm layers frozen, whatever the training loop does.

A frozen BN layer normalises with its running averages (eval-mode BN) and never updates them;
with ``affine`` its weight and bias stop receiving gradients too. The freeze is a forward
pre-hook that sets ``module.training = False`` before every forward, so ``model.train()``, a new
epoch or a DDP wrapper cannot undo it: ``F.batch_norm`` then neither reads batch statistics nor
touches ``running_mean`` / ``running_var`` / ``num_batches_tracked``. It is a plain torch hook,
independent of NNCF's hook storage, so ``nncf.torch.get_config`` does not save it: whoever
restores a model re-freezes it (the ``frozen_bn`` entry does, from its state).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(model: nn.Module, exclude: Iterable[nn.Module] = ()) -> list[nn.Module]:
    """The BN layers of ``model`` that keep running statistics, minus those in ``exclude``.

    Layers without running statistics (``track_running_stats=False``) always normalise with the
    batch's, so there is nothing to freeze in them.
    """
    skip = {id(m) for m in exclude}
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and id(m) not in skip]


def freeze(module: nn.Module, *, affine: bool = False) -> None:
    """Freezes one BN layer's statistics (and, with ``affine``, its weight and bias); idempotent."""
    if not is_frozen(module):
        module.register_forward_pre_hook(_normalise_with_running_stats)
    module.training = False
    if affine:
        for p in (module.weight, module.bias):
            if p is not None:
                p.requires_grad_(False)
                # A stale gradient would let optimizers keep moving the parameter (momentum, weight
                # decay); with no gradient they skip it, and backward never fills it again.
                p.grad = None


def is_frozen(module: nn.Module) -> bool:
    return any(hook is _normalise_with_running_stats for hook in module._forward_pre_hooks.values())


def _normalise_with_running_stats(module: nn.Module, args: Any) -> None:
    module.training = False
