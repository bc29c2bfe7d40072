"""Keeping freed buffers (dstutor.allocator) vs glibc's defaults: seconds and page faults per training step.

Each setting runs in its own process (the allocator is set once per process), alternating
(defaults, kept, kept, defaults, …) so drifts of a shared machine hit both alike. The nano model
trains on random tokens: the allocator sees the same tensor sizes as on real text.
Usage: python bench/allocator.py [--rounds R] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

SETTINGS = {"glibc defaults": "1", "freed buffers kept": "0"}


def child(batch: int, steps: int) -> None:
    """Train the nano model `steps` steps after 3 warm-up steps; print seconds and minor faults per step."""
    import torch

    from dstutor.models import DeepSeekConfig, DeepSeekLM
    torch.manual_seed(0)
    config = DeepSeekConfig.preset("nano")
    model = DeepSeekLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, config.vocab_size, (batch, 128))

    def step() -> float:
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(3):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    losses = [step() for _ in range(steps)]
    print(json.dumps({"seconds": (time.perf_counter() - start) / steps, "last loss": losses[-1],
                      "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}))


def run(setting: str, batch: int, steps: int) -> dict[str, float]:
    env = {**os.environ, "DSTUTOR_GLIBC_MALLOC_DEFAULTS": SETTINGS[setting]}
    out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(batch), "--steps", str(steps)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs per batch size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.batch, args.steps)
    from dstutor.bench import save_results

    rows, last_losses = {}, set()
    for batch in (4, 16):
        runs = {name: [] for name in SETTINGS}
        for r in range(args.rounds):
            for name in (list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]):
                runs[name].append(run(name, batch, args.steps))
        for name, results in runs.items():
            last_losses |= {(batch, x["last loss"]) for x in results}
            rows[f"batch {batch}, {name}"] = {"median s/step": float(np.median([x["seconds"] for x in results])),
                                              "page faults/step": float(np.median([x["faults"] for x in results]))}
    table = pd.DataFrame(rows).T.rename_axis("run")  # a flat index: dstutor.bench stores tables as records
    identical = len(last_losses) == 2  # one final loss per batch size across settings and rounds
    speedup = {b: table.loc[f"batch {b}, glibc defaults", "median s/step"]
               / table.loc[f"batch {b}, freed buffers kept", "median s/step"] for b in (4, 16)}
    summary = (f"nano preset, batches of 4 and 16 × 128 tokens, {args.rounds} alternating pairs of {args.steps}-step "
               f"runs on the CPU. Keeping freed buffers makes a step **{speedup[16]:.2f}×** as fast at batch 16 "
               f"and {speedup[4]:.2f}× at batch 4; every run of a batch size ends on the same loss, to the bit: "
               f"{identical}.")
    print(summary)
    print(table.round(4))
    print("written:", save_results("allocator", table.round(4), summary, {"faster at batch 16": bool(speedup[16] > 1),
                                                               "bit-identical losses": identical}))


if __name__ == "__main__":
    main()
