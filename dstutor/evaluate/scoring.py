"""What a language model says about text: choice log-likelihoods, per-text losses, greedy answers,
attention entropy and speed. The building blocks `evaluate` and the probes share.

Choices are scored as lm-evaluation-harness scores them (the continuation's tokens are the tokens of
context + continuation after those of the context alone, fed after the context's own tokens), so the
two agree document by document.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from transformers import PreTrainedTokenizerFast

from dstutor.finetune.sft import answers
from dstutor.models import DeepSeekLM
from dstutor.timing import interleaved_seconds


def _padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.bool)
    return ids, mask


@torch.no_grad()
def _token_logprobs(model: DeepSeekLM, rows: list[list[int]], pad: int, batch_size: int) -> list[np.ndarray]:
    """Log-probability of every token after the first, per row (right-padding cannot leak: the model is causal)."""
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # rows of similar length share a batch: less padding
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    for start in range(0, len(rows), batch_size):
        members = order[start:start + batch_size]
        ids, _ = _padded([rows[i] for i in members], pad)
        logprobs = F.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        for j, i in enumerate(members):
            out[i] = picked[j, :len(rows[i]) - 1].numpy()
    return out


def continuation_logliks(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast,
                         pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
    """Summed log-likelihood (nats) of each continuation given its context, tokenised as lm-eval does."""
    rows, lengths = [], []
    for context, continuation in pairs:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        if not context_ids or len(context_ids) >= len(whole):
            raise ValueError(f"context and continuation must both be non-empty text; got {context!r}, {continuation!r}")
        # The context as tokenised alone, then the rest of the whole: where a token spans the boundary, this
        # differs from `whole`, and lm-eval feeds this.
        rows.append(context_ids + whole[len(context_ids):])
        lengths.append(len(whole) - len(context_ids))
    scores = _token_logprobs(model, rows, tokenizer.pad_token_id, batch_size)
    return np.array([row[-length:].sum() for row, length in zip(scores, lengths)])


def choice_predictions(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast,
                       docs: Sequence[dict]) -> tuple[list[int], list[np.ndarray]]:
    """The index of the most likely choice of each doc (context, choices, label), and every choice's log-likelihood."""
    if not docs:
        raise ValueError("no documents to score: the task is empty")
    pairs = [(doc["context"], choice) for doc in docs for choice in doc["choices"]]
    flat = continuation_logliks(model, tokenizer, pairs)
    logliks, start = [], 0
    for doc in docs:
        logliks.append(flat[start:start + len(doc["choices"])])
        start += len(doc["choices"])
    return [int(np.argmax(row)) for row in logliks], logliks


def calibrated_predictions(logliks: Sequence[np.ndarray], content_free: Sequence[np.ndarray]) -> list[int]:
    """Contextual calibration (Zhao et al. 2021): each choice's probability divided by its mean probability
    after content-free inputs, then the argmax; a prior for one label no longer decides every answer."""
    if not content_free:
        raise ValueError("no content-free scores to calibrate with")
    if {len(row) for row in [*logliks, *content_free]} != {len(content_free[0])}:
        raise ValueError("every doc and content-free input must score the same choices")
    normalised = lambda row: np.asarray(row) - np.logaddexp.reduce(row)  # log-probabilities over the choices
    log_prior = np.log(np.mean([np.exp(normalised(row)) for row in content_free], axis=0))
    return [int(np.argmax(normalised(row) - log_prior)) for row in logliks]


def text_losses(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str],
                max_tokens: int = 64, batch_size: int = 64) -> np.ndarray:
    """Mean next-token loss (nats) of each text, on its first max_tokens tokens."""
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens] for text in texts]
    if any(len(row) < 2 for row in rows):
        raise ValueError("every text needs at least two tokens to have a next-token loss")
    return np.array([-row.mean() for row in _token_logprobs(model, rows, tokenizer.pad_token_id, batch_size)])


def greedy_answers(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str],
                   max_new_tokens: int = 24) -> list[str]:
    """The model's greedy reply to each prompt in the chat template, up to eos."""
    return [tokenizer.decode(reply) for reply in answers(model, tokenizer, list(prompts), max_new_tokens)]


@torch.no_grad()
def attention_entropy(model: DeepSeekLM, input_ids: torch.Tensor) -> pd.DataFrame:
    """Per layer and head: mean attention entropy over queries (nats) and concentration = 1 − entropy / log(keys seen).

    Concentration is 1 when every query attends to one token and 0 when it spreads evenly over all it can see.
    """
    model.eval()
    maps = model(input_ids, need_weights=True).attentions  # per layer: (batch, heads, queries, keys)
    visible = torch.arange(1, input_ids.shape[1] + 1, dtype=torch.float32)  # causal: query i sees i + 1 keys
    rows = []
    for layer, weights in enumerate(maps):
        entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)  # (batch, heads, queries)
        relative = entropy[..., 1:] / visible[1:].log()  # the first query has one key: no choice to make
        for head in range(weights.shape[1]):
            rows.append({"layer": layer, "head": head, "entropy": float(entropy[:, head].mean()),
                         "concentration": float(1 - relative[:, head].mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def speed(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, prompt: str, new_tokens: int = 24,
          repeats: int = 5) -> dict[str, float]:
    """Median seconds to answer one prompt greedily (batch 1, KV cache) and tokens per second of the whole answer,
    prefill included (what a user waits for; `dstutor.timing.decode_rate` leaves the prefill out)."""
    model.eval()
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    seconds = interleaved_seconds({"answer": lambda _: model.generate(ids, new_tokens)}, repeats + 1)["answer"]
    median = float(np.median(seconds))
    return {"latency_s": median, "tokens_per_s": new_tokens / median,
            "latency_low": float(np.min(seconds)), "latency_high": float(np.max(seconds))}


@torch.no_grad()
def interleaved_speed(models: Mapping[str, DeepSeekLM], tokenizer: PreTrainedTokenizerFast, prompt: str,
                      new_tokens: int = 24, rounds: int = 7) -> pd.DataFrame:
    """Tokens/s of the whole answer, prefill included, per model (median, min, max over rounds), the models
    timed in turn within each round (`dstutor.timing`: models of equal size then compare equal)."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    seconds = interleaved_seconds({name: lambda _, model=model: model.eval().generate(ids, new_tokens)
                                   for name, model in models.items()}, rounds + 1)
    rates = {name: [new_tokens / s for s in times] for name, times in seconds.items()}
    return pd.DataFrame({"tokens_per_s": {n: np.median(r) for n, r in rates.items()},
                         "min": {n: min(r) for n, r in rates.items()}, "max": {n: max(r) for n, r in rates.items()}})
