"""Quantisation-aware training (QAT): fake-quantised weights in the forward, straight-through gradients.

Real QAT (Jacob et al. 2018, §3) rounds each weight to the grid the deployed model will use, in every
forward pass, and lets the gradient pass the rounding unchanged (the straight-through estimator), so
training settles where rounding hurts least. Seed 000's `QuantAwareTraining` instead adds Gaussian
noise to the model's *input*: a regulariser that never sees the quantisation grid.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from dstutor.deploy.int8 import quantize_rows
from dstutor.models.moe import Experts


class FakeQuant(nn.Module):
    """w → dequant(quant(w)) in the forward; gradient of the identity in the backward (STE)."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_rows(w, self.bits)
        return w + (q.float() * scale - w).detach()


def quantized_weights(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight `quantize_int8` turns into int8: linear layers and experts."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in skip:
            found.append((module, "weight"))
        elif isinstance(module, Experts):
            found += [(module, "gate_up_proj"), (module, "down_proj")]
    return found


@contextmanager
def fake_quantized(model: nn.Module, bits: int = 8) -> Iterator[nn.Module]:
    """Inside the block, the model trains (and evaluates) with fake-quantised weights; on exit they are plain again.

    The trained float weights are kept (`leave_parametrized=False`): quantising them afterwards gives
    exactly the int8 model that was simulated.
    """
    targets = quantized_weights(model)
    for module, name in targets:
        parametrize.register_parametrization(module, name, FakeQuant(bits))
    try:
        yield model
    finally:
        for module, name in targets:
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)


@contextmanager
def input_noise(model: nn.Module, std: float = 0.1, seed: int = 0) -> Iterator[nn.Module]:
    """Seed 000's recipe for an LM: Gaussian noise (std × N(0, 1)) on the token embeddings while training."""
    generator = torch.Generator().manual_seed(seed)

    def add_noise(module, inputs, output):
        if not module.training:
            return output
        return output + std * torch.randn(output.shape, generator=generator).to(output)

    handle = model.model.embed_tokens.register_forward_hook(add_noise)
    try:
        yield model
    finally:
        handle.remove()
