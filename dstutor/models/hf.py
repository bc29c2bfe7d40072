"""Convert between DeepSeekLM and transformers' DeepseekV3ForCausalLM (same weights, same logits).

Module names already match, so conversion is a config translation plus a state-dict copy. MTP
modules are not part of transformers' model (it ignores them on load) and are dropped by `to_hf`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

from dstutor.models.config import DeepSeekConfig
from dstutor.models.model import DeepSeekLM


def to_hf_config(config: DeepSeekConfig) -> DeepseekV3Config:
    """The transformers config of the same architecture; MLA with sigmoid routing only."""
    if config.attention != "mla" or config.scoring_func != "sigmoid":
        raise ValueError(f"DeepseekV3 has MLA attention and sigmoid routing only; this config has "
                         f"attention={config.attention!r}, scoring_func={config.scoring_func!r}")
    dense = config.n_routed_experts == 0
    return DeepseekV3Config(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        moe_intermediate_size=config.moe_intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        n_shared_experts=config.n_shared_experts, n_routed_experts=config.n_routed_experts or 1,
        num_experts_per_tok=config.num_experts_per_tok if not dense else 1,
        n_group=config.n_group if not dense else 1, topk_group=config.topk_group if not dense else 1,
        routed_scaling_factor=config.routed_scaling_factor, norm_topk_prob=config.norm_topk_prob,
        first_k_dense_replace=config.num_layers if dense else config.first_k_dense_replace,
        kv_lora_rank=config.kv_lora_rank, q_lora_rank=config.q_lora_rank,
        qk_rope_head_dim=config.qk_rope_head_dim, qk_nope_head_dim=config.qk_nope_head_dim,
        v_head_dim=config.v_head_dim, max_position_embeddings=config.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        rope_interleave=config.rope_interleave, rms_norm_eps=config.rms_norm_eps,
        initializer_range=config.initializer_range, tie_word_embeddings=False, num_mtp_layers=0,
    )


def from_hf_config(hf: DeepseekV3Config, **overrides) -> DeepSeekConfig:
    """Our config for a transformers DeepseekV3Config (plus overrides, e.g. mtp_depth)."""
    rope = hf.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope['rope_type']!r} (e.g. YaRN) is not implemented here")
    return DeepSeekConfig(
        vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads, attention="mla", q_lora_rank=hf.q_lora_rank,
        kv_lora_rank=hf.kv_lora_rank, qk_nope_head_dim=hf.qk_nope_head_dim,
        qk_rope_head_dim=hf.qk_rope_head_dim, v_head_dim=hf.v_head_dim,
        intermediate_size=hf.intermediate_size, moe_intermediate_size=hf.moe_intermediate_size,
        n_routed_experts=hf.n_routed_experts, n_shared_experts=hf.n_shared_experts,
        num_experts_per_tok=hf.num_experts_per_tok, n_group=hf.n_group, topk_group=hf.topk_group,
        routed_scaling_factor=hf.routed_scaling_factor, norm_topk_prob=hf.norm_topk_prob,
        first_k_dense_replace=min(hf.first_k_dense_replace, hf.num_hidden_layers),
        max_position_embeddings=hf.max_position_embeddings, rope_theta=rope.get("rope_theta", 10000.0),
        rope_interleave=hf.rope_interleave, rms_norm_eps=hf.rms_norm_eps,
        initializer_range=hf.initializer_range, **overrides)


def to_hf(model: DeepSeekLM, attn_implementation: str = "eager",
          experts_implementation: str = "eager") -> DeepseekV3ForCausalLM:
    """A transformers DeepseekV3ForCausalLM holding this model's weights (MTP modules dropped)."""
    hf = DeepseekV3ForCausalLM._from_config(to_hf_config(model.config), attn_implementation=attn_implementation,
                                            experts_implementation=experts_implementation,
                                            dtype=model.lm_head.weight.dtype)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # A model without shared experts has none; transformers builds zero-width ones that compute 0.
    missing = [k for k in missing if not (".shared_experts." in k and model.config.n_shared_experts == 0)]
    if missing or unexpected:
        raise RuntimeError(f"weights do not line up with transformers: missing {missing}, unexpected {unexpected}")
    return hf.eval() if not model.training else hf


def from_hf(hf_model: DeepseekV3ForCausalLM, **overrides) -> DeepSeekLM:
    """A DeepSeekLM holding the weights of a transformers DeepseekV3ForCausalLM."""
    model = DeepSeekLM(from_hf_config(hf_model.config, **overrides)).to(hf_model.lm_head.weight.dtype)
    state = hf_model.state_dict()
    if model.config.n_routed_experts == 0 or model.config.n_shared_experts == 0:
        state = {k: v for k, v in state.items() if k in model.state_dict()}
    model.load_state_dict(state, strict=not overrides.get("mtp_depth"))
    return model


def save_pretrained(model: DeepSeekLM, directory: str | Path) -> Path:
    """Save as a transformers checkpoint (safetensors) that AutoModelForCausalLM.from_pretrained loads."""
    to_hf(model).save_pretrained(directory)
    return Path(directory)


def load_pretrained(directory: str | Path) -> DeepSeekLM:
    """Load a DeepseekV3 checkpoint directory (ours or any local one) into a DeepSeekLM."""
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, experts_implementation="eager")
    return from_hf(hf)
