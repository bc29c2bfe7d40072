"""Training memory, measured and computed: activations saved for backward, and ZeRO/FSDP arithmetic."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

# Mixed-precision AdamW, per parameter (ZeRO paper §3.1): bf16 weights 2 + bf16 gradients 2
# + fp32 master weights 4 + Adam moments 4 + 4 bytes.
BYTES_WEIGHTS, BYTES_GRADS, BYTES_OPTIMIZER = 2, 2, 12
# What each ZeRO stage shards across GPUs (FSDP2's fully_shard is stage 3).
ZERO_STAGES = {0: (), 1: ("optimizer",), 2: ("optimizer", "grads"), 3: ("optimizer", "grads", "weights")}


@contextlib.contextmanager
def saved_tensors() -> Iterator[dict[int, int]]:
    """Within this block, record every storage autograd saves for backward: {data pointer: bytes}."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()  # count each storage once: views share memory
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield seen


def activation_bytes(seen: dict[int, int], model: nn.Module) -> int:
    """Bytes of the saved storages that are not the model's own parameters."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for ptr, size in seen.items() if ptr not in parameters)


def saved_activation_bytes(model: nn.Module, ids: torch.Tensor, **forward_kwargs) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward pass (activation memory)."""
    model.train()
    with saved_tensors() as seen:
        loss = model(ids, labels=ids, **forward_kwargs).loss
    loss.backward()  # runs recomputation if checkpointing, and frees the graph
    model.zero_grad(set_to_none=True)
    return activation_bytes(seen, model)


def zero_memory_per_gpu(n_params: float, n_gpus: int, stage: int) -> dict[str, float]:
    """GB per GPU for weights, gradients and optimiser state under ZeRO stage 0–3 (activations excluded)."""
    if stage not in ZERO_STAGES:
        raise ValueError(f"ZeRO stage {stage}: choose 0, 1, 2 or 3")
    sharded = ZERO_STAGES[stage]
    parts = {"weights": BYTES_WEIGHTS, "grads": BYTES_GRADS, "optimizer": BYTES_OPTIMIZER}
    gb = {name: n_params * size / (n_gpus if name in sharded else 1) / 1e9 for name, size in parts.items()}
    return {**gb, "total": sum(gb.values())}
