"""Low-precision formats simulated in fp32: DeepSeek-V3's FP8 (E4M3) with fine-grained block scaling (§3.3).

V3 scales activations per 1×128 tile and weights per 128×128 block, so one outlier only coarsens its
own block. We quantise to torch.float8_e4m3fn and back, then multiply in fp32 (V3 accumulates in fp32
too), which isolates the error the format and the scaling cause.
"""
from __future__ import annotations

import torch

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448


def fp8_quantize(x: torch.Tensor, block: tuple[int, int] | None) -> torch.Tensor:
    """x rounded through E4M3 with one scale per (rows × cols) block; block=None: one scale per tensor."""
    if block is None:
        scale = x.abs().max().clamp(min=1e-12) / E4M3_MAX
        return (x / scale).to(torch.float8_e4m3fn).float() * scale
    rows, cols = block
    if x.shape[0] % rows or x.shape[1] % cols:
        raise ValueError(f"shape {tuple(x.shape)} is not a multiple of the block {block}")
    tiles = x.reshape(x.shape[0] // rows, rows, x.shape[1] // cols, cols)
    scale = tiles.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-12) / E4M3_MAX
    return ((tiles / scale).to(torch.float8_e4m3fn).float() * scale).reshape(x.shape)


def matmul_errors(activations: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """Median over tokens (rows) of ‖y − y_fp32‖/‖y_fp32‖ for activations @ weights.T: bf16 and two FP8 scalings.

    Per token, so a few huge outlier tokens cannot hide what happens to all the others.
    """
    exact = activations @ weights.T

    def error(y: torch.Tensor) -> float:
        return ((y - exact).norm(dim=1) / exact.norm(dim=1)).median().item()

    return {
        "bf16": error((activations.bfloat16() @ weights.bfloat16().T).float()),
        "FP8 E4M3, one scale per tensor": error(fp8_quantize(activations, None) @ fp8_quantize(weights, None).T),
        "FP8 E4M3, V3 blocks (1×128 act, 128×128 weight)":
            error(fp8_quantize(activations, (1, 128)) @ fp8_quantize(weights, (128, 128)).T),
    }
