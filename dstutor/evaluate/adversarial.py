"""Adversarial validation: can a classifier tell one set of texts from another?

Label the training texts 0 and the test texts 1, train a classifier on character n-grams and read its
out-of-fold ROC AUC. About 0.5: the two sets look alike, and a validation score carries over. Well
above 0.5: the test set differs, and the texts the classifier is surest about show how.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline


def _texts_and_labels(a: Sequence[str], b: Sequence[str], folds: int) -> tuple[np.ndarray, np.ndarray]:
    if min(len(a), len(b)) < folds:
        raise ValueError(f"each set needs ≥ folds={folds} texts; got {len(a)} and {len(b)}")
    return np.array(list(a) + list(b), dtype=object), np.array([0] * len(a) + [1] * len(b))


def out_of_fold_scores(a: Sequence[str], b: Sequence[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """P(text is from b) for every text of a then b, each scored by a classifier that did not train on it."""
    texts, labels = _texts_and_labels(a, b, folds)
    scores = np.zeros(len(texts))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, labels):
        classifier = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True),
                                   LogisticRegression(max_iter=1000))
        classifier.fit(texts[train], labels[train])
        scores[test] = classifier.predict_proba(texts[test])[:, 1]
    return scores


def adversarial_auc(a: Sequence[str], b: Sequence[str], folds: int = 5, seed: int = 0,
                    scores: Sequence[float] | None = None) -> float:
    """Out-of-fold ROC AUC of telling a from b: ≈ 0.5 when they come from one distribution.

    scores: out_of_fold_scores(a, b, folds, seed) when already computed (the classifier is not trained again)."""
    _, labels = _texts_and_labels(a, b, folds)
    return float(roc_auc_score(labels, out_of_fold_scores(a, b, folds, seed) if scores is None else scores))


def detection_rate(clean_scores: Sequence[float], suspect_scores: Sequence[float], false_alarms: float = 0.05) -> float:
    """Share of suspect items scored above the threshold that flags `false_alarms` of the clean ones."""
    if not len(clean_scores) or not len(suspect_scores):
        raise ValueError("need scores of clean and of suspect items; one list is empty")
    threshold = np.quantile(np.asarray(clean_scores, dtype=float), 1 - false_alarms)
    return float(np.mean(np.asarray(suspect_scores, dtype=float) > threshold))
