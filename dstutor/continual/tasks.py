"""A sequence of language-modelling tasks, one per course corpus, each with its own held-out blocks."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import pack, split_by_document
from dstutor.data.sources import load_corpus

HELD_OUT = 0.05  # test documents by hash: the zoo's validation split (course_blocks), never pretrained on
CHUNK_CHARS = 400  # documents are cut into pieces this long before shuffling (≈ 1–3 blocks each)


@dataclass(frozen=True)
class Task:
    """One stage of a continual-learning run: training blocks and held-out blocks from documents it never trains on."""

    name: str
    train: torch.Tensor  # (n_train, block_size) token ids
    test: torch.Tensor   # (n_test, block_size) token ids


def _blocks(texts: list[str], tokenizer: PreTrainedTokenizerFast, block_size: int, n: int, name: str) -> torch.Tensor:
    """The first n blocks packed from the texts in order, packing only as many texts as needed."""
    taken = 256
    while True:
        part = datasets.Dataset.from_dict({"text": texts[:taken]})
        blocks = pack(part, tokenizer, block_size)["input_ids"]
        if len(blocks) >= n:
            return torch.tensor(blocks[:n])
        if taken >= len(texts):
            raise ValueError(f"corpus {name!r} yields only {len(blocks)} blocks of {block_size} tokens; asked for {n}")
        taken *= 4


def _shuffled_chunks(documents: datasets.Dataset, seed: int) -> list[str]:
    """Documents cut into pieces of at most CHUNK_CHARS characters, shuffled: blocks then come from many
    documents, not from the first few long ones (one Python module fills ~80 blocks of 64 tokens)."""
    chunks = [text[i:i + CHUNK_CHARS] for text in documents["text"] for i in range(0, len(text), CHUNK_CHARS)]
    order = np.random.default_rng(seed).permutation(len(chunks))
    return [chunks[i] for i in order]


def domain_task(name: str, tokenizer: PreTrainedTokenizerFast, block_size: int, n_train: int, n_test: int,
                seed: int = 0) -> Task:
    """Blocks of one course corpus; train and test come from disjoint documents.

    The test documents are the zoo's validation documents (the same hash split, same fraction), so
    the pretrained base model has never trained on them either.
    """
    if min(block_size, n_train, n_test) < 1:
        raise ValueError(f"block_size={block_size}, n_train={n_train} and n_test={n_test} must all be ≥ 1")
    train_docs, test_docs = split_by_document(load_corpus(name), val_fraction=HELD_OUT)
    return Task(name, _blocks(_shuffled_chunks(train_docs, seed), tokenizer, block_size, n_train, name),
                _blocks(_shuffled_chunks(test_docs, seed), tokenizer, block_size, n_test, name))


def task_sequence(names: Sequence[str], tokenizer: PreTrainedTokenizerFast, block_size: int, n_train: int,
                  n_test: int, seed: int = 0) -> list[Task]:
    """One task per corpus name, in the order given (e.g. poems → reviews → code)."""
    if not names:
        raise ValueError("the task sequence is empty: name at least one corpus")
    if len(set(names)) != len(names):
        raise ValueError(f"each corpus may appear once in the sequence; got {list(names)}")
    return [domain_task(name, tokenizer, block_size, n_train, n_test, seed) for name in names]


def ciphered(task: Task, vocab_size: int, seed: int) -> Task:
    """The task with every token id mapped through one random permutation of the vocabulary (seeded).

    The texts keep their structure in a language no pretrained model has read: the language-model version
    of permuted MNIST, on which EWC was introduced.
    """
    top = int(max(task.train.max(), task.test.max()))
    if top >= vocab_size:
        raise ValueError(f"task {task.name!r} holds token id {top}; a cipher of {vocab_size} ids cannot map it")
    permutation = torch.randperm(vocab_size, generator=torch.Generator().manual_seed(seed))
    return Task(task.name, permutation[task.train], permutation[task.test])
