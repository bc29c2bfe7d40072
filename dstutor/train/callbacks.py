"""Trainer callbacks: a live loss plot, TensorBoard scalars, early stopping, throughput and MFU.

A callback is called as callback(trainer, model, row) after every optimiser step; it may add keys to
`row` (they land in the history) and may set trainer.stop_reason to end the run.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from dstutor.env import matmul_gflops
from dstutor.models import DeepSeekConfig, parameter_counts

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), by device-name fragment.
GPU_BF16_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
                  "A10": 125e12, "4090": 165e12, "V100": 125e12, "T4": 65e12}


def model_flops_per_token(config: DeepSeekConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 × active matmul parameters + attention scores (PaLM, appendix B)."""
    active = parameter_counts(config)["active"] - config.vocab_size * config.hidden_size  # lookup is no matmul
    head_dims = (config.qk_nope_head_dim + config.qk_rope_head_dim + config.v_head_dim
                 if config.attention == "mla" else 2 * config.head_dim)
    return 6 * active + 6 * config.num_layers * config.num_heads * head_dims * seq_len


def peak_flops(device: torch.device) -> tuple[float, str]:
    """The device's peak FLOP/s and where the number comes from (data sheet, or measured on the CPU)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peak in GPU_BF16_PEAKS.items():
            if fragment in name:
                return peak, f"{name} bf16 data-sheet peak"
        raise ValueError(f"no data-sheet peak known for {name!r}; pass peak= to MFUMeter")
    return matmul_gflops(1024) * 1e9, "fp32 matmul speed measured on this CPU (1024² matmul)"


class Callback:
    """Base of the callbacks with work to do before or after the run; a plain function(trainer, model, row) also works."""

    def __call__(self, trainer, model: nn.Module, row: dict) -> None:
        """After every optimiser step."""

    def on_train_begin(self, trainer) -> None:
        """Before the first step."""

    def on_train_end(self, trainer) -> None:
        """After the last step (also after an early stop)."""


class MFUMeter(Callback):
    """Adds `mfu` (model FLOPs utilisation) to each row: achieved FLOP/s over the device's peak."""

    def __init__(self, config: DeepSeekConfig, seq_len: int, device: torch.device | str = "cpu",
                 peak: float | None = None):
        self.flops_per_token = model_flops_per_token(config, seq_len)
        self.peak, self.peak_source = (peak, "given") if peak else peak_flops(torch.device(device))

    def __call__(self, trainer, model: nn.Module, row: dict) -> None:
        row["mfu"] = row["tokens_per_s"] * self.flops_per_token / self.peak


def early_stopping_point(values: Sequence[float], patience: int,
                         min_delta: float = 0.0) -> tuple[int | None, int | None]:
    """The early-stopping rule replayed over a run's evaluations, in order: (index of the best, index where it stops).

    An evaluation improves when it is below the best so far by more than min_delta; the run stops at the
    `patience`-th evaluation in a row without improvement (None: it never stops). EarlyStopping applies this
    rule during training; on a finished run's validation history it gives the same answer without training again.
    """
    best, best_index, waited = math.inf, None, 0
    for index, value in enumerate(values):
        if value < best - min_delta:
            best, best_index, waited = value, index, 0
            continue
        waited += 1
        if waited >= patience:
            return best_index, index
    return best_index, None


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by min_delta for `patience` evaluations; restore the best weights."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 restore_best: bool = True):
        self.monitor, self.patience, self.min_delta, self.restore_best = monitor, patience, min_delta, restore_best
        self.values: list[float] = []  # the monitored value at each evaluation so far
        self.best, self.best_step, self._best_state, self._model = math.inf, None, None, None

    def __call__(self, trainer, model: nn.Module, row: dict) -> None:
        value = row.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return  # not an evaluation step
        self.values.append(value)
        best_index, stop_index = early_stopping_point(self.values, self.patience, self.min_delta)
        if best_index == len(self.values) - 1:
            self.best, self.best_step = value, row["step"]
            if self.restore_best:
                self._model, self._best_state = model, copy.deepcopy(model.state_dict())
        if stop_index is not None:
            trainer.stop_reason = (f"early stopping at step {row['step']}: {self.monitor} has not improved on "
                                   f"{self.best:.4f} (step {self.best_step}) for {self.patience} evaluations")

    def on_train_end(self, trainer) -> None:
        if self.restore_best and self._best_state is not None:
            self._model.load_state_dict(self._best_state)


class TensorBoardLogger(Callback):
    """Writes loss, lr, grad norm, throughput, MoE load (and anything numeric in the row) as scalars."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.writer = SummaryWriter(str(log_dir))

    def __call__(self, trainer, model: nn.Module, row: dict) -> None:
        if not trainer.is_main:
            return
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}" if not name.startswith("val_") else f"val/{name[4:]}",
                                       value, row["step"])

    def on_train_end(self, trainer) -> None:
        self.writer.close()


class LiveLossPlot(Callback):
    """A loss plot that redraws in place every `every` steps (in Lab, and as the final figure in the book)."""

    def __init__(self, every: int = 10, title: str = "training", smooth: int = 10):
        self.every, self.title, self.smooth = every, title, smooth
        self.steps, self.losses, self.val_steps, self.val_losses = [], [], [], []
        self._handle = None

    @property
    def figure(self) -> go.Figure:
        """The current plot: raw and smoothed training loss, and validation loss."""
        window = pd.Series(self.losses, dtype=float).rolling(self.smooth, min_periods=1).mean().tolist()
        fig = go.Figure([go.Scatter(x=self.steps, y=self.losses, name="train loss", opacity=0.3),
                         go.Scatter(x=self.steps, y=window, name=f"train loss ({self.smooth}-step mean)"),
                         go.Scatter(x=self.val_steps, y=self.val_losses, name="validation loss", mode="lines+markers")])
        fig.update_layout(title=self.title, xaxis_title="step", yaxis_title="cross-entropy (nats)", height=350)
        return fig

    def __call__(self, trainer, model: nn.Module, row: dict) -> None:
        self.steps.append(row["step"])
        self.losses.append(row["loss"])
        if row.get("val_loss") is not None:
            self.val_steps.append(row["step"])
            self.val_losses.append(row["val_loss"])
        if trainer.is_main and row["step"] % self.every == 0:
            self._draw()

    def _draw(self) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)

    def on_train_end(self, trainer) -> None:
        if trainer.is_main and self.steps:
            self._draw()
