"""Training checkpoints that resume exactly and load without unpickling anything.

A checkpoint is a folder `step-NNNNNNN/` holding `model.safetensors`, `optimizer.safetensors` (the
optimiser's tensors, keyed by parameter name) and `state.json` (optimiser hyper-parameters, scheduler, grad scaler, RNG states,
data position, history so far). It is written to a temporary folder and renamed when complete, so a
run killed mid-write leaves the previous checkpoint intact; only the newest `keep_last` are kept.
State is always saved unsharded, so a checkpoint written by DDP or FSDP processes resumes in one
process and the other way round.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from dstutor.train.distributed import full_state, load_full_state

PREFIX = "step-"


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    python = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return ({"python": [python[0], list(python[1]), python[2]],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}, tensors)


def _set_rng_state(state: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, scaler, extra: dict, keep_last: int = 2, is_main: bool = True) -> Path:
    """Write step-NNNNNNN/ atomically (temporary folder, then rename); prune to the newest keep_last.

    Under DDP/FSDP every process must call it (gathering the state is collective); rank 0 writes.
    """
    directory = Path(directory)
    final = directory / f"{PREFIX}{step:07d}"
    model_state, optim = full_state(model, optimizer)
    if is_main:
        temporary = directory / f".{final.name}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, temporary / "model.safetensors")
        tensors = {f"state.{name}.{slot}": value.detach().cpu().contiguous()
                   for name, slots in optim["state"].items() for slot, value in slots.items()}
        rng, rng_tensors = _rng_state()
        save_file({**tensors, **rng_tensors}, temporary / "optimizer.safetensors")
        state = {"step": step, "param_groups": optim["param_groups"], "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng, **extra}
        (temporary / "state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
        for old in sorted(directory.glob(f"{PREFIX}*"))[:-keep_last]:
            shutil.rmtree(old)
    if dist.is_initialized():
        dist.barrier()  # nobody runs ahead of a checkpoint that is not on disk yet
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    complete = [p for p in Path(directory).glob(f"{PREFIX}*") if (p / "state.json").exists()]
    return max(complete, default=None)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    scaler) -> dict:
    """Restore everything save_checkpoint wrote (RNG included); return the JSON state (step, extras)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(path / "optimizer.safetensors")
    slots: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            name, slot = key[len("state."):].rsplit(".", 1)
            slots.setdefault(name, {})[slot] = value
    load_full_state(model, optimizer, load_file(path / "model.safetensors"),
                    {"state": slots, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], tensors)
    return state
