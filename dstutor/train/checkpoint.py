"""Training checkpoints that survive crashes, resume exactly and load without unpickling anything.

A checkpoint is a folder `step-NNNNNNN/` holding `model.safetensors`, `optimizer.safetensors` (the
optimiser's tensors, keyed by parameter name), `state.json` (optimiser hyper-parameters, scheduler,
grad scaler, RNG states, data position, history so far) and `complete.json` (each file's sha256).
Durability: the files go to a temporary folder and are fsync'ed, then the completion marker, then
one atomic rename; older checkpoints are pruned only after that. On load, a newest checkpoint that
is incomplete or fails its checksums is skipped with a warning, for the one before it.
State is always saved unsharded, so a checkpoint written by DDP or FSDP processes resumes in one
process and the other way round.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from dstutor.env import file_sha256
from dstutor.train.distributed import full_state, load_full_state

PREFIX = "step-"
MARKER = "complete.json"  # written last: a folder without it was never finished


class CorruptCheckpoint(RuntimeError):
    """A checkpoint folder is incomplete, or a file in it does not match its recorded checksum."""


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
    """Write step-NNNNNNN/ durably (temporary folder, fsync, marker, rename); then prune to the newest keep_last.

    Under DDP/FSDP every process must call it (gathering the state is collective); rank 0 writes.
    """
    directory = Path(directory)
    final = directory / f"{PREFIX}{step:07d}"
    model_state, optim = full_state(model, optimizer)
    if is_main:
        temporary = directory / f".{final.name}.tmp"
        for leftover in directory.glob(f".{PREFIX}*"):  # a writer killed earlier left these
            shutil.rmtree(leftover)
        temporary.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, temporary / "model.safetensors")
        tensors = {f"state.{name}.{slot}": value.detach().cpu().contiguous()
                   for name, slots in optim["state"].items() for slot, value in slots.items()}
        rng, rng_tensors = _rng_state()
        save_file({**tensors, **rng_tensors}, temporary / "optimizer.safetensors")
        state = {"step": step, "param_groups": optim["param_groups"], "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng, **extra}
        (temporary / "state.json").write_text(json.dumps(state))
        files = sorted(temporary.iterdir())
        for file in files:
            _fsync(file)
        (temporary / MARKER).write_text(json.dumps({f.name: file_sha256(f) for f in files}))
        _fsync(temporary / MARKER)
        _fsync(temporary)
        replaced = directory / f".{final.name}.old"
        if final.exists():  # the same step saved again: keep the old copy until the new one is in place
            final.rename(replaced)
        temporary.rename(final)
        _fsync(directory)
        shutil.rmtree(replaced, ignore_errors=True)
        for old in complete_checkpoints(directory)[:-keep_last]:
            shutil.rmtree(old)
    if dist.is_initialized():
        dist.barrier()  # nobody runs ahead of a checkpoint that is not on disk yet
    return final


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk, so a crash cannot lose what was renamed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def complete_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint folders that carry a completion marker, oldest first."""
    return sorted(p for p in Path(directory).glob(f"{PREFIX}*") if (p / MARKER).exists())


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    return max(complete_checkpoints(directory), default=None)


def verify_checkpoint(path: Path) -> None:
    """Raise CorruptCheckpoint naming the file if the folder is incomplete or a file fails its sha256."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise CorruptCheckpoint(f"{path} has no {MARKER}: it was never completely written")
    for name, expected in json.loads((path / MARKER).read_text()).items():
        if not (path / name).exists():
            raise CorruptCheckpoint(f"{path / name} is missing")
        if file_sha256(path / name) != expected:
            raise CorruptCheckpoint(f"{path / name} does not match its recorded sha256 (corrupted or truncated)")


def load_latest_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                           scaler) -> dict | None:
    """Load the newest checkpoint that verifies, warning about each newer one skipped; None if there is none."""
    candidates = complete_checkpoints(directory)
    for path in reversed(candidates):
        try:
            verify_checkpoint(path)
        except (CorruptCheckpoint, json.JSONDecodeError) as error:
            warnings.warn(f"skipping checkpoint {path.name}: {error}; falling back to the one before it", stacklevel=2)
            continue
        return load_checkpoint(path, model, optimizer, scheduler, scaler)
    if candidates:
        raise CorruptCheckpoint(f"none of the {len(candidates)} checkpoints in {directory} is readable; "
                                "delete the folder to start again")
    return None


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
