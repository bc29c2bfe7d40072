"""LoRA and freezing carried to any model's shapes, DeepSeek-V3's included: arithmetic, not a measurement.

The model is built on PyTorch's meta device, where a tensor has a shape and no storage, so `add_lora`
wraps 671 B parameters as it wraps the nano model and costs no memory. A training step counts 6 FLOPs
per active parameter and token (2 forward, 4 backward: input and weight gradients); attention's score
products, which grow with the context, are left out.
"""
from __future__ import annotations

import torch

from dstutor.finetune.freezing import trainable_summary
from dstutor.finetune.lora import add_lora
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.models.params import layer_counts

FP32_FROZEN_BYTES = 4     # a frozen weight: the fp32 value only
FP32_TRAINED_BYTES = 16   # a trained weight: value, gradient and AdamW's two moments, all fp32


def lora_trainable(config: DeepSeekConfig, rank: int, targets: tuple[str, ...] = ("attention", "mlp")) -> dict[str, float]:
    """trainable_summary of the LM with LoRA adapters of `rank` on `targets`, built on the meta device."""
    with torch.device("meta"):
        return trainable_summary(add_lora(DeepSeekLM(config), rank, 2.0 * rank, targets))


def frozen_bottom_compute_cut(config: DeepSeekConfig, bottom: int) -> float:
    """Share of a training step's FLOPs saved when the embedding and the bottom `bottom` layers are frozen.

    Below the lowest trainable layer no gradient is needed, so those layers' backward pass never runs.
    """
    if not 0 <= bottom <= config.num_layers:
        raise ValueError(f"bottom={bottom}: need 0 ≤ bottom ≤ num_layers={config.num_layers}")
    active = [layer_counts(config, i)[1] for i in range(config.num_layers)]
    head = config.vocab_size * config.hidden_size  # the LM head is a matmul; the embedding is a lookup
    return 4 * sum(active[:bottom]) / (6 * (sum(active) + head))


def lora_state_cut(base: float, adapters: float) -> float:
    """How much smaller the model state is under LoRA than under full fine-tuning (fp32 weights, AdamW)."""
    lora = FP32_FROZEN_BYTES * base + FP32_TRAINED_BYTES * adapters
    return 1 - lora / (FP32_TRAINED_BYTES * base)
