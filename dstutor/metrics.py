"""Every metric of the course, one definition each: accuracy, macro-F1, chrF, BLEU, ROUGE, repeated n-grams,
bootstrap confidence intervals and the held-out loss. It sits below models, train, finetune and evaluate.

BLEU and chrF come from sacrebleu (BLEU with its "zh" tokenizer when the references hold Chinese, so
each character is a word); ROUGE from rouge-score with a tokenizer that keeps Chinese characters,
which its default tokenizer silently drops. A bootstrap resample re-aggregates per-item statistics
(n-gram counts, F-measures, label pairs) instead of re-scoring the texts: the same numbers, as
sacrebleu's own bootstrap does, in a fraction of the time.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import contextlib
from collections.abc import Iterable
from typing import ContextManager

import numpy as np
import sacrebleu
import torch
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

IGNORE_INDEX = -100  # the label value cross-entropy skips (prompt and padding positions)
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
UNITS = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+")  # one Chinese character, or a word


class CharacterTokenizer:
    """rouge-score tokenizer: each Chinese character is a token, other text splits into words (lower-cased)."""

    def tokenize(self, text: str) -> list[str]:
        return UNITS.findall(text.lower())


def _has_chinese(texts: Sequence[str]) -> bool:
    return any(CJK.search(text) for text in texts)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (0–100); tokenize='zh' when the references contain Chinese, '13a' otherwise."""
    check_pairs(predictions, references)
    tokenize = "zh" if _has_chinese(references) else "13a"
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize).score


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character 6-gram F-score, β = 2, 0–100): needs no word segmentation, fair to Chinese."""
    check_pairs(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), [list(references)]).score


def _rouge_fmeasures(kind: str, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    scorer = rouge_scorer.RougeScorer([kind], tokenizer=CharacterTokenizer())
    return np.array([scorer.score(r, p)[kind].fmeasure for p, r in zip(predictions, references)])


def _rouge(kind: str) -> Callable[[Sequence[str], Sequence[str]], float]:
    def score(predictions: Sequence[str], references: Sequence[str]) -> float:
        return 100 * float(np.mean(_rouge_fmeasures(kind, predictions, references)))
    score.__doc__ = f"Mean {kind} F-measure over the pairs (0–100), Chinese scored per character."
    return score


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of exact matches (0–1)."""
    check_pairs(predictions, references)
    return float(accuracy_score(references, predictions))


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Mean of the per-class F1 over the classes in the references (0–1): a constant guess scores low."""
    check_pairs(predictions, references)
    return float(f1_score(references, predictions, labels=sorted(set(references)), average="macro", zero_division=0))


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


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy, "macro_f1": macro_f1, "bleu": bleu, "chrf": chrf,
    "rouge1": _rouge("rouge1"), "rougeL": _rouge("rougeL"),
}


Statistics = tuple[np.ndarray, Callable[[np.ndarray], float]]


def _sacrebleu_statistics(scorer, predictions: Sequence[str], references: Sequence[str]) -> Statistics:
    # The corpus score is a function of the summed per-sentence n-gram counts (sacrebleu's own bootstrap uses this).
    counts = np.array(scorer._extract_corpus_statistics(list(predictions), [list(references)]))
    return counts, lambda rows: scorer._compute_score_from_stats(rows.sum(0)).score


def _macro_f1_of_pairs(rows: np.ndarray) -> float:
    """macro_f1 of (reference, prediction) rows: per-class 2·TP / (true + predicted), classes of the references."""
    references, predictions = rows[:, 0], rows[:, 1]
    return float(np.mean([2.0 * np.sum((references == c) & (predictions == c))
                          / (np.sum(references == c) + np.sum(predictions == c)) for c in np.unique(references)]))


def item_statistics(name: str, predictions: Sequence, references: Sequence) -> Statistics:
    """Per-item statistics (one row per item) and the named metric as a function of any sample of those rows."""
    if name in ("bleu", "chrf"):
        scorer = (sacrebleu.BLEU(tokenize="zh" if _has_chinese(references) else "13a") if name == "bleu"
                  else sacrebleu.CHRF())
        return _sacrebleu_statistics(scorer, predictions, references)
    if name.startswith("rouge"):
        return _rouge_fmeasures(name, predictions, references), lambda rows: 100 * float(np.mean(rows))
    if name == "accuracy":
        return np.asarray(predictions) == np.asarray(references), lambda rows: float(np.mean(rows))
    return np.column_stack([references, predictions]), _macro_f1_of_pairs


def check_pairs(predictions: Sequence, references: Sequence) -> None:
    """Raise ValueError unless predictions and references are non-empty and equally long."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: they must pair up")
    if not len(predictions):
        raise ValueError("no predictions to score: the lists are empty")


def metric(name: str) -> Callable[[Sequence, Sequence], float]:
    """The metric function called `name`; ValueError listing the known ones otherwise."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name]


def score(name: str, predictions: Sequence, references: Sequence) -> float:
    """The named metric of the predictions against the references."""
    function = metric(name)
    check_pairs(predictions, references)
    return function(predictions, references)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(indices) over n items resampled with replacement."""
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n ≥ 1, n_boot ≥ 1 and 0 < level < 1; got n={n}, n_boot={n_boot}, level={level}")
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(n_boot)]
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def score_with_ci(name: str, predictions: Sequence, references: Sequence, n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of the named metric; the interval resamples the items (corpus metrics re-aggregated)."""
    function = metric(name)
    check_pairs(predictions, references)
    statistics, of_rows = item_statistics(name, predictions, references)
    return (function(predictions, references),
            *bootstrap_ci(lambda indices: of_rows(statistics[indices]), len(predictions), n_boot, seed=seed))


def mean_with_ci(values: Sequence[float], transform: Callable[[float], float] = float, n_boot: int = 1000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(transform(mean), ci_low, ci_high) of per-item values, e.g. exp of the mean loss: perplexity."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no values to average: the list is empty")
    return (transform(array.mean()),
            *bootstrap_ci(lambda idx: transform(array[idx].mean()), array.size, n_boot, seed=seed))


# One held-out loss for the whole course: every prediction counts once, whichever batch it falls in.
# A batch's `main_loss` is a mean over its graded predictions; averaging those means would weigh a
# prediction in a short batch (or a short SFT answer) more than one in a long one.
def graded_predictions(batch: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """How many predictions a batch's main loss averages over: next tokens with a label, or examples."""
    if not isinstance(batch, dict):
        return batch[:, 1:].numel()  # a batch of token blocks: every next token
    labels = batch.get("labels")
    if labels is None:  # a contrastive batch: one prediction per example
        return len(next(iter(batch.values())))
    return int((labels[:, 1:] != IGNORE_INDEX).sum()) if labels.ndim == 2 else len(labels)


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Iterable[torch.Tensor | dict[str, torch.Tensor]],
              autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> float:
    """Mean main loss per graded prediction over all batches (Σ loss·n / Σ n), on the model's own device."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)
        n = graded_predictions(batch)
        if not n:
            continue  # a batch with no graded prediction has no loss to average (cross-entropy returns NaN)
        with autocast():
            out = model(**batch) if isinstance(batch, dict) else model(batch, labels=batch)
        total, count = total + out.main_loss.item() * n, count + n
    if not count:
        raise ValueError("the validation data yielded no batches with a graded prediction")
    return total / count
