"""DDP and FSDP2 under torchrun (2 CPU processes, gloo) match one process; FSDP checkpoints resume in one."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from test_trainer import pattern_batches, tiny_model

from dstutor.train import Trainer
from dstutor.train.distributed import torchrun

WORKER = Path(__file__).with_name("distributed_worker.py")
COMMON = dict(lr=1e-2, warmup_steps=2, progress=False, eval_every=3, eval_batches=2, device="cpu")


def run_worker(strategy, steps, out):
    torchrun([str(WORKER), strategy, str(steps), str(out)], nproc=2, timeout=300)
    return pd.read_json(out / "history.json")


def single_process(steps, **fit):
    return Trainer(steps=steps, **COMMON).fit(tiny_model(bias_update_speed=0.01), pattern_batches(), pattern_batches(2), **fit)


@pytest.fixture(scope="module")
def reference():
    return single_process(6)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One 2-process run per strategy (6 steps, checkpoints at 3 and 6), shared by the tests below."""
    return {strategy: (out := tmp_path_factory.mktemp(strategy), run_worker(strategy, 6, out))
            for strategy in ("ddp", "fsdp")}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy, reference, launched):
    out, history = launched[strategy]
    assert len(history) == 6 and (out / "checkpoints" / "step-0000006").exists()
    for column in ("loss", "grad_norm", "val_loss"):
        expected, got = reference[column].dropna().to_numpy(), history[column].dropna().to_numpy()
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), column
    assert history.loss.iloc[-1] < history.loss.iloc[0]


def test_fsdp_checkpoint_resumes_in_one_process(reference, launched, tmp_path):
    shutil.copytree(launched["fsdp"][0] / "checkpoints" / "step-0000003", tmp_path / "step-0000003")
    # as if the sharded run had been killed after step 3: one process continues to step 6
    resumed = Trainer(steps=6, **COMMON).fit(tiny_model(seed=5, bias_update_speed=0.01), pattern_batches(),
                                             pattern_batches(2), checkpoint_dir=tmp_path, resume=True)
    assert resumed.loss.to_numpy() == pytest.approx(reference.loss.to_numpy(), rel=1e-4)
    assert resumed.val_loss.dropna().to_numpy() == pytest.approx(reference.val_loss.dropna().to_numpy(), rel=1e-4)


def test_distributed_outside_torchrun_says_how_to_start(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        Trainer(steps=1, distributed="ddp", progress=False, device="cpu").fit(tiny_model(), pattern_batches(1))
