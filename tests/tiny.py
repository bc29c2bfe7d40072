"""Models small enough for unit tests: a nano DeepSeekLM cut down to a few thousand parameters."""
import torch

from dstutor.models import DeepSeekConfig, DeepSeekLM


def tiny_lm(seed: int = 0, vocab_size: int = 300, **changes) -> DeepSeekLM:
    """A 3-layer MLA + MoE model with hidden size 32, seeded."""
    torch.manual_seed(seed)
    return DeepSeekLM(DeepSeekConfig.preset("nano", vocab_size=vocab_size, hidden_size=32, num_heads=2, kv_lora_rank=16,
                                            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, intermediate_size=48,
                                            moe_intermediate_size=16, num_layers=3, **changes))
