"""Train several model variants on the same data in the same order, and compare their histories."""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import datasets
import pandas as pd

from dstutor.data.packing import BlockLoader
from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train.runner import run_jobs
from dstutor.train.trainer import TrainConfig, Trainer


def fit_on_blocks(model: DeepSeekLM, train: TrainConfig, train_blocks: datasets.Dataset,
                  val_blocks: datasets.Dataset, batch_size: int, callbacks: list | None = None,
                  **fit_options) -> pd.DataFrame:
    """Train on packed blocks (shuffled by train.seed) with validation on val_blocks; the history."""
    return Trainer(train, callbacks=callbacks).fit(
        model, BlockLoader(train_blocks, batch_size, shuffle=True, seed=train.seed),
        BlockLoader(val_blocks, batch_size, shuffle=False), **fit_options)


def train_variant(name: str, config: DeepSeekConfig, train: TrainConfig, train_blocks: datasets.Dataset,
                  val_blocks: datasets.Dataset, batch_size: int) -> pd.DataFrame:
    """One run: a fresh model seeded by train.seed, its history with `variant` and `seconds` columns."""
    seed_everything(train.seed)
    model = DeepSeekLM(config)
    start = time.perf_counter()
    history = fit_on_blocks(model, train, train_blocks, val_blocks, batch_size)
    seconds = time.perf_counter() - start
    print(f"{name} (seed {train.seed}): final val loss {history['val_loss'].iloc[-1]:.3f} in {seconds:.0f} s")
    return history.assign(variant=name, seconds=seconds)


def run_variants(variants: Mapping[str, DeepSeekConfig], train: TrainConfig, train_blocks: datasets.Dataset,
                 val_blocks: datasets.Dataset, batch_size: int, workers: int | None = None) -> pd.DataFrame:
    """One history per variant (same seed, same batches), stacked with `variant` and `seconds` columns.

    workers: processes sharing the runs (`run_jobs`); pass 1 where the runs' seconds are compared.
    """
    frames = run_jobs(lambda name: train_variant(name, variants[name], train, train_blocks, val_blocks, batch_size),
                      list(variants), workers, desc="variants")
    return pd.concat(frames, ignore_index=True)


def final_rows(histories: pd.DataFrame) -> pd.DataFrame:
    """The last logged row of each variant: a results table."""
    return histories.groupby("variant", sort=False).tail(1).set_index("variant")


class Checked(Protocol):
    """A config dataclass that checks its own fields (DeepSeekConfig, TrainConfig, Method, Strategy, GRPOConfig)."""

    def validate(self) -> None: ...


def with_values(configs: Mapping[str, Checked], values: Mapping[str, object]) -> dict[str, Checked]:
    """Copies of the config dataclasses with each value set on the one config that has that field.

    A name the configs share is qualified with its config's key: "method.lr" sets configs["method"].lr.
    """
    owners = {}
    for name, value in values.items():
        key, _, field = name.rpartition(".")
        having = [k for k, config in configs.items() if (not key or k == key)
                  and field in {f.name for f in dataclasses.fields(config)}]
        if len(having) != 1:
            raise ValueError(f"{name!r} must be a field of exactly one of {list(configs)} (qualify a shared name "
                             f"as 'key.field'); found in {having or 'none'}")
        owners.setdefault(having[0], {})[field] = value
    changed = {key: dataclasses.replace(config, **owners.get(key, {})) for key, config in configs.items()}
    for config in changed.values():
        config.validate()
    return changed


def summarize(history: pd.DataFrame) -> dict[str, float]:
    """Final train loss, final and best validation loss of one run."""
    val = history["val_loss"].dropna() if "val_loss" in history else pd.Series(dtype=float)
    return {"train_loss": history["loss"].iloc[-10:].mean(), "val_loss": val.iloc[-1] if len(val) else float("nan"),
            "best_val_loss": val.min() if len(val) else float("nan")}


def grid_search(grid: Mapping[str, Sequence], model: DeepSeekConfig, train: TrainConfig,
                train_blocks: datasets.Dataset, val_blocks: datasets.Dataset, batch_size: int,
                seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Train one model per combination of grid values (fields of the model or train config) and seed: one row each.

    seeds defaults to [train.seed]; each run's initialisation and batch order follow its seed.
    """
    combos = list(itertools.product(*grid.values(), seeds if seeds is not None else [train.seed]))

    def grid_run(combo: tuple) -> dict:
        *point, seed = combo
        values = dict(zip(grid, point))
        configs = with_values({"model": model, "train": dataclasses.replace(train, seed=seed)}, values)
        seed_everything(seed)
        start = time.perf_counter()
        history = fit_on_blocks(DeepSeekLM(configs["model"]), configs["train"], train_blocks, val_blocks, batch_size)
        return {**values, "seed": seed, **summarize(history), "seconds": time.perf_counter() - start}

    return pd.DataFrame(run_jobs(grid_run, combos, desc="grid"))
