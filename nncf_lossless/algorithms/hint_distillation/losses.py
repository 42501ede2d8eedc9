"""The hint loss: FitNets' feature regression, averaged over hint points."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def hint_loss(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean over ``(student, teacher)`` feature pairs of their MSE; the teacher side gets no gradient.

    ``detach``: under Apprentice scheme A the teacher's forward had grad, and hints must not train it.
    """
    return torch.stack([F.mse_loss(student, teacher.detach()) for student, teacher in pairs]).mean()
