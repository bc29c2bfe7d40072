"""The two towers of a dual encoder: a small CNN or a tiny ViT for images, our DeepSeek model for text.

Each tower maps its input to one feature vector; the projection heads in `clip.py` map both into
the shared embedding space.
"""
from __future__ import annotations

import torch
from torch import nn

from dstutor.models import DeepSeekConfig, DeepSeekLM


def check_images(pixels: torch.Tensor, channels: int, side: int) -> None:
    """Raise ValueError unless pixels is a non-empty (batch, channels, side, side) tensor."""
    expected = f"(batch, {channels}, {side}, {side})"
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (channels, side, side):
        raise ValueError(f"images must have shape {expected}, got {tuple(pixels.shape)}")
    if pixels.shape[0] == 0:
        raise ValueError(f"empty batch: images of shape {tuple(pixels.shape)}")


class ConvEncoder(nn.Module):
    """Two conv blocks, then a 4 × 4 grid flattened: the grid keeps *where* things are ("top left")."""

    def __init__(self, channels: int, side: int, width: int = 32, features: int = 128):
        super().__init__()
        self.channels, self.side, self.features = channels, side, features
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, features), nn.GELU())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        check_images(pixels, self.channels, self.side)
        return self.body(pixels)


class TinyViT(nn.Module):
    """A Vision Transformer (Dosovitskiy et al. 2020) in miniature: patches, positions, a [CLS] token."""

    def __init__(self, channels: int, side: int, patch: int = 4, features: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        if side % patch:
            raise ValueError(f"patch size {patch} must divide the image side {side}")
        self.channels, self.side, self.patch, self.features = channels, side, patch, features
        self.embed = nn.Linear(channels * patch * patch, features)
        self.cls = nn.Parameter(torch.zeros(1, 1, features))
        self.positions = nn.Parameter(torch.randn(1, 1 + (side // patch) ** 2, features) * 0.02)
        layer = nn.TransformerEncoderLayer(features, heads, 2 * features, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(features)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """States of the [CLS] token and every patch: (batch, 1 + patches, features)."""
        check_images(pixels, self.channels, self.side)
        p = self.patch  # (b, c, H, W) → (b, patches, c·p·p)
        patches = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        x = torch.cat([self.cls.expand(len(pixels), -1, -1), self.embed(patches)], dim=1) + self.positions
        return self.norm(self.blocks(x))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tokens(pixels)[:, 0]


def text_config(vocab_size: int, hidden: int = 64, layers: int = 2) -> DeepSeekConfig:
    """A small dense DeepSeek config for captions (MLA attention, no experts, 32 positions)."""
    return DeepSeekConfig(vocab_size=vocab_size, hidden_size=hidden, num_layers=layers, num_heads=2,
                          kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                          intermediate_size=2 * hidden, n_routed_experts=0, max_position_embeddings=32)


POOLS = ("last", "mean")


class TextEncoder(nn.Module):
    """Our DeepSeek model over a caption, read at its last real token (CLIP's choice) or averaged over its tokens.

    Attention is causal, so right padding never changes the states of real tokens.
    """

    def __init__(self, config: DeepSeekConfig, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.lm, self.pool = DeepSeekLM(config), pool
        self.features = config.hidden_size

    def tokens(self, input_ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The states of every token (batch, length, features); positions after `last` are padding."""
        if input_ids.ndim != 2 or len(input_ids) == 0 or len(last) != len(input_ids):
            raise ValueError(f"input_ids must be (batch ≥ 1, length) with one `last` per row; got "
                             f"{tuple(input_ids.shape)} and {len(last)} last indices")
        return self.lm.hidden_states(input_ids)

    def forward(self, input_ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        states = self.tokens(input_ids, last)
        if self.pool == "last":
            return states[torch.arange(len(last)), last]
        return mean_over_real(states, last)


def real_tokens(last: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, length) True up to each row's last real token."""
    return torch.arange(length, device=last.device) <= last[:, None]


def mean_over_real(states: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Mean of token states over each row's real tokens (padding left out)."""
    real = real_tokens(last, states.shape[1]).unsqueeze(-1)
    return (states * real).sum(1) / real.sum(1)
