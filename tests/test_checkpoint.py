"""Checkpoints: exact resume (in process and after SIGKILL of the CLI), atomic writes, no pickle."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from dstutor.train import Trainer
from dstutor.train.checkpoint import latest_checkpoint
from test_trainer import pattern_batches, tiny_model

COMMON = dict(steps=8, lr=1e-2, save_every=2, keep_last=2, progress=False, eval_every=0)


def test_resume_continues_exactly(tmp_path):
    reference = tiny_model()
    full = Trainer(**COMMON).fit(reference, pattern_batches(3), pattern_batches(1))

    interrupted = tiny_model()
    Trainer(**COMMON).fit(interrupted, pattern_batches(3), pattern_batches(1), checkpoint_dir=tmp_path)
    for newer in sorted(tmp_path.glob("step-*"))[1:]:  # pretend the run died after step 6
        for f in newer.iterdir():
            f.unlink()
        newer.rmdir()
    assert latest_checkpoint(tmp_path).name == "step-0000006"

    resumed = tiny_model(seed=123)  # different initial weights: everything must come from the checkpoint
    history = Trainer(**COMMON).fit(resumed, pattern_batches(3), pattern_batches(1), checkpoint_dir=tmp_path,
                                    resume=True)
    assert list(history.step) == list(range(1, 9))
    assert history.loss.tolist() == full.loss.tolist()
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))


def test_checkpoints_are_pruned_and_hold_no_pickle(tmp_path):
    Trainer(**COMMON).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["step-0000006", "step-0000008"]
    files = {f.name for f in (tmp_path / kept[-1]).iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "state.json"}
    state = json.loads((tmp_path / kept[-1] / "state.json").read_text())
    assert state["step"] == 8 and state["batches_consumed"] == 8
    assert "rng.torch" in load_file(tmp_path / kept[-1] / "optimizer.safetensors")


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    Trainer(**{**COMMON, "steps": 2}).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path)
    (tmp_path / ".step-0000004.tmp").mkdir()  # what a crash during a write leaves behind
    (tmp_path / "step-0000009").mkdir()  # a folder without state.json is not a checkpoint
    assert latest_checkpoint(tmp_path).name == "step-0000002"


def test_resume_needs_a_folder():
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        Trainer(**COMMON).fit(tiny_model(), pattern_batches(1), resume=True)


def cli(out, *extra):
    return [sys.executable, "-m", "dstutor.cli", "pretrain", "--preset", "nano", "--steps", "12", "--save-every", "2",
            "--eval-every", "6", "--batch-size", "4", "--quiet", "--out", str(out), *extra]


def final_weights(out):
    return load_file(out / "checkpoints" / "step-0000012" / "model.safetensors")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    subprocess.run(cli(tmp_path / "straight"), check=True, capture_output=True)
    victim = subprocess.Popen(cli(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "step-0000006").exists():
        assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "checkpoints" / "step-0000012").exists()
    refused = subprocess.run(cli(tmp_path / "killed"), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    subprocess.run(cli(tmp_path / "killed", "--resume"), check=True, capture_output=True)
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert (tmp_path / "killed" / "history.csv").read_text().splitlines()[-1].split(",")[:2] == \
        (tmp_path / "straight" / "history.csv").read_text().splitlines()[-1].split(",")[:2]
    assert (tmp_path / "killed" / "model" / "model.safetensors").exists()  # a transformers checkpoint


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "dstutor.cli", "pretrain", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--resume" in result.stdout and "--preset" in result.stdout
