"""DeepSeekConfig: every invalid value raises a ValueError naming the field; presets and counts."""
import pytest

from dstutor.models import DeepSeekConfig, DeepSeekLM, dense_baseline_config, parameter_counts



@pytest.mark.parametrize("changes, field, hint", [
    (dict(num_experts_per_tok=9), "num_experts_per_tok", "n_routed_experts=8"),
    (dict(attention="gqa", num_heads=4, num_kv_heads=3), "num_kv_heads", "divide num_heads=4"),
    (dict(hidden_size=0), "hidden_size", "positive integer"),
    (dict(num_layers=-2), "num_layers", "positive integer"),
    (dict(n_group=2, topk_group=3), "topk_group", "n_group=2"),
    (dict(n_group=3), "n_group", "divide n_routed_experts=8"),
    (dict(attention="linear"), "attention", "'mla'"),
    (dict(scoring_func="relu"), "scoring_func", "sigmoid"),
    (dict(q_lora_rank=0), "q_lora_rank", "None"),
    (dict(qk_rope_head_dim=15), "qk_rope_head_dim", "even"),
    (dict(n_group=8, topk_group=1), "n_group", "top-2"),
    (dict(n_group=4, topk_group=1, num_experts_per_tok=3), "num_experts_per_tok", "topk_group"),
    (dict(bias_update_speed=-0.1), "bias_update_speed", "≥ 0"),
    (dict(mtp_depth=-1), "mtp_depth", "≥ 0"),
])
def test_bad_values_name_the_field(changes, field, hint):
    with pytest.raises(ValueError) as error:
        DeepSeekConfig(**changes)
    assert f"DeepSeekConfig.{field}=" in str(error.value) and hint in str(error.value)


def test_replace_validates_too():
    with pytest.raises(ValueError, match="hidden_size"):
        DeepSeekConfig().replace(hidden_size=-1)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        DeepSeekConfig.preset("huge")


@pytest.mark.parametrize("name, low, high", [("nano", 1e6, 3e6), ("micro", 8e6, 13e6), ("small", 80e6, 130e6)])
def test_preset_sizes(name, low, high):
    assert low <= parameter_counts(DeepSeekConfig.preset(name))["total"] <= high


@pytest.mark.parametrize("changes", [dict(), dict(q_lora_rank=16, mtp_depth=2), dict(attention="gqa"),
                                     dict(attention="mha", n_routed_experts=0), dict(n_shared_experts=2)])
def test_counts_match_the_real_parameters(changes):
    config = DeepSeekConfig.preset("nano", **changes)
    counts = parameter_counts(config)
    assert sum(p.numel() for p in DeepSeekLM(config).parameters()) == counts["total"] + counts["mtp"]


def test_deepseek_v3_is_671b_total_37b_active_and_builds_on_the_meta_device():
    import torch
    config = DeepSeekConfig.preset("v3")
    counts = parameter_counts(config)
    assert round(counts["total"] / 1e9) == 671 and round(counts["active"] / 1e9) == 38  # paper: "37B"
    assert 37e9 < counts["active"] < 38e9 and 11e9 < counts["mtp"] < 12e9  # V3's notes: 11.5 B unique MTP parameters
    with torch.device("meta"):  # no memory: the counting formula against the real modules at V3's shapes
        model = DeepSeekLM(DeepSeekConfig.preset("v3", mtp_depth=0))
    assert sum(p.numel() for p in model.parameters()) == counts["total"]


def test_dense_baseline_matches_active_ffn_width():
    config = DeepSeekConfig.preset("nano")
    base = dense_baseline_config(config)
    moe_layers = config.num_layers - config.first_k_dense_replace
    router = moe_layers * config.n_routed_experts * config.hidden_size
    assert parameter_counts(config)["active"] - parameter_counts(base)["active"] == router
    assert base.n_routed_experts == 0


def test_dense_baseline_refuses_mismatched_widths():
    with pytest.raises(ValueError, match="first_k_dense_replace"):
        dense_baseline_config(DeepSeekConfig.preset("nano", intermediate_size=500))
