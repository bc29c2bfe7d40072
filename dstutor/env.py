"""The reader's machine: device choice, seeding, offline settings, smoke flag and cache directory."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dstutor import OFFLINE_VARS, set_offline  # noqa: F401  (re-exported: dstutor/__init__ applies them)


@dataclass(frozen=True)
class DeviceChoice:
    """The device the course will use and why it was chosen."""

    device: torch.device
    reason: str

    def __str__(self) -> str:
        return f"{self.device} ({self.reason})"


def choose_device(prefer: str | None = None) -> DeviceChoice:
    """Pick cuda > mps > cpu, or the device named by `prefer` / `DSTUTOR_DEVICE` if it is available."""
    wanted = prefer or os.environ.get("DSTUTOR_DEVICE")
    if wanted:
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {wanted!r} was requested but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None})")
        if wanted == "mps" and not _mps_available():
            raise ValueError("device 'mps' was requested but this machine has no Apple GPU")
        return DeviceChoice(torch.device(wanted), "requested")
    if torch.cuda.is_available():
        return DeviceChoice(torch.device("cuda"), f"CUDA GPU found: {torch.cuda.get_device_name(0)}")
    if _mps_available():
        return DeviceChoice(torch.device("mps"), "Apple GPU (MPS) found")
    why = "no CUDA GPU" if torch.version.cuda else "CPU-only torch build"
    return DeviceChoice(torch.device("cpu"), f"{why}; no Apple GPU")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def is_smoke() -> bool:
    """True when chapters run in smoke mode (tests): smaller sizes, same code path."""
    return os.environ.get("DSTUTOR_SMOKE", "0").lower() not in ("", "0", "false", "no")


def cache_dir() -> Path:
    """Where corpora and trained artifacts are cached: `DSTUTOR_CACHE` or `~/.cache/dstutor`."""
    path = Path(os.environ.get("DSTUTOR_CACHE", Path.home() / ".cache" / "dstutor")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks: what cached archives and checkpoints are verified with."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def machine_info() -> dict[str, str]:
    """Describe this machine (versions, cores, memory, accelerator): for reports and benchmark files."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
    }
    for package in ("torch", "transformers", "numpy"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    choice = choose_device()
    info["device"] = str(choice.device)
    info["device_reason"] = choice.reason
    if choice.device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)"
    else:
        info["gpu"] = "none"
    return info


def matmul_gflops(size: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  repeats: int = 5) -> float:
    """Median measured GFLOP/s of a (size × size) @ (size × size) matmul: this machine's raw speed."""
    from dstutor.timing import interleaved_seconds  # dstutor.timing is below env: imported where it is used

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timings = interleaved_seconds({"matmul": lambda _: a @ b}, repeats + 1)["matmul"]  # the first round warms up
    return 2 * size**3 / float(np.median(timings)) / 1e9
