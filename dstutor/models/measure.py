"""Measurements the architecture chapters report: KV-cache memory from real tensors, decode speed."""
from __future__ import annotations


import torch

from dstutor.models.attention import KVCache
from dstutor.models.config import DeepSeekConfig
from dstutor.models.model import DeepSeekLM
from dstutor.timing import decode_rate


@torch.no_grad()
def measured_cache_bytes(config: DeepSeekConfig, length: int, batch: int = 1) -> int:
    """Bytes in the KV cache after a prefill of `length` tokens (fp32 model, untrained weights)."""
    model = DeepSeekLM(config.replace(max_position_embeddings=max(length, config.max_position_embeddings))).eval()
    cache = KVCache(config.num_layers)
    model(torch.zeros(batch, length, dtype=torch.long), cache=cache)
    return cache.nbytes()


@torch.no_grad()
def decode_tokens_per_second(model: DeepSeekLM, context: int, new_tokens: int, absorb: bool,
                             repeats: int = 3) -> float:
    """Median greedy decoding speed (tokens/s, batch 1) after a `context`-token prompt, prefill excluded."""
    model.eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(next(model.parameters()).device)
    return decode_rate(lambda tokens: model.generate(prompt, tokens, absorb=absorb), new_tokens, repeats)
