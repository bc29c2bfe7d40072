"""Int8 post-training quantisation of our own: symmetric, one scale per output row, linear layers *and* experts.

Why not `torch.ao.quantization.quantize_dynamic`: it is deprecated, and it only swaps `nn.Linear`, so a
DeepSeekMoE model keeps its routed experts (3-D parameters, most of the weights) in fp32. Here:
- "weight" mode stores int8 weights and dequantises them before an fp32 matmul (smaller, not faster);
- "dynamic" mode also quantises each activation row on the fly and multiplies int8 × int8 → int32
  with `torch._int_mm`, then rescales (smaller, and faster where matmuls dominate).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dstutor.models.moe import Experts

MODES = ("weight", "dynamic")


def quantize_rows(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integers per row of the last dimension: (int8-stored values, fp32 scales with a trailing 1).

    bits < 8 uses fewer levels (±7 for 4 bits) but still stores one value per int8: no packing here.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits}: choose 2…8")
    levels = 2 ** (bits - 1) - 1
    scale = w.detach().float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / levels
    return (w.detach().float() / scale).round().clamp(-levels, levels).to(torch.int8), scale


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ dequant(q (out, in), scale (out, 1)).T with x quantised per row: int8 × int8 → int32."""
    rows = x.reshape(-1, x.shape[-1])
    qx, sx = quantize_rows(rows)
    out = torch._int_mm(qx, q.T).float() * sx * scale.T
    return out.to(x.dtype).view(*x.shape[:-1], q.shape[0])


class Int8Matrix:
    """One int8 weight matrix (out, in) that can stand where a float weight is used as `x @ w.T`."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dynamic: bool, transposed: bool = False):
        self.q, self.scale, self.dynamic, self.transposed = q, scale, dynamic, transposed

    @property
    def T(self) -> "Int8Matrix":
        return Int8Matrix(self.q, self.scale, self.dynamic, not self.transposed)

    def dequantize(self) -> torch.Tensor:
        w = self.q.float() * self.scale
        return w.T if self.transposed else w

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            raise NotImplementedError("only x @ w.T is supported (the layout of nn.Linear and the experts)")
        return int8_matmul(x, self.q, self.scale) if self.dynamic else x @ self.dequantize()


class Int8Stack:
    """The 3-D expert weights (experts, out, in) in int8: indexing gives one expert's Int8Matrix."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dynamic: bool):
        self.q, self.scale, self.dynamic, self.shape = q, scale, dynamic, q.shape

    def __getitem__(self, expert: int) -> Int8Matrix:
        return Int8Matrix(self.q[expert], self.scale[expert], self.dynamic)


class Int8Linear(nn.Module):
    """A bias-free nn.Linear with int8 weights; `.weight` dequantises (MLA's absorbed path reads it)."""

    def __init__(self, linear: nn.Linear, dynamic: bool, bits: int = 8):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear covers the model's bias-free projections; this layer has a bias")
        q, scale = quantize_rows(linear.weight, bits)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.dynamic = dynamic
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            return int8_matmul(x, self.qweight, self.scale)
        return F.linear(x, self.weight.to(x.dtype))


class Int8Experts(Experts):
    """Routed experts with int8 weights; routing and the per-expert loop are Experts.forward unchanged."""

    def __init__(self, experts: Experts, dynamic: bool, bits: int = 8):
        nn.Module.__init__(self)
        for name in ("gate_up_proj", "down_proj"):
            q, scale = quantize_rows(getattr(experts, name), bits)
            self.register_buffer(f"{name}_int8", q)
            self.register_buffer(f"{name}_scale", scale)
        self.dynamic = dynamic

    @property
    def gate_up_proj(self) -> Int8Stack:
        return Int8Stack(self.gate_up_proj_int8, self.gate_up_proj_scale, self.dynamic)

    @property
    def down_proj(self) -> Int8Stack:
        return Int8Stack(self.down_proj_int8, self.down_proj_scale, self.dynamic)


def quantize_int8(model: nn.Module, mode: str = "weight", experts: bool = True,
                  skip: tuple[str, ...] = ("lm_head",), bits: int = 8) -> nn.Module:
    """A copy of `model` with every nn.Linear (except `skip`) and, if `experts`, the routed experts in int8.

    The router, norms and embeddings stay fp32: routing decisions are sensitive, and the embedding is a
    lookup, not a matmul. `bits` < 8 keeps fewer levels (for the QAT comparison); storage stays int8.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {MODES}")
    quantized = copy.deepcopy(model).eval()
    for name, module in list(quantized.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in skip:
                setattr(module, child_name, Int8Linear(child, mode == "dynamic", bits))
            elif isinstance(child, Experts) and experts:
                setattr(module, child_name, Int8Experts(child, mode == "dynamic", bits))
    return quantized


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and persistent buffer: what a checkpoint of the model holds."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def packed_bytes(model: nn.Module, bits: int) -> int:
    """model_bytes if every int8 tensor packed its values at `bits` bits each (ours store one per byte)."""
    return sum((t.numel() * bits + 7) // 8 if t.dtype == torch.int8 else t.numel() * t.element_size()
               for t in model.state_dict().values())
