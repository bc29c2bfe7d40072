"""Measures of generated text that need no reference answer."""
from __future__ import annotations

from collections.abc import Sequence


def repeated_ngram_fraction(tokens: Sequence[int], n: int = 4) -> float:
    """Share of the n-grams in `tokens` that already occurred earlier in it (0: no repetition)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        raise ValueError(f"need at least n={n} tokens, got {len(tokens)}")
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)
