"""Curriculum learning (Bengio et al. 2009) as [Full training pipeline §6.1] stages it: stage k draws at
random from the examples no harder than the k-th difficulty threshold; anti-curriculum runs hardest-first."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig, Trainer
from dstutor.train.runner import run_jobs

ORDERS = ("curriculum", "random", "anti-curriculum")


def unigram_difficulty(blocks: torch.Tensor, vocab_size: int) -> np.ndarray:
    """Each block's mean token surprisal (nats) under a unigram model of all blocks: a small model's loss."""
    counts = np.bincount(blocks.reshape(-1).numpy(), minlength=vocab_size) + 1.0
    surprisal = -np.log(counts / counts.sum())
    return surprisal[blocks.numpy()].mean(axis=1)


def ordered_batches(blocks: torch.Tensor, difficulty: np.ndarray, order: str, steps: int, batch_size: int,
                    stages: int, seed: int) -> list[torch.Tensor]:
    """steps batches: "random" draws from all blocks; "curriculum" at stage k (of `stages`, equal steps each)
    from the easiest (k+1)/stages of them; "anti-curriculum" from the hardest (k+1)/stages."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: choose one of {ORDERS}")
    if stages < 1 or len(difficulty) != len(blocks):
        raise ValueError(f"need stages ≥ 1 and one difficulty per block; got stages={stages}, "
                         f"{len(difficulty)} difficulties for {len(blocks)} blocks")
    rank = np.argsort(difficulty if order != "anti-curriculum" else -difficulty, kind="stable")
    generator = np.random.default_rng(seed)
    batches = []
    for step in range(steps):
        stage = min(step * stages // steps, stages - 1)
        pool = rank if order == "random" else rank[:max(batch_size, len(rank) * (stage + 1) // stages)]
        batches.append(blocks[generator.choice(pool, batch_size, replace=False)])
    return batches


def compare_orders(config: DeepSeekConfig, train_blocks: torch.Tensor, val_blocks: torch.Tensor, seeds: list[int],
                   steps: int, batch_size: int, stages: int = 4, lr: float = 3e-3,
                   orders: tuple[str, ...] = ORDERS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model trained from scratch per order and seed at equal steps: final validation loss per run, and the histories."""
    difficulty = unigram_difficulty(train_blocks, config.vocab_size)
    val = list(val_blocks.split(batch_size))  # the whole validation set at every evaluation

    def run(key: tuple[str, int]) -> pd.DataFrame:
        order, seed = key
        seed_everything(seed)  # the initialisation follows the seed; so does the sampling below
        model = DeepSeekLM(config)
        # one evaluation at the end of each curriculum stage (the last one is the reported loss)
        train = TrainConfig(steps=steps, lr=lr, eval_every=max(1, steps // stages), eval_batches=len(val), seed=seed,
                            progress=False, device="cpu")
        history = Trainer(train).fit(model, ordered_batches(train_blocks, difficulty, order, steps, batch_size, stages, seed), val)
        return history.assign(order=order, seed=seed)

    histories = run_jobs(run, [(o, s) for o in orders for s in seeds], desc="curriculum runs")
    rows = [{"order": h.order.iloc[0], "seed": h.seed.iloc[0], "val_loss": h.val_loss.dropna().iloc[-1]} for h in histories]
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True)

