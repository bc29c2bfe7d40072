"""Several seeds per variant, the spread they give, and comparison sentences computed from it.

A single run cannot say "X beats Y": a different seed (initialisation and batch order) moves the
loss too. The course's rule: a conclusion rests on ≥ 3 seeds, and when the ranges over seeds
overlap the sentence says the seeds do not separate the variants.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import datasets
import pandas as pd

from dstutor.models import DeepSeekConfig
from dstutor.train.runner import run_jobs
from dstutor.train.sweep import final_rows, train_variant
from dstutor.train.trainer import TrainConfig


def run_seeds(variants: Mapping[str, DeepSeekConfig], train: TrainConfig, seeds: Sequence[int],
              train_blocks: datasets.Dataset, val_blocks: datasets.Dataset, batch_size: int,
              done: pd.DataFrame | None = None, workers: int | None = None) -> pd.DataFrame:
    """`run_variants` once per seed (initialisation and batch order both follow it), with a `seed` column.

    `done`: histories the caller already trained with exactly these settings (columns variant and seed);
    those runs are reused, not trained again, since the same seed gives the same run. Their length is
    checked against train.steps; the other settings are the caller's word. workers: as in `run_jobs`
    (pass 1 where the runs' seconds are compared).
    """
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    done = done if done is not None else pd.DataFrame(columns=["variant", "seed"])
    unknown = set(done.variant) - set(variants)
    if unknown:
        raise ValueError(f"done has histories of {sorted(unknown)}, which are not among the variants {list(variants)}")
    for (name, s), run in done[done.seed.isin(seeds)].groupby(["variant", "seed"], sort=False):
        if len(run) != train.steps or run.step.iloc[-1] != train.steps:  # e.g. stopped early, or another length
            raise ValueError(f"done's run of {name!r} at seed {s} has {len(run)} steps (last logged step "
                             f"{run.step.iloc[-1]}), but train.steps is {train.steps}: reuse only runs of "
                             "these settings")
    reused = set(zip(done.variant, done.seed))
    keys = [(name, s) for s in seeds for name in variants if (name, s) not in reused]
    ran = run_jobs(lambda key: train_variant(key[0], variants[key[0]], dataclasses.replace(train, seed=key[1]),
                                             train_blocks, val_blocks, batch_size).assign(seed=key[1]),
                   keys, workers, desc="runs")
    runs = dict(zip(keys, ran)) | {key: run for key, run in done.groupby(["variant", "seed"], sort=False)}
    return pd.concat([runs[(name, s)] for s in seeds for name in variants], ignore_index=True)


def final_values(histories: pd.DataFrame, metric: str = "val_loss") -> pd.DataFrame:
    """The last logged value of `metric` per variant and seed: rows variants, columns seeds."""
    rows = [final_rows(run).assign(seed=s) for s, run in histories.groupby("seed", sort=False)]
    table = pd.concat(rows).reset_index().pivot(index="variant", columns="seed", values=metric)
    return table.loc[list(dict.fromkeys(histories.variant))]


def spread(values: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max over the seeds (columns) of each variant (rows)."""
    return pd.DataFrame({"mean": values.mean(axis=1), "std": values.std(axis=1, ddof=1),
                         "min": values.min(axis=1), "max": values.max(axis=1), "seeds": values.count(axis=1)})


def mean_pm(summary: pd.DataFrame, variant: str, digits: int = 3) -> str:
    """'4.321 ± 0.012' for one row of `spread`."""
    row = summary.loc[variant]
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def separated(summary: pd.DataFrame, a: str, b: str) -> bool:
    """True when the min–max ranges over seeds of variants a and b do not overlap."""
    first, second = summary.loc[a], summary.loc[b]
    return first["max"] < second["min"] or second["max"] < first["min"]


def compare_sentence(summary: pd.DataFrame, a: str, b: str, what: str = "validation loss",
                     lower_is_better: bool = True, digits: int = 3) -> str:
    """A sentence comparing two variants of `spread`: which is ahead, by how much, and whether seeds separate them."""
    gap = summary.loc[a, "mean"] - summary.loc[b, "mean"]
    a_ahead = (gap < 0) == lower_is_better
    ahead, behind = (a, b) if a_ahead else (b, a)
    n = int(min(summary.loc[a, "seeds"], summary.loc[b, "seeds"]))
    text = (f"Over {n} seeds, {ahead} has the {'lower' if lower_is_better else 'higher'} mean {what} "
            f"({mean_pm(summary, ahead, digits)} vs {mean_pm(summary, behind, digits)} for {behind}; "
            f"gap {abs(gap):.{digits}f}). ")
    if n < 2:
        return text + "With one seed there is no spread to compare the gap with."
    if separated(summary, a, b):
        return text + "Their ranges over seeds do not overlap: on this setting the difference is real."
    return text + "Their ranges over seeds overlap: these seeds do not separate the two."
