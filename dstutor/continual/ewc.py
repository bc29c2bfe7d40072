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


def per_sample_gradients(model: nn.Module, batch: torch.Tensor) -> list[list[torch.Tensor]]:
    """The next-token-loss gradient of every example on its own: one list (over trainable params) per example."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for ids in batch:
        loss = model(ids[None], labels=ids[None]).loss
        found = torch.autograd.grad(loss, params, allow_unused=True)
        grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, found)])
    return grads


def fisher_diagonal(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal E_x[(∂ loss(x) / ∂θ)²]: each example's (block's) own gradient, squared, then averaged.

    Squaring the gradient of a batch's mean loss instead, (E g)², lets the examples' disagreements cancel
    and comes out smaller by up to the batch size.
    """
    examples = sum(len(batch) for batch in batches)
    if not examples:
        raise ValueError("the Fisher estimate needs at least one example")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it will be used
    for batch in batches:
        for grads in per_sample_gradients(model, batch):
            for name, g in zip(names, grads):
                fisher[name] += g.detach() ** 2 / examples
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
