"""Data-parallel training under `torchrun`: DDP (replicas) or FSDP2 (`fully_shard`, the ZeRO-3 analogue).

Every process runs the same Trainer over the same batches and keeps its slice of each global batch,
so the optimiser sees the gradient of the whole batch: 2 processes match 1 process step for step.
Backend: nccl on CUDA, gloo on CPU (the course runs 2 CPU processes to show it on a laptop).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from dstutor.models import DeepSeekLM

STRATEGIES = (None, "ddp", "fsdp")


@dataclass
class DistContext:
    """Where this process sits: rank among world_size processes, and its device."""

    strategy: str
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(strategy: str, device: torch.device) -> DistContext:
    """Join the process group that `torchrun` describes in the environment (RANK, WORLD_SIZE, …)."""
    if strategy not in STRATEGIES[1:]:
        raise ValueError(f"distributed={strategy!r}: choose one of {STRATEGIES}")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(f"distributed={strategy!r} needs several processes: start the script with "
                           "`torchrun --nproc_per_node=N script.py` (RANK and WORLD_SIZE are not set)")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(strategy, dist.get_rank(), dist.get_world_size(), device)


def wrap(model: nn.Module, context: DistContext) -> nn.Module:
    """The module to call for forward passes: a DDP replica, or the model sharded layer by layer."""
    if context.strategy == "ddp":
        # forward_sync_buffers=False: rank 0's buffers must not overwrite each rank's own expert-load counts
        # before every forward (the routing bias stays identical because its update all-reduces the load;
        # the one sync at start-up copies zeros and an equal bias). LayerDrop leaves whole layers without
        # gradients in a step, which DDP must be told to look for.
        return DistributedDataParallel(model, device_ids=[context.device.index] if context.device.type == "cuda" else None,
                                       forward_sync_buffers=False,
                                       find_unused_parameters=isinstance(model, DeepSeekLM) and model.config.layer_drop > 0)
    for layer in model.model.layers if isinstance(model, DeepSeekLM) else []:
        fully_shard(layer)  # each block gathers its parameters just before it runs, then frees them
    return fully_shard(model)


def gradient_sync(replica: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Context for one backward pass: with enabled=False, DDP/FSDP keep gradients local (no communication).

    Used on all but the last micro-batch of an accumulated step: one all-reduce per step, not per micro-batch.
    """
    if enabled:
        return contextlib.nullcontext()
    if isinstance(replica, DistributedDataParallel):
        return replica.no_sync()
    if isinstance(replica, FSDPModule):
        return _fsdp_no_sync(replica)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module: nn.Module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def local_slice(batch: torch.Tensor, context: DistContext | None) -> torch.Tensor:
    """This process's equal share of a global batch."""
    if context is None:
        return batch
    if batch.shape[0] % context.world_size:
        raise ValueError(f"a global batch of {batch.shape[0]} sequences does not split evenly over "
                         f"{context.world_size} processes; choose a batch size divisible by it")
    return batch.chunk(context.world_size)[context.rank]


def mean_over_processes(values: dict[str, float], context: DistContext | None) -> dict[str, float]:
    """Average scalar metrics over processes, so every rank logs the global-batch numbers."""
    if context is None or not values:
        return values
    stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=context.device)
    dist.all_reduce(stacked)
    return dict(zip(values, (stacked / context.world_size).tolist()))


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimiser state on the CPU, keyed by parameter name (collective under FSDP)."""
    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_model_state(model: nn.Module) -> dict:
    """Unsharded model weights on the CPU (collective under FSDP: every process must call it)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict) -> None:
    """Load full (unsharded) state into a plain, DDP or FSDP model and its optimiser."""
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


def as_local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP) gathered to a plain tensor; plain tensors pass through."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def torchrun(script_and_args: list[str], nproc: int = 2, threads_per_process: int = 1,
             timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a script (or `-m module`) under torchrun with nproc local processes; raise with its errors if it fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *script_and_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process)}  # processes share the cores
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result
