"""Text → fixed-length token blocks for language-model training; train/validation split by document.

Loaders reach any batch position directly (epoch e is shuffled by (seed, e)), so a resumed run
continues on the exact batches it would have seen without reading the ones before them.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerFast


def split_by_document(dataset: datasets.Dataset, val_fraction: float,
                      key: str = "doc_id") -> tuple[datasets.Dataset, datasets.Dataset]:
    """Deterministic split on a hash of each document's id: no document lands in both parts."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be between 0 and 1")

    def in_validation(row) -> bool:
        digest = hashlib.sha256(f"{row['source']}/{row[key]}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction

    return dataset.filter(lambda r: not in_validation(r)), dataset.filter(in_validation)


def pack(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, block_size: int,
         num_proc: int | None = None) -> datasets.Dataset:
    """Tokenize every text, end each with <|eos|>, concatenate and cut into blocks of block_size tokens."""
    eos = tokenizer.eos_token_id

    def blocks(batch):
        ids = [t + [eos] for t in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]
        stream = [token for doc in ids for token in doc]
        usable = len(stream) // block_size * block_size  # the tail of each batch is dropped
        return {"input_ids": [stream[i:i + block_size] for i in range(0, usable, block_size)]}

    return dataset.map(blocks, batched=True, batch_size=256, remove_columns=dataset.column_names,
                       num_proc=num_proc, desc="packing")


class BlockLoader:
    """Batches (batch, block_size) of packed blocks; shuffled per epoch by (seed, epoch), read lazily from Arrow.

    With `fields` (e.g. ("input_ids", "labels")) a batch is a dict of those columns instead of the
    input_ids tensor alone: how fine-tuning passes masked labels or class labels to the model.
    """

    def __init__(self, blocks: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                 fields: tuple[str, ...] | None = None):
        if batch_size < 1 or len(blocks) < (batch_size if shuffle else 1):
            raise ValueError(f"batch_size={batch_size} with {len(blocks)} blocks: need batch_size ≥ 1 and, "
                             "when shuffling (the last partial batch is dropped), at least one full batch")
        missing = set(fields or ()) - set(blocks.column_names)
        if missing:
            raise ValueError(f"fields {sorted(missing)} are not columns of the data {blocks.column_names}")
        self.blocks, self.batch_size, self.shuffle, self.seed = blocks.with_format("torch"), batch_size, shuffle, seed
        self.fields = fields
        self.epochs_started = 0  # iter() walks epoch 0, 1, 2, … like a DataLoader reshuffling each epoch
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.blocks)
        return n // self.batch_size if self.shuffle else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Block indices in the order epoch `epoch` reads them."""
        if not self.shuffle:
            return torch.arange(len(self.blocks))
        if self._order is None or self._order[0] != epoch:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            self._order = epoch, torch.randperm(len(self.blocks), generator=torch.Generator().manual_seed(seed))
        return self._order[1]

    def batch(self, epoch: int, index: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """Batch `index` of epoch `epoch`."""
        rows = self.blocks[self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size].tolist()]
        return {name: rows[name] for name in self.fields} if self.fields else rows["input_ids"]

    def stream(self, start: int = 0) -> Iterator[torch.Tensor]:
        """Endless batches from global position `start` (epoch = start // len(self)), read from there on."""
        epoch, index = divmod(start, len(self))
        while True:
            yield from (self.batch(epoch, i) for i in range(index, len(self)))
            epoch, index = epoch + 1, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, self.epochs_started = self.epochs_started, self.epochs_started + 1
        return (self.batch(epoch, i) for i in range(len(self)))


def block_loader(blocks: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                 fields: tuple[str, ...] | None = None) -> BlockLoader:
    """Batches of blocks as LongTensors (batch, block_size), or dicts of `fields`; shuffled loaders drop the last partial batch."""
    return BlockLoader(blocks, batch_size, shuffle, seed, fields)


def batch_stream(train: Iterable[torch.Tensor], start: int = 0) -> Iterator[torch.Tensor]:
    """Endless batches (epoch after epoch) from global batch position `start`, without reading skipped ones.

    Loaders with a `stream(start)` method (dstutor.data.packing.block_loader) and sequences (lists) seek
    directly; any other iterable can only be replayed, which a warning names.
    """
    if hasattr(train, "stream"):
        return train.stream(start)
    if isinstance(train, Sequence):
        if not len(train):
            raise ValueError("the training data holds no batches")
        return (train[i % len(train)] for i in itertools.count(start))
    if start:
        warnings.warn(f"resuming by replaying {start} batches: a {type(train).__name__} cannot seek; pass a "
                      "list or dstutor.data.packing.block_loader(...) to resume without reading them", stacklevel=3)
    return itertools.islice(_repeat(train), start, None)


def _repeat(train: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    while True:
        empty = True
        for batch in train:
            empty = False
            yield batch
        if empty:  # a one-shot iterator is exhausted after its first epoch
            raise ValueError("the training data yielded no batches (an exhausted iterator? pass a list or loader)")
