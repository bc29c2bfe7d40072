"""Freezing parts of a model for fine-tuning, and what it saves: trainable parameters, step time, memory.

Parameters are found by name, so the same calls work on a DeepSeekLM, a classifier wrapping one and a
peft-wrapped model: decoder layer i is every parameter under `model.layers.i.`.
"""
from __future__ import annotations

import re

import pandas as pd
import torch
from torch import nn

from dstutor.timing import interleaved_seconds
from dstutor.train.memory import activation_bytes, saved_tensors

LAYER = re.compile(r"(?:^|\.)model\.layers\.(\d+)\.")
# Module kinds by the names DeepSeek-V3 (and transformers) give them.
KINDS = {
    "embeddings": re.compile(r"embed_tokens"),
    "attention": re.compile(r"\.self_attn\."),
    "routed_experts": re.compile(r"\.mlp\.(experts|gate)\."),
    "shared_experts": re.compile(r"\.mlp\.shared_experts\."),
    "dense_mlp": re.compile(r"\.mlp\.(gate|up|down)_proj\."),
    "norms": re.compile(r"norm\.weight$"),
    "lm_head": re.compile(r"(^|\.)lm_head\."),
}


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter belongs to, or None (embeddings, final norm, heads)."""
    match = LAYER.search(name)
    return int(match.group(1)) if match else None


def freeze(model: nn.Module, bottom: int = 0, top: int = 0, kinds: tuple[str, ...] = ()) -> nn.Module:
    """Stop gradients to the bottom-k or top-k decoder layers and/or whole module kinds (see KINDS).

    bottom > 0 also freezes the embeddings: then no gradient flows below layer `bottom`, which is
    where the compute saving of freezing lower layers comes from.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown module kinds {sorted(unknown)}; choose from {sorted(KINDS)}")
    layers = {layer_index(n) for n, _ in model.named_parameters()} - {None}
    n_layers = max(layers) + 1 if layers else 0
    if not (0 <= bottom <= n_layers and 0 <= top <= n_layers):
        raise ValueError(f"bottom={bottom}, top={top}: the model has {n_layers} decoder layers")
    for name, param in model.named_parameters():
        index = layer_index(name)
        frozen = (index is not None and (index < bottom or index >= n_layers - top)) \
            or (bottom > 0 and KINDS["embeddings"].search(name) is not None) \
            or any(KINDS[kind].search(name) for kind in kinds)
        if frozen:
            param.requires_grad_(False)
    return model


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameters, and the trainable share in percent."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_%": 100 * trainable / total}


def training_step_cost(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 3) -> dict[str, float]:
    """Measured cost of one training step (forward + backward) on `batch`: median time and memory.

    Memory on a CPU is the sum of its measured parts: weights, gradients (allocated by the backward
    pass), AdamW's two moments for every trainable parameter, and the activations autograd saved.
    On CUDA it is the allocator's peak.
    """
    model.train()
    cuda = next(model.parameters()).is_cuda
    last = {}

    def step(_: int) -> None:
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with saved_tensors() as last["saved"]:
            loss = model(**batch).loss
        loss.backward()

    times = interleaved_seconds({"step": step}, repeats + 1)["step"]  # the first pass warms up kernels and allocator
    saved = last["saved"]
    parts = {
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "gradients_mb": sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
                            if p.grad is not None) / 2**20,
        "adamw_state_mb": sum(2 * p.numel() * 4 for p in model.parameters() if p.requires_grad) / 2**20,
        "activations_mb": activation_bytes(saved, model) / 2**20,
    }
    model.zero_grad(set_to_none=True)
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else sum(parts.values())
    return {"step_ms": 1000 * float(pd.Series(times).median()), "memory_mb": memory, **parts}
