"""Two tasks, one body: sentiment classification and SFT trained together, told apart by a task embedding.

Every step sees one batch of each task. The loss mixes them with fixed weights ([R1 fine-tuning §三.2]:
0.7 classification + 0.3 generation) or with learned uncertainty weights (Kendall et al., 2018):
L = Σ_i exp(−s_i)·L_i + s_i, where s_i = log σ_i² is learned, so a noisier task gets a smaller weight.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import torch
from torch import nn

from dstutor.finetune.classify import LastTokenClassifier
from dstutor.models import DeepSeekLM

TASKS = ("sentiment", "sft")
WEIGHTINGS = ("static", "uncertainty")


@dataclass
class MultiTaskOutput:
    loss: torch.Tensor
    main_loss: torch.Tensor
    task_losses: torch.Tensor  # (sentiment, sft), before weighting

    def logged(self) -> dict[str, torch.Tensor]:
        return {"sentiment_loss": self.task_losses[0], "sft_loss": self.task_losses[1]}


class MultiTaskModel(nn.Module):
    """A DeepSeekLM with a sentiment head and its own LM head, plus a learned embedding per task.

    The task's vector is added to every token embedding, so the shared body knows which task it serves.
    """

    def __init__(self, lm: DeepSeekLM, n_classes: int = 2, weighting: str = "static",
                 static_weights: tuple[float, float] = (0.7, 0.3), weight_lr_scale: float = 30.0):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r}: choose one of {WEIGHTINGS}")
        if len(static_weights) != len(TASKS) or min(static_weights) < 0:
            raise ValueError(f"static_weights={static_weights}: need {len(TASKS)} weights ≥ 0")
        self.classifier = LastTokenClassifier(lm, n_classes)
        lm.lm_head.requires_grad_(True)  # the SFT task needs the next-token head the classifier froze
        self.task_embedding = nn.Embedding(len(TASKS), lm.config.hidden_size)
        nn.init.zeros_(self.task_embedding.weight)  # start as the pretrained model
        self.weighting = weighting
        self.register_buffer("static_weights", torch.tensor(static_weights))
        # Adam moves a parameter by about lr per step whatever its gradient, so at the body's lr (1e-3 for
        # 60 steps) s_i could move 0.06 and the weights stay ≈ 1. s_i = scale · raw_i gives s its own
        # learning rate, scale · lr, without a second optimiser group.
        self.weight_lr_scale = weight_lr_scale
        self.log_variance_raw = nn.Parameter(torch.zeros(len(TASKS))) if weighting == "uncertainty" else None

    @property
    def log_variance(self) -> torch.Tensor | None:
        """s_i = log σ_i², learned at weight_lr_scale × the optimiser's learning rate; None for fixed weights."""
        return None if self.log_variance_raw is None else self.weight_lr_scale * self.log_variance_raw

    @contextlib.contextmanager
    def task(self, name: str) -> Iterator[None]:
        """Within this block, every forward pass adds task `name`'s vector to the token embeddings."""
        vector = self.task_embedding.weight[TASKS.index(name)]
        handle = self.classifier.lm.model.embed_tokens.register_forward_hook(lambda module, inputs, out: out + vector)
        try:
            yield
        finally:
            handle.remove()

    def task_weights(self) -> torch.Tensor:
        """The weight on each task's loss now: fixed, or exp(−s_i) when learned."""
        return self.static_weights if self.log_variance is None else torch.exp(-self.log_variance.detach())

    def forward(self, cls_input_ids: torch.Tensor, cls_last: torch.Tensor, cls_labels: torch.Tensor,
                sft_input_ids: torch.Tensor, sft_labels: torch.Tensor) -> MultiTaskOutput:
        with self.task("sentiment"):
            sentiment = self.classifier(cls_input_ids, cls_last, cls_labels).loss
        with self.task("sft"):
            sft = self.classifier.lm(sft_input_ids, labels=sft_labels).main_loss
        losses = torch.stack([sentiment, sft])
        if self.log_variance is None:
            loss = (self.static_weights * losses).sum()
        else:
            loss = (torch.exp(-self.log_variance) * losses + self.log_variance).sum()
        return MultiTaskOutput(loss, loss, losses.detach())

    def view(self, name: str) -> nn.Module:
        """One task's model alone (the classifier or the LM), with its task embedding applied."""
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; tasks are {TASKS}")
        return TaskView(self, name)


class TaskView(nn.Module):
    """Calls one task's path of a MultiTaskModel, so evaluation code written for one task works unchanged."""

    def __init__(self, model: MultiTaskModel, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args, **kwargs):
        with self.model.task(self.name):
            inner = self.model.classifier if self.name == "sentiment" else self.model.classifier.lm
            return inner(*args, **kwargs)


def paired_tasks(classification: datasets.Dataset, sft: datasets.Dataset) -> datasets.Dataset:
    """Row i holds classification example i and SFT example i (cls_* and sft_* columns); the shorter length wins."""
    n = min(len(classification), len(sft))
    if n == 0:
        raise ValueError("both tasks need examples")
    columns = {f"cls_{name}": classification[name][:n] for name in ("input_ids", "last", "labels")}
    columns |= {f"sft_{name}": sft[name][:n] for name in ("input_ids", "labels")}
    return datasets.Dataset.from_dict(columns)
