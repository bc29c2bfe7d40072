"""Checkpoints: exact resume (in process, after SIGKILL), durable writes, fallback from corrupt files, no pickle."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dstutor.train import Trainer
from dstutor.train.checkpoint import CorruptCheckpoint, latest_checkpoint
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
    assert files == {"model.safetensors", "optimizer.safetensors", "state.json", "complete.json"}
    checksums = json.loads((tmp_path / kept[-1] / "complete.json").read_text())
    assert set(checksums) == files - {"complete.json"}
    state = json.loads((tmp_path / kept[-1] / "state.json").read_text())
    assert state["step"] == 8 and state["batches_consumed"] == 8
    assert "rng.torch" in load_file(tmp_path / kept[-1] / "optimizer.safetensors")


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    Trainer(**{**COMMON, "steps": 2}).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path)
    (tmp_path / ".step-0000004.tmp").mkdir()  # what a crash during a write leaves behind
    shutil.copytree(tmp_path / "step-0000002", tmp_path / "step-0000009")
    (tmp_path / "step-0000009" / "complete.json").unlink()  # all files there, but never marked complete
    assert latest_checkpoint(tmp_path).name == "step-0000002"


def test_resume_with_dropout_layer_drop_and_accumulation_is_exact(tmp_path):
    # Restoring the random state is what makes this exact: dropout masks and dropped layers continue as before.
    options = dict(COMMON, accumulation=2)
    model = lambda seed=0: tiny_model(seed, dropout=0.2, layer_drop=0.3)  # noqa: E731
    full = Trainer(**options).fit(model(), pattern_batches(3))
    Trainer(**{**options, "save_every": 4}).fit(model(), pattern_batches(3), checkpoint_dir=tmp_path)
    shutil.rmtree(tmp_path / "step-0000008")
    resumed = Trainer(**options).fit(model(seed=9), pattern_batches(3), checkpoint_dir=tmp_path, resume=True)
    assert resumed.loss.tolist() == full.loss.tolist()


def corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])


@pytest.mark.parametrize("name, how", [("model.safetensors", "flip"), ("optimizer.safetensors", "truncate"),
                                       ("state.json", "truncate")])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, name, how):
    full = Trainer(**COMMON).fit(tiny_model(), pattern_batches(3))
    Trainer(**{**COMMON, "keep_last": 3}).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path)
    shutil.rmtree(tmp_path / "step-0000008")  # the run "died" after step 6 …
    corrupt(tmp_path / "step-0000006" / name, how)  # … and the disk damaged its newest checkpoint
    with pytest.warns(UserWarning, match=f"skipping checkpoint step-0000006: .*{name}"):
        resumed = Trainer(**COMMON).fit(tiny_model(seed=4), pattern_batches(3), checkpoint_dir=tmp_path, resume=True)
    assert resumed.loss.tolist() == full.loss.tolist()  # continued exactly from step 4


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    Trainer(**{**COMMON, "steps": 2}).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path)
    corrupt(tmp_path / "step-0000002" / "model.safetensors", "truncate")
    with pytest.raises(CorruptCheckpoint, match="none of the 1 checkpoints"), pytest.warns(UserWarning):
        Trainer(**COMMON).fit(tiny_model(), pattern_batches(3), checkpoint_dir=tmp_path, resume=True)


KILL_DURING_SAVE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_trainer import pattern_batches, tiny_model
from dstutor.train import Trainer, checkpoint

original = checkpoint.save_file
def dies_while_writing_step_4(tensors, path):
    original(tensors, path)
    if ".step-0000004.tmp" in str(path) and path.name == "optimizer.safetensors":
        os.kill(os.getpid(), signal.SIGKILL)  # mid-save: model and optimizer written, no state, no marker
checkpoint.save_file = dies_while_writing_step_4
Trainer(steps=8, lr=1e-2, save_every=2, keep_last=1, progress=False, eval_every=0).fit(
    tiny_model(), pattern_batches(3), checkpoint_dir=Path({out!r}))
"""


def test_killing_the_writer_mid_save_keeps_the_previous_checkpoint(tmp_path):
    script = KILL_DURING_SAVE.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-0000004.tmp", "step-0000002"]  # keep_last=1 kept it
    full = Trainer(**COMMON).fit(tiny_model(), pattern_batches(3))
    resumed = Trainer(**COMMON).fit(tiny_model(seed=2), pattern_batches(3), checkpoint_dir=tmp_path, resume=True)
    assert resumed.loss.tolist() == full.loss.tolist()
    assert not (tmp_path / ".step-0000004.tmp").exists()  # the next save cleared the leftover


def test_resume_needs_a_folder():
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        Trainer(**COMMON).fit(tiny_model(), pattern_batches(1), resume=True)


def cli(out, *extra):
    return [sys.executable, "-m", "dstutor", "pretrain", "--preset", "nano", "--steps", "12", "--save-every", "2",
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
    result = subprocess.run([sys.executable, "-m", "dstutor", "pretrain", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--resume" in result.stdout and "--preset" in result.stdout
