"""Cross-attention fusion: [Training essentials §2.1]'s DualAttention (self- then cross-attention) as a matcher.

A dual encoder embeds each side alone, so one caption embedding serves every image and retrieval is
a matrix product. A fusion model lets every caption token attend to the image's patches and scores
each pair jointly: a batch of B pairs costs B² fused passes, and so does every retrieval query.
"""
from __future__ import annotations

import torch
from torch import nn

from dstutor.multimodal.clip import ClipOutput, symmetric_cross_entropy
from dstutor.multimodal.encoders import TextEncoder, TinyViT, real_tokens


class FusionMatcher(nn.Module):
    """Caption tokens self-attend, then attend to image patch states; a linear head scores the pair.

    The self-attention does not depend on the image and the patch keys and values do not depend on
    the caption, so each is computed once; only the cross-attention itself runs per pair.
    """

    def __init__(self, image_encoder: TinyViT, text_encoder: TextEncoder, heads: int = 4):
        super().__init__()
        width = text_encoder.features
        if width % heads:
            raise ValueError(f"heads={heads} must divide the text width {width}")
        self.image_encoder, self.text_encoder, self.heads = image_encoder, text_encoder, heads
        self.image_proj = nn.Linear(image_encoder.features, width)
        self.self_norm, self.cross_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
        self.score = nn.Linear(width, 1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (n, L, d) → (n, heads, L, d/heads)

    def pair_scores(self, pixels: torch.Tensor, input_ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Scores of every image with every caption: (images, captions)."""
        patches = self.image_proj(self.image_encoder.tokens(pixels))                 # (I, P, d)
        words = self.text_encoder.tokens(input_ids, last)                               # (C, T, d)
        padding = ~real_tokens(last, words.shape[1])
        h = self.self_norm(words)
        words = words + self.self_attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        q = self._split(self.query(self.cross_norm(words)))                            # (C, h, T, e)
        k, v = self._split(self.key(patches)), self._split(self.value(patches))         # (I, h, P, e)
        weights = torch.einsum("chte,ihpe->ichtp", q, k).mul(q.shape[-1] ** -0.5).softmax(-1)
        # The pair's output is its tokens' mean, and the mean commutes with the linear maps: average
        # the attention weights over real tokens first, and the (I, C, T, d) states are never built.
        share = real_tokens(last, words.shape[1]).float()
        share = share / share.sum(1, keepdim=True)                                      # (C, T)
        mixed = torch.einsum("ichtp,ct,ihpe->iche", weights, share, v).flatten(-2)     # (I, C, d)
        pooled = (words * share[..., None]).sum(1) + self.out(mixed)                    # (I, C, d)
        return self.score(pooled).squeeze(-1)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, last: torch.Tensor, **_) -> ClipOutput:
        if len(pixels) != len(input_ids):
            raise ValueError(f"{len(pixels)} images but {len(input_ids)} captions: a batch pairs them one to one")
        logits = self.pair_scores(pixels, input_ids, last)
        loss = symmetric_cross_entropy(logits)
        return ClipOutput(logits, loss, loss)


@torch.no_grad()
def fused_similarity(model: FusionMatcher, pixels: torch.Tensor, input_ids: torch.Tensor, last: torch.Tensor,
                     chunk: int = 8) -> torch.Tensor:
    """pair_scores for many images and captions, in chunks of images (evaluation mode)."""
    model.eval()
    device = next(model.parameters()).device
    ids, last = input_ids.to(device), last.to(device)
    return torch.cat([model.pair_scores(pixels[i:i + chunk].to(device), ids, last).float().cpu()
                      for i in range(0, len(pixels), chunk)])
