"""The weighted six-dimension evaluation matrix of [Training essentials §6.1], made measurable.

Each dimension is a number in [0, 1], higher is better, defined from measured values:
accuracy = ROUGE-L of explanations of idioms no model trained on / 100; robustness = clean over noisy
perplexity; efficiency = decoding speed relative to the fastest model; interpretability = attention
concentration; fairness = 1 − |counterfactual gap|; adaptability = calibrated zero-shot sentiment
macro-F1 above its chance level, as a share of the way from chance to 1.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

SEED_WEIGHTS = {"accuracy": 0.3, "robustness": 0.2, "efficiency": 0.15, "interpretability": 0.15,
                "fairness": 0.1, "adaptability": 0.1}  # the guide's weights, in its order
DIMENSIONS = tuple(SEED_WEIGHTS)


def raw_measures(rows: pd.DataFrame, probes: pd.DataFrame, tokens_per_s: pd.Series,
                 generation_task: str = "explain_unseen") -> pd.DataFrame:
    """What dimension_scores reads, per model of `probes` (robustness, concentration, gap): the ROUGE-L of
    `generation_task` and the calibrated sentiment macro-F1 with its chance level from evaluate()'s rows, and speed."""
    rouge = rows[(rows.task == generation_task) & (rows.metric == "rougeL")].set_index("model").value
    sentiment = rows[(rows.task == "sentiment_calibrated") & (rows.metric == "macro_f1")].set_index("model")
    missing = {name: sorted(set(probes.index) - set(index)) for name, index in
               (("ROUGE-L", rouge.index), ("sentiment", sentiment.index), ("speed", tokens_per_s.index))}
    if any(missing.values()):
        raise ValueError(f"models without a measure: { {k: v for k, v in missing.items() if v} }")
    return pd.DataFrame({"rougeL": rouge, "robustness": probes.robustness, "tokens_per_s": tokens_per_s,
                         "concentration": probes.concentration, "gap": probes.gap,
                         "sentiment_macro_f1": sentiment.value, "sentiment_chance": sentiment.chance}).loc[probes.index]


def dimension_scores(measures: pd.DataFrame) -> pd.DataFrame:
    """Per model (rows) the six dimensions in [0, 1] from raw measures.

    measures: one row per model with columns rougeL (0–100), robustness, tokens_per_s, concentration,
    gap, sentiment_macro_f1 and sentiment_chance (a guess's macro-F1: adaptability 0 at or below it).
    """
    needed = {"rougeL", "robustness", "tokens_per_s", "concentration", "gap", "sentiment_macro_f1", "sentiment_chance"}
    if missing := needed - set(measures.columns):
        raise ValueError(f"measures lack columns {sorted(missing)}; need {sorted(needed)}")
    above_chance = (measures.sentiment_macro_f1 - measures.sentiment_chance) / (1 - measures.sentiment_chance)
    return pd.DataFrame({
        "accuracy": measures.rougeL / 100,
        "robustness": measures.robustness.clip(0, 1),
        "efficiency": measures.tokens_per_s / measures.tokens_per_s.max(),
        "interpretability": measures.concentration.clip(0, 1),
        "fairness": 1 - measures.gap.abs().clip(0, 1),
        "adaptability": above_chance.clip(0, 1),
    }, index=measures.index)[list(DIMENSIONS)]


def weighted_score(scores: pd.DataFrame, weights: Mapping[str, float] = SEED_WEIGHTS) -> pd.Series:
    """Σ weight × dimension / Σ weight per model; weights need not sum to 1 but must be ≥ 0, not all 0."""
    unknown = set(weights) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown dimensions {sorted(unknown)}; the matrix has {list(DIMENSIONS)}")
    w = pd.Series({d: float(weights.get(d, 0.0)) for d in DIMENSIONS})
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be ≥ 0 and not all zero; got {dict(w)}")
    return scores[list(DIMENSIONS)] @ (w / w.sum())


def top_model_stability(scores: pd.DataFrame, weights: Mapping[str, float] = SEED_WEIGHTS, samples: int = 2000,
                        concentration: float = 20.0, seed: int = 0) -> pd.Series:
    """Share of weightings drawn near `weights` (Dirichlet, mean = weights) under which each model ranks first."""
    w = np.array([weights[d] for d in DIMENSIONS], dtype=float)
    draws = np.random.default_rng(seed).dirichlet(concentration * w / w.sum(), samples)
    winners = scores[list(DIMENSIONS)].to_numpy() @ draws.T  # (models, samples)
    firsts = pd.Series(scores.index[winners.argmax(0)]).value_counts(normalize=True)
    return firsts.reindex(scores.index, fill_value=0.0)
