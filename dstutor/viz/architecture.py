"""A block diagram of one DeepSeek decoder layer, drawn from a config (every size on it comes from the config)."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from dstutor.models.config import DeepSeekConfig


def _box(ax, x: float, y: float, text: str, colour: str, width: float = 3.6, height: float = 0.62) -> None:
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                facecolor=colour, edgecolor="#444"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax, x: float, y0: float, y1: float) -> None:
    ax.annotate("", xy=(x, y1), xytext=(x, y0), arrowprops=dict(arrowstyle="->", color="#444"))


def decoder_layer_diagram(config: DeepSeekConfig, layer: int = 1) -> plt.Figure:
    """Pre-norm block: RMSNorm → attention → add, RMSNorm → FFN (MoE or dense) → add, with the config's sizes."""
    cfg = config
    if cfg.attention == "mla":
        attention = (f"MLA: {cfg.num_heads} heads, latent $c^{{KV}}$ of {cfg.kv_lora_rank}\n"
                     f"+ shared RoPE key of {cfg.qk_rope_head_dim} (cached: {cfg.kv_lora_rank + cfg.qk_rope_head_dim} per token)")
    else:
        attention = f"{cfg.attention.upper()}: {cfg.num_heads} heads of {cfg.head_dim}, {cfg.kv_heads} KV heads"
    if cfg.is_moe_layer(layer):
        ffn = (f"DeepSeekMoE: {cfg.n_shared_experts} shared + top-{cfg.num_experts_per_tok} of "
               f"{cfg.n_routed_experts} routed experts\n(SwiGLU, {cfg.moe_intermediate_size} wide each; "
               f"{cfg.scoring_func} router)")
    else:
        ffn = f"dense SwiGLU FFN, {cfg.intermediate_size} wide"
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    rows = [(0.3, f"input $x$ (hidden size {cfg.hidden_size})", "#f1f3f4"), (1.3, "RMSNorm", "#e8f0fe"),
            (2.35, attention, "#fce8b2"), (3.4, "+ (residual)", "#f1f3f4"), (4.4, "RMSNorm", "#e8f0fe"),
            (5.45, ffn, "#ceead6"), (6.5, "+ (residual) → next layer", "#f1f3f4")]
    for (y, text, colour), (next_y, *_) in zip(rows, rows[1:] + [(None,)]):
        _box(ax, 2.5, y, text, colour, width=4.4 if "\n" in text else 3.6, height=0.8 if "\n" in text else 0.55)
        if next_y is not None:
            _arrow(ax, 2.5, y + 0.3, next_y - 0.3)
    for start, end in [(0.3, 3.4), (3.4, 6.5)]:  # the residual paths skip the sublayer
        ax.annotate("", xy=(4.9, end), xytext=(4.9, start),
                    arrowprops=dict(arrowstyle="->", color="#888", connectionstyle="bar,fraction=0.08", ls="--"))
    ax.set(xlim=(0, 5.6), ylim=(-0.3, 7.0), title=f"One decoder layer (index {layer} of {cfg.num_layers} layers)")
    ax.axis("off")
    return fig
