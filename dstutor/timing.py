"""Wall-clock measurements: variants timed in turn, round after round, and summarised by the median.

Timing one variant after another compares two moments of the machine (chapter 00 measured ±20 %
between runs of the same model); taking turns spreads its slow moments over every variant alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it, or the clock stops early


def interleaved_seconds(runs: Mapping[str, Callable[[int], object]], rounds: int,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of run(i) for each variant and round i, every variant once per round in turn.

    The first `warmup` rounds are run but not kept (first calls pay for allocation and caches).
    """
    if rounds <= warmup:
        raise ValueError(f"rounds={rounds} must exceed warmup={warmup}: nothing would be timed")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        for name, run in runs.items():
            _synchronize()
            start = time.perf_counter()
            run(i)
            _synchronize()
            if i >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def train_step_seconds(models: Mapping[str, torch.nn.Module], batches: list[torch.Tensor],
                       warmup: int) -> dict[str, list[float]]:
    """Seconds per optimiser step (forward, backward, AdamW) of each model, the models taking turns on each batch."""
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}

    def step(name: str) -> Callable[[int], None]:
        def run(i: int) -> None:
            model, ids = models[name].train(), batches[i]
            model(ids, labels=ids).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
        return run

    return interleaved_seconds({name: step(name) for name in models}, len(batches), warmup)


def decode_rate(generate: Callable[[int], object], new_tokens: int, repeats: int = 3) -> float:
    """Tokens/s of cached decoding, prefill excluded: median over repeats, after a warm-up.

    generate(n) runs the prefill and n − 1 decoding steps, so generate(n) − generate(1) times the steps alone.
    """
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: need ≥ 2 to separate decoding from the prefill")
    times = interleaved_seconds({"n": lambda _: generate(new_tokens), "1": lambda _: generate(1)}, repeats + 1)
    return (new_tokens - 1) / max(float(np.median(np.subtract(times["n"], times["1"]))), 1e-9)
