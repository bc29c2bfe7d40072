"""Pruning: L1 structured channel pruning of the feed-forward networks, and unstructured magnitude pruning.

Structured ([Training essentials §2.2]): score every hidden channel of each SwiGLU (dense layers, shared and routed
experts) by the L1 norm of its weights, drop channels below `threshold` × the mean, at most `step` of
them per round; the matrices really shrink. Unstructured ([R1 fine-tuning §四.1]): zero the smallest |w|; the
matrices keep their shape, so dense kernels do exactly the same work.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dstutor.deploy.qat import quantized_weights
from dstutor.models.layers import SwiGLU
from dstutor.models.moe import Experts


def channel_importance(ffn: SwiGLU | Experts) -> torch.Tensor:
    """L1 norm of each hidden channel's weights (gate row + up row + down column): (channels,) or (experts, channels)."""
    if isinstance(ffn, SwiGLU):
        return (ffn.gate_proj.weight.abs().sum(1) + ffn.up_proj.weight.abs().sum(1)
                + ffn.down_proj.weight.abs().sum(0)).detach()
    gate, up = ffn.gate_up_proj.abs().sum(-1).chunk(2, dim=-1)
    return (gate + up + ffn.down_proj.abs().sum(1)).detach()


def channels_to_keep(importance: torch.Tensor, threshold: float = 0.3, step: float = 0.1,
                     max_rounds: int = 100) -> torch.Tensor:
    """Progressive rule: each round drop the weakest channels below threshold × mean(kept), at most step × all.

    Works on the last dimension (rows are experts, pruned alike so their 3-D weights stay rectangular);
    returns the sorted indices of the kept channels, (channels,) or (experts, channels).
    """
    scores = importance if importance.dim() == 2 else importance[None]
    channels = scores.shape[-1]
    kept = torch.arange(channels).expand(scores.shape[0], -1)
    per_round = max(1, int(step * channels))
    for _ in range(max_rounds):
        values = scores.gather(1, kept)
        weak = (values < threshold * values.mean(dim=1, keepdim=True)).sum(dim=1).min().item()
        drop = min(weak, per_round, kept.shape[1] - 1)
        if drop == 0:
            break
        kept = kept.gather(1, values.topk(kept.shape[1] - drop, dim=1).indices).sort(dim=1).values
    return kept if importance.dim() == 2 else kept[0]


def top_channels(importance: torch.Tensor, fraction: float) -> torch.Tensor:
    """The kept channel indices after removing `fraction` of the weakest ones (progressive rounds give the same set)."""
    keep = max(1, round(importance.shape[-1] * (1 - fraction)))
    return importance.topk(keep, dim=-1).indices.sort(dim=-1).values


def shrink_ffn(ffn: SwiGLU | Experts, kept: torch.Tensor) -> None:
    """Cut the FFN down to the kept hidden channels in place: smaller matrices, fewer FLOPs."""
    with torch.no_grad():
        if isinstance(ffn, SwiGLU):
            for name in ("gate_proj", "up_proj"):
                old = getattr(ffn, name)
                setattr(ffn, name, nn.Linear(old.in_features, len(kept), bias=False))
                getattr(ffn, name).weight.copy_(old.weight[kept])
            old = ffn.down_proj
            ffn.down_proj = nn.Linear(len(kept), old.out_features, bias=False)
            ffn.down_proj.weight.copy_(old.weight[:, kept])
            return
        gate, up = ffn.gate_up_proj.chunk(2, dim=1)
        rows = kept[:, :, None].expand(-1, -1, gate.shape[-1])
        ffn.gate_up_proj = nn.Parameter(torch.cat([gate.gather(1, rows), up.gather(1, rows)], dim=1))
        cols = kept[:, None, :].expand(-1, ffn.down_proj.shape[1], -1)
        ffn.down_proj = nn.Parameter(ffn.down_proj.gather(2, cols))


def prune_channels(model: nn.Module, fraction: float | None = None, threshold: float = 0.3,
                   step: float = 0.1) -> tuple[nn.Module, float]:
    """A copy with every FFN's channels pruned; fraction None applies the threshold rule. Returns (model, share removed)."""
    pruned = copy.deepcopy(model).eval()
    before = after = 0
    for module in pruned.modules():
        if isinstance(module, (SwiGLU, Experts)):
            importance = channel_importance(module)
            kept = (channels_to_keep(importance, threshold, step) if fraction is None
                    else top_channels(importance, fraction))
            before, after = before + importance.numel(), after + kept.numel()
            shrink_ffn(module, kept)
    return pruned, 1 - after / before


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Per weight tensor (linear layers and experts, as int8 covers), True where |w| is above the `sparsity` quantile."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity}: need 0 ≤ sparsity < 1")
    names = {id(module): name for name, module in model.named_modules()}
    masks = {}
    for module, attribute in quantized_weights(model):
        weight = getattr(module, attribute).detach()
        drop = int(sparsity * weight.numel())
        mask = torch.ones(weight.numel(), dtype=torch.bool)
        mask[weight.abs().flatten().argsort()[:drop]] = False
        masks[f"{names[id(module)]}.{attribute}".lstrip(".")] = mask.view_as(weight)
    return masks


def prune_magnitude(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy with the smallest-|w| share `sparsity` of each weight tensor set to zero (shapes unchanged)."""
    pruned = copy.deepcopy(model).eval()
    masks = magnitude_masks(pruned, sparsity)
    with torch.no_grad():
        for name, param in pruned.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    return pruned


def sparsity_of(model: nn.Module) -> float:
    """Share of exactly-zero entries among the weights pruning touches."""
    weights = [getattr(m, a) for m, a in quantized_weights(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
