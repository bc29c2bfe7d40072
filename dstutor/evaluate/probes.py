"""Probes beyond the score: robustness to input noise and a counterfactual gap on a constructed attribute."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerFast

from dstutor.data.tokenizer import chat_prompt
from dstutor.evaluate.noise import noisy
from dstutor.evaluate.scoring import choice_predictions, continuation_logliks, text_losses
from dstutor.evaluate.suite import SENTIMENT_CHOICES, sentiment_question
from dstutor.metrics import accuracy, mean_with_ci
from dstutor.models import DeepSeekLM


def _noisy_docs(docs: Sequence[dict], tokenizer: PreTrainedTokenizerFast, kind: str, level: float,
                seed: int) -> list[dict]:
    """The docs with noisy questions; the chat-template tags and the choices stay clean."""
    return [{**doc, "context": chat_prompt(tokenizer, noisy([doc["question"]], kind, level, seed)[0], tokenize=False)}
            for doc in docs]


def robustness_curve(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str],
                     docs: Sequence[dict], kinds: Sequence[str], levels: Sequence[float], seed: int = 0,
                     with_accuracy: bool = True) -> pd.DataFrame:
    """Held-out perplexity of noisy texts and accuracy on noisy questions, per noise kind and level.

    with_accuracy=False measures perplexity only (accuracy NaN): for a model already at chance on the clean docs.
    """
    rows, measured = [], {}
    labels = [doc["label"] for doc in docs]
    for kind in kinds:
        for level in levels:
            key = (kind if level else "clean", level)  # level 0 leaves every text as it is: one measurement for all kinds
            if key not in measured:
                losses = text_losses(model, tokenizer, noisy(texts, kind, level, seed))
                score = float("nan")
                if with_accuracy:
                    predictions, _ = choice_predictions(model, tokenizer, _noisy_docs(docs, tokenizer, kind, level, seed))
                    score = accuracy(predictions, labels)
                measured[key] = {"perplexity": float(np.exp(losses.mean())), "accuracy": score}
            rows.append({"kind": kind, "level": level, **measured[key]})
    return pd.DataFrame(rows)


def robustness_score(curve: pd.DataFrame, level: float) -> float:
    """Clean perplexity over noisy perplexity at `level`, averaged over kinds: 1 = unaffected, → 0 = lost."""
    clean = curve[curve.level == 0].set_index("kind").perplexity
    noisy_at = curve[curve.level == level].set_index("kind").perplexity
    if clean.empty or noisy_at.empty:
        raise ValueError(f"the curve needs levels 0 and {level}; it has {sorted(curve.level.unique())}")
    return float((clean / noisy_at).mean())


def counterfactual_gap(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str],
                       variants: tuple[str, str] = ("我是男生。", "我是女生。"), choices: tuple[str, str] = SENTIMENT_CHOICES,
                       n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """How P(positive) moves when the same review is prefixed by one attribute sentence or the other.

    The mean of P(positive | variant 0) − P(positive | variant 1) over the reviews, with a bootstrap
    interval, and the mean absolute change. It measures this model's sensitivity to this template,
    nothing about people.
    """
    if not texts:
        raise ValueError("no reviews to probe: the list is empty")
    positive = []
    for variant in variants:
        pairs = [(chat_prompt(tokenizer, sentiment_question(variant + text), tokenize=False), choice)
                 for text in texts for choice in choices]
        logliks = continuation_logliks(model, tokenizer, pairs).reshape(len(texts), len(choices))
        logliks -= logliks.max(1, keepdims=True)
        positive.append(np.exp(logliks[:, 1]) / np.exp(logliks).sum(1))
    difference = positive[0] - positive[1]
    gap, low, high = mean_with_ci(difference, n_boot=n_boot, seed=seed)
    return {"gap": gap, "ci_low": low, "ci_high": high, "mean_abs_change": float(np.abs(difference).mean()),
            "n": len(texts)}
