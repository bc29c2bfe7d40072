"""Elastic weight consolidation (Kirkpatrick et al. 2017, eq. 3), online form (Schwarz et al. 2018 §3).

After each task the diagonal of the empirical Fisher information, E[(∂ log p / ∂θ)²], says how much
each weight mattered to it; training on later tasks pays λ/2 · Σ F_i (θ_i − θ*_i)² for moving them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@torch.no_grad()
def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def fisher_diagonal(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the next-token loss per weight, over `batches` (one gradient per batch)."""
    if not batches:
        raise ValueError("the Fisher estimate needs at least one batch")
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it will be used
    for ids in batches:
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2 / len(batches)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


@dataclass
class Consolidated:
    """What EWC remembers: the weights after the tasks so far and the Fisher diagonal summed over them."""

    anchors: dict[str, torch.Tensor]
    fisher: dict[str, torch.Tensor]

    def update(self, model: nn.Module, fisher: dict[str, torch.Tensor]) -> "Consolidated":
        """Online EWC: one anchor (the newest weights) and the running sum of Fishers."""
        return Consolidated(_snapshot(model), {name: self.fisher.get(name, 0) + f for name, f in fisher.items()})


class EWCModel(nn.Module):
    """Wraps a language model so that its training loss carries the EWC penalty."""

    def __init__(self, model: nn.Module, memory: Consolidated, strength: float):
        super().__init__()
        if strength < 0:
            raise ValueError(f"strength={strength}: the EWC penalty weight λ must be ≥ 0")
        self.model, self.memory, self.strength = model, memory, strength

    def penalty(self) -> torch.Tensor:
        """λ/2 · Σ F (θ − θ*)² over every remembered weight."""
        terms = [(self.memory.fisher[name] * (p - self.memory.anchors[name]) ** 2).sum()
                 for name, p in self.model.named_parameters() if name in self.memory.fisher]
        return 0.5 * self.strength * torch.stack(terms).sum()

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if self.training:
            out.loss = out.loss + self.penalty()
        return out
