"""torchao, PyTorch's maintained quantisation library, as a cross-check of our int8 path on CPU.

torchao's int8 weight-only recipe is symmetric with one scale per output row, as ours is. Its scale is
max|w| / 127.5 over the range −128…127 where ours is max|w| / 127 over ±127, so the two models differ
by at most one step per weight; given our scales, its quantiser returns our integers exactly.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn


def _torchao():
    """Import torchao quietly: its CUDA-only kernels fail to load on a CPU machine, and it registers an enum
    the way torch now deprecates; neither changes anything here."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import torchao.quantization

    return torchao.quantization


def torchao_integers(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """torchao's int8 values for the matrix w (out, in) at the given per-row scales (out, 1)."""
    ao = _torchao()
    return ao.Int8Tensor.from_hp(w.detach().float(), ao.PerRow(), scale=scale.float()).qdata


def torchao_int8(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """A copy of `model` with torchao's Int8WeightOnlyConfig on every nn.Linear except `skip` (experts stay fp32)."""
    ao = _torchao()
    quantized = copy.deepcopy(model).eval()
    ao.quantize_(quantized, ao.Int8WeightOnlyConfig(),
                 filter_fn=lambda module, name: isinstance(module, nn.Linear) and name not in skip)
    return quantized
