"""Activation memory measurement, ZeRO arithmetic and the FP8 block-scaling simulation."""
import pytest
import torch

from test_trainer import pattern_batches, tiny_model

from dstutor.train.memory import saved_activation_bytes, zero_memory_per_gpu
from dstutor.train.precision import E4M3_MAX, fp8_quantize, matmul_errors
from dstutor.widgets import MemoryPanel


def test_activation_memory_scales_with_batch_and_checkpointing_cuts_it():
    ids = pattern_batches(1, batch=8)[0]
    full, half = saved_activation_bytes(tiny_model(), ids), saved_activation_bytes(tiny_model(), ids[:4])
    assert half == pytest.approx(full / 2, rel=0.1)
    model = tiny_model()
    model.gradient_checkpointing_enable()
    assert saved_activation_bytes(model, ids) < 0.5 * full
    assert all(p.grad is None for p in model.parameters())  # the measurement leaves no gradients behind


def test_zero_stages_shard_what_they_should():
    plain = zero_memory_per_gpu(7e9, 8, 0)
    assert plain["total"] == pytest.approx(7e9 * 16 / 1e9)  # 16 bytes per parameter, nothing sharded
    assert zero_memory_per_gpu(7e9, 8, 1)["optimizer"] == pytest.approx(plain["optimizer"] / 8)
    stage3 = zero_memory_per_gpu(7e9, 8, 3)
    assert stage3["total"] == pytest.approx(plain["total"] / 8)
    with pytest.raises(ValueError, match="stage 4"):
        zero_memory_per_gpu(7e9, 8, 4)


def test_memory_panel_redraws_the_arithmetic_for_its_controls():
    panel = MemoryPanel(n_params=7e9, n_gpus=8, stage=0, gpu_gb=80)
    assert panel.table().loc["fits one GPU", "GB per GPU"] == "no (1.4× the GPU)"  # 112 GB of state on 80 GB
    redraws = []
    panel.show = lambda: redraws.append(panel.values()["stage"])
    panel.controls["stage"].value = 3  # moving a control redraws the table at once
    assert redraws == [3]
    table = panel.table()["GB per GPU"]
    assert table["total"] == pytest.approx(round(zero_memory_per_gpu(7e9, 8, 3)["total"], 2))
    assert table["fits one GPU"] == "yes"
    panel.controls["n_gpus"].value = 1
    assert panel.table().loc["total", "GB per GPU"] == pytest.approx(112.0)


def test_fp8_block_scaling_keeps_values_in_range_and_isolates_outliers():
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    q = fp8_quantize(x, (1, 128))
    assert q.shape == x.shape and ((q - x).abs() <= 0.07 * x.abs() + 1e-2).all()  # 3 mantissa bits
    big = torch.full((1, 128), 1e5)
    assert fp8_quantize(big, None).max() <= 1e5 * 1.001 and E4M3_MAX == 448
    weights = torch.randn(128, 256) * 0.02
    calm = matmul_errors(x, weights)
    x[:2] *= 1e5  # two outlier tokens
    errors = matmul_errors(x, weights)
    block = "FP8 E4M3, V3 blocks (1×128 act, 128×128 weight)"
    assert errors["bf16"] < 0.01 < errors[block] < 0.06  # 3 mantissa bits cost ~4 %
    assert errors[block] == pytest.approx(calm[block], rel=0.05)  # other tokens keep their own scales
    assert errors["FP8 E4M3, one scale per tensor"] > 5 * errors[block]  # the rest underflow
    with pytest.raises(ValueError, match="not a multiple"):
        fp8_quantize(torch.randn(3, 100), (1, 128))
