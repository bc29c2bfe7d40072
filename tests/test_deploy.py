"""dstutor.deploy: int8 (linear layers and 3-D experts) within tolerance of fp32, QAT's fake-quant equal to the
int8 model it simulates, pruning masks and shapes as specified, ONNX Runtime equal to eager, decoding parity."""
import datasets
import pytest
import torch

from dstutor.deploy.decoding import cache_bytes, decoding_table, same_greedy_tokens, with_context
from dstutor.deploy.int8 import Int8Experts, Int8Linear, model_bytes, packed_bytes, quantize_int8, quantize_rows
from dstutor.deploy.onnx import export_onnx, exportable, onnx_logits, onnx_session, quantize_onnx
from dstutor.deploy.prune import (channel_importance, channels_to_keep, magnitude_masks, prune_channels,
                                  prune_magnitude, sparsity_of)
from dstutor.deploy.qat import RECIPES, compare_qat, fake_quantized, input_noise, quantized_weights
from dstutor.models.hf import to_hf
from dstutor.models.layers import SwiGLU
from dstutor.models.moe import Experts
from tiny import tiny_lm

IDS = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


def test_row_quantisation_round_trips_within_half_a_step():
    w = torch.randn(16, 64)
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127  # the largest |w| of each row maps to ±127
    assert ((q.float() * scale - w).abs() <= scale / 2 + 1e-7).all()
    q4, _ = quantize_rows(w, bits=4)
    assert q4.abs().max() == 7
    with pytest.raises(ValueError, match="bits=9"):
        quantize_rows(w, bits=9)


@pytest.mark.parametrize("mode", ["weight", "dynamic"])
def test_int8_covers_linear_layers_and_experts_and_stays_close_to_fp32(mode):
    model = tiny_lm().eval()
    quantized = quantize_int8(model, mode)
    kinds = {type(m) for m in quantized.modules()}
    assert Int8Experts in kinds and Int8Linear in kinds and not any(type(m) is Experts for m in quantized.modules())
    assert isinstance(quantized.lm_head, torch.nn.Linear)  # kept in fp32 by default
    assert relative_error(quantized(IDS).logits, model(IDS).logits) < 0.03
    # 8 bits are 4× smaller than fp32 for the quantised weights; the fp32 scales add one number per row.
    assert model_bytes(quantized) < model_bytes(model)
    assert torch.equal(quantized.generate(IDS[:1, :5], 4, absorb=True)[:, :5], IDS[:1, :5])


def test_int8_linear_exposes_a_dequantised_weight_for_the_absorbed_mla_path():
    model = tiny_lm().eval()
    weight_only = quantize_int8(model, "weight")
    assert torch.allclose(weight_only(IDS).logits, weight_only(IDS, absorb=True).logits, atol=1e-4)
    dynamic = quantize_int8(model, "dynamic")  # the naive path also quantises kv_b_proj's input; absorbed does not
    assert relative_error(dynamic(IDS, absorb=True).logits, dynamic(IDS).logits) < 0.03
    with pytest.raises(ValueError, match="mode='int4'"):
        quantize_int8(model, "int4")


def test_fake_quant_forward_equals_the_int8_model_and_gradients_pass_straight_through():
    model = tiny_lm().eval()
    simulated_int8 = quantize_int8(model, "weight", bits=4)
    with fake_quantized(model, bits=4):
        assert torch.equal(model(IDS).logits, simulated_int8(IDS).logits)
        model.train()
        model(IDS, labels=IDS).loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.dim() > 1)
    assert "model.layers.0.self_attn.q_proj.weight" in model.state_dict()  # plain parameters again
    assert len(quantized_weights(model)) > 0


def test_input_noise_only_acts_while_training():
    model = tiny_lm().eval()
    clean = model(IDS).logits
    with input_noise(model, std=0.5):
        assert torch.equal(model(IDS).logits, clean)
        model.train()
        torch.manual_seed(0)
        noisy = model(IDS).logits
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(noisy, model(IDS).logits)


