"""`Trainer(...).fit(model, data)`: the one training loop every chapter uses, on CPU or GPU.

Batches are LongTensors of token ids (batch, seq); the model computes its own shifted loss. The
optimiser follows DeepSeek-V3 (§4.2): AdamW β=(0.9, 0.95), weight decay 0.1, gradient clipping 1.0.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dstutor.env import choose_device
from dstutor.train import distributed
from dstutor.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dstutor.train.schedules import lr_multiplier


@dataclass
class TrainConfig:
    """How to train: steps, optimiser, schedule, precision, evaluation, memory and parallelism."""

    steps: int = 200                 # optimiser steps
    lr: float = 3e-3                 # peak learning rate (tiny models like 1e-3…1e-2)
    schedule: str = "cosine"         # see dstutor.train.schedules.SCHEDULES
    warmup_steps: int | None = None  # linear warmup steps; None: 10 % of steps, at most 100
    min_lr_ratio: float = 0.1        # final lr as a fraction of the peak
    weight_decay: float = 0.1        # AdamW decay on matrices (norms and biases are not decayed)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (V3)
    grad_clip: float = 1.0           # max gradient norm; 0 disables clipping
    clip_mode: str = "global"        # "global": one norm over all gradients; "per_parameter": seed 001's adaptive clip
    label_smoothing: float = 0.0     # mix targets with a uniform distribution (training loss only)
    accumulation: int = 1            # micro-batches per optimiser step
    eval_every: int = 50             # validate every N steps (and at the end); 0: only at the end
    eval_batches: int = 20           # validation batches per evaluation
    nonfinite: str = "stop"          # on a NaN/inf loss or gradient: "stop" (raise) or "skip" the step
    device: str | None = None        # None: cuda > mps > cpu
    precision: str = "auto"          # "auto" (bf16 on CUDA, fp32 elsewhere), "fp32", "bf16", "fp16"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % more compute
    compile: bool | str = False      # torch.compile the forward: True (inductor) or a backend name, e.g. "aot_eager"
    distributed: str | None = None   # None, "ddp" or "fsdp" (run the script under torchrun)
    seed: int = 0                    # seeds the model-independent randomness of the loop
    progress: bool = True            # show a tqdm progress bar with tokens/s
    save_every: int = 0              # steps between checkpoints (needs fit(checkpoint_dir=...)); 0: only at the end
    keep_last: int = 2               # checkpoints kept on disk (older ones are deleted)

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.steps // 10)

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
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, weight_decay ≥ 0 and grad_clip ≥ 0; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, grad_clip={self.grad_clip}")
        lr_multiplier(self.schedule, self.steps, self.warmup_steps)  # raises on a bad schedule


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


class Trainer:
    """Trains a model that returns an object with `.loss` when called as model(ids, labels=ids).

    Callbacks are called as callback(trainer, model, row) after every step (they may add keys to the
    row) and, if they have one, callback.on_train_end(trainer). Setting trainer.stop_reason stops the run.
    """

    def __init__(self, config: TrainConfig | None = None, callbacks: list | None = None, **overrides):
        self.config = TrainConfig(**{**(asdict(config) if config else {}), **overrides})
        self.callbacks = callbacks or []
        self.config.validate()
        self.device = torch.device(self.config.device) if self.config.device else choose_device().device
        self.context: distributed.DistContext | None = None  # set by fit() under torchrun
        self.history = pd.DataFrame()
        self.stop_reason: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process should print, plot and write files (rank 0, or not distributed)."""
        return self.context is None or self.context.is_main

    def _autocast(self):
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW; matrices decay, vectors (norms, biases) do not."""
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.config.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=self.config.betas,
                                 fused=self.device.type == "cuda")

    def _prepare(self, model: nn.Module) -> nn.Module:
        """Move, wrap (DDP/FSDP) and compile the model as configured; return what forward passes call."""
        cfg = self.config
        if cfg.gradient_checkpointing:
            if not hasattr(model, "gradient_checkpointing_enable"):
                raise ValueError(f"{type(model).__name__} has no gradient_checkpointing_enable()")
            model.gradient_checkpointing_enable()
        if cfg.distributed:
            self.context = distributed.setup(cfg.distributed, self.device)
            self.device = self.context.device
        model.to(self.device).train()
        forward = distributed.wrap(model, self.context) if self.context else model
        if not cfg.compile:
            return forward
        return torch.compile(forward, backend="inductor" if cfg.compile is True else cfg.compile)

    def _clip(self, model: nn.Module) -> float:
        """Clip gradients as configured; return the global gradient norm before clipping."""
        cfg = self.config
        params = [p for p in model.parameters() if p.grad is not None]
        limit = cfg.grad_clip if cfg.grad_clip and cfg.clip_mode == "global" else math.inf
        norm = distributed.as_local_value(nn.utils.clip_grad_norm_(params, limit)).item()
        if cfg.grad_clip and cfg.clip_mode == "per_parameter":
            for p in params:  # seed 001: each tensor is scaled down to norm grad_clip on its own
                own = distributed.as_local_value(p.grad.norm()).item()
                if own > cfg.grad_clip:
                    p.grad.mul_(cfg.grad_clip / (own + 1e-6))
        return norm

    def fit(self, model: nn.Module, train: Iterable[torch.Tensor], val: Iterable[torch.Tensor] | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False) -> pd.DataFrame:
        """Train for config.steps optimiser steps; return (and keep in .history) one row per step.

        With checkpoint_dir, checkpoints are written every config.save_every steps and at the end;
        resume=True continues from the newest one exactly (same batches, same random numbers).
        """
        cfg = self.config
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        forward = self._prepare(model)
        optimizer = self.make_optimizer(model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(
            cfg.schedule, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        batches = itertools.chain.from_iterable(itertools.repeat(train))  # loop over epochs
        rows, first_step, consumed = [], 0, 0
        latest = latest_checkpoint(Path(checkpoint_dir)) if resume else None
        if latest is not None:
            consumed = json.loads((latest / "state.json").read_text())["batches_consumed"]
            for _ in range(consumed):  # replay the data order first; the RNG state is restored after
                next(batches)
            state = load_checkpoint(latest, model, optimizer, scheduler, scaler)
            rows, first_step = state["history"], state["step"]
        self.stop_reason = None
        started = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)  # a resumed run keeps its clock
        bar = tqdm(total=cfg.steps, initial=first_step, desc="training", leave=False,
                   disable=not (cfg.progress and self.is_main))
        for step in range(first_step, cfg.steps):
            began = time.perf_counter()
            terms, tokens = {}, 0
            for _ in range(cfg.accumulation):
                ids = distributed.local_slice(next(batches), self.context).to(self.device)
                consumed += 1
                try:
                    terms, tokens = self._accumulate(forward, ids, scaler, terms, tokens)
                except torch.OutOfMemoryError as error:
                    bar.close()
                    raise torch.OutOfMemoryError(
                        f"out of memory at step {step} with micro-batches of {ids.shape[0]} × {ids.shape[1]} "
                        f"tokens. Halve the batch size (or the sequence length) and double accumulation="
                        f"{cfg.accumulation} to keep the tokens per step, or set gradient_checkpointing=True."
                    ) from error
            terms = distributed.mean_over_processes(terms, self.context)
            scaler.unscale_(optimizer)
            norm = self._clip(model)
            if not (math.isfinite(terms["loss"]) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(terms["loss"]) else "gradient norm"
                if cfg.nonfinite == "stop":
                    bar.close()
                    raise NonFiniteError(f"step {step}: {what} is {terms['loss'] if what == 'loss' else norm}; "
                                         "lower the learning rate or use fp32, or set nonfinite='skip'")
                optimizer.zero_grad(set_to_none=True)
                scaler.update()
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if hasattr(model, "after_optimizer_step"):
                model.after_optimizer_step()
            world = self.context.world_size if self.context else 1
            row = {"step": step + 1, **terms, "lr": scheduler.get_last_lr()[0], "grad_norm": norm,
                   "tokens_per_s": tokens * world / (time.perf_counter() - began)}
            scheduler.step()
            if val is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps):
                row.update(self.evaluate(model, val))
                model.train()
            row["elapsed_s"] = time.perf_counter() - started
            rows.append(row)
            for callback in self.callbacks:
                callback(self, model, row)
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            last = step + 1 == cfg.steps or self.stop_reason is not None
            if checkpoint_dir and ((cfg.save_every and (step + 1) % cfg.save_every == 0) or last):
                save_checkpoint(Path(checkpoint_dir), step + 1, model, optimizer, scheduler, scaler,
                                {"history": rows, "batches_consumed": consumed}, cfg.keep_last, self.is_main)
            if self.stop_reason is not None:
                break
        bar.close()
        for callback in self.callbacks:
            getattr(callback, "on_train_end", lambda trainer: None)(self)
        self.history = pd.DataFrame(rows)
        return self.history

    def _accumulate(self, forward, ids: torch.Tensor, scaler, terms: dict, tokens: int) -> tuple[dict, int]:
        """Forward and backward one micro-batch; add its loss terms (averaged over micro-batches)."""
        cfg = self.config
        extra = {"label_smoothing": cfg.label_smoothing} if cfg.label_smoothing else {}
        with self._autocast():
            out = forward(ids, labels=ids, **extra)
        scaler.scale(out.loss / cfg.accumulation).backward()
        for name in ("loss", "main_loss", "mtp_loss", "balance_loss"):
            value = getattr(out, name, None)
            if value is not None:
                terms[name] = terms.get(name, 0.0) + value.item() / cfg.accumulation
        load = getattr(out, "expert_load", None)
        if load is not None:
            terms["max_load_ratio"] = (load.max(-1).values / load.mean(-1)).mean().item()
        return terms, tokens + ids.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, val: Iterable[torch.Tensor]) -> dict[str, float]:
        """Mean next-token loss over up to eval_batches batches, and its perplexity."""
        model.eval()
        losses = []
        for ids in itertools.islice(val, self.config.eval_batches):
            ids = ids.to(self.device)
            with self._autocast():
                losses.append(model(ids, labels=ids).main_loss.item())
        if not losses:
            raise ValueError("the validation data yielded no batches")
        loss = sum(losses) / len(losses)
        return {"val_loss": loss, "val_ppl": math.exp(loss)}
