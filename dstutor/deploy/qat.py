"""Quantisation-aware training (QAT): fake-quantised weights in the forward, straight-through gradients.

Real QAT (Jacob et al. 2018, §3) rounds each weight to the grid the deployed model will use, in every
forward pass, and lets the gradient pass the rounding unchanged (the straight-through estimator), so
training settles where rounding hurts least. [Training essentials]'s `QuantAwareTraining` instead adds Gaussian
noise to the model's *input*: a regulariser that never sees the quantisation grid.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Iterator, Sequence

import datasets
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from dstutor.deploy.int8 import quantize_int8, quantize_rows
from dstutor.deploy.measure import lm_quality
from dstutor.models.moe import Experts
from dstutor.train import TrainConfig, fit_on_blocks
from dstutor.train.runner import run_jobs


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
    """[Training essentials]'s recipe for an LM: Gaussian noise (std × N(0, 1)) on the token embeddings while training."""
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


RECIPES = ("fine-tune only", "guide: input noise", "QAT: fake-quant + STE")


def _fine_tune(base: nn.Module, recipe: str, bits: int | None, train_blocks: datasets.Dataset,
               val_blocks: datasets.Dataset, steps: int, seed: int, lr: float, batch_size: int) -> nn.Module:
    """A copy of `base` fine-tuned by one recipe; `bits` is the grid QAT trains against (the others ignore it)."""
    model = copy.deepcopy(base).train()
    if recipe == "QAT: fake-quant + STE":
        treatment = fake_quantized(model, bits)
    elif recipe == "guide: input noise":
        treatment = input_noise(model, 0.1, seed)
    else:
        treatment = nullcontext(model)
    with treatment:
        train = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10, eval_every=0, eval_batches=1,
                            progress=False, seed=seed)
        fit_on_blocks(model, train, train_blocks, val_blocks, batch_size)
    return model


def compare_qat(base: nn.Module, train_blocks: datasets.Dataset, val_blocks: datasets.Dataset, bits: Sequence[int],
                steps: int, seeds: list[int], lr: float = 1e-3, batch_size: int = 16,
                eval_batches: int = 10, recipes: Sequence[str] = RECIPES,
                qat_bits: Sequence[int] | None = None) -> pd.DataFrame:
    """Fine-tune copies of `base` by each recipe per seed, then quantise to each of `bits`; one row per (bits, recipe, seed).

    Every recipe gets the same steps, data order and learning rate, so only the training-time
    treatment differs: nothing, the guide's input noise (std 0.1), or fake-quantised weights. The first
    two never see the grid, so one fine-tuned model per seed serves every bit width; QAT trains once per
    width, for each of `qat_bits` (default: all of `bits`).
    """
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise ValueError(f"recipes must be some of {RECIPES}, got {list(recipes)}")
    qat_bits = list(bits) if qat_bits is None else list(qat_bits)
    if not qat_bits or not set(qat_bits) <= set(bits):
        raise ValueError(f"qat_bits={qat_bits} must be a non-empty subset of bits={list(bits)}")
    runs = [(recipe, seed, trained_for) for recipe in recipes for seed in seeds
            for trained_for in (qat_bits if recipe == RECIPES[-1] else [None])]

    def run(key: tuple[str, int, int | None]) -> list[dict]:
        recipe, seed, trained_for = key
        model = _fine_tune(base, recipe, trained_for, train_blocks, val_blocks, steps, seed, lr, batch_size)
        float_quality, rows = lm_quality(model, val_blocks, eval_batches), []
        for b in ([trained_for] if trained_for else bits):
            int_quality = lm_quality(quantize_int8(model, "weight", bits=b), val_blocks, eval_batches)
            rows.append({"recipe": recipe, "seed": seed, "bits": b, "fp32_loss": float_quality["loss"],
                         "quantized_loss": int_quality["loss"], "fp32_accuracy": float_quality["accuracy"],
                         "quantized_accuracy": int_quality["accuracy"]})
        return rows

    rows = [row for run_rows in run_jobs(run, runs, desc="QAT runs") for row in run_rows]
    order = {b: i for i, b in enumerate(bits)}  # rows by bit width as asked, then recipe, then seed
    return pd.DataFrame(sorted(rows, key=lambda r: (order[r["bits"]], RECIPES.index(r["recipe"]), r["seed"])))
