"""Continual-learning strategies at equal compute: every strategy takes the same steps of the same batch size per task.

A strategy is naive sequential fine-tuning plus at most a few changes: which layers freeze per task
([Training essentials §4.1]), a replay share of each batch drawn uniformly or by priority (§4.2),
an EWC penalty, a fresh LoRA adapter per task, or a re-warmed and re-decayed learning rate (the
continual-pretraining recipe of Ibrahim et al. 2024 §4).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from dstutor.continual.ewc import Consolidated, EWCModel, fisher_diagonal
from dstutor.continual.metrics import summary
from dstutor.continual.replay import ReplayBuffer
from dstutor.continual.tasks import Task
from dstutor.finetune.freezing import freeze, layer_index
from dstutor.finetune.lora import add_lora
from dstutor.models import DeepSeekLM
from dstutor.metrics import mean_loss
from dstutor.train import TrainConfig, Trainer
from dstutor.train.runner import run_jobs

FREEZING = ("none", "by_task", "bottom_half")


@dataclass(frozen=True)
class Strategy:
    """How to learn a sequence of tasks; the defaults are naive sequential fine-tuning."""

    name: str = "naive"
    lr: float = 1e-3            # peak learning rate of every stage (LoRA usually wants a few times more)
    schedule: str = "constant"  # "constant", or "cosine" to re-warm and re-decay at every stage
    warmup_steps: int = 0       # linear warmup at the start of every stage (re-warming)
    freeze: str = "none"        # "by_task": task t freezes layer group t (seed 000); "bottom_half": after task 1
    replay_size: int = 0        # blocks kept from earlier tasks (0: no replay)
    replay_share: float = 0.25  # share of each batch drawn from the replay buffer (0…0.9)
    replay_alpha: float = 0.0   # rank-priority exponent α (0: uniform replay; 0.5…1 typical)
    ewc_strength: float = 0.0   # EWC λ (0: off); useful values depend on the Fisher scale, here 10…10⁴
    lora_rank: int = 0          # > 0: base frozen, a fresh LoRA adapter per task, each task scored with its own

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.freeze not in FREEZING:
            raise ValueError(f"freeze={self.freeze!r}: choose one of {FREEZING}")
        if self.replay_size < 0:
            raise ValueError(f"replay_size={self.replay_size}: the buffer size must be ≥ 0")
        if self.replay_alpha < 0:
            raise ValueError(f"replay_alpha={self.replay_alpha}: the priority exponent must be ≥ 0")
        if not 0 <= self.replay_share <= 0.9:
            raise ValueError(f"replay_share={self.replay_share}: must be in [0, 0.9] (some of each batch is the new task)")
        if self.ewc_strength < 0 or self.lora_rank < 0 or self.lr <= 0:
            raise ValueError(f"need ewc_strength ≥ 0, lora_rank ≥ 0 and lr > 0; got {self.ewc_strength}, "
                             f"{self.lora_rank}, {self.lr}")
        if self.lora_rank and (self.freeze != "none" or self.ewc_strength):
            raise ValueError("LoRA per task already leaves the base frozen: combine it with neither freezing nor EWC")


@torch.no_grad()
def block_losses(model: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Mean next-token loss of each block (what rank priorities sort by)."""
    model.eval()
    losses = []
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start:start + batch_size]
        logits = model(ids).logits[:, :-1]
        per_token = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        losses.append(per_token.mean(1))
    return torch.cat(losses).numpy()


