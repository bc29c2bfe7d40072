"""The course's evaluation suite and `evaluate(model_or_path, suite) -> tidy DataFrame`.

One row per (model, task, metric) with a bootstrap 95 % interval over the items and, for accuracy and
macro-F1, the score of guessing at random, so a number at chance is seen to be at chance.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from dstutor.continual.tasks import HELD_OUT
from dstutor.data.packing import split_by_document
from dstutor.data.sources import load_corpus
from dstutor.data.tokenizer import chat_prompt
from dstutor.evaluate.scoring import calibrated_predictions, choice_predictions, greedy_answers, speed, text_losses
from dstutor.finetune.classify import sentiment_splits
from dstutor.finetune.sft import idiom_instructions, split_by_idiom
from dstutor.models import DeepSeekLM
from dstutor.metrics import mean_with_ci, score_with_ci
from dstutor.models.hf import load_pretrained

COLUMNS = ["model", "task", "metric", "value", "ci_low", "ci_high", "n", "chance"]
SENTIMENT_CHOICES = ("差评", "好评")  # label 0 negative, 1 positive (dstutor.finetune.classify.SENTIMENTS)
CONTENT_FREE = ("N/A", "", "[MASK]")  # the content-free inputs of Zhao et al. (2021), in place of a review


@dataclass
class Suite:
    """What evaluate() measures: held-out texts per domain, multiple-choice tasks, generation tasks."""

    perplexity: dict[str, list[str]]                    # domain → held-out texts (perplexity on their first tokens)
    choices: dict[str, list[dict]]                      # task → docs {question, context, choices, label}
    generation: dict[str, pd.DataFrame] = field(default_factory=dict)  # task → rows (prompt, answer): chrF, BLEU, ROUGE
    speed_prompt: str = "“一心一意”是什么意思？"          # the request latency and throughput are timed on
    max_tokens: int = 64                                # tokens per text the perplexity is taken over
    max_new_tokens: int = 24                            # greedy tokens per generated answer
    n_boot: int = 1000                                  # bootstrap resamples per interval (200 is enough for a sketch)
    seed: int = 0                                       # seeds the bootstrap
    in_pretraining: dict[str, float] = field(default_factory=dict)  # task → share of its items the pretraining text holds
    content_free: dict[str, list[str]] = field(default_factory=dict)  # task → contexts without content: '<task>_calibrated' rows


def pretraining_split(corpus: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The corpus documents the zoo pretrains on, and those it holds out (the same hash on each document's id)."""
    return split_by_document(load_corpus(corpus), val_fraction=HELD_OUT)


def _column(documents: datasets.Dataset, name: str) -> list:
    # In one Arrow call: indexing a filtered Dataset's column and iterating it fetches row by row (~10× slower).
    return documents.with_format("arrow")[name].to_pylist()


def pretrained_texts(corpus: str) -> set[str]:
    """The texts of the corpus documents the zoo's models pretrain on."""
    return set(_column(pretraining_split(corpus)[0], "text"))


