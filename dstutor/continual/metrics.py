"""Continual-learning metrics on a loss matrix R (GEM, Lopez-Paz & Ranzato 2017 §2; forgetting, Chaudhry et al. 2018 §4).

R has one row per stage (row 0: the model before any stage, row i: after training on task i) and one
column per task; R[i, j] is the held-out loss on task j after stage i. Losses fall as models improve,
so each metric is signed to read the same way as the accuracy-based originals: forgetting > 0 is bad,
backward and forward transfer > 0 are good.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _checked(losses: pd.DataFrame | np.ndarray) -> np.ndarray:
    matrix = np.asarray(losses, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] < 1 or matrix.shape[0] != matrix.shape[1] + 1:
        raise ValueError(f"R must have T + 1 rows (before training, then after each of T stages) and T columns; "
                         f"got shape {matrix.shape}")
    return matrix


def final_loss(losses: pd.DataFrame | np.ndarray) -> float:
    """Mean held-out loss over all tasks after the last stage (GEM's ACC, as a loss)."""
    return float(_checked(losses)[-1].mean())


def forgetting(losses: pd.DataFrame | np.ndarray) -> float:
    """Mean over earlier tasks of how much worse the final loss is than the best loss seen after learning the task."""
    matrix = _checked(losses)
    tasks = matrix.shape[1]
    if tasks < 2:
        return 0.0
    return float(np.mean([matrix[-1, j] - matrix[j + 1:tasks, j].min() for j in range(tasks - 1)]))


def backward_transfer(losses: pd.DataFrame | np.ndarray) -> float:
    """Mean over earlier tasks of (loss right after learning task j) − (final loss on j); < 0 means forgetting."""
    matrix = _checked(losses)
    tasks = matrix.shape[1]
    if tasks < 2:
        return 0.0
    return float(np.mean([matrix[j + 1, j] - matrix[-1, j] for j in range(tasks - 1)]))


def forward_transfer(losses: pd.DataFrame | np.ndarray) -> float:
    """Mean over later tasks of (loss before any training) − (loss just before training on task j): > 0 helps."""
    matrix = _checked(losses)
    tasks = matrix.shape[1]
    if tasks < 2:
        return 0.0
    return float(np.mean([matrix[0, j] - matrix[j, j] for j in range(1, tasks)]))


def forgetting_rate(losses: pd.DataFrame | np.ndarray) -> float:
    """Mean relative rise of each earlier task's loss from right after its stage to the end (seed 000's "forgetting rate").

    0.05 means the final loss on old tasks is 5 % above what it was just after learning them.
    """
    matrix = _checked(losses)
    tasks = matrix.shape[1]
    if tasks < 2:
        return 0.0
    return float(np.mean([(matrix[-1, j] - matrix[j + 1, j]) / matrix[j + 1, j] for j in range(tasks - 1)]))


def steps_to_target(losses: Sequence[float], target: float, window: int = 4) -> float:
    """The first step (1-based) at which the mean training loss of the last `window` steps is ≤ target; NaN if none.

    A mean over a few steps, because one batch's loss is noisy; the first steps average what there is,
    so a model that starts at the target reaches it at step 1.
    """
    if window < 1:
        raise ValueError(f"window={window}: need ≥ 1 step")
    running = pd.Series(losses, dtype=float).rolling(window, min_periods=1).mean().to_numpy()
    hits = np.flatnonzero(running <= target)
    return float(hits[0] + 1) if len(hits) else float("nan")


def summary(losses: pd.DataFrame | np.ndarray) -> dict[str, float]:
    """Every metric of one R matrix."""
    return {"final_loss": final_loss(losses), "forgetting": forgetting(losses),
            "forgetting_rate": forgetting_rate(losses), "backward_transfer": backward_transfer(losses),
            "forward_transfer": forward_transfer(losses)}