def test_compare_qat_reuses_grid_free_fine_tunes_across_bit_widths():
    rows = torch.randint(0, 300, (40, 16), generator=torch.Generator().manual_seed(2)).tolist()
    train, val = datasets.Dataset.from_dict({"input_ids": rows[:32]}), datasets.Dataset.from_dict({"input_ids": rows[32:]})
    table = compare_qat(tiny_lm(), train, val, [8, 2], steps=2, seeds=[0, 1], batch_size=4, eval_batches=2)
    assert len(table) == 2 * len(RECIPES) * 2 and list(table.bits.unique()) == [8, 2]
    fp32 = table.pivot_table(index=["recipe", "seed"], columns="bits", values="fp32_loss")
    # fine-tune only and input noise never see the grid: one model per seed is quantised to both widths
    assert (fp32.loc[list(RECIPES[:2]), 8] == fp32.loc[list(RECIPES[:2]), 2]).all()
    assert (fp32.loc[RECIPES[-1], 8] != fp32.loc[RECIPES[-1], 2]).all()  # QAT trains against each grid
    alone = compare_qat(tiny_lm(), train, val, [2], steps=2, seeds=[0, 1], batch_size=4, eval_batches=2)
    both = table[table.bits == 2].reset_index(drop=True)  # the same numbers as a run at 2 bits alone
    assert both[["recipe", "seed"]].equals(alone[["recipe", "seed"]])
    assert torch.allclose(torch.tensor(both.quantized_loss.values), torch.tensor(alone.quantized_loss.values))
    coarse = compare_qat(tiny_lm(), train, val, [8, 2], steps=2, seeds=[0, 1], batch_size=4, eval_batches=2,
                         recipes=RECIPES[1:], qat_bits=[2])  # QAT for the coarsest grid only
    assert set(coarse[coarse.recipe == RECIPES[-1]].bits) == {2} and set(coarse[coarse.recipe == RECIPES[1]].bits) == {8, 2}
    expected = table[(table.recipe == RECIPES[1]) | ((table.recipe == RECIPES[-1]) & (table.bits == 2))]
    assert torch.allclose(torch.tensor(coarse.quantized_loss.values), torch.tensor(expected.quantized_loss.values))
    with pytest.raises(ValueError, match="recipes must be some of"):
        compare_qat(tiny_lm(), train, val, [8], steps=2, seeds=[0], recipes=["dropout"])
    with pytest.raises(ValueError, match=r"qat_bits=\[4\] must be a non-empty subset of bits=\[8, 2\]"):
        compare_qat(tiny_lm(), train, val, [8, 2], steps=2, seeds=[0], qat_bits=[4])


def test_structured_pruning_keeps_the_strongest_channels_and_shrinks_every_ffn():
    model = tiny_lm().eval()
    pruned, share = prune_channels(model, fraction=0.25)
    assert share == pytest.approx(0.25, abs=0.02)
    dense = next(m for m in model.modules() if isinstance(m, SwiGLU))
    kept_dense = next(m for m in pruned.modules() if isinstance(m, SwiGLU))
    importance = channel_importance(dense)
    keep = importance.topk(kept_dense.gate_proj.out_features).indices.sort().values
    assert torch.equal(kept_dense.gate_proj.weight, dense.gate_proj.weight[keep])
    assert torch.equal(kept_dense.down_proj.weight, dense.down_proj.weight[:, keep])
    experts = next(m for m in pruned.modules() if isinstance(m, Experts))
    assert experts.gate_up_proj.shape[1] == 2 * experts.down_proj.shape[2] == 2 * round(16 * 0.75)
    assert pruned(IDS).logits.shape == model(IDS).logits.shape
    unpruned, none = prune_channels(model, fraction=0.0)
    assert none == 0 and torch.allclose(unpruned(IDS).logits, model(IDS).logits)


def test_the_threshold_rule_prunes_only_weak_channels_at_most_a_step_per_round():
    importance = torch.tensor([10.0] * 18 + [0.1, 0.2])  # two channels below 0.3 × mean
    assert torch.equal(channels_to_keep(importance, threshold=0.3, step=0.1), torch.arange(18))
    # one channel per round (step 0.05 of 20): the weakest (index 18) goes first, the other in round two
    one_round = channels_to_keep(importance, threshold=0.3, step=0.05, max_rounds=1)
    assert torch.equal(one_round, torch.tensor(list(range(18)) + [19]))
    assert torch.equal(channels_to_keep(importance, threshold=0.3, step=0.05), torch.arange(18))
    assert torch.equal(channels_to_keep(torch.ones(3, 8), 0.3, 0.1), torch.arange(8).expand(3, -1))


def test_magnitude_masks_drop_exactly_the_smallest_share_of_each_tensor():
    model = tiny_lm().eval()
    masks = magnitude_masks(model, 0.2)
    weight = model.model.layers[0].self_attn.q_proj.weight
    mask = masks["model.layers.0.self_attn.q_proj.weight"]
    assert (~mask).sum() == int(0.2 * weight.numel())
    assert weight[~mask].abs().max() <= weight[mask].abs().min()
    assert any(name.endswith("experts.gate_up_proj") for name in masks)
    pruned = prune_magnitude(model, 0.2)
    assert sparsity_of(pruned) == pytest.approx(0.2, abs=0.01) and sparsity_of(model) == 0
    with pytest.raises(ValueError, match="sparsity=1"):
        magnitude_masks(model, 1.0)


def test_exportable_model_and_onnx_runtime_match_eager_at_new_shapes(tmp_path):
    model = tiny_lm().eval()
    assert torch.allclose(exportable(model)(IDS), model(IDS).logits, atol=1e-5)
    path = export_onnx(model, tmp_path / "tiny.onnx", max_seq=128)
    session = onnx_session(path)
    for shape in [(1, 7), (3, 40)]:  # neither is the export example's shape: batch and length are dynamic
        ids = torch.randint(0, 300, shape)
        assert torch.allclose(onnx_logits(session, ids), model(ids).logits, atol=1e-4)
    int8 = onnx_session(quantize_onnx(path, tmp_path / "tiny-int8.onnx"))
    assert relative_error(onnx_logits(int8, IDS), model(IDS).logits) < 0.1


