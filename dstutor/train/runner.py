"""The one loop over an experiment's runs (variants × seeds): order, timing, progress, and worker processes.

Small models use two CPU cores poorly from one process: two processes of one thread each train
1.2–1.5× as many steps per second (DESIGN §11). So on a CPU the runs are shared among two forked
workers; each run is a function of its key alone (it seeds itself), so the result does not depend on
which worker ran it or in what order. A run's own seconds are then measured while another run shares
the cores: where a verdict rests on wall-clock time, run with workers=1 or time the steps apart
(`dstutor.timing`).
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from tqdm import std as tqdm_std
from tqdm.auto import tqdm

Key = TypeVar("Key")
Result = TypeVar("Result")
WORKERS_VARIABLE = "DSTUTOR_WORKERS"

_pending: tuple[Callable, Sequence] | None = None  # the job a forked worker inherits (closures cannot be pickled)


def default_workers() -> int:
    """Worker processes for runs: DSTUTOR_WORKERS if set, else 2 on a CPU with ≥ 2 cores, else 1 (GPUs, one core)."""
    if os.environ.get(WORKERS_VARIABLE):
        workers = int(os.environ[WORKERS_VARIABLE])
        if workers < 1:
            raise ValueError(f"{WORKERS_VARIABLE}={workers}: need at least 1 worker")
        return workers
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    return 1 if gpu or (os.cpu_count() or 1) < 2 or "fork" not in multiprocessing.get_all_start_methods() else 2


def shared_cores_note() -> str:
    """The clause a timing taken inside run_jobs needs, " (N runs at a time shared the cores: a rough clock)"; "" alone."""
    workers = default_workers()
    return f" ({workers} runs at a time shared the cores: a rough clock)" if workers > 1 else ""


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)  # before the first op: two workers must not oversubscribe the cores
    draw = tqdm_std.tqdm.__init__

    def quiet(self, *args, **kwargs) -> None:  # only the parent draws a bar (a notebook bar would write to the kernel)
        draw(self, *args, **{**kwargs, "disable": True})

    tqdm_std.tqdm.__init__ = quiet


def _run_one(index: int) -> tuple[object, str]:
    job, keys = _pending
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        result = job(keys[index])
    return result, printed.getvalue()


def run_jobs(job: Callable[[Key], Result], keys: Sequence[Key], workers: int | None = None,
             desc: str = "runs") -> list[Result]:
    """job(key) for every key, results in the keys' order; with workers > 1, in forked processes.

    job must seed itself from its key. The workers take the runs in rounds of `workers`; a last round
    that would leave a worker idle runs in this process with every thread instead (one run on one thread
    takes ~1.6× its time on two: 3 runs as 2 + 1 take 2.6 run-times, as 2 rounds 3.3). A worker's printed
    lines are shown when its run ends.
    """
    global _pending
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers={workers}: need at least 1")
    shared = workers * (len(keys) // workers) if workers > 1 else 0
    results = []
    if shared:
        threads = max(1, torch.get_num_threads() // workers)
        _pending = (job, list(keys[:shared]))
        try:
            with multiprocessing.get_context("fork").Pool(workers, _start_worker, (threads,)) as pool:
                for result, printed in tqdm(pool.imap(_run_one, range(shared)), total=shared,
                                            desc=f"{desc} ({workers} workers)"):
                    print(printed, end="")
                    results.append(result)
        finally:
            _pending = None
    rest = keys[shared:]
    return results + [job(key) for key in tqdm(rest, desc=desc, disable=not rest)]
