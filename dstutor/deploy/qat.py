"""Quantisation-aware training (QAT): fake-quantised weights in the forward, straight-through gradients.

Real QAT (Jacob et al. 2018, §3) rounds each weight to the grid the deployed model will use, in every
forward pass, and lets the gradient pass the rounding unchanged (the straight-through estimator), so
training settles where rounding hurts least. Seed 000's `QuantAwareTraining` instead adds Gaussian
noise to the model's *input*: a regulariser that never sees the quantisation grid.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Iterator

import datasets
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from dstutor.deploy.int8 import quantize_int8, quantize_rows
from dstutor.deploy.measure import lm_quality
from dstutor.models.moe import Experts
from dstutor.train import TrainConfig, fit_on_blocks


class FakeQuant(nn.Module):
    """w → dequant(quant(w)) in the forward; gradient of the identity in the backward (STE)."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_rows(w, self.bits)
        return w + (q.float() * scale - w).detach()


def quantized_weights(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight `quantize_int8` turns into int8: linear layers and experts."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in skip:
            found.append((module, "weight"))
        elif isinstance(module, Experts):
            found += [(module, "gate_up_proj"), (module, "down_proj")]
    return found


@contextmanager
def fake_quantized(model: nn.Module, bits: int = 8) -> Iterator[nn.Module]:
    """Inside the block, the model trains (and evaluates) with fake-quantised weights; on exit they are plain again.

    The trained float weights are kept (`leave_parametrized=False`): quantising them afterwards gives
    exactly the int8 model that was simulated.
    """
    targets = quantized_weights(model)
    for module, name in targets:
        parametrize.register_parametrization(module, name, FakeQuant(bits))
    try:
        yield model
    finally:
        for module, name in targets:
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)


@contextmanager
def input_noise(model: nn.Module, std: float = 0.1, seed: int = 0) -> Iterator[nn.Module]:
    """Seed 000's recipe for an LM: Gaussian noise (std × N(0, 1)) on the token embeddings while training."""
    generator = torch.Generator().manual_seed(seed)

    def add_noise(module, inputs, output):
        if not module.training:
            return output
        return output + std * torch.randn(output.shape, generator=generator).to(output)

    handle = model.model.embed_tokens.register_forward_hook(add_noise)
    try:
        yield model
    finally:
        handle.remove()


RECIPES = ("fine-tune only", "seed 000: input noise", "QAT: fake-quant + STE")


def compare_qat(base: nn.Module, train_blocks: datasets.Dataset, val_blocks: datasets.Dataset, bits: int,
                steps: int, seeds: list[int], lr: float = 1e-3, batch_size: int = 16,
                eval_batches: int = 10) -> pd.DataFrame:
    """Fine-tune copies of `base` three ways per seed, then quantise to `bits`; quality before and after, one row per run.

    Every recipe gets the same steps, data order and learning rate, so only the training-time
    treatment differs: nothing, seed 000's input noise (std 0.1), or fake-quantised weights.
    """
    rows = []
    for recipe, seed in tqdm([(r, s) for r in RECIPES for s in seeds], desc=f"QAT at {bits} bits"):
        model = copy.deepcopy(base).train()
        treatment = {"fine-tune only": nullcontext(model), "seed 000: input noise": input_noise(model, 0.1, seed),
                     "QAT: fake-quant + STE": fake_quantized(model, bits)}[recipe]
        with treatment:
            train = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10, eval_every=0, eval_batches=1,
                                progress=False, seed=seed)
            fit_on_blocks(model, train, train_blocks, val_blocks, batch_size)
        float_quality = lm_quality(model, val_blocks, eval_batches)
        int_quality = lm_quality(quantize_int8(model, "weight", bits=bits), val_blocks, eval_batches)
        rows.append({"recipe": recipe, "seed": seed, "bits": bits, "fp32_loss": float_quality["loss"],
                     "quantized_loss": int_quality["loss"], "fp32_accuracy": float_quality["accuracy"],
                     "quantized_accuracy": int_quality["accuracy"]})
    return pd.DataFrame(rows)
