"""Trainer overhead: `Trainer.fit` vs a bare PyTorch loop doing the same work on the same model and batches.

The bare loop does forward, backward, clipping, AdamW and the schedule, nothing else; the Trainer adds
logging, guards, progress and callbacks. Runs alternate (bare, Trainer, Trainer, bare, …) so drifts of a
shared machine hit both alike. Target (issue 5): overhead ≤ 5 %.
Usage: python bench/trainer_overhead.py [--rounds R] [--steps N]
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd
import torch

from dstutor import zoo
from dstutor.bench import save_results
from dstutor.data.packing import BlockLoader
from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig, Trainer


def bare_loop(model: DeepSeekLM, batches, config: TrainConfig) -> None:
    """What a hand-written loop does per step; parameter groups as the Trainer's."""
    trainer = Trainer(config)
    optimizer = trainer.make_optimizer(model)
    scheduler = trainer.make_scheduler(optimizer)
    model.train()
    for ids in itertools.islice(batches, config.steps):
        model(ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.after_optimizer_step()
        scheduler.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="pairs of runs")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    config = DeepSeekConfig.preset("nano")
    train_blocks, _ = zoo.course_blocks(config.vocab_size, 128)
    train = TrainConfig(steps=args.steps, progress=True, eval_every=0, device="cpu")

    def run(kind: str) -> float:
        seed_everything(0)
        model = DeepSeekLM(config)
        batches = BlockLoader(train_blocks, args.batch, shuffle=True, seed=0)
        start = time.perf_counter()
        if kind == "bare":
            bare_loop(model, batches, train)
        else:
            Trainer(train).fit(model, batches)
        return (time.perf_counter() - start) / args.steps

    run("bare")  # warm-up: first-touch allocations and data loading
    times = {"bare PyTorch loop": [], "dstutor Trainer": []}
    for r in range(args.rounds):
        order = ["bare", "trainer"] if r % 2 == 0 else ["trainer", "bare"]
        for kind in order:
            times["bare PyTorch loop" if kind == "bare" else "dstutor Trainer"].append(run(kind))
    table = pd.DataFrame({name: {"median s/step": float(np.median(t)), "min s/step": float(np.min(t)),
                                 "runs": len(t)} for name, t in times.items()}).T
    overhead = table.loc["dstutor Trainer", "median s/step"] / table.loc["bare PyTorch loop", "median s/step"] - 1
    summary = (f"nano preset, batch {args.batch} × 128 tokens, {args.rounds} alternating pairs of {args.steps}-step "
               f"runs on the CPU. The Trainer's overhead over a bare loop is **{overhead:+.1%}** per step.")
    print(summary)
    print("written:", save_results("trainer_overhead", table.round(4), summary, {"Trainer overhead ≤ 5 %": overhead <= 0.05}))


if __name__ == "__main__":
    main()
