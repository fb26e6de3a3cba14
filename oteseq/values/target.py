"""The result of the value optimisation, shared by the batched loop and the reference loop."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TargetValues:
    """Result of the value optimisation for ``n`` requests (float32, on the layer's device)."""

    z: torch.Tensor            # (d_model, n) z* = z_init + δ
    z_init: torch.Tensor       # (d_model, n) block output at the bare prompt's subject token
    loss: torch.Tensor         # (n,) last computed total loss of each request
    steps: torch.Tensor        # (n,) Adam steps each request took


__all__ = ["TargetValues"]
