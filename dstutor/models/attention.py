"""Attention: MHA, GQA and DeepSeek's Multi-head Latent Attention (MLA, DeepSeek-V2 §2.1) with a KV cache.

MLA caches one small latent c_KV (kv_lora_rank) plus one shared RoPE key (qk_rope_head_dim) per
token and layer, instead of full keys and values for every head. The absorbed path folds W_UK into
the query and W_UV into the output so decoding attends over the latents directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dstutor.models.config import DeepSeekConfig
from dstutor.models.layers import RMSNorm, apply_rope


class KVCache:
    """What attention keeps per layer while decoding: tensors (batch, heads, seq, dim) grown along seq."""

    def __init__(self, num_layers: int):
        self.layers: list[tuple[torch.Tensor, ...] | None] = [None] * num_layers

    def update(self, layer: int, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append this step's tensors for `layer`; return everything cached for it so far."""
        old = self.layers[layer]
        self.layers[layer] = new if old is None else tuple(torch.cat([o, n], dim=2) for o, n in zip(old, new))
        return self.layers[layer]

    def __len__(self) -> int:
        """Number of cached positions."""
        return 0 if self.layers[0] is None else self.layers[0][0].shape[2]

    def nbytes(self) -> int:
        """Bytes held by the cache tensors."""
        return sum(t.numel() * t.element_size() for entry in self.layers if entry for t in entry)

    def bytes_per_token(self) -> float:
        """Cache bytes per cached token per sequence, all layers together."""
        first = self.layers[0][0]
        return self.nbytes() / (first.shape[0] * first.shape[2])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal attention; q (B, H, Tq, E), k (B, Hk, Tk, E), v (B, Hk, Tk, Ev), queries are the last Tq keys.

    Uses PyTorch's fused kernel unless the attention weights are wanted (for heat-maps).
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    if not need_weights and q_len in (1, k_len):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=q_len > 1, scale=scale,
                                             enable_gqa=k.shape[1] != q.shape[1])
        return out, None
    repeats = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    future = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Standard attention: MHA (a key/value head per query head) or GQA (groups share one)."""

    def __init__(self, config: DeepSeekConfig, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        heads, kv_heads, head_dim = config.num_heads, config.kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, config.hidden_size, bias=False)

    @property
    def rope_dim(self) -> int:
        return self.config.head_dim

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq, _ = x.shape
        cfg = self.config
        q = self.q_proj(x).view(batch, seq, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, *rope, cfg.rope_interleave), apply_rope(k, *rope, cfg.rope_interleave)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        out, weights = attend(q, k, v, cfg.head_dim ** -0.5, need_weights)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1)), weights


class MultiHeadLatentAttention(nn.Module):
    """MLA: low-rank joint KV compression with a decoupled, shared RoPE key (DeepSeek-V2 §2.1.2–2.1.3)."""

    def __init__(self, config: DeepSeekConfig, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        cfg, hidden = config, config.hidden_size
        self.qk_head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        q_out = cfg.num_heads * self.qk_head_dim
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, q_out, bias=False)
        else:  # queries are compressed too, which saves activation memory in training (V2 §2.1.2)
            self.q_a_proj = nn.Linear(hidden, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, q_out, bias=False)
        # One projection yields the latent c_KV and the shared RoPE key k^R: both are cached.
        self.kv_a_proj_with_mqa = nn.Linear(hidden, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        # Up-projection of the latent into every head's key (no position) and value: W_UK and W_UV.
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, cfg.num_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.v_head_dim, hidden, bias=False)
        self.scale = self.qk_head_dim ** -0.5

    @property
    def rope_dim(self) -> int:
        return self.config.qk_rope_head_dim

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None,
                need_weights: bool = False, absorb: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        batch, seq, _ = x.shape
        q = self.q_proj(x) if cfg.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, seq, cfg.num_heads, self.qk_head_dim).transpose(1, 2)
        q_nope, q_rope = q.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        latent = self.kv_a_layernorm(latent).unsqueeze(1)          # (B, 1, T, d_c): one "head"
        q_rope = apply_rope(q_rope, *rope, cfg.rope_interleave)
        k_rope = apply_rope(k_rope.unsqueeze(1), *rope, cfg.rope_interleave)  # (B, 1, T, d_R)
        if cache is not None:
            latent, k_rope = cache.update(self.layer, latent, k_rope)
        if absorb:
            out, weights = self._absorbed(q_nope, q_rope, latent, k_rope, need_weights)
        else:
            out, weights = self._naive(q_nope, q_rope, latent, k_rope, need_weights)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1)), weights

    def _naive(self, q_nope, q_rope, latent, k_rope, need_weights):
        # Expand the latent into per-head keys and values, then attend as in MHA.
        cfg = self.config
        batch, _, keys, _ = latent.shape
        kv = self.kv_b_proj(latent[:, 0]).view(batch, keys, cfg.num_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)
        k = torch.cat([k_nope, k_rope.expand(-1, cfg.num_heads, -1, -1)], dim=-1)
        return attend(torch.cat([q_nope, q_rope], dim=-1), k, v, self.scale, need_weights)

    def _absorbed(self, q_nope, q_rope, latent, k_rope, need_weights):
        # q·(W_UK c) = (W_UKᵀ q)·c: attend over the cached latents themselves, then apply W_UV.
        cfg = self.config
        w = self.kv_b_proj.weight.view(cfg.num_heads, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank)
        w_uk, w_uv = w.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=1)
        q_latent = torch.einsum("bhtd,hdr->bhtr", q_nope, w_uk)
        out, weights = attend(torch.cat([q_latent, q_rope], dim=-1), torch.cat([latent, k_rope], dim=-1),
                              latent, self.scale, need_weights)
        return torch.einsum("bhtr,hdr->bhtd", out, w_uv), weights


def build_attention(config: DeepSeekConfig, layer: int) -> nn.Module:
    """The attention module the config asks for."""
    if config.attention == "mla":
        return MultiHeadLatentAttention(config, layer)
    return MultiHeadAttention(config, layer)


def kv_cache_bytes_per_token(config: DeepSeekConfig, bytes_per_element: float = 2.0) -> float:
    """Cache bytes per token for one sequence, all layers (bf16 by default); equals KVCache.bytes_per_token."""
    if config.attention == "mla":
        per_layer = config.kv_lora_rank + config.qk_rope_head_dim
    else:
        per_layer = 2 * config.kv_heads * config.head_dim
    return config.num_layers * per_layer * bytes_per_element