def held_out_texts(corpus: str, n: int, chars: int = 200, seed: int = 0, exclude_repeats: bool = False) -> list[str]:
    """n pieces of up to `chars` characters from the corpus documents the zoo's models never trained on.

    A held-out document can repeat a pretrained one word for word (the reviews corpus holds most texts
    twice, under two ids); exclude_repeats=True leaves such documents out.
    """
    trained, held_out = pretraining_split(corpus)
    texts = _column(held_out, "text")
    if exclude_repeats:
        repeated = set(_column(trained, "text"))
        texts = [text for text in texts if text not in repeated]
    # Short documents (a Tang poem) are one piece; long ones are cut, leaving no stub shorter than chars / 2.
    pieces = [text[i:i + chars] for text in texts for i in range(0, max(1, len(text) - chars // 2), chars)]
    if len(pieces) < n:
        raise ValueError(f"corpus {corpus!r} has {len(pieces)} held-out pieces of {chars} characters; asked for {n}")
    order = np.random.default_rng(seed).permutation(len(pieces))[:n]
    return [pieces[i] for i in order]


def idiom_choice_docs(pairs: pd.DataFrame, tokenizer: PreTrainedTokenizerFast, n: int, options: int = 4,
                      seed: int = 0) -> list[dict]:
    """'What does X mean?' with the true explanation among options − 1 explanations of other idioms."""
    meanings = pairs[pairs.direction == "idiom → explanation"].drop_duplicates("idiom").reset_index(drop=True)
    if len(meanings) < max(n, options):
        raise ValueError(f"need ≥ {max(n, options)} idioms for {n} questions with {options} options; got {len(meanings)}")
    rng = np.random.default_rng(seed)
    docs = []
    for row in meanings.iloc[:n].itertuples():
        others = meanings.answer[meanings.answer != row.answer].drop_duplicates()
        choices = list(rng.choice(others.to_numpy(), options - 1, replace=False))
        label = int(rng.integers(options))
        choices.insert(label, row.answer)
        docs.append({"question": row.prompt, "context": chat_prompt(tokenizer, row.prompt, tokenize=False),
                     "choices": choices, "label": label})
    return docs


def sentiment_question(review: str) -> str:
    """The zero-shot sentiment question about one review."""
    return f"评论：{review}\n这条评论是好评还是差评？"


def sentiment_docs(reviews: pd.DataFrame, tokenizer: PreTrainedTokenizerFast, n: int, chars: int = 60) -> list[dict]:
    """Zero-shot sentiment: a review, then 'positive or negative?' answered by the likelier label word."""
    questions = [sentiment_question(text[:chars]) for text in reviews.text[:n]]
    return [{"question": q, "context": chat_prompt(tokenizer, q, tokenize=False), "choices": list(SENTIMENT_CHOICES), "label": int(label)}
            for q, label in zip(questions, reviews.label[:n])]


def cloze_docs(texts: Sequence[str], n: int, context_chars: int = 48, continuation_chars: int = 24, options: int = 4,
               seed: int = 0) -> list[dict]:
    """Which text comes next? A held-out text's first characters, its true continuation among options − 1
    continuations cut from the other texts. The context never ends in whitespace (lm-eval would move it)."""
    cut = []
    for text in texts:
        k = context_chars
        while k < len(text) and text[k - 1].isspace():
            k += 1
        if text[k:k + continuation_chars].strip():
            cut.append((text[:k], text[k:k + continuation_chars]))
    if len(cut) < max(n, options):
        raise ValueError(f"{len(cut)} texts are long enough for a cloze item of {context_chars} + {continuation_chars} "
                         f"characters; need ≥ {max(n, options)}")
    rng = np.random.default_rng(seed)
    docs = []
    for i, (context, truth) in enumerate(cut[:n]):
        others = sorted({c for j, (_, c) in enumerate(cut) if j != i and c != truth})
        if len(others) < options - 1:
            raise ValueError(f"the texts have {len(others) + 1} distinct continuations; need {options} per item")
        choices = list(rng.choice(others, options - 1, replace=False))
        label = int(rng.integers(options))
        choices.insert(label, truth)
        docs.append({"question": context, "context": context, "choices": choices, "label": label})
    return docs


def _idiom_words(documents: datasets.Dataset) -> set[str]:
    return {json.loads(meta)["word"].strip() for meta in _column(documents, "meta")}


def course_suite(tokenizer: PreTrainedTokenizerFast, n_texts: int = 64, n_docs: int = 100, n_generate: int = 48,
                 sft_idioms: int = 100, domains: Sequence[str] = ("tang_poems", "reviews", "python_code", "shakespeare"),
                 seed: int = 0) -> tuple[Suite, pd.DataFrame]:
    """The suite every course model goes through, and the instruction pairs of the `sft_idioms` a fine-tune trains on.

    Idioms come in three tiers: 'sft' asks about those the fine-tunes train on (most are in the pretraining
    text too), 'pretrained' about idioms whose dictionary entry pretraining read and no fine-tune trains on,
    'unseen' about idioms neither saw. The reviews, perplexity and cloze texts come from held-out documents
    that no pretrained document repeats.
    """
    if not 0 < min(n_docs, n_generate) <= sft_idioms:
        raise ValueError(f"need 0 < n_docs={n_docs} and n_generate={n_generate} ≤ sft_idioms={sft_idioms}")
    pairs = idiom_instructions(seed=seed)
    rest_pairs, sft_pairs = split_by_idiom(pairs, sft_idioms, seed=seed)
    trained_idioms, held_out_idioms = (_idiom_words(part) for part in pretraining_split("idioms"))
    tiers = {"unseen": rest_pairs[rest_pairs.idiom.isin(held_out_idioms - trained_idioms)],
             "pretrained": rest_pairs[rest_pairs.idiom.isin(trained_idioms)], "sft": sft_pairs}
    trained_reviews, held_out_reviews = pretraining_split("reviews")
    trained_texts = set(_column(trained_reviews, "text"))
    unseen_reviews = set(_column(held_out_reviews, "text")) - trained_texts
    train, test, _ = sentiment_splits(test_size=100, seed=seed)  # deduplicated, shuffled, labels that agree
    reviews = pd.concat([test, train]).pipe(lambda frame: frame[frame.text.isin(unseen_reviews)]).reset_index(drop=True)
    if len(reviews) < n_docs:
        raise ValueError(f"only {len(reviews)} labelled reviews were held out of pretraining; asked for n_docs={n_docs}")
    per_domain = -(-n_docs // len(domains))  # the cloze items, shared out over the domains
    cloze, cloze_seen = [], []
    for name in domains:
        docs = cloze_docs(held_out_texts(name, max(4 * per_domain, 16), seed=seed + 1, exclude_repeats=True), per_domain,
                          seed=seed)
        trained = "\0".join(pretrained_texts(name))  # a held-out piece can still repeat a passage of a trained document
        cloze += docs
        cloze_seen += [doc["context"] + doc["choices"][doc["label"]] in trained for doc in docs]
    explain = {name: tiers[name][tiers[name].direction == "idiom → explanation"].iloc[:n_generate][["prompt", "answer"]]
               for name in ("sft", "unseen")}
    suite = Suite(
        perplexity={name: held_out_texts(name, n_texts, seed=seed, exclude_repeats=True) for name in domains},
        choices={**{f"idiom_mc_{name}": idiom_choice_docs(frame, tokenizer, n_docs, seed=seed) for name, frame in tiers.items()},
                 "cloze": cloze[:n_docs], "sentiment": sentiment_docs(reviews, tokenizer, n_docs)},
        generation={f"explain_{name}": frame.reset_index(drop=True) for name, frame in explain.items()},
        content_free={"sentiment": [chat_prompt(tokenizer, sentiment_question(text), tokenize=False) for text in CONTENT_FREE]},
        seed=seed)
    trained_questions = {f"“{word}”是什么意思？" for word in trained_idioms}
    suite.in_pretraining = {
        **{f"idiom_mc_{name}": float(np.mean([doc["question"] in trained_questions for doc in suite.choices[f"idiom_mc_{name}"]]))
           for name in tiers},
        **{task: float(frame.prompt.isin(trained_questions).mean()) for task, frame in suite.generation.items()},
        "cloze": float(np.mean(cloze_seen[:n_docs])), "sentiment": float(reviews.text[:n_docs].isin(trained_texts).mean())}
    return suite, sft_pairs


def chance_levels(docs: Sequence[dict]) -> dict[str, float]:
    """Expected accuracy and macro-F1 of a uniform random guess (per class: precision = its share, recall = 1/K)."""
    k = np.mean([len(doc["choices"]) for doc in docs])
    shares = pd.Series([doc["label"] for doc in docs]).value_counts(normalize=True)
    return {"accuracy": 1 / k, "macro_f1": float(np.mean([2 * s / k / (s + 1 / k) for s in shares]))}


def load_for_evaluation(path: str | Path) -> tuple[DeepSeekLM, PreTrainedTokenizerFast]:
    """A saved checkpoint folder (transformers format, tokenizer beside it) as a model and its tokenizer."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}: expected a folder with config.json and "
                                f"model.safetensors (dstutor.models.hf.save_pretrained writes one)")
    return load_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def evaluate(model_or_path: DeepSeekLM | str | Path, suite: Suite, tokenizer: PreTrainedTokenizerFast | None = None,
             name: str | None = None) -> pd.DataFrame:
    """Every measure of the suite for one model, as tidy rows (model, task, metric, value, ci_low, ci_high, n, chance)."""
    if isinstance(model_or_path, (str, Path)):
        model, tokenizer = load_for_evaluation(model_or_path)
        name = name or Path(model_or_path).name
    elif tokenizer is None:
        raise ValueError("pass the tokenizer with an in-memory model (a checkpoint folder brings its own)")
    else:
        model = model_or_path.eval()
    name = name or "model"
    boot = {"n_boot": suite.n_boot, "seed": suite.seed}
    rows = []
    for domain, texts in suite.perplexity.items():
        losses = text_losses(model, tokenizer, texts, suite.max_tokens)
        rows.append((f"perplexity/{domain}", "perplexity", *mean_with_ci(losses, np.exp, **boot), len(texts), np.nan))
    for task, docs in suite.choices.items():
        predictions, logliks = choice_predictions(model, tokenizer, docs)
        scored = {task: predictions}
        if task in suite.content_free:
            _, free = choice_predictions(model, tokenizer, [{"context": context, "choices": docs[0]["choices"]}
                                                            for context in suite.content_free[task]])
            scored[f"{task}_calibrated"] = calibrated_predictions(logliks, free)
        labels, chance = [doc["label"] for doc in docs], chance_levels(docs)
        for scored_task, answers in scored.items():
            for metric in ("accuracy", "macro_f1"):
                rows.append((scored_task, metric, *score_with_ci(metric, answers, labels, **boot), len(docs),
                             chance[metric]))
    for task, pairs in suite.generation.items():
        replies = greedy_answers(model, tokenizer, list(pairs.prompt), suite.max_new_tokens)
        for metric in ("chrf", "bleu", "rougeL"):
            rows.append((task, metric, *score_with_ci(metric, replies, list(pairs.answer), **boot), len(pairs), np.nan))
    timing = speed(model, tokenizer, suite.speed_prompt, suite.max_new_tokens)
    rows.append(("speed", "latency_s", timing["latency_s"], timing["latency_low"], timing["latency_high"], 1, np.nan))
    rows.append(("speed", "tokens_per_s", timing["tokens_per_s"], suite.max_new_tokens / timing["latency_high"],
                 suite.max_new_tokens / timing["latency_low"], 1, np.nan))
    return pd.DataFrame([(name, *row) for row in rows], columns=COLUMNS)
