"""DDP and FSDP2 under torchrun (2 CPU processes, gloo) match one process; FSDP checkpoints resume in one.

Every launch accumulates 2 micro-batches with the aux-loss-free bias update on: that is where DDP's
buffer broadcast used to overwrite rank 1's expert loads with rank 0's.
"""
import json
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from test_trainer import pattern_batches, record_expert_loads, tiny_model

from dstutor.train import Trainer
from dstutor.train.callbacks import Callback
from dstutor.train.distributed import torchrun

WORKER = Path(__file__).with_name("distributed_worker.py")
COMMON = dict(lr=1e-2, warmup_steps=2, progress=False, eval_every=3, eval_batches=2, device="cpu")
EXACT = {"train": {"accumulation": 2}, "model": {"bias_update_speed": 0.01}}
# Dropout masks depend on how a batch is split over processes, so this launch cannot equal one process
# step for step; it must keep replicas identical and train like one process does (see the test).
REGULARISED = {"train": {"accumulation": 2}, "model": {"bias_update_speed": 0.01, "dropout": 0.1, "layer_drop": 0.25}}


def run_worker(strategy, steps, out, options):
    torchrun([str(WORKER), strategy, str(steps), str(out), json.dumps(options)], nproc=2, timeout=300)
    return pd.read_json(out / "history.json")


def single_process(steps, options, seed=0, **fit):
    trainer = Trainer(steps=steps, seed=seed, **COMMON, **options["train"])
    model = tiny_model(**options["model"])
    return trainer.fit(model, pattern_batches(), pattern_batches(2), **fit), model


@pytest.fixture(scope="module")
def reference():
    with record_expert_loads() as recorded:
        history, model = single_process(6, EXACT)
    return history, model, recorded.loads


class Launches(dict):
    """One 2-process run per setting (6 steps, checkpoints at 3 and 6), launched when a test first reads it:
    the tests run in several pytest workers, and each should launch only the runs its own tests read."""

    RUNS = {"ddp": ("ddp", EXACT), "fsdp": ("fsdp", EXACT), "ddp-regularised": ("ddp", REGULARISED)}

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, name: str) -> tuple[Path, pd.DataFrame]:
        strategy, options = self.RUNS[name]
        out = self.tmp_path_factory.mktemp(name)
        self[name] = out, run_worker(strategy, 6, out, options)
        return self[name]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    return Launches(tmp_path_factory)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy, reference, launched):
    out, history = launched[strategy]
    expected_history, expected_model, expected_loads = reference
    assert len(history) == 6 and (out / "checkpoints" / "step-0000006").exists()
    for column in ("loss", "grad_norm", "val_loss"):
        expected, got = expected_history[column].dropna().to_numpy(), history[column].dropna().to_numpy()
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), column
    assert history.loss.iloc[-1] < history.loss.iloc[0]
    bias = load_file(out / "checkpoints" / "step-0000006" / "model.safetensors")["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert torch.equal(bias, expected_model.model.layers[1].mlp.gate.e_score_correction_bias)
    # each rank counts the tokens of its own half of every micro-batch; together they are one process's count
    local = [json.loads((out / f"loads-rank{r}.json").read_text()) for r in (0, 1)]
    assert (torch.tensor(local[0]) + torch.tensor(local[1])).tolist() == expected_loads


def test_ddp_with_dropout_and_layer_drop_keeps_replicas_identical_and_trains_like_one_process(launched):
    out, history = launched["ddp-regularised"]
    ranks = [load_file(out / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # weights and routing bias
    # Tolerance: one-process runs that differ only in their dropout/LayerDrop draws (10 seeds) scatter
    # around their mean with standard deviation σ per step. The 2-process run is one more such draw, so it
    # must lie within 4σ at every step; a gradient that is summed instead of averaged, or replicas that
    # drift apart, move it by several times that.
    seeds = pd.DataFrame({s: single_process(6, REGULARISED, seed=s)[0].loss for s in range(10)})
    assert ((history.loss - seeds.mean(axis=1)).abs() <= 4 * seeds.std(axis=1)).all()
    assert history.loss.iloc[-1] < history.loss.iloc[0]


def test_fsdp_checkpoint_resumes_in_one_process(reference, launched, tmp_path):
    shutil.copytree(launched["fsdp"][0] / "checkpoints" / "step-0000003", tmp_path / "step-0000003")
    # as if the sharded run had been killed after step 3: one process continues to step 6
    resumed, _ = single_process(6, {**EXACT, "model": {**EXACT["model"]}}, checkpoint_dir=tmp_path, resume=True)
    expected = reference[0]
    assert resumed.loss.to_numpy() == pytest.approx(expected.loss.to_numpy(), rel=1e-4)
    assert resumed.val_loss.dropna().to_numpy() == pytest.approx(expected.val_loss.dropna().to_numpy(), rel=1e-4)


def test_distributed_outside_torchrun_says_how_to_start(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        Trainer(steps=1, distributed="ddp", progress=False, device="cpu").fit(tiny_model(), pattern_batches(1))


@pytest.fixture
def one_process_group(monkeypatch):
    """A real gloo process group of one process, in this process: DDP's reducer runs as with many."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


class CountAllReduces(Callback):
    """Callback: registers a DDP communication hook that counts gradient all-reduces per optimiser step."""

    def __init__(self):
        self.calls, self.per_step = 0, []

    def on_train_begin(self, trainer):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting(state, bucket):
            self.calls += 1
            return allreduce_hook(state, bucket)

        trainer.wrapped.register_comm_hook(None, counting)

    def __call__(self, trainer, model, row):
        self.per_step.append(self.calls - sum(self.per_step))


def test_ddp_accumulation_all_reduces_once_per_step(one_process_group):
    counts = {}
    for accumulation in (1, 3):
        counter = CountAllReduces()
        Trainer(steps=2, accumulation=accumulation, distributed="ddp", device="cpu", progress=False, eval_every=0,
                callbacks=[counter]).fit(tiny_model(), pattern_batches())
        counts[accumulation] = counter.per_step
    assert counts[3] == counts[1] and counts[1][0] >= 1  # no_sync on all but the last micro-batch


def test_ddp_trains_with_layer_drop(one_process_group):
    # a dropped layer leaves its parameters without gradients; DDP must expect that
    history = Trainer(steps=6, distributed="ddp", device="cpu", progress=False, eval_every=0).fit(
        tiny_model(layer_drop=0.5), pattern_batches())
    assert len(history) == 6 and history.loss.notna().all()
