"""One held-out loss for the whole course: every prediction counts once, whichever batch it falls in.

A batch's `main_loss` is a mean over its graded predictions; averaging those means would weigh a
prediction in a short batch (or a short SFT answer) more than one in a long one. `mean_loss` weights
each batch by its count of graded predictions instead, so the result does not depend on the batching.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import ContextManager

import torch
from torch import nn

from dstutor.models.model import IGNORE_INDEX


def graded_predictions(batch: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """How many predictions a batch's main loss averages over: next tokens with a label, or examples."""
    if not isinstance(batch, dict):
        return batch[:, 1:].numel()  # a batch of token blocks: every next token
    labels = batch.get("labels")
    if labels is None:  # a contrastive batch: one prediction per example
        return len(next(iter(batch.values())))
    return int((labels[:, 1:] != IGNORE_INDEX).sum()) if labels.ndim == 2 else len(labels)


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Iterable[torch.Tensor | dict[str, torch.Tensor]],
              autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> float:
    """Mean main loss per graded prediction over all batches (Σ loss·n / Σ n), on the model's own device."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)
        n = graded_predictions(batch)
        if not n:
            continue  # a batch with no graded prediction has no loss to average (cross-entropy returns NaN)
        with autocast():
            out = model(**batch) if isinstance(batch, dict) else model(batch, labels=batch)
        total, count = total + out.main_loss.item() * n, count + n
    if not count:
        raise ValueError("the validation data yielded no batches with a graded prediction")
    return total / count
