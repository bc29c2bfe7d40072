"""Batches without the right padding no row needs: fine-tuning examples are padded to one width, most are shorter.

A causal model's outputs at a position never depend on later positions, so cutting columns after
every row's last real token (classification: `last`) or last labelled token (SFT: labels ≠ -100)
changes no logit that a loss or a prediction reads. It only saves the work of running the padding.
"""
from __future__ import annotations

import torch

from dstutor.metrics import IGNORE_INDEX


def _width(batch: dict[str, torch.Tensor], prefix: str) -> int | None:
    """Columns the `prefix` group needs: up to the last real token (`last`) or the last graded label."""
    if f"{prefix}last" in batch:
        return int(batch[f"{prefix}last"].max()) + 1
    labels = batch.get(f"{prefix}labels")
    if labels is not None and labels.dim() == 2:
        graded = (labels != IGNORE_INDEX).any(0).nonzero()
        return int(graded.max()) + 1 if len(graded) else 1
    return None  # nothing says which columns are padding: keep them all


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with each `*input_ids` group (and its 2-D labels) cut after its last needed column."""
    out = dict(batch)
    for key in [k for k in batch if k.endswith("input_ids")]:
        prefix = key[:-len("input_ids")]
        width = _width(batch, prefix)
        if width is None:
            continue
        out[key] = batch[key][:, :width]
        if batch.get(f"{prefix}labels") is not None and batch[f"{prefix}labels"].dim() == 2:
            out[f"{prefix}labels"] = batch[f"{prefix}labels"][:, :width]
    return out

