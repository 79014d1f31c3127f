"""Exponential moving average of the tokenizer's weights (e.g. LlamaGen's optional EMA, decay 0.9999):

    θ_ema ← decay · θ_ema + (1 − decay) · θ     after every generator step; buffers are copied.

Written out instead of ``torch.optim.swa_utils.AveragedModel`` because that one reads its step counter on the host
(``if self.n_averaged == 0``) on every update, a device sync in the training hot path.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def train(self, mode: bool = True) -> WeightEMA:
        return super().train(False)  # the average is never in training mode (no EMA-quantizer updates)
