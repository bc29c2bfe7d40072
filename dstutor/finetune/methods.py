"""Fine-tuning methods side by side: each builds a trainable model from the same pretrained base.

A method is full fine-tuning, freezing (by depth or module kind) or LoRA; `finetune` trains it with
the course's Trainer and returns the model and its history, so every method shares one loop.
Batches lose the right padding no row needs (dstutor.finetune.padding): the losses are unchanged, and an
MoE's load statistics no longer count padding tokens.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import datasets
import pandas as pd
import torch
from peft import PeftModel
from torch import nn

from dstutor.data.packing import BlockLoader
from dstutor.env import seed_everything
from dstutor.finetune.classify import LastTokenClassifier, classification_scores, predict_proba
from dstutor.finetune.freezing import KINDS, freeze, trainable_summary, training_step_cost
from dstutor.finetune.lora import LORA_TARGETS, add_lora
from dstutor.finetune.padding import trim_padding
from dstutor.models import DeepSeekLM
from dstutor.train import TrainConfig, Trainer
from dstutor.train.runner import run_jobs


@dataclass(frozen=True)
class Method:
    """One way to fine-tune: which weights train, and the learning rate that suits it."""

    name: str
    lr: float = 1e-3                   # peak learning rate (LoRA usually wants a larger one than full FT)
    bottom: int = 0                    # freeze the embeddings and the lowest `bottom` decoder layers
    top: int = 0                       # freeze the highest `top` decoder layers
    kinds: tuple[str, ...] = ()        # freeze whole module kinds (dstutor.finetune.freezing.KINDS)
    lora_rank: int = 0                 # > 0: LoRA adapters of this rank instead of training base weights
    lora_alpha: float | None = None    # LoRA scale numerator (alpha / rank multiplies B·A); None: 2 × rank
    lora_targets: tuple[str, ...] = ("attention", "mlp")  # LoRA target groups (dstutor.finetune.lora.LORA_TARGETS)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field checked before anything trains; the error names the bad value."""
        if not self.lr > 0:
            raise ValueError(f"Method {self.name!r}: lr={self.lr} must be > 0")
        for field in ("bottom", "top", "lora_rank"):
            if getattr(self, field) < 0:
                raise ValueError(f"Method {self.name!r}: {field}={getattr(self, field)} must be ≥ 0")
        for field, known in (("kinds", KINDS), ("lora_targets", LORA_TARGETS)):
            unknown = sorted(set(getattr(self, field)) - set(known))
            if unknown:
                raise ValueError(f"Method {self.name!r}: unknown {field} {unknown}; choose from {sorted(known)}")

    def build(self, base: DeepSeekLM, head_classes: int | None = None) -> nn.Module:
        """A fresh copy of base (with a classification head if head_classes), prepared for this method."""
        lm = copy.deepcopy(base)
        model = LastTokenClassifier(lm, head_classes) if head_classes else lm
        if self.lora_rank:
            return add_lora(model, self.lora_rank, self.lora_alpha or 2 * self.lora_rank, self.lora_targets,
                            trainable_modules=("score",) if head_classes else ())
        return freeze(model, self.bottom, self.top, self.kinds)


def finetune(model: nn.Module, train: TrainConfig, train_data: datasets.Dataset, val_data: datasets.Dataset | None,
             batch_size: int, fields: tuple[str, ...]) -> pd.DataFrame:
    """Train model on fine-tuning examples (dict batches of `fields`, padding trimmed) and return the history."""
    if len(train_data) == 0:
        raise ValueError("the fine-tuning data is empty")
    val = (BlockLoader(val_data, batch_size, shuffle=False, fields=fields, transform=trim_padding)
           if val_data is not None else None)
    loader = BlockLoader(train_data, batch_size, shuffle=True, seed=train.seed, fields=fields, transform=trim_padding)
    return Trainer(train).fit(model, loader, val)


def language_model_of(model: nn.Module) -> DeepSeekLM:
    """The DeepSeekLM inside a fine-tuned model (a classifier, a peft wrapper or both); adapters stay active."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return inner.lm if isinstance(inner, LastTokenClassifier) else inner


def general_loss(model: nn.Module, blocks: datasets.Dataset, batches: int, batch_size: int = 16) -> float:
    """Next-token loss of the model's language model on general-corpus blocks: what fine-tuning forgot."""
    trainer = Trainer(TrainConfig(eval_batches=batches, progress=False))  # evaluates on the model's device
    return trainer.evaluate(language_model_of(model), BlockLoader(blocks, batch_size, shuffle=False))["val_loss"]


def method_costs(methods: list[Method], base: DeepSeekLM, batch: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Each method's trainable parameters, step time and memory on one classification batch, indexed by name."""
    return pd.DataFrame({method.name: {**trainable_summary(method.build(base, 2)),
                                       **training_step_cost(method.build(base, 2), batch)} for method in methods}).T


def compare_methods(methods: list[Method], base: DeepSeekLM, train_data: datasets.Dataset,
                    test_data: datasets.Dataset, train: TrainConfig, seeds: list[int], batch_size: int,
                    general_blocks: datasets.Dataset, general_batches: int) -> pd.DataFrame:
    """Every method fine-tuned as a classifier once per seed: scores and general loss, one row per run.

    Each row also keeps the run's test predictions and training history, so a confusion matrix or a
    panel can show a run without training it again.
    """
    fields = ("input_ids", "last", "labels")

    def run(key: tuple[Method, int]) -> dict:
        method, seed = key
        seed_everything(seed)  # the new head's initialisation follows the seed
        model = method.build(base, 2)
        history = finetune(model, replace(train, lr=method.lr, seed=seed), train_data, test_data, batch_size, fields)
        predictions = predict_proba(model, test_data).argmax(1)
        return {"method": method.name, "seed": seed, **classification_scores(test_data["labels"], predictions),
                "general_loss": general_loss(model, general_blocks, general_batches),
                "predictions": predictions, "history": history}

    return pd.DataFrame(run_jobs(run, [(method, seed) for method in methods for seed in seeds], desc="methods"))
