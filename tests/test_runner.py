"""dstutor.train.runner: runs in worker processes give the in-process results, in order, with clear errors."""
import os
import time

import pandas as pd
import pytest
import torch
from test_sweep_and_widgets import blocks  # noqa: F401  (fixture)
from test_trainer import tiny_model

from dstutor.train import TrainConfig, run_seeds
from dstutor.train.runner import default_workers, run_jobs


def test_runs_in_two_workers_equal_the_runs_in_one_process(blocks):  # noqa: F811
    train = TrainConfig(steps=4, lr=1e-2, warmup_steps=0, progress=False, eval_every=2, eval_batches=1)
    config = tiny_model().config
    variants = {"moe": config, "dropout": config.replace(dropout=0.1)}
    here = run_seeds(variants, train, [0, 1, 2], *blocks, batch_size=4, workers=1)
    shared = run_seeds(variants, train, [0, 1, 2], *blocks, batch_size=4, workers=2)
    columns = ["variant", "seed", "step", "loss", "val_loss", "grad_norm"]
    pd.testing.assert_frame_equal(here[columns], shared[columns], check_exact=False, rtol=1e-5)
    assert here.loss.nunique() > len(here) // 2  # the runs differ from each other: the order is checked


def test_each_worker_computes_with_its_share_of_the_threads_and_returns_in_key_order():
    def threads_and_pid(key: int) -> tuple[int, int, int]:
        time.sleep(0.3)  # long enough that both workers take jobs
        return key, torch.get_num_threads(), os.getpid()

    results = run_jobs(threads_and_pid, list(range(6)), workers=2)
    assert [key for key, _, _ in results] == list(range(6))
    assert {threads for _, threads, _ in results} == {max(1, torch.get_num_threads() // 2)}
    assert os.getpid() not in {pid for _, _, pid in results} and len({pid for _, _, pid in results}) == 2


def test_an_error_in_a_worker_reaches_the_caller_and_bad_worker_counts_are_named(monkeypatch):
    def fails_on_three(key: int) -> int:
        if key == 3:
            raise ValueError(f"bad key {key}")
        return key

    with pytest.raises(ValueError, match="bad key 3"):
        run_jobs(fails_on_three, [1, 2, 3, 4], workers=2)
    assert run_jobs(fails_on_three, [], workers=2) == []
    with pytest.raises(ValueError, match="workers=0"):
        run_jobs(fails_on_three, [1], workers=0)
    monkeypatch.setenv("DSTUTOR_WORKERS", "0")
    with pytest.raises(ValueError, match="DSTUTOR_WORKERS=0"):
        default_workers()
    monkeypatch.setenv("DSTUTOR_WORKERS", "1")
    assert default_workers() == 1


def test_an_odd_last_run_runs_in_this_process_with_every_thread():
    def where(key: int) -> tuple[int, int]:
        time.sleep(0.3)
        return os.getpid(), torch.get_num_threads()

    places = run_jobs(where, [0, 1, 2], workers=2)
    assert places[2] == (os.getpid(), torch.get_num_threads())  # the last round of one: here, all threads
    assert all(pid != os.getpid() for pid, _ in places[:2])


def test_a_timing_taken_by_shared_workers_says_so(monkeypatch):
    from dstutor.train.runner import shared_cores_note
    monkeypatch.setenv("DSTUTOR_WORKERS", "2")
    assert shared_cores_note() == " (2 runs at a time shared the cores: a rough clock)"
    monkeypatch.setenv("DSTUTOR_WORKERS", "1")
    assert shared_cores_note() == ""
