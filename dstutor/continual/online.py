"""Online learning on a stream: concept-drift detection by KL divergence ([Building efficient models §二.2]) and snapshot rollback (§五.2).

The detector compares each window's token distribution with a reference distribution; its threshold
is a high quantile of the same divergence over held-out windows of the reference domain, so the
false-alarm rate on that domain is chosen, not hoped for.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn


def token_distribution(ids: torch.Tensor | np.ndarray, vocab_size: int, smoothing: float = 1.0) -> np.ndarray:
    """Add-`smoothing` estimate of the unigram distribution of the tokens in ids."""
    flat = np.asarray(ids).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(f"token ids span {flat.min()}…{flat.max()} but vocab_size={vocab_size}: "
                         "the window and the reference must use the same tokenizer")
    counts = np.bincount(flat, minlength=vocab_size).astype(float) + smoothing
    return counts / counts.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) in nats; both must be distributions over the same vocabulary with q > 0 where p > 0."""
    if p.shape != q.shape:
        raise ValueError(f"distributions over different vocabularies: {p.shape} vs {q.shape}")
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@dataclass
class DriftDetector:
    """Alarms when a window's KL(window ‖ reference) exceeds a threshold fitted on held-out reference windows."""

    vocab_size: int
    quantile: float = 0.99  # of the held-out windows' divergences: roughly 1 − the false-alarm rate on the reference domain
    reference: np.ndarray = field(init=False, default=None)
    threshold: float = field(init=False, default=float("nan"))

    def fit(self, reference_ids: torch.Tensor, held_out_windows: list[torch.Tensor]) -> "DriftDetector":
        """Reference distribution from reference_ids; threshold from windows of the same domain it did not see."""
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile={self.quantile} must be between 0 and 1")
        if not held_out_windows:
            raise ValueError("the threshold needs at least one held-out window of the reference domain")
        self.reference = token_distribution(reference_ids, self.vocab_size)
        self.threshold = float(np.quantile(self.scores(held_out_windows), self.quantile))
        return self

    def scores(self, windows: list[torch.Tensor]) -> np.ndarray:
        """KL(window ‖ reference) of each window."""
        if self.reference is None:
            raise RuntimeError("fit the detector on reference data first")
        return np.array([kl_divergence(token_distribution(w, self.vocab_size, smoothing=0.0), self.reference)
                         for w in windows])

    def alarms(self, windows: list[torch.Tensor]) -> np.ndarray:
        """Whether each window is flagged as drifted."""
        return self.scores(windows) > self.threshold


def detection_report(alarms: np.ndarray, switch_at: int) -> dict[str, float]:
    """False-alarm rate before the switch, and the delay (in windows) from the switch to the first alarm after it."""
    if not 0 < switch_at < len(alarms):
        raise ValueError(f"switch_at={switch_at} must fall inside the stream of {len(alarms)} windows")
    after = np.flatnonzero(alarms[switch_at:])
    return {"false_alarm_rate": float(alarms[:switch_at].mean()),
            "delay_windows": float(after[0]) if len(after) else float("nan"),
            "detected": bool(len(after))}


class Snapshots:
    """Keeps a copy of the weights (and optimiser state) at the best validation loss so far, and restores it exactly."""

    def __init__(self, model: nn.Module, val_loss: float, optimizer: torch.optim.Optimizer | None = None):
        self.optimizer = optimizer
        self.best_loss, self.state = val_loss, self._copy(model)

    def _copy(self, model: nn.Module) -> tuple[dict, dict | None]:
        return (copy.deepcopy(model.state_dict()),
                copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None)

    def keep_if_better(self, model: nn.Module, val_loss: float) -> bool:
        """Snapshot the model when val_loss beats the best so far; whether it did."""
        if val_loss < self.best_loss:
            self.best_loss, self.state = val_loss, self._copy(model)
            return True
        return False

    def rollback(self, model: nn.Module) -> None:
        """Load the snapshot back: weights and buffers (e.g. router biases) bit for bit, and the optimiser's moments."""
        model.load_state_dict(self.state[0])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self.state[1]))  # Adam updates its state in place


def online_learning(model: nn.Module, stream: list[torch.Tensor], validate, lr: float,
                    tolerance: float | None) -> pd.DataFrame:
    """One Adam step per stream batch; validate() after each. With a tolerance, a step that leaves the
    validation loss more than `tolerance` (relative) above the best snapshot is rolled back."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    snapshots, rows = Snapshots(model, validate(model), optimizer), []
    for step, ids in enumerate(stream):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        loss, rolled_back = validate(model), False
        if tolerance is not None and loss > snapshots.best_loss * (1 + tolerance):
            snapshots.rollback(model)
            loss, rolled_back = snapshots.best_loss, True
        else:
            snapshots.keep_if_better(model, loss)
        rows.append({"step": step + 1, "val_loss": loss, "rolled_back": rolled_back})
    return pd.DataFrame(rows)
