"""dstutor.env: device choice with a reason, seeding, smoke flag, cache dir, offline settings."""
import os

import numpy as np
import pytest
import torch

from dstutor import env


def test_choose_device_gives_a_usable_device_and_reason():
    choice = env.choose_device()
    assert choice.reason
    assert torch.zeros(2, device=choice.device).sum().item() == 0
    if not torch.cuda.is_available():
        assert choice.device.type in ("cpu", "mps")


def test_choose_device_honours_request(monkeypatch):
    monkeypatch.setenv("DSTUTOR_DEVICE", "cpu")
    assert env.choose_device() == env.DeviceChoice(torch.device("cpu"), "requested")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_requesting_missing_cuda_names_the_problem():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        env.choose_device("cuda")


def test_seed_everything_makes_draws_repeat():
    def draw():
        generator = env.seed_everything(123)
        return (np.random.rand(), torch.rand(3).tolist(), torch.rand(2, generator=generator).tolist())

    assert draw() == draw()
    env.seed_everything(124)
    assert np.random.rand() != draw()[0]


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False), ("true", True)])
def test_smoke_flag(monkeypatch, value, expected):
    monkeypatch.setenv("DSTUTOR_SMOKE", value)
    assert env.is_smoke() is expected


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DSTUTOR_CACHE", str(tmp_path / "c"))
    assert env.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_machine_info_and_matmul_measure():
    info = env.machine_info()
    assert info["torch"].startswith("2.13.0") and int(info["cpu_cores"]) >= 1
    assert 0 < env.matmul_gflops(64, repeats=2) < 1e6


def test_tests_use_a_temporary_cache_not_the_readers():
    reader = os.environ["DSTUTOR_READER_CACHE"]
    assert env.cache_dir() != env.Path(reader) and "dstutor-test-cache-" in str(env.cache_dir())
