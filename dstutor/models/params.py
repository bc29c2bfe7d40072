"""Parameter counts from a config alone: total vs active per token (works for V3's 671 B too)."""
from __future__ import annotations

from dstutor.models.config import DeepSeekConfig


def _attention(c: DeepSeekConfig) -> int:
    h, heads = c.hidden_size, c.num_heads
    if c.attention != "mla":
        return 2 * h * heads * c.head_dim + 2 * h * c.kv_heads * c.head_dim
    q_out = heads * (c.qk_nope_head_dim + c.qk_rope_head_dim)
    q = h * q_out if c.q_lora_rank is None else h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * q_out
    kv = h * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
    return q + kv + c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim) + heads * c.v_head_dim * h


def layer_counts(c: DeepSeekConfig, index: int) -> tuple[int, int]:
    """(total, active) parameters of decoder layer `index`."""
    h = c.hidden_size
    common = _attention(c) + 2 * h
    if not c.is_moe_layer(index):
        dense = common + 3 * h * c.intermediate_size
        return dense, dense
    expert = 3 * h * c.moe_intermediate_size
    shared_and_router = c.n_shared_experts * expert + c.n_routed_experts * h
    return (common + shared_and_router + c.n_routed_experts * expert,
            common + shared_and_router + c.num_experts_per_tok * expert)


def parameter_counts(config: DeepSeekConfig) -> dict[str, int]:
    """Total and per-token active parameters: main model (as papers report it) and MTP modules."""
    h, vocab = config.hidden_size, config.vocab_size
    layers = [layer_counts(config, i) for i in range(config.num_layers)]
    embed_and_head = 2 * vocab * h + h
    total = embed_and_head + sum(t for t, _ in layers)
    active = embed_and_head + sum(a for _, a in layers)
    mtp_layer = layer_counts(config, config.num_layers)
    mtp = config.mtp_depth * (3 * h + 2 * h * h + mtp_layer[0])
    return {"total": total, "active": active, "embedding_and_head": embed_and_head, "mtp": mtp}