def held_out_loss(model: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token loss per token over a task's held-out blocks."""
    return mean_loss(model, blocks.split(batch_size))


def freeze_for_stage(model: nn.Module, strategy: Strategy, stage: int, stages: int) -> None:
    """Reset requires_grad, then freeze what this strategy freezes at this stage."""
    for param in model.parameters():
        param.requires_grad_(True)
    n_layers = len(model.model.layers)
    if strategy.freeze == "by_task":  # seed 000's adaptive_freeze: task t freezes its own group of layers
        group = set(np.array_split(np.arange(n_layers), stages)[stage].tolist())
        for name, param in model.named_parameters():
            if layer_index(name) in group:
                param.requires_grad_(False)
    elif strategy.freeze == "bottom_half" and stage > 0:
        freeze(model, bottom=n_layers // 2)


def _batches(task: Task, buffer: ReplayBuffer, strategy: Strategy, model: nn.Module, steps: int,
             batch_size: int, seed: int) -> list[torch.Tensor]:
    """The stage's batches: the task's blocks, epoch after epoch, with the replay share drawn from the buffer."""
    replayed = round(strategy.replay_share * batch_size) if len(buffer) else 0
    fresh = batch_size - replayed
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(task.train), generator=generator)
                       for _ in range(steps * fresh // len(task.train) + 1)])
    priorities = block_losses(model, buffer.blocks) if replayed and strategy.replay_alpha > 0 else None
    batches = []
    for step in range(steps):
        own = task.train[order[step * fresh:(step + 1) * fresh]]
        batches.append(torch.cat([own, buffer.sample(replayed, priorities, strategy.replay_alpha)]) if replayed else own)
    return batches


def _first_stage_key(strategy: Strategy, seed: int, steps: int, batch_size: int) -> tuple | None:
    """What the first stage's training depends on, for strategies that can share it; None for LoRA (adapters, not weights)."""
    if strategy.lora_rank:
        return None
    # the buffer is empty and EWC has no memory yet in stage 1, and "bottom_half" freezes from stage 2 on
    freeze = strategy.freeze if strategy.freeze == "by_task" else "none"
    return strategy.lr, strategy.schedule, strategy.warmup_steps, freeze, seed, steps, batch_size


def run_sequence(base: DeepSeekLM, tasks: list[Task], strategy: Strategy, steps: int, batch_size: int,
                 seed: int = 0, fisher_batches: int = 8, before: list[float] | None = None,
                 shared: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learn the tasks in order from a copy of base; the loss matrix R (stages × tasks) and the training history.

    before: base's held-out losses when the caller has them. shared: a dict passed to every run on the same
    base and tasks, so that a first stage that several strategies train identically is trained once.
    The history's stage_seconds is each stage's learning time (batches, steps, Fisher), evaluation excluded.
    """
    strategy.validate()
    if not tasks:
        raise ValueError("no tasks: pass at least one Task")
    for task in tasks:
        top = int(max(task.train.max(), task.test.max()))
        if top >= base.config.vocab_size:
            raise ValueError(f"task {task.name!r} holds token id {top} but the model's vocabulary has "
                             f"{base.config.vocab_size} tokens: build the tasks with the model's tokenizer")
    names = [task.name for task in tasks]
    models = [copy.deepcopy(base)]  # models[-1] is the current one; LoRA keeps one per task
    buffer, memory = ReplayBuffer(strategy.replay_size, seed), None
    rows = [list(before) if before is not None else [held_out_loss(base, task.test) for task in tasks]]
    histories = []
    for stage, task in enumerate(tasks):
        began = time.perf_counter()
        model = models[-1]
        if strategy.lora_rank:
            with torch.random.fork_rng():  # the adapters' initialisation follows the seed, not the runs made before
                torch.manual_seed(seed * 1000 + stage)
                model = add_lora(copy.deepcopy(base), strategy.lora_rank, 2 * strategy.lora_rank)
            models = models[:stage] + [model] if stage else [model]
        else:
            freeze_for_stage(model, strategy, stage, len(tasks))
        key = _first_stage_key(strategy, seed, steps, batch_size) if stage == 0 and shared is not None else None
        if key is not None and key in shared:
            state, history, learned = shared[key]
            model.load_state_dict(state)
        else:
            batches = _batches(task, buffer, strategy, model, steps, batch_size, seed * 1000 + stage)
            trained = EWCModel(model, memory, strategy.ewc_strength) if memory else model
            config = TrainConfig(steps=steps, lr=strategy.lr, schedule=strategy.schedule,
                                 warmup_steps=strategy.warmup_steps, weight_decay=0.0, eval_every=0, seed=seed,
                                 progress=False, device="cpu")
            history = Trainer(config).fit(trained, batches)
            learned = time.perf_counter() - began
            if key is not None:
                shared[key] = (copy.deepcopy(model.state_dict()), history, learned)
        buffer.add(task.name, task.train)
        if strategy.ewc_strength and stage + 1 < len(tasks):  # no later task needs the last task's Fisher
            began = time.perf_counter()
            fisher = fisher_diagonal(model, list(task.train[:fisher_batches * batch_size].split(batch_size)))
            memory = (memory or Consolidated({}, {})).update(model, fisher)
            learned += time.perf_counter() - began
        histories.append(history.assign(stage=stage + 1, task=task.name, stage_seconds=learned))
        # with adapters per task, task j is scored by its own adapter once learned (the task's id is known)
        rows.append([held_out_loss(models[min(j, len(models) - 1)], tasks[j].test) for j in range(len(tasks))])
    losses = pd.DataFrame(rows, index=["before"] + [f"after {name}" for name in names], columns=names)
    return losses, pd.concat(histories, ignore_index=True)


def compare_strategies(base: DeepSeekLM, tasks: list[Task], strategies: list[Strategy], seeds: list[int],
                       steps: int, batch_size: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict]:
    """Every strategy once per seed: one row of metrics per run, each strategy's R averaged over seeds, and
    each run's (R, history) by (strategy name, seed). A run's seconds are its learning time, evaluation excluded."""
    names = [strategy.name for strategy in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must be unique, they label the results; got {names}")
    before = [held_out_loss(base, task.test) for task in tasks]  # the same base model starts every run

    def seed_runs(seed: int) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """Every strategy at one seed, in one process: a first stage several strategies share is trained once."""
        shared = {}
        return [run_sequence(base, tasks, strategy, steps, batch_size, seed, before=before, shared=shared)
                for strategy in strategies]

    per_seed = dict(zip(seeds, run_jobs(seed_runs, list(seeds), desc="continual runs, a seed at a time")))
    sequences = {(strategy.name, seed): per_seed[seed][i] for i, strategy in enumerate(strategies) for seed in seeds}
    rows = [{"strategy": name, "seed": seed, **summary(losses), "seconds": history.groupby("stage").stage_seconds.first().sum()}
            for (name, seed), (losses, history) in sequences.items()]
    means = {name: sum(sequences[name, seed][0] for seed in seeds) / len(seeds) for name in names}
    return pd.DataFrame(rows), means, sequences
