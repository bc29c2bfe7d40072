"""MoE pictures: which expert each token goes to, and how even the load is."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch


def routing_explorer(gates_per_layer: Sequence[torch.Tensor], labels: Sequence[str], title: str) -> go.Figure:
    """Heat-map tokens × experts of the routed gate values, one MoE layer at a time (dropdown)."""
    traces = []
    for i, gates in enumerate(gates_per_layer):
        traces.append(go.Heatmap(z=gates.detach().float().cpu().numpy().T, y=list(range(gates.shape[1])),
                                 x=list(range(len(labels))), colorscale="Viridis", visible=i == 0,
                                 colorbar={"title": "gate"},
                                 hovertemplate="token %{x} → expert %{y}: gate %{z:.2f}<extra></extra>"))
    buttons = [dict(label=f"MoE layer {i}", method="update",
                    args=[{"visible": [j == i for j in range(len(traces))]}]) for i in range(len(traces))]
    fig = go.Figure(traces)
    fig.update_layout(title=title, updatemenus=[dict(buttons=buttons, x=1.0, y=1.15, xanchor="right")],
                      xaxis=dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels),
                                 title="token"),
                      yaxis=dict(title="routed expert", dtick=1), height=420)
    return fig
