"""Attention heat-maps: a matplotlib grid (layers × heads) and a plotly layer/head explorer."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import plotly.graph_objects as go
import torch


def show_heatmaps(matrices: torch.Tensor, row_titles: Sequence[str], col_titles: Sequence[str],
                  labels: Sequence[str], title: str, cmap: str = "Blues") -> plt.Figure:
    """A grid of heat-maps; matrices (rows, cols, queries, keys), axes labelled with tokens."""
    rows, cols = matrices.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            image = ax.imshow(matrices[r, c].detach().float().cpu(), cmap=cmap, vmin=0, vmax=1)
            ax.set_title(f"{row_titles[r]} · {col_titles[c]}", fontsize=8)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(title)
    fig.supxlabel("key (attended-to token)")
    fig.supylabel("query token")
    return fig


def attention_explorer(attentions: Sequence[torch.Tensor], labels: Sequence[str], title: str) -> go.Figure:
    """One heat-map per (layer, head) of the first sequence, chosen with a dropdown (works offline)."""
    traces, names = [], []
    for layer, weights in enumerate(attentions):
        for head in range(weights.shape[1]):
            traces.append(go.Heatmap(z=weights[0, head].detach().float().cpu().numpy(), x=list(range(len(labels))),
                                     y=list(range(len(labels))), zmin=0, zmax=1, colorscale="Blues",
                                     visible=not traces, hovertemplate="query %{y} → key %{x}: %{z:.2f}<extra></extra>",
                                     colorbar={"title": "weight"}))
            names.append(f"layer {layer} · head {head}")
    buttons = [dict(label=name, method="update", args=[{"visible": [j == i for j in range(len(traces))]}])
               for i, name in enumerate(names)]
    ticks = dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels))
    fig = go.Figure(traces)
    fig.update_layout(title=title, updatemenus=[dict(buttons=buttons, x=1.0, y=1.15, xanchor="right")],
                      xaxis={**ticks, "title": "key (attended-to token)"},
                      yaxis={**ticks, "title": "query token", "autorange": "reversed"},
                      height=560, width=640)
    return fig
