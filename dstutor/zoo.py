"""Artifacts chapters share, built deterministically on first use and cached by a hash of their recipe.

A chapter that needs "the course tokenizer" or "a pretrained nano model" asks the zoo; the first
call builds it (minutes at most on a CPU), later calls load it. Delete `<cache>/zoo` to rebuild.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import datasets
import pandas as pd
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import pack, split_by_document
from dstutor.data.sources import load_corpus
from dstutor.data.tokenizer import train_tokenizer
from dstutor.env import cache_dir, seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig, fit_on_blocks

ZOO_VERSION = 1  # bump when a recipe changes in a way its key does not capture
# The pretraining mix: English literature, Chinese reviews and poems, idioms and Python code.
COURSE_CORPORA = ("shakespeare", "reviews", "tang_poems", "idioms", "python_code")


def _key(recipe: dict) -> str:
    text = json.dumps({"zoo": ZOO_VERSION, **recipe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def course_corpus() -> datasets.Dataset:
    """All course corpora in one Dataset (text + metadata)."""
    return datasets.concatenate_datasets([load_corpus(name) for name in COURSE_CORPORA])


def course_tokenizer(vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the course corpus (cached)."""
    folder = cache_dir() / "zoo" / f"tokenizer-{_key({'vocab_size': vocab_size, 'corpora': COURSE_CORPORA})}"
    if not (folder / "tokenizer.json").exists():
        tokenizer = train_tokenizer(course_corpus()["text"], vocab_size)
        tokenizer.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def course_blocks(vocab_size: int = 4096, block_size: int = 128,
                  val_fraction: float = 0.05) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and validation token blocks of the course corpus, split by document (cached)."""
    recipe = {"vocab_size": vocab_size, "block_size": block_size, "val": val_fraction, "corpora": COURSE_CORPORA}
    folder = cache_dir() / "zoo" / f"blocks-{_key(recipe)}"
    if not (folder / "val" / "dataset_info.json").exists():
        tokenizer = course_tokenizer(vocab_size)
        train, val = split_by_document(course_corpus(), val_fraction)
        pack(train, tokenizer, block_size).save_to_disk(str(folder / "train"))
        pack(val, tokenizer, block_size).save_to_disk(str(folder / "val"))
    return datasets.load_from_disk(str(folder / "train")), datasets.load_from_disk(str(folder / "val"))


def pretrained(config: DeepSeekConfig, train: TrainConfig, batch_size: int = 16,
               block_size: int = 128) -> tuple[DeepSeekLM, pd.DataFrame]:
    """A DeepSeekLM pretrained on the course corpus with this recipe, and its training history (cached)."""
    recipe = {"model": asdict(config), "train": asdict(train), "batch": batch_size, "block": block_size}
    folder = cache_dir() / "zoo" / f"model-{_key(recipe)}"
    seed_everything(train.seed)
    model = DeepSeekLM(config)
    if (folder / "model.safetensors").exists():
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval(), pd.read_csv(folder / "history.csv")
    train_blocks, val_blocks = course_blocks(config.vocab_size, block_size)
    history = fit_on_blocks(model, train, train_blocks, val_blocks, batch_size)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              folder / "model.safetensors")
    history.to_csv(folder / "history.csv", index=False)
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    return model.cpu().eval(), history


def pretrained_nano(steps: int, seed: int = 0) -> tuple[DeepSeekLM, pd.DataFrame]:
    """The course's nano DeepSeek model after `steps` pretraining steps (chapters 03–04 share it)."""
    config = DeepSeekConfig.preset("nano")
    train = TrainConfig(steps=steps, lr=3e-3, warmup_steps=min(20, steps // 10), eval_every=max(1, steps // 10),
                        eval_batches=10, seed=seed)
    return pretrained(config, train)
