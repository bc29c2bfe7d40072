"""Train several model variants on the same data in the same order, and compare their histories."""
from __future__ import annotations

import time
from collections.abc import Mapping

import datasets
import pandas as pd

from dstutor.data.packing import block_loader
from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train.trainer import TrainConfig, Trainer


def fit_on_blocks(model: DeepSeekLM, train: TrainConfig, train_blocks: datasets.Dataset,
                  val_blocks: datasets.Dataset, batch_size: int, **fit_options) -> pd.DataFrame:
    """Train on packed blocks (shuffled by train.seed) with validation on val_blocks; the history."""
    return Trainer(train).fit(model, block_loader(train_blocks, batch_size, shuffle=True, seed=train.seed),
                              block_loader(val_blocks, batch_size, shuffle=False), **fit_options)


def run_variants(variants: Mapping[str, DeepSeekConfig], train: TrainConfig, train_blocks: datasets.Dataset,
                 val_blocks: datasets.Dataset, batch_size: int) -> pd.DataFrame:
    """One history per variant (same seed, same batches), stacked with `variant` and `seconds` columns."""
    frames = []
    for name, config in variants.items():
        seed_everything(train.seed)
        model = DeepSeekLM(config)
        start = time.perf_counter()
        history = fit_on_blocks(model, train, train_blocks, val_blocks, batch_size)
        frames.append(history.assign(variant=name, seconds=time.perf_counter() - start))
        print(f"{name}: final val loss {history['val_loss'].iloc[-1]:.3f} "
              f"in {time.perf_counter() - start:.0f} s")
    return pd.concat(frames, ignore_index=True)


def final_rows(histories: pd.DataFrame) -> pd.DataFrame:
    """The last logged row of each variant: a results table."""
    return histories.groupby("variant", sort=False).tail(1).set_index("variant")
