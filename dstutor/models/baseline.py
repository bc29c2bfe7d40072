"""A dense baseline with the same *active* parameters per token as a DeepSeekMoE model."""
from __future__ import annotations

from dstutor.models.config import DeepSeekConfig


def dense_baseline_config(config: DeepSeekConfig) -> DeepSeekConfig:
    """Same model with every FFN dense; MoE layers' width = shared + K routed experts' width."""
    if config.n_routed_experts == 0:
        return config
    active_width = config.moe_intermediate_size * (config.n_shared_experts + config.num_experts_per_tok)
    if config.first_k_dense_replace and active_width != config.intermediate_size:
        raise ValueError(f"dense layers (intermediate_size={config.intermediate_size}) and MoE layers "
                         f"(active width {active_width}) differ: set first_k_dense_replace=0 or match them "
                         "so one dense width matches the active parameters of every layer")
    return config.replace(n_routed_experts=0, intermediate_size=active_width, first_k_dense_replace=0,
                          bias_update_speed=0.0, seq_aux_alpha=0.0, aux_loss_alpha=0.0)
