"""Decoding speed and cache memory: ours (absorbed and naive MLA) vs transformers' DeepseekV3, same weights.

MLA caches one latent of kv_lora_rank + qk_rope_head_dim numbers per token and layer (DeepSeek-V2
§2.1.2); a standard cache holds every head's key and value (§2.1.1). The naive path expands the
cached latent into those keys and values at every step; the absorbed path attends over the latents.
"""
from __future__ import annotations


import pandas as pd
import torch
from tqdm.auto import tqdm

from dstutor.models.attention import KVCache
from dstutor.models.hf import to_hf
from dstutor.models.measure import decode_tokens_per_second
from dstutor.models.model import DeepSeekLM
from dstutor.timing import decode_rate


def _prompt(model, context: int) -> torch.Tensor:
    """A fixed random prompt of `context` tokens for either implementation (both have config.vocab_size)."""
    return torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))


def with_context(model: DeepSeekLM, length: int) -> DeepSeekLM:
    """The same weights allowed `length` positions (RoPE has no learned positions: only the bound changes)."""
    longer = DeepSeekLM(model.config.replace(max_position_embeddings=max(length, model.config.max_position_embeddings)))
    longer.load_state_dict(model.state_dict())
    return longer.eval()


def _hf_greedy(hf_model, prompt: torch.Tensor, tokens: int) -> torch.Tensor:
    """transformers' generate, greedy, exactly `tokens` new tokens: the speed a user of generate gets.

    min_new_tokens keeps it from stopping by masking the end token out, so where the model prefers
    the end token its tokens are not plain greedy ones: same_greedy_tokens compares hf_cached_greedy.
    """
    return hf_model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))


@torch.no_grad()
def hf_cached_greedy(hf_model, prompt: torch.Tensor, tokens: int) -> torch.Tensor:
    """Plain greedy decoding through transformers' forward and its own KV cache: the argmax at every step."""
    out, ids = hf_model(prompt, use_cache=True), prompt
    for _ in range(tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = hf_model(token, past_key_values=out.past_key_values, use_cache=True)
    return ids


@torch.no_grad()
def hf_decode_tokens_per_second(hf_model, context: int, new_tokens: int, repeats: int = 3) -> float:
    """transformers' generate (greedy, its own cache), timed as decode_tokens_per_second times ours."""
    prompt = _prompt(hf_model, context)
    return decode_rate(lambda tokens: _hf_greedy(hf_model, prompt, tokens), new_tokens, repeats)


@torch.no_grad()
def cache_bytes(model: DeepSeekLM, hf_model, context: int) -> dict[str, int]:
    """Bytes cached after a prefill of `context` tokens: ours, transformers', and a full per-head K/V cache.

    The full cache is measured from the tensors our naive path builds when it expands the latent into
    every head's key (no-position part from kv_b_proj, plus the shared RoPE key copied per head) and value.
    """
    prompt = _prompt(model, context)
    ours = KVCache(model.config.num_layers)
    model(prompt, cache=ours, absorb=True)
    theirs = hf_model(prompt, use_cache=True).past_key_values
    expanded = []
    hooks = [layer.self_attn.kv_b_proj.register_forward_hook(lambda m, i, out: expanded.append(out))
             for layer in model.model.layers]
    try:
        model(prompt)
    finally:
        for hook in hooks:
            hook.remove()
    rope_keys = model.config.num_heads * model.config.qk_rope_head_dim * context * 4 * len(expanded)
    return {"ours (latent)": ours.nbytes(),
            "transformers": sum(t.numel() * t.element_size() for layer in theirs.layers
                                for t in (layer.keys, layer.values)),
            "full per-head K/V": sum(t.numel() * t.element_size() for t in expanded) + rope_keys}


@torch.no_grad()
def same_greedy_tokens(model: DeepSeekLM, hf_model, context: int, new_tokens: int) -> bool:
    """Whether our cached greedy decoding and transformers' cached greedy decoding produce the same tokens."""
    prompt = _prompt(model, context)
    ours = model.generate(prompt, new_tokens, absorb=True)
    return torch.equal(ours, hf_cached_greedy(hf_model, prompt, new_tokens))


def decoding_table(model: DeepSeekLM, contexts: list[int], new_tokens: int = 16, repeats: int = 3) -> pd.DataFrame:
    """Long format: tokens/s per implementation and cache bytes per layout, for each context length."""
    model = with_context(model, max(contexts) + new_tokens)
    hf_model = to_hf(model)
    rows = []
    for context in tqdm(contexts, desc="contexts"):
        memory = cache_bytes(model, hf_model, context)
        speeds = {"ours, absorbed": decode_tokens_per_second(model, context, new_tokens, True, repeats),
                  "ours, naive": decode_tokens_per_second(model, context, new_tokens, False, repeats),
                  "transformers": hf_decode_tokens_per_second(hf_model, context, new_tokens, repeats)}
        rows += [{"context": context, "implementation": name, "tokens_per_s": rate} for name, rate in speeds.items()]
        rows += [{"context": context, "implementation": f"cache: {name}", "cache_bytes": size}
                 for name, size in memory.items()]
    return pd.DataFrame(rows)
