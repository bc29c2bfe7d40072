"""Text → fixed-length token blocks for language-model training; train/validation split by document.

BlockLoader batches packed blocks, encoded fine-tuning examples and image–caption tensors alike. It
reaches any batch position directly (epoch e is shuffled by (seed, e)), so a resumed run continues on
the exact batches it would have seen without reading the ones before them.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

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


Batch = torch.Tensor | dict[str, torch.Tensor]


class BlockLoader:
    """Seekable batches over an Arrow Dataset (packed blocks, encoded examples) or a dict of equal-length tensors.

    Epoch e is shuffled by (seed, e); shuffled loaders drop the last partial batch, so every batch has
    batch_size rows. A batch is the `input_ids` tensor, or with `fields` (e.g. ("input_ids", "labels")) a
    dict of those columns. `transform` (e.g. dstutor.finetune.padding.trim_padding) maps every batch.
    With `groups` (one id per row), a shuffled batch holds no two rows of a group while the epoch's
    remaining rows allow it: a contrastive batch then has no duplicate contents to count as negatives.
    """

    def __init__(self, data: datasets.Dataset | Mapping[str, torch.Tensor], batch_size: int, shuffle: bool,
                 seed: int = 0, fields: tuple[str, ...] | None = None,
                 transform: Callable[[Batch], Batch] | None = None, groups: torch.Tensor | None = None):
        if isinstance(data, datasets.Dataset):
            columns, n = data.column_names, len(data)
        else:
            lengths = {name: len(t) for name, t in data.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"tensors of unequal length: {lengths}")
            columns, n = list(data), next(iter(lengths.values()), 0)
        if batch_size < 1 or n < (batch_size if shuffle else 1):
            raise ValueError(f"batch_size={batch_size} with {n} rows: need batch_size ≥ 1 and, "
                             "when shuffling (the last partial batch is dropped), at least one full batch")
        names = list(fields or ("input_ids",))
        missing = set(names) - set(columns)
        if missing:
            raise ValueError(f"fields {sorted(missing)} are not columns of the data {columns}"
                             + ("" if fields else ": name the columns a batch holds with fields=(...)"))
        # only the columns a batch returns are read (Arrow) or kept (tensors)
        self.data = (data.with_format("torch", columns=names) if isinstance(data, datasets.Dataset)
                     else {name: data[name] for name in names})
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        if groups is not None and len(groups) != n:
            raise ValueError(f"groups has {len(groups)} ids for {n} rows: give one per row")
        self.fields, self.transform = fields, transform
        self.groups = None if groups is None else groups.tolist()
        self.epochs_started = 0  # iter() walks epoch 0, 1, 2, … like a DataLoader reshuffling each epoch
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.shuffle else math.ceil(self.n / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Row indices in the order epoch `epoch` reads them."""
        if not self.shuffle:
            return torch.arange(self.n)
        if self._order is None or self._order[0] != epoch:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
            self._order = epoch, order if self.groups is None else self._distinct(order)
        return self._order[1]

    def _distinct(self, order: torch.Tensor) -> torch.Tensor:
        """`order` regrouped into batches of distinct groups: each takes the first rows of groups it lacks."""
        pending, regrouped = order.tolist(), []
        while len(pending) >= self.batch_size:
            batch, seen, rest, read = [], set(), [], 0
            for row in pending:
                if len(batch) == self.batch_size:
                    break
                read += 1
                if self.groups[row] in seen:
                    rest.append(row)
                else:
                    batch.append(row)
                    seen.add(self.groups[row])
            rest += pending[read:]
            short = self.batch_size - len(batch)  # too few groups left: the batch takes repeats
            regrouped += batch + rest[:short]
            pending = rest[short:]
        return torch.tensor(regrouped + pending)

    def batch(self, epoch: int, index: int) -> Batch:
        """Batch `index` of epoch `epoch`, transformed."""
        rows = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        if isinstance(self.data, datasets.Dataset):
            columns = self.data[rows.tolist()]
        else:
            columns = {name: t[rows] for name, t in self.data.items()}
        batch = {name: columns[name] for name in self.fields} if self.fields else columns["input_ids"]
        return self.transform(batch) if self.transform else batch

    def stream(self, start: int = 0) -> Iterator[Batch]:
        """Endless batches from global position `start` (epoch = start // len(self)), read from there on."""
        epoch, index = divmod(start, len(self))
        while True:
            yield from (self.batch(epoch, i) for i in range(index, len(self)))
            epoch, index = epoch + 1, 0

    def __iter__(self) -> Iterator[Batch]:
        """One epoch; iterating again gives the next epoch, in the order stream() reads it."""
        epoch, self.epochs_started = self.epochs_started, self.epochs_started + 1
        return (self.batch(epoch, i) for i in range(len(self)))


def batch_stream(train: Iterable[torch.Tensor], start: int = 0) -> Iterator[torch.Tensor]:
    """Endless batches (epoch after epoch) from global batch position `start`, without reading skipped ones.

    A BlockLoader and a sequence (a list) seek directly; any other iterable can only be replayed, which a
    warning names.
    """
    if isinstance(train, BlockLoader):
        return train.stream(start)
    if isinstance(train, Sequence):
        if not len(train):
            raise ValueError("the training data holds no batches")
        return (train[i % len(train)] for i in itertools.count(start))
    if start:
        warnings.warn(f"resuming by replaying {start} batches: a {type(train).__name__} cannot seek; pass a "
                      "list or dstutor.data.packing.BlockLoader(...) to resume without reading them", stacklevel=3)
    return itertools.islice(_repeat(train), start, None)


def _repeat(train: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    while True:
        empty = True
        for batch in train:
            empty = False
            yield batch
        if empty:  # a one-shot iterator is exhausted after its first epoch
            raise ValueError("the training data yielded no batches (an exhausted iterator? pass a list or loader)")
