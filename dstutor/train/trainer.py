"""`Trainer(...).fit(model, data)`: the one training loop every chapter uses, on CPU or GPU.

Batches are LongTensors of token ids (batch, seq), and the model computes its own shifted loss; or dicts
of tensors (input_ids, labels, …) passed to the model as keyword arguments (fine-tuning). The
optimiser follows DeepSeek-V3 (§4.2): AdamW β=(0.9, 0.95), weight decay 0.1, gradient clipping 1.0.
"""
from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dstutor.data.packing import batch_stream
from dstutor.env import choose_device, seed_everything
from dstutor.metrics import mean_loss
from dstutor.train import distributed
from dstutor.train.callbacks import Callback
from dstutor.train.checkpoint import load_latest_checkpoint, save_checkpoint
from dstutor.train.schedules import lr_multiplier


@dataclass
class TrainConfig:
    """How to train: steps, optimiser, schedule, precision, evaluation, memory and parallelism."""

    steps: int = 200                 # optimiser steps
    lr: float = 3e-3                 # peak learning rate (tiny models like 1e-3…1e-2)
    schedule: str = "cosine"         # see dstutor.train.schedules.SCHEDULES
    warmup_steps: int | None = None  # linear warmup steps; None: 10 % of the final `steps`, at most 100
    min_lr_ratio: float = 0.1        # final lr as a fraction of the peak
    weight_decay: float = 0.1        # AdamW decay on matrices (norms and biases are not decayed)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (V3)
    grad_clip: float = 1.0           # max gradient norm; 0 disables clipping
    clip_mode: str = "global"        # "global": one norm over all gradients; "per_parameter": [Hyper-parameters to regularisation]'s adaptive clip
    label_smoothing: float = 0.0     # mix targets with a uniform distribution (training loss only)
    accumulation: int = 1            # micro-batches per optimiser step
    eval_every: int = 50             # validate every N steps (and at the end); 0: only at the end
    eval_batches: int = 20           # validation batches per evaluation
    nonfinite: str = "stop"          # NaN/inf loss (or gradient outside fp16): "stop" (raise) or "skip" the step
    device: str | None = None        # None: cuda > mps > cpu
    precision: str = "auto"          # "auto" (bf16 on CUDA, fp32 elsewhere), "fp32", "bf16", "fp16"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % more compute
    compile: bool | str = False      # torch.compile the forward: True (inductor) or a backend name, e.g. "aot_eager"
    distributed: str | None = None   # None, "ddp" or "fsdp" (run the script under torchrun)
    seed: int = 0                    # seeds python/numpy/torch when fit() starts: dropout, LayerDrop (not the model init)
    progress: bool = True            # show a tqdm progress bar with tokens/s
    save_every: int = 0              # steps between checkpoints (needs fit(checkpoint_dir=...)); 0: only at the end
    keep_last: int = 2               # complete checkpoints kept on disk (≥ 1; older ones are deleted)

    @property
    def resolved_warmup_steps(self) -> int:
        """warmup_steps, or for None 10 % of steps (at most 100), from the steps the run actually has."""
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and what is allowed."""
        if self.steps < 1 or self.accumulation < 1:
            raise ValueError(f"steps={self.steps} and accumulation={self.accumulation} must be ≥ 1")
        choices = {"nonfinite": ("stop", "skip"), "precision": ("auto", "fp32", "bf16", "fp16"),
                   "clip_mode": ("global", "per_parameter"), "distributed": distributed.STRATEGIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
        if self.compile not in (True, False) and self.compile not in torch._dynamo.list_backends(exclude_tags=()):
            raise ValueError(f"compile={self.compile!r}: use True, False or one of {torch._dynamo.list_backends(exclude_tags=())}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.keep_last < 1:
            raise ValueError(f"keep_last={self.keep_last}: keep at least 1 checkpoint (the newest)")
        counts = {"eval_batches": self.eval_batches >= 1, "eval_every": self.eval_every >= 0,
                  "save_every": self.save_every >= 0, "warmup_steps": self.warmup_steps is None or self.warmup_steps >= 0}
        for name, ok in counts.items():  # checked now, not at the first evaluation or checkpoint
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)}: must be ≥ {1 if name == 'eval_batches' else 0}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio}: the final lr is a fraction of the peak, in [0, 1]")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas={tuple(self.betas)}: AdamW's betas must lie in [0, 1)")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, weight_decay ≥ 0 and grad_clip ≥ 0; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, grad_clip={self.grad_clip}")
        lr_multiplier(self.schedule, self.steps, self.resolved_warmup_steps)  # raises on a bad schedule


@runtime_checkable
class TrainOutput(Protocol):
    """What a model's forward returns to the Trainer: the loss it minimises, the loss it reports (and
    validates on), and any further scalars to log each step by name (an MoE's balance loss, an MTP loss)."""

    loss: torch.Tensor
    main_loss: torch.Tensor

    def logged(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class AfterOptimizerStep(Protocol):
    """A module with work to do after each optimiser step (DeepSeekLM: MoE bias updates); the Trainer calls
    it on every such module inside the model, so wrappers (classifier, EWC, distiller) need not forward it."""

    def after_optimizer_step(self, applied: bool = True) -> None: ...


@runtime_checkable
class GradientCheckpointing(Protocol):
    """A model that can recompute activations in the backward pass instead of keeping them."""

    def gradient_checkpointing_enable(self) -> None: ...


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient, or fp16's loss scale collapsed."""


# fp16: GradScaler halves its scale (from 2**16) after every overflowing step. Once gradients overflow
# even without scaling, no step can succeed: that is divergence, not an overflow to skip.
MIN_LOSS_SCALE = 1.0


class Trainer:
    """Trains a model that returns a `TrainOutput` when called as model(ids, labels=ids) (or model(**batch)).

    Callbacks are called as callback(trainer, model, row) after every step (they may add keys to the
    row); a `Callback` is also told on_train_begin(trainer) and on_train_end(trainer).
    Setting trainer.stop_reason stops the run.
    """

    def __init__(self, config: TrainConfig | None = None, callbacks: list | None = None, **overrides):
        self.config = TrainConfig(**{**(asdict(config) if config else {}), **overrides})
        self.callbacks = callbacks or []
        self.config.validate()
        self.device = torch.device(self.config.device) if self.config.device else choose_device().device
        self.context: distributed.DistContext | None = None  # set by fit() under torchrun
        self.replica: nn.Module | None = None  # the model or its DDP/FSDP wrapper: what syncs gradients
        self.wrapped: nn.Module | None = None  # what forward passes call: the replica, compiled if asked
        self.history = pd.DataFrame()
        self.stop_reason: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process should print, plot and write files (rank 0, or not distributed)."""
        return self.context is None or self.context.is_main

    @property
    def precision(self) -> str:
        """The precision in effect: "auto" is bf16 on CUDA and fp32 elsewhere (bf16 is slow on CPUs)."""
        if self.config.precision != "auto":
            return self.config.precision
        return "bf16" if self.device.type == "cuda" else "fp32"

    def _autocast(self, device: torch.device | None = None):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast((device or self.device).type, dtype=dtype, enabled=dtype is not None)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW; matrices decay, vectors (norms, biases) do not."""
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.config.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=self.config.betas,
                                 fused=self.device.type == "cuda")

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """The configured schedule over config.steps, warmup resolved from those steps."""
        cfg = self.config
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(
            cfg.schedule, cfg.steps, cfg.resolved_warmup_steps, cfg.min_lr_ratio))

    def _prepare(self, model: nn.Module) -> nn.Module:
        """Move, wrap (DDP/FSDP) and compile the model as configured; return what forward passes call."""
        cfg = self.config
        if cfg.gradient_checkpointing:
            if not isinstance(model, GradientCheckpointing):
                raise ValueError(f"{type(model).__name__} has no gradient_checkpointing_enable()")
            model.gradient_checkpointing_enable()
        if cfg.distributed:
            self.context = distributed.setup(cfg.distributed, self.device)
            self.device = self.context.device
        model.to(self.device).train()
        self.replica = forward = distributed.wrap(model, self.context) if self.context else model
        if cfg.compile:
            forward = torch.compile(forward, backend="inductor" if cfg.compile is True else cfg.compile)
        self.wrapped = forward
        return forward

    def _clip(self, model: nn.Module) -> float:
        """Clip gradients as configured; return the global gradient norm before clipping."""
        cfg = self.config
        params = [p for p in model.parameters() if p.grad is not None]
        limit = cfg.grad_clip if cfg.grad_clip and cfg.clip_mode == "global" else math.inf
        norm = distributed.as_local_value(nn.utils.clip_grad_norm_(params, limit)).item()
        if cfg.grad_clip and cfg.clip_mode == "per_parameter":
            for p in params:  # [Hyper-parameters to regularisation]: each tensor scaled to norm grad_clip on its own
                own = distributed.as_local_value(p.grad.norm()).item()
                if own > cfg.grad_clip:
                    p.grad.mul_(cfg.grad_clip / (own + 1e-6))
        return norm

    def fit(self, model: nn.Module, train: Iterable[torch.Tensor], val: Iterable[torch.Tensor] | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False) -> pd.DataFrame:
        """Train for config.steps optimiser steps; return (and keep in .history) one row per step.

        With checkpoint_dir, checkpoints are written every config.save_every steps and when the run ends
        (after callbacks such as EarlyStopping have restored weights); resume=True continues from the
        newest readable one exactly (same batches, same random numbers).
        """
        cfg = self.config
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        forward = self._prepare(model)
        optimizer = self.make_optimizer(model)
        scheduler = self.make_scheduler(optimizer)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        state = load_latest_checkpoint(Path(checkpoint_dir), model, optimizer, scheduler, scaler) if resume else None
        if state is None:
            seed_everything(cfg.seed)  # a resumed run gets its random state from the checkpoint instead
        rows, first_step = (state["history"], state["step"]) if state else ([], 0)
        consumed = state["batches_consumed"] if state else 0
        batches = batch_stream(train, consumed)
        self.stop_reason = None
        for callback in self.callbacks:
            if isinstance(callback, Callback):
                callback.on_train_begin(self)
        started = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)  # a resumed run keeps its clock
        bar = tqdm(total=cfg.steps, initial=first_step, desc="training", leave=False,
                   disable=not (cfg.progress and self.is_main))
        try:
            for step in range(first_step, cfg.steps):
                row = self._step(step, model, forward, batches, optimizer, scheduler, scaler)
                consumed += cfg.accumulation
                if val is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps):
                    row.update(self.evaluate(model, val))
                    model.train()
                row["elapsed_s"] = time.perf_counter() - started
                rows.append(row)
                for callback in self.callbacks:
                    callback(self, model, row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                if self.stop_reason is not None or step + 1 == cfg.steps:
                    break
                if checkpoint_dir and cfg.save_every and (step + 1) % cfg.save_every == 0:
                    self._save(checkpoint_dir, model, optimizer, scheduler, scaler, rows, consumed)
        finally:
            bar.close()
        for callback in self.callbacks:
            if isinstance(callback, Callback):
                callback.on_train_end(self)
        if checkpoint_dir and len(rows) > first_step:  # the final state, as the callbacks left it
            self._save(checkpoint_dir, model, optimizer, scheduler, scaler, rows, consumed)
        self.history = pd.DataFrame(rows)
        return self.history

    def _save(self, checkpoint_dir, model, optimizer, scheduler, scaler, rows: list, consumed: int) -> None:
        save_checkpoint(Path(checkpoint_dir), rows[-1]["step"], model, optimizer, scheduler, scaler,
                        {"history": rows, "batches_consumed": consumed}, self.config.keep_last, self.is_main)

    def _step(self, step: int, model: nn.Module, forward, batches: Iterator[torch.Tensor], optimizer,
              scheduler, scaler) -> dict:
        """One optimiser step over config.accumulation micro-batches; the row it logs."""
        cfg = self.config
        began, terms, tokens = time.perf_counter(), {}, 0
        for micro in range(cfg.accumulation):
            ids = self._move(next(batches))
            try:  # gradients are averaged over processes only once, after the last micro-batch
                with distributed.gradient_sync(self.replica, enabled=micro == cfg.accumulation - 1):
                    terms, tokens = self._accumulate(forward, ids, scaler, terms, tokens)
            except torch.OutOfMemoryError as error:
                raise torch.OutOfMemoryError(
                    f"out of memory at step {step} with micro-batches of "
                    f"{' + '.join(f'{t.shape[0]} × {t.shape[1]}' for t in _input_ids(ids))} "
                    f"tokens. Halve the batch size (or the sequence length) and double accumulation="
                    f"{cfg.accumulation} to keep the tokens per step, or set gradient_checkpointing=True."
                ) from error
        terms = distributed.mean_over_processes(terms, self.context)
        scaler.unscale_(optimizer)
        norm = self._clip(model)
        applied = self._apply(step, optimizer, scaler, terms["loss"], norm)
        optimizer.zero_grad(set_to_none=True)
        for module in model.modules():  # each model inside a wrapper (classifier, EWC, distiller) applies its own
            if isinstance(module, AfterOptimizerStep):
                module.after_optimizer_step(applied=applied)  # a skipped step's expert loads are discarded
        world = self.context.world_size if self.context else 1
        row = {"step": step + 1, **terms, "lr": scheduler.get_last_lr()[0], "grad_norm": norm,
               "skipped": not applied, "tokens_per_s": tokens * world / (time.perf_counter() - began)}
        if scaler.is_enabled():
            row["loss_scale"] = scaler.get_scale()
        with warnings.catch_warnings():  # after a skipped first step torch warns that the optimizer never stepped
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            scheduler.step()  # skipped or not, the step counts: the schedule follows the step number
        return row

    def _apply(self, step: int, optimizer, scaler, loss: float, norm: float) -> bool:
        """Take the optimiser step unless it is non-finite; return whether it was taken.

        fp16: an overflow (inf gradients, finite loss) is GradScaler's to handle: it skips the step and
        halves the scale. What stops a run is a non-finite loss (nonfinite="stop") or a collapsed scale.
        """
        cfg = self.config
        if not math.isfinite(loss) and cfg.nonfinite == "stop":
            raise NonFiniteError(f"step {step}: loss is {loss}; lower the learning rate or use fp32, "
                                 "or set nonfinite='skip'")
        if scaler.is_enabled():
            scaler.step(optimizer)  # skipped by GradScaler itself when gradients overflowed
            scaler.update()
            if scaler.get_scale() < MIN_LOSS_SCALE:
                raise NonFiniteError(f"step {step}: fp16 loss scale collapsed to {scaler.get_scale():g}: gradients "
                                     "overflow even unscaled; lower the learning rate or use bf16/fp32")
            return math.isfinite(loss) and math.isfinite(norm)
        if math.isfinite(loss) and math.isfinite(norm):
            optimizer.step()
            return True
        if cfg.nonfinite == "stop":
            raise NonFiniteError(f"step {step}: gradient norm is {norm}; lower the learning rate or use fp32, "
                                 "or set nonfinite='skip'")
        return False

    def _move(self, batch: torch.Tensor | dict) -> torch.Tensor | dict:
        """This process's share of a batch (a tensor or a dict of tensors), on the training device."""
        if isinstance(batch, dict):
            return {k: distributed.local_slice(v, self.context).to(self.device) for k, v in batch.items()}
        return distributed.local_slice(batch, self.context).to(self.device)

    def _accumulate(self, forward, ids: torch.Tensor | dict, scaler, terms: dict, tokens: int) -> tuple[dict, int]:
        """Forward and backward one micro-batch; add its loss terms (averaged over micro-batches)."""
        cfg = self.config
        extra = {"label_smoothing": cfg.label_smoothing} if cfg.label_smoothing else {}
        with self._autocast():
            out = forward(**ids, **extra) if isinstance(ids, dict) else forward(ids, labels=ids, **extra)
        if not isinstance(out, TrainOutput):
            raise TypeError(f"{type(forward).__name__} returned a {type(out).__name__}; the Trainer needs an output "
                            "with `loss`, `main_loss` and `logged()` (dstutor.train.trainer.TrainOutput)")
        scaler.scale(out.loss / cfg.accumulation).backward()
        for name, value in {"loss": out.loss, "main_loss": out.main_loss, **out.logged()}.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            terms[name] = terms.get(name, 0.0) + float(value) / cfg.accumulation  # means over the micro-batches
        return terms, tokens + sum(t.numel() for t in _input_ids(ids))

    def evaluate(self, model: nn.Module, val: Iterable[torch.Tensor]) -> dict[str, float]:
        """Mean next-token loss per graded token over up to eval_batches batches, and its perplexity (model's device)."""
        device = next(model.parameters()).device  # after fit() that is the trainer's; a caller's model may be elsewhere
        loss = mean_loss(model, itertools.islice(val, self.config.eval_batches), lambda: self._autocast(device))
        return {"val_loss": loss, "val_ppl": math.exp(loss)}


def _input_ids(batch: torch.Tensor | dict) -> list[torch.Tensor]:
    """The token-id tensors of a batch: the batch itself, or every `*input_ids` entry (several for multi-task)."""
    return [v for k, v in batch.items() if k.endswith("input_ids")] if isinstance(batch, dict) else [batch]
