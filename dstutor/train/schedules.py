"""Learning-rate schedules as multipliers of the peak rate (for torch's LambdaLR)."""
from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("constant", "cosine", "cosine_restarts", "wsd", "deepseek_v3", "squared_warmup_cosine")


def lr_multiplier(name: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.1,
                  cycles: int = 3, decay_fraction: float = 0.2) -> Callable[[int], float]:
    """Multiplier m(step) ∈ [0, 1]: linear warmup, then the named shape down to min_ratio.

    cosine: one half-cosine · cosine_restarts: `cycles` equal cosines (SGDR) · wsd: warmup-stable-decay,
    linear decay over the last `decay_fraction` · deepseek_v3: constant, then cosine over the last
    `decay_fraction` (V3 §4.2 uses constant then cosine, then two small constant stages at the end) ·
    squared_warmup_cosine: [Building efficient models §四.2]'s min((step/warmup)², ½(1 + cos(π·step/total)))
    with its cosine over the whole run and no floor (step counted from 1, as our linear warmup does).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 ≤ warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    decay_start = total_steps - max(1, round(decay_fraction * (total_steps - warmup_steps)))

    def multiplier(step: int) -> float:
        if name == "squared_warmup_cosine":
            warm = ((step + 1) / warmup_steps) ** 2 if warmup_steps else 1.0
            return min(warm, 0.5 * (1 + math.cos(math.pi * step / total_steps)))
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if name == "constant":
            return 1.0
        if name == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if name == "cosine_restarts":
            within = (progress * cycles) % 1.0
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * within))
        if step < decay_start:
            return 1.0
        tail = min(1.0, (step + 1 - decay_start) / max(1, total_steps - decay_start))  # last step: min_ratio
        if name == "wsd":
            return 1.0 - (1 - min_ratio) * tail
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * tail))  # deepseek_v3

    return multiplier
