"""Pictures for chapter 09: GRPO's per-step curves over seeds, and pass@k per training stage."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd

LABELS = {"reward": "mean reward", "accuracy": "training accuracy", "length": "completion length (tokens)",
          "degenerate": "degenerate groups (share)", "kl": "KL to reference (per token)"}


def run_curves(histories: pd.DataFrame, columns: Sequence[str] = tuple(LABELS), by: str = "run",
               smooth: int = 10, title: str = "") -> plt.Figure:
    """One panel per logged column: per `by` value the mean over seeds (smoothed), shaded from min to max."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.3 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for name, runs in histories.groupby(by, sort=False):
            wide = runs.pivot(index="step", columns="seed", values=column).rolling(smooth, min_periods=1).mean()
            line, = ax.plot(wide.index, wide.mean(axis=1), label=str(name))
            ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=line.get_color(), alpha=0.2)
        ax.set(xlabel="GRPO step", title=LABELS.get(column, column))
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title + f" (mean over seeds, {smooth}-step moving average; band: min–max)", fontsize=10)
    fig.tight_layout()
    return fig


def stage_bars(scores: pd.DataFrame, metrics: Sequence[str], by: str = "stage", title: str = "") -> plt.Figure:
    """Mean ± std over seeds of each metric per stage (or method), seeds drawn as dots."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics) * scores[by].nunique() / 2, 3.2))
    groups = list(dict.fromkeys(scores[by]))
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        rows = scores[scores[by] == group]
        x = [m + (i - (len(groups) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(x, rows[list(metrics)].mean(), width, yerr=rows[list(metrics)].std(), capsize=3, label=group)
        for m, metric in enumerate(metrics):
            ax.scatter([x[m]] * len(rows), rows[metric], s=8, color="black", zorder=3)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set(ylabel="held-out share correct", ylim=(0, 1.05), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
