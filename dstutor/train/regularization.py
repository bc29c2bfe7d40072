"""[Hyper-parameters to regularisation]'s regularisation snippets, reproduced faithfully so chapter 07 can measure what they do.

Our own versions live in the model (`DeepSeekConfig.layer_drop`, `dropout`) and the Trainer
(`label_smoothing`, `clip_mode="per_parameter"`); these exist only to compare against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def zeroing_layer_drop(model: nn.Module, layers: list[int], drop_prob: float) -> list:
    """Make decoder `layers` return zeros with probability drop_prob in training, as [Hyper-parameters to regularisation]'s LayerDrop does.

    Its module sits after a block and returns `torch.zeros_like(x)` when dropping, so everything the
    residual stream carried so far is erased. Returns the hook handles (call .remove() to undo).
    """
    def zero_out(module, args, output):
        if module.training and torch.rand(()) < drop_prob:
            return (torch.zeros_like(output[0]), *output[1:])
        return output

    return [model.model.layers[i].register_forward_hook(zero_out) for i in layers]


def label_smoothing_mean_over_classes(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """[Hyper-parameters to regularisation]'s label_smoothing_loss with one-hot targets: note its `.mean(dim=-1)` over classes."""
    log_probs = F.log_softmax(logits, dim=-1)
    n_classes = logits.size(-1)
    one_hot = F.one_hot(targets, n_classes).float()
    smoothed = (1 - epsilon) * one_hot + epsilon / n_classes
    return (-smoothed * log_probs).mean(dim=-1).mean()
