"""Validation loss reached in a fixed wall-clock budget: MoE nano vs the dense baseline of equal active params.

Each model first times a few steps, then trains for as many steps as fit in the budget (the schedule is
set for that many steps, as a planned run would be), then reports its validation loss.
Usage: python bench/pretrain_budget.py [--budget SECONDS]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from dstutor import zoo
from dstutor.bench import save_results
from dstutor.data.packing import BlockLoader
from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM, dense_baseline_config, parameter_counts
from dstutor.train import TrainConfig, Trainer, fit_on_blocks


def seconds_per_step(config: DeepSeekConfig, blocks, batch: int, steps: int = 8) -> float:
    """Seconds per training step of a fresh model, timed after two warm-up steps."""
    seed_everything(0)
    model = DeepSeekLM(config)
    loader = BlockLoader(blocks, batch, shuffle=True)
    Trainer(steps=2, progress=False).fit(model, loader)
    start = time.perf_counter()
    Trainer(steps=steps, progress=False).fit(model, loader)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    moe = DeepSeekConfig.preset("nano")
    variants = {"MoE nano (8 routed top-2 + 1 shared)": moe, "dense baseline (equal active params)": dense_baseline_config(moe)}
    train_blocks, val_blocks = zoo.course_blocks(moe.vocab_size, 128)
    rows = {}
    for name, config in variants.items():
        per_step = seconds_per_step(config, train_blocks, args.batch)
        steps = max(10, int(args.budget / per_step))
        seed_everything(0)
        model = DeepSeekLM(config)
        train = TrainConfig(steps=steps, lr=3e-3, eval_every=max(1, steps // 5), eval_batches=20, progress=False)
        start = time.perf_counter()
        history = fit_on_blocks(model, train, train_blocks, val_blocks, args.batch)
        counts = parameter_counts(config)
        rows[name] = {"total params (M)": counts["total"] / 1e6, "active params (M)": counts["active"] / 1e6,
                      "steps": steps, "seconds": time.perf_counter() - start,
                      "tokens (M)": steps * args.batch * 128 / 1e6, "val loss": history.val_loss.dropna().iloc[-1]}
        print(name, rows[name], flush=True)
    table = pd.DataFrame(rows).T
    moe_loss, dense_loss = table["val loss"].iloc[0], table["val loss"].iloc[1]
    summary = (f"{args.budget:.0f} s of CPU training each, batch {args.batch} × 128 tokens. Validation loss: MoE "
               f"**{moe_loss:.3f}**, dense **{dense_loss:.3f}** ({'MoE' if moe_loss < dense_loss else 'dense'} "
               f"ahead by {abs(moe_loss - dense_loss):.3f} nats; one seed).")
    print(summary)
    print(f"written: {save_results('pretrain_budget', table.round(3), summary)}")


if __name__ == "__main__":
    main()
