"""Plots for continual learning: loss matrices R per strategy, mean ± spread curves, a drift detector on a stream."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def loss_matrices(matrices: Mapping[str, pd.DataFrame], title: str, columns: int = 4) -> plt.Figure:
    """One annotated heat-map of R (stage × task held-out loss) per strategy, on one shared colour scale."""
    names = list(matrices)
    rows = -(-len(names) // columns)
    low = min(m.values.min() for m in matrices.values())
    high = max(m.values.max() for m in matrices.values())
    fig, axes = plt.subplots(rows, min(columns, len(names)), figsize=(3.4 * min(columns, len(names)), 3.3 * rows),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, name in zip(axes.flat, names):
        matrix = matrices[name]
        image = ax.imshow(matrix.values, cmap="magma_r", vmin=low, vmax=high)
        for (i, j), value in np.ndenumerate(matrix.values):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > (low + high) / 2 else "black")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, fontsize=7)
        ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.7, label="held-out loss (nats/token)")
    fig.suptitle(title)
    fig.supxlabel("task evaluated")
    fig.supylabel("model after stage")
    return fig


def mean_spread(results: pd.DataFrame, x: str, y: str, by: str, title: str, xlabel: str, ylabel: str,
                logx: bool = False) -> plt.Figure:
    """Mean of y over seeds at each x, one line per group of `by`, with bars from the lowest to the highest seed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, group in results.groupby(by, sort=False):
        stats = group.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        ax.errorbar(stats.index, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                    marker="o", capsize=3, label=str(name))
    if logx:  # ticks at the measured values, in plain numbers
        ax.set_xscale("log")
        ax.minorticks_off()
        values = sorted(results[x].unique())
        ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def drift_stream(scores: np.ndarray, threshold: float, switch_at: int, labels: tuple[str, str], title: str) -> plt.Figure:
    """KL of each stream window against the reference, the threshold, the switch point and the alarms."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    windows = np.arange(len(scores))
    ax.plot(windows, scores, color="tab:blue", label="KL(window ‖ reference)")
    alarms = scores > threshold
    ax.scatter(windows[alarms], scores[alarms], color="tab:red", zorder=3, label="alarm")
    ax.axhline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.axvline(switch_at - 0.5, color="tab:green", label=f"switch: {labels[0]} → {labels[1]}")
    ax.set(title=title, xlabel="window of the stream", ylabel="KL divergence (nats)")
    ax.legend(fontsize=8)
    return fig
