"""Exponential moving average of the weights, scheduled as in the official training.

For the first ``start`` steps the average is a plain copy; after that
    decay = clamp(1 − (1 + n)^(−power), 0, max_decay),   n = steps since ``start``
(power 3/4, max_decay 0.999), so the average warms up instead of being dominated by the random init.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 1000, power: float = 0.75):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.start, self.power = decay, start, power

    def decay_at(self, step: int) -> float:
        if step <= self.start:
            return 0.0
        return min(self.max_decay, max(0.0, 1 - (1 + step - self.start - 1) ** -self.power))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
