"""Step times measured fairly: variants take turns step by step, so a shared machine's drifts hit all alike."""
from __future__ import annotations

import time

import torch


def interleaved_step_times(models: dict[str, torch.nn.Module], batches: list[torch.Tensor],
                           warmup: int) -> dict[str, list[float]]:
    """Seconds per optimiser step (forward + backward + AdamW) of each model, measured round-robin.

    One step of every model per round, so slow drifts of a shared machine hit all variants alike.
    """
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i, ids in enumerate(batches):
        for name, model in models.items():
            model.train()
            if ids.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(ids, labels=ids).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if ids.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times
