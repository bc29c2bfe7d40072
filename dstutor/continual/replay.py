"""Experience replay for language models: a buffer of earlier tasks' blocks, sampled uniformly or by rank priority.

Rank-based prioritised sampling is Schaul et al. 2016 §3.3 (p_i ∝ rank_i^-α), as [Training
essentials §4.2] proposes: rank 1 is the example the current model finds hardest (highest loss, the
language-model counterpart of the largest TD error). α = 0 is uniform sampling.
"""
from __future__ import annotations

import numpy as np
import torch


def rank_probabilities(scores: np.ndarray | list[float], alpha: float) -> np.ndarray:
    """p_i = rank_i^-α / Σ_j rank_j^-α, rank 1 for the highest score (ties broken by position)."""
    if alpha < 0:
        raise ValueError(f"alpha={alpha}: the priority exponent must be ≥ 0 (0 is uniform sampling)")
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"need a non-empty 1-D array of scores, got shape {scores.shape}")
    ranks = np.empty(len(scores))
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    weights = ranks ** -alpha
    return weights / weights.sum()


class ReplayBuffer:
    """Token blocks kept from earlier tasks, an equal share per task within `capacity` blocks."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 0:
            raise ValueError(f"capacity={capacity}: a replay buffer holds ≥ 0 blocks (0 disables replay)")
        self.capacity = capacity
        self.generator = np.random.default_rng(seed)
        self.by_task: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return sum(len(blocks) for blocks in self.by_task.values())

    @property
    def blocks(self) -> torch.Tensor:
        """Every stored block, task after task: (n, block_size)."""
        return torch.cat(list(self.by_task.values())) if self.by_task else torch.empty(0, 0, dtype=torch.long)

    def add(self, task: str, blocks: torch.Tensor) -> None:
        """Keep a random subset of a finished task's blocks, shrinking earlier tasks to keep shares equal."""
        if task in self.by_task:
            raise ValueError(f"task {task!r} is already in the buffer")
        if self.capacity == 0:
            return
        self.by_task[task] = blocks
        share = self.capacity // len(self.by_task)
        for name, kept in self.by_task.items():
            if len(kept) > share:
                self.by_task[name] = kept[torch.from_numpy(np.sort(self.generator.choice(len(kept), share, replace=False)))]

    def sample(self, n: int, priorities: np.ndarray | None = None, alpha: float = 0.0) -> torch.Tensor:
        """n blocks drawn with replacement: uniformly, or by rank priority of `priorities` with exponent alpha."""
        if len(self) == 0:
            raise ValueError("the replay buffer is empty: add a finished task first")
        p = None if priorities is None else rank_probabilities(priorities, alpha)
        return self.blocks[torch.from_numpy(self.generator.choice(len(self), n, replace=True, p=p))]
