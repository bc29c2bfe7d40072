"""Plots for evaluation: scores with intervals and chance, robustness curves, attention concentration, a radar."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go


def scores_with_chance(table: pd.DataFrame, tasks: Sequence[str], metric: str, title: str,
                       ylabel: str) -> plt.Figure:
    """One panel per task (three to a row): each model's value with its 95 % interval, and a dashed line at chance."""
    columns = min(3, len(tasks))
    rows_of_panels = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels), squeeze=False,
                             sharey=True, layout="constrained")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks):
        rows = table[(table.task == task) & (table.metric == metric)]
        x = np.arange(len(rows))
        ax.errorbar(x, rows.value, yerr=[rows.value - rows.ci_low, rows.ci_high - rows.value], fmt="o", capsize=4)
        if rows.chance.notna().any():
            ax.axhline(rows.chance.iloc[0], ls="--", color="grey", label="random guess")
            ax.legend(fontsize=8, loc="upper left")
        ax.set_xticks(x, rows.model, rotation=30, ha="right", fontsize=8)
        ax.set_title(task, fontsize=10)
    for row in axes:
        row[0].set_ylabel(ylabel)
    fig.suptitle(title)
    return fig


def robustness_curves(curves: pd.DataFrame, title: str) -> plt.Figure:
    """Perplexity (top, log scale) and accuracy (bottom) against noise level; one column per noise kind, a line per model."""
    kinds = list(dict.fromkeys(curves.kind))
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.3 * len(kinds), 6.2), squeeze=False, sharex=True,
                             layout="constrained")
    for column, kind in enumerate(kinds):
        for model, rows in curves[curves.kind == kind].groupby("model", sort=False):
            axes[0, column].plot(rows.level, rows.perplexity, marker="o", label=model)
            axes[1, column].plot(rows.level, rows.accuracy, marker="o", label=model)
        axes[0, column].set_title(kind, fontsize=10)
        axes[0, column].set_yscale("log")
        axes[1, column].set_xlabel("noise level (share of characters)")
    axes[0, 0].set_ylabel("held-out perplexity")
    axes[1, 0].set_ylabel("accuracy")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    fig.suptitle(title)
    return fig


def concentration_maps(maps: Mapping[str, pd.DataFrame], title: str, columns: int = 3) -> plt.Figure:
    """Attention concentration (layer × head, 0 = spread evenly, 1 = one token) per model, on one colour scale."""
    rows, columns = -(-len(maps) // columns), min(columns, len(maps))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    for ax, (model, frame) in zip(axes.flat, maps.items()):
        grid = frame.pivot(index="layer", columns="head", values="concentration")
        image = ax.imshow(grid.values, cmap="viridis", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(grid.values):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.5 else "black")
        ax.set_title(model, fontsize=9)
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(image, ax=axes, shrink=0.8, label="concentration")
    fig.suptitle(title)
    return fig


def radar(scores: pd.DataFrame, title: str, weighted: pd.Series | None = None) -> go.Figure:
    """The six dimensions of every model (rows of scores) on one radar; click a legend entry to hide a model."""
    axes = list(scores.columns) + [scores.columns[0]]
    fig = go.Figure()
    for model, row in scores.iterrows():
        label = f"{model} ({weighted[model]:.2f})" if weighted is not None else str(model)
        fig.add_trace(go.Scatterpolar(r=list(row.values) + [row.values[0]], theta=axes, name=label, fill="toself",
                                      opacity=0.55, hovertemplate="%{theta}: %{r:.2f}<extra>" + str(model) + "</extra>"))
    fig.update_layout(title=title, polar={"radialaxis": {"range": [0, 1]}}, height=480,
                      legend={"title": "model (weighted score)" if weighted is not None else "model"})
    return fig
