"""The zoo builds each artefact once, even when processes ask at the same time; importing dstutor is offline-safe."""
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dstutor.zoo import BUILD_RECORD, COMPLETE, build_once

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dstutor.zoo import build_once

    folder, log = Path(sys.argv[1]), Path(sys.argv[2])

    def slow_build(into):
        with open(log, "a") as handle:
            handle.write("build\\n")
        (into / "part-1.txt").write_text("first")
        time.sleep(1.5)  # long enough for the other process to arrive mid-build
        (into / "part-2.txt").write_text("second")

    build_once(folder, slow_build)
    print(sorted(p.name for p in folder.iterdir()))
""")


def test_two_processes_asking_at_once_build_once(tmp_path):
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    folder, log = tmp_path / "zoo" / "artefact", tmp_path / "builds.log"
    runs = [subprocess.Popen([sys.executable, str(script), str(folder), str(log)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert log.read_text() == "build\n"
    expected = sorted([COMPLETE, BUILD_RECORD, "part-1.txt", "part-2.txt"])
    assert outputs == [str(expected)] * 2  # neither saw a half-built folder
    assert sorted(p.name for p in folder.parent.iterdir()) == ["artefact", "artefact.lock"]  # no temporary left


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    folder = tmp_path / "artefact"

    def broken(into):
        (into / "half.txt").write_text("…")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        build_once(folder, broken)
    assert not folder.exists() and [p.name for p in tmp_path.iterdir()] == ["artefact.lock"]
    build_once(folder, lambda into: (into / "ok.txt").write_text("ok"))
    assert (folder / "ok.txt").read_text() == "ok" and (folder / COMPLETE).exists()
    started = time.perf_counter()
    build_once(folder, lambda into: pytest.fail("a complete artefact must not be rebuilt"))
    assert time.perf_counter() - started < 1


def test_the_test_session_keeps_smoke_models_by_the_zoos_own_marker():
    import conftest

    assert conftest.COMPLETE == COMPLETE  # else the smoke models a run builds would never be kept


def test_importing_any_dstutor_module_sets_the_offline_variables():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    code = "import os, dstutor.models.hf; print([os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE')])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['1', '1', '1']"


def test_a_build_records_its_own_seconds_and_what_it_needed(tmp_path, monkeypatch):
    import json

    from dstutor import zoo
    log = tmp_path / "access.jsonl"
    monkeypatch.setenv(zoo.ACCESS_LOG, str(log))
    inner, outer = tmp_path / "inner", tmp_path / "outer"

    def build_outer(into):
        build_once(inner, lambda i: (i / "x").write_text("x"))
        (into / "y").write_text("y")

    build_once(outer, build_outer)
    build_once(outer, build_outer)  # cached now
    record = json.loads((outer / BUILD_RECORD).read_text())
    assert record["needs"] == ["inner"] and record["seconds"] >= 0
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"artefact": "inner", "built": True}, {"artefact": "outer", "built": True}, {"artefact": "outer", "built": False}]


def test_an_earlier_step_of_a_pretraining_run_is_that_run_stopped_there():
    from dstutor import zoo
    from dstutor.env import seed_everything
    from dstutor.models import DeepSeekConfig, DeepSeekLM
    from dstutor.train import TrainConfig, fit_on_blocks

    config = DeepSeekConfig.preset("nano")
    train = TrainConfig(steps=8, lr=3e-3, warmup_steps=2, eval_every=2, eval_batches=2, seed=3, progress=False)
    assert zoo.snapshot_steps(train.steps) == [2, 4, 6]
    final, history = zoo.pretrained(config, train)
    early, early_history = zoo.pretrained(config, train, at=4)
    assert list(early_history.step) == [1, 2, 3, 4] and len(history) == 8

    def stop_after_4(trainer, model, row):
        if row["step"] == 4:
            trainer.stop_reason = "step 4"

    seed_everything(train.seed)
    by_hand = DeepSeekLM(config)
    fit_on_blocks(by_hand, train, *zoo.course_blocks(config.vocab_size, 128), 16, callbacks=[stop_after_4])
    for name, weight in by_hand.state_dict().items():
        assert torch.equal(weight, early.state_dict()[name]), name
    assert not torch.equal(early.lm_head.weight, final.lm_head.weight)
    with pytest.raises(ValueError, match="at=5: a 8-step run keeps the weights of steps \\[2, 4, 6, 8\\]"):
        zoo.pretrained(config, train, at=5)
