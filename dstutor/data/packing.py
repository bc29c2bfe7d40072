"""Text → fixed-length token blocks for language-model training; train/validation split by document."""
from __future__ import annotations

import hashlib

import datasets
import torch
from torch.utils.data import DataLoader
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


def block_loader(blocks: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of blocks as LongTensors (batch, block_size); rows are read lazily from the Arrow table."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(blocks.with_format("torch"), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      drop_last=shuffle, collate_fn=_stack_ids)


def _stack_ids(rows: list[dict]) -> torch.Tensor:
    return torch.stack([row["input_ids"] for row in rows])
