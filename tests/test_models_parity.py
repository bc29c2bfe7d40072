"""Ours vs transformers' DeepseekV3ForCausalLM with the same weights: logits within 1e-4 in fp32."""
import pytest
import torch
from transformers import AutoModelForCausalLM, DeepseekV3ForCausalLM

from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.models.hf import from_hf, load_pretrained, save_pretrained, to_hf, to_hf_config

TOLERANCE = 1e-4
# Larger init than training uses, so logits are O(1–10) and a wrong route or rotation shows up.
CONFIGS = {
    "nano": dict(),
    "groups+q_compression": dict(n_group=2, topk_group=1, q_lora_rank=24, routed_scaling_factor=2.5),
    "no_dense_layers+half_rope": dict(first_k_dense_replace=0, rope_interleave=False),
    "two_dense+two_shared": dict(first_k_dense_replace=2, n_shared_experts=2, num_layers=3,
                                 intermediate_size=256),
    "four_groups_topk3": dict(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=3),
    "all_dense": dict(n_routed_experts=0),
}


def make_model(changes: dict, seed: int = 0) -> DeepSeekLM:
    torch.manual_seed(seed)
    config = DeepSeekConfig.preset("nano", vocab_size=320, initializer_range=0.1, **changes)
    model = DeepSeekLM(config).eval()
    for module in model.modules():  # a non-zero balancing bias, so selection ≠ weighting is tested
        if hasattr(module, "e_score_correction_bias"):
            module.e_score_correction_bias.normal_(0, 0.05)
    return model


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 320, (2, 33), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_ours_to_transformers(name):
    model = make_model(CONFIGS[name])
    hf = to_hf(model)
    with torch.no_grad():
        ours, theirs = model(tokens()).logits, hf(tokens()).logits
    assert ours.abs().max() > 1.0  # logits large enough for the tolerance to mean something
    assert (ours - theirs).abs().max() < TOLERANCE


@pytest.mark.parametrize("name", ["nano", "groups+q_compression", "no_dense_layers+half_rope"])
def test_transformers_to_ours(name):
    torch.manual_seed(3)
    config = to_hf_config(DeepSeekConfig.preset("nano", vocab_size=320, initializer_range=0.1, **CONFIGS[name]))
    hf = DeepseekV3ForCausalLM._from_config(config, attn_implementation="sdpa",
                                            experts_implementation="eager").eval()
    ours = from_hf(hf).eval()
    with torch.no_grad():
        assert (ours(tokens()).logits - hf(tokens()).logits).abs().max() < TOLERANCE


def test_loss_matches_transformers():
    model = make_model(CONFIGS["nano"])
    hf = to_hf(model)
    with torch.no_grad():
        ours, theirs = model(tokens(), labels=tokens()).loss, hf(tokens(), labels=tokens()).loss
    assert abs(ours.item() - theirs.item()) < TOLERANCE


def test_saved_checkpoint_loads_with_automodel(tmp_path):
    model = make_model(CONFIGS["groups+q_compression"])
    save_pretrained(model, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, experts_implementation="eager")
    reloaded = load_pretrained(tmp_path)
    with torch.no_grad():
        reference = model(tokens()).logits
        assert (hf(tokens()).logits - reference).abs().max() < TOLERANCE
        assert torch.equal(reloaded(tokens()).logits, reference)


def test_non_mla_models_do_not_convert():
    with pytest.raises(ValueError, match="attention='gqa'"):
        to_hf(DeepSeekLM(DeepSeekConfig.preset("nano", attention="gqa")))