def test_our_latent_cache_decodes_like_transformers_and_is_smaller_than_a_full_cache():
    model = with_context(tiny_lm().eval(), 256)
    hf_model = to_hf(model)
    assert same_greedy_tokens(model, hf_model, context=20, new_tokens=8)
    # A model whose greedy choice is its end token: generate(min_new_tokens=...) would mask that token out
    # and diverge, though both implementations agree on every logit. The parity check decodes plainly.
    prompt = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(0))
    hf_model.generation_config.eos_token_id = hf_model.config.eos_token_id = int(model.generate(prompt, 1)[0, -1])
    assert same_greedy_tokens(model, hf_model, context=20, new_tokens=8)
    sizes = cache_bytes(model, hf_model, context=64)
    cfg = model.config
    assert sizes["ours (latent)"] == cfg.num_layers * 64 * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4
    heads = cfg.num_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)
    assert sizes["full per-head K/V"] == cfg.num_layers * 64 * heads * 4
    table = decoding_table(model, [16, 48], new_tokens=3, repeats=1)
    assert set(table.implementation) >= {"ours, absorbed", "ours, naive", "transformers"}
    assert (table.dropna(subset=["tokens_per_s"]).tokens_per_s > 0).all()


def test_packed_size_counts_bits_per_integer_and_floats_whole():
    model = tiny_lm()
    int8 = quantize_int8(model, "weight")
    integers = sum(t.numel() for t in int8.state_dict().values() if t.dtype == torch.int8)
    assert packed_bytes(int8, 8) == model_bytes(int8) and packed_bytes(model, 2) == model_bytes(model)
    assert model_bytes(int8) - packed_bytes(int8, 2) == integers - (integers * 2 + 7) // 8 > 0


def test_deploy_panel_measures_its_settings_beside_the_model_and_adds_a_row():
    import matplotlib.pyplot as plt
    from dstutor.widgets import DeployPanel
    model = tiny_lm()
    blocks = datasets.Dataset.from_dict({"input_ids": IDS.repeat(8, 1).tolist()})
    panel = DeployPanel(model, blocks, 1, IDS, IDS[:1, :8], rounds=1)
    assert panel.values() == {"bits": 8, "channels": 0.0, "mode": "dynamic"}
    panel.controls["bits"].value, panel.controls["channels"].value, panel.controls["mode"].value = 4, 0.5, "weight"
    row = panel.run()
    expected = quantize_int8(prune_channels(model, fraction=0.5)[0], "weight", bits=4)
    assert row["MB packed"] == pytest.approx(packed_bytes(expected, 4) / 2**20)
    assert row["MB packed"] < row["MB stored"] == pytest.approx(model_bytes(expected) / 2**20)
    with torch.no_grad():
        logits = expected(IDS).logits[:, :-1].flatten(0, 1)
    assert row.perplexity == pytest.approx(float(logits.log_softmax(-1).gather(1, IDS[:, 1:].reshape(-1, 1)).neg().mean().exp()))
    panel.controls["bits"].value, panel.controls["channels"].value = 32, 0.0  # the model itself: no change at all
    same = panel.run()
    assert same["MB packed"] == pytest.approx(model_bytes(model) / 2**20) and list(panel.results.index) == ["run 1", "run 2"]
    assert "run 2 done" in panel.message.value and not plt.get_fignums()


def test_torchao_quantises_to_our_integers_and_its_model_differs_from_ours_by_at_most_a_step():
    from dstutor.deploy.torchao_check import torchao_int8, torchao_integers
    model = tiny_lm()
    theirs, ours = torchao_int8(model), quantize_int8(model, "weight", experts=False)
    checked = 0
    for name, linear in model.named_modules():
        if isinstance(linear, torch.nn.Linear) and name != "lm_head":
            q, scale = quantize_rows(linear.weight)
            assert torch.equal(torchao_integers(linear.weight, scale), q), name  # our scales: our integers
            their_weight = theirs.get_submodule(name).weight.dequantize()  # their scales: within one step of ours
            assert ((their_weight - ours.get_submodule(name).weight).abs() <= scale * 1.0001).all(), name
            checked += 1
    assert checked >= 6 and isinstance(theirs.lm_head.weight, torch.nn.Parameter)  # the head stays fp32, as in ours
    with torch.no_grad():
        reference, a, b = model(IDS).logits, ours(IDS).logits, theirs(IDS).logits
    # Two roundings of the same weights to grids one step apart: equally far from fp32, not from each other.
    assert relative_error(a, reference) < 0.01 and 0.5 < relative_error(b, reference) / relative_error(a, reference) < 2
