"""Sampling groups of completions with the KV cache, scoring them, and pass@k (Chen et al. 2021, §2.1).

A rollout batch holds G samples of each problem. Prompts of equal length are generated together in one
cached `generate` call; everything after a completion's first <eos> is masked out.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerFast

from dstutor.data.tokenizer import chat_prompt, until_end
from dstutor.models import DeepSeekLM
from dstutor.rl.rewards import accuracy_reward, format_reward
from dstutor.rl.tasks import Problem

Reward = Callable[[str, Problem], float]


@dataclass
class Rollouts:
    """G completions per problem: token ids (rows grouped by problem), which positions are completion, texts."""

    sequences: torch.Tensor   # (P·G, length ≤ prompt + max_new_tokens) token ids, padded
    mask: torch.Tensor        # (P·G, length − 1) 1 where position t+1 is a completion token (eos included)
    texts: list[str]          # the decoded completions, eos and what follows removed
    problems: list[Problem]   # the problem of each row
    group_size: int
    decoded_tokens: int       # tokens the model decoded (rows × steps, past each row's eos too): the work done

    @property
    def lengths(self) -> torch.Tensor:
        """Completion length of each row in tokens (eos included)."""
        return self.mask.sum(dim=1)

    def subset(self, rows: torch.Tensor) -> Rollouts:
        """The rows where the boolean `rows` is true (whole groups keep group_size; the count of work stays)."""
        chosen = rows.nonzero().flatten().tolist()
        return Rollouts(self.sequences[rows], self.mask[rows], [self.texts[i] for i in chosen],
                        [self.problems[i] for i in chosen], self.group_size, self.decoded_tokens)


@torch.no_grad()
def rollout(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem], group_size: int,
            max_new_tokens: int, temperature: float, generator: torch.Generator | None = None) -> Rollouts:
    """group_size sampled completions of every problem (temperature 0: greedy, all identical)."""
    if group_size < 1 or not problems:
        raise ValueError(f"need group_size ≥ 1 and at least one problem, got {group_size} and {len(problems)}")
    model.eval()
    prompts = [chat_prompt(tokenizer, p.prompt) for p in problems]
    width = max(map(len, prompts)) + max_new_tokens
    sequences = torch.full((len(problems) * group_size, width), tokenizer.pad_token_id)
    mask = torch.zeros(len(problems) * group_size, width - 1)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)
    decoded, used = 0, 0
    for length, members in by_length.items():  # one cached generate call per prompt length
        batch = torch.tensor([prompts[i] for i in members]).repeat_interleave(group_size, dim=0)
        out = model.generate(batch, max_new_tokens, temperature=temperature, generator=generator,
                             eos_token_id=tokenizer.eos_token_id)
        rows = torch.tensor([i * group_size + g for i in members for g in range(group_size)])
        sequences[rows, : out.shape[1]] = out
        completion = out[:, length:]
        decoded, used = decoded + completion.numel(), max(used, out.shape[1])
        ended = (completion == tokenizer.eos_token_id).cumsum(dim=1)
        keep = (ended == 0) | ((ended == 1) & (completion == tokenizer.eos_token_id))  # up to the first eos
        mask[rows, length - 1: length - 1 + completion.shape[1]] = keep.float()
    # Columns past the longest decode hold only padding: cut them, so the update does not compute them.
    sequences, mask = sequences[:, :used], mask[:, :used - 1]
    texts = []
    for row, problem_index in enumerate(np.repeat(np.arange(len(problems)), group_size)):
        start = len(prompts[problem_index])
        texts.append(tokenizer.decode(until_end(sequences[row, start:start + int(mask[row].sum())].tolist(),
                                                tokenizer.eos_token_id)))
    return Rollouts(sequences, mask, texts, [p for p in problems for _ in range(group_size)], group_size, decoded)


def score(rollouts: Rollouts, reward: Reward) -> torch.Tensor:
    """Rewards (P, G) of every completion; a reward that is not a finite number is an error."""
    values = []
    for text, problem in zip(rollouts.texts, rollouts.problems):
        value = reward(text, problem)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise TypeError(f"the reward function must return a finite number, got {value!r} "
                            f"({type(value).__name__}) for completion {text[:40]!r}")
        values.append(float(value))
    return torch.tensor(values).view(-1, rollouts.group_size)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which `correct` are right: 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 ≤ correct ≤ n and 1 ≤ k ≤ n, got n={n}, correct={correct}, k={k}")
    return 1.0 if n - correct < k else 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def evaluate_policy(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem],
                    samples: int = 8, ks: tuple[int, ...] = (1, 8), temperature: float = 1.0,
                    max_new_tokens: int = 40, seed: int = 0) -> dict[str, float]:
    """pass@k (sampled), greedy accuracy, the share of well-formatted replies and their mean length."""
    generator = torch.Generator().manual_seed(seed)
    sampled = rollout(model, tokenizer, problems, samples, max_new_tokens, temperature, generator)
    correct = score(sampled, accuracy_reward).sum(dim=1).int().tolist()
    greedy = rollout(model, tokenizer, problems, 1, max_new_tokens, 0.0)
    result = {f"pass@{k}": float(np.mean([pass_at_k(samples, c, k) for c in correct])) for k in ks}
    result["greedy"] = score(greedy, accuracy_reward).mean().item()
    result["format"] = score(sampled, lambda text, _: format_reward(text)).mean().item()
    result["length"] = sampled.lengths.float().mean().item()
    return result


def rejection_sample(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem],
                     samples: int, max_new_tokens: int = 40, temperature: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Sample `samples` replies per problem and keep the correct, well-formatted, distinct ones (R1 §2.3.3)."""
    generator = torch.Generator().manual_seed(seed)
    sampled = rollout(model, tokenizer, problems, samples, max_new_tokens, temperature, generator)
    kept = [(p.prompt, text, p.task, p.level) for text, p in zip(sampled.texts, sampled.problems)
            if accuracy_reward(text, p) == 1.0]
    return pd.DataFrame(kept, columns=["prompt", "answer", "task", "level"]).drop_duplicates().reset_index(drop=True)
