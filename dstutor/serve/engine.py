"""The generation engine: a batch of prompts of any lengths through one forward pass per step.

It runs transformers' DeepseekV3ForCausalLM (our weights, as `dstutor pretrain` saves them) because
batching prompts of different lengths needs left padding with an attention mask and matching
positions, which transformers' model takes and our teaching model does not.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dstutor.models.model import sample_next


@dataclass
class Generation:
    """One request as the engine sees it."""

    prompt_ids: list[int]      # the tokenised prompt (chat template already applied)
    max_tokens: int            # new tokens at most
    temperature: float = 1.0   # 0: greedy; otherwise softmax(logits / temperature) is sampled
    top_p: float = 1.0         # nucleus sampling: keep the most likely tokens up to this mass
    seed: int | None = None    # a seed makes sampling repeatable


# emit(row, token_id, finish_reason): a new token (finish_reason None), or the end (token_id None).
Emit = Callable[[int, int | None, str | None], None]


class Engine:
    """A checkpoint folder (config.json, model.safetensors, tokenizer files) loaded for generation."""

    def __init__(self, path: str | Path):
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no checkpoint at {str(path)!r}: expected a folder with config.json, as "
                                    f"`dstutor pretrain --out RUN` writes to RUN/model")
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                          experts_implementation="eager").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.context = self.model.config.max_position_embeddings
        self.eos = self.tokenizer.eos_token_id
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def generate(self, batch: list[Generation], emit: Emit) -> None:
        """Decode every request of the batch together; rows that finish early ride along until all are done."""
        longest = max(len(g.prompt_ids) for g in batch)
        ids = torch.tensor([[self.pad] * (longest - len(g.prompt_ids)) + g.prompt_ids for g in batch])
        mask = torch.tensor([[0] * (longest - len(g.prompt_ids)) + [1] * len(g.prompt_ids) for g in batch])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        seeds = [g.seed if g.seed is not None else secrets.randbits(63) for g in batch]
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        done, produced, cache = [False] * len(batch), [0] * len(batch), None
        while not all(done):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1].float()
            tokens = [self._pick(logits[row], g, generators[row]) for row, g in enumerate(batch)]
            for row, g in enumerate(batch):
                if done[row]:
                    continue
                if tokens[row] == self.eos:
                    done[row] = True
                    emit(row, None, "stop")
                    continue
                produced[row] += 1
                emit(row, tokens[row], None)
                if produced[row] >= g.max_tokens:
                    done[row] = True
                    emit(row, None, "length")
            ids = torch.tensor(tokens)[:, None]
            mask = torch.cat([mask, torch.ones(len(batch), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1

    @staticmethod
    def _pick(logits: torch.Tensor, request: Generation, generator: torch.Generator) -> int:
        return int(sample_next(logits[None], request.temperature, None, generator, request.top_p)[0])
