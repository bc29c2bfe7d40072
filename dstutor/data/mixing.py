"""Domain mixing: a seeded sampler that draws training blocks by domain weight, and reweighting of
those weights from per-domain validation loss while training runs (in the spirit of DoReMi).

[Training essentials] recommends a fixed 60/30/10 mix of base / domain / recent data; `FIXED_60_30_10_MIX` is that mix.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping

import datasets
import pandas as pd
import torch

FIXED_60_30_10_MIX = {"base": 0.6, "domain": 0.3, "recent": 0.1}


def normalized(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1; errors name a bad domain."""
    bad = {d: w for d, w in weights.items() if not (w >= 0 and math.isfinite(w))}
    if bad or not weights or sum(weights.values()) <= 0:
        raise ValueError(f"domain weights must be finite, ≥ 0 and not all 0; got {dict(weights)}")
    total = sum(weights.values())
    return {d: w / total for d, w in weights.items()}


class DomainMixer:
    """Batches of token blocks whose domains follow `weights` (which may change between batches)."""

    def __init__(self, domains: Mapping[str, datasets.Dataset], weights: Mapping[str, float], seed: int = 0):
        missing = set(weights) ^ set(domains)
        if missing:
            raise ValueError(f"weights and domains must name the same domains; mismatched: {sorted(missing)}")
        empty = [d for d, blocks in domains.items() if len(blocks) == 0]
        if empty:
            raise ValueError(f"domains without any blocks: {empty}")
        self.domains = {d: blocks.with_format("torch") for d, blocks in domains.items()}
        self.weights = normalized(weights)
        self.rng = random.Random(seed)
        self._orders = {d: [] for d in domains}
        self.drawn = {d: 0 for d in domains}

    def _next_index(self, domain: str) -> int:
        # Walk a fresh random permutation of each domain: no block repeats before all were seen.
        if not self._orders[domain]:
            order = list(range(len(self.domains[domain])))
            self.rng.shuffle(order)
            self._orders[domain] = order
        return self._orders[domain].pop()

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """An endless stream of (batch_size, block) LongTensors drawn by the current weights."""
        names = list(self.domains)
        while True:
            chosen = self.rng.choices(names, weights=[self.weights[d] for d in names], k=batch_size)
            for d in chosen:
                self.drawn[d] += 1
            yield torch.stack([self.domains[d][self._next_index(d)]["input_ids"] for d in chosen])


def reweight(weights: Mapping[str, float], losses: Mapping[str, float], reference: Mapping[str, float] | None = None,
             step_size: float = 1.0, floor: float = 0.02) -> dict[str, float]:
    """Exponentiated-gradient step: domains whose loss exceeds the reference gain weight.

    w_d ← w_d · exp(step_size · (loss_d − reference_d)), renormalised, then mixed with a uniform
    floor so that no domain is starved. Without a reference, the mean loss is the reference.
    """
    mean = sum(losses.values()) / len(losses)
    reference = reference or {d: mean for d in losses}
    raw = normalized({d: w * math.exp(step_size * (losses[d] - reference[d])) for d, w in weights.items()})
    return normalized({d: (1 - floor * len(raw)) * w + floor for d, w in raw.items()})


class LossReweighting:
    """Trainer callback: every `every` steps, measure each domain's validation loss and reweight the mixer."""

    def __init__(self, mixer: DomainMixer, val_loaders: Mapping[str, object], every: int, step_size: float = 1.0):
        self.mixer, self.val_loaders, self.every, self.step_size = mixer, val_loaders, every, step_size
        self.log: list[dict] = []

    def __call__(self, trainer, model, row: dict) -> None:
        if row["step"] % self.every:
            return
        losses = {d: trainer.evaluate(model, loader)["val_loss"] for d, loader in self.val_loaders.items()}
        model.train()
        self.mixer.weights = reweight(self.mixer.weights, losses, step_size=self.step_size)
        self.log.append({"step": row["step"], **{f"loss {d}": v for d, v in losses.items()},
                         **{f"weight {d}": w for d, w in self.mixer.weights.items()}})

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.log)


def balanced_text_sample(corpora: Mapping[str, datasets.Dataset], chars_per_corpus: int,
                         max_doc_chars: int = 20_000) -> list[str]:
    """About the same number of characters from each corpus (documents cut at max_doc_chars), in order."""
    texts = []
    for corpus in corpora.values():
        budget = chars_per_corpus
        for text in corpus["text"]:
            if budget <= 0:
                break
            texts.append(text[:min(max_doc_chars, budget)])
            budget -= len(texts[-1])
    return texts
