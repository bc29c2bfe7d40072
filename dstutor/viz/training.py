"""Plots of training runs: loss curves of several runs and heat-maps of a hyper-parameter grid."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def grid_heatmap(results: pd.DataFrame, x: str, y: str, value: str = "val_loss", title: str | None = None) -> go.Figure:
    """A heat-map of `value` over two grid axes, each cell annotated, the best cell outlined."""
    table = results.pivot_table(index=y, columns=x, values=value)
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=[str(c) for c in table.columns], y=[str(i) for i in table.index],
                               colorscale="Viridis_r", colorbar_title=value, texttemplate="%{z:.3f}",
                               hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{value}=%{{z:.4f}}<extra></extra>"))
    best_y, best_x = table.stack().idxmin()
    fig.add_shape(type="rect", xref="x", yref="y", line=dict(color="red", width=3),
                  x0=list(table.columns).index(best_x) - 0.5, x1=list(table.columns).index(best_x) + 0.5,
                  y0=list(table.index).index(best_y) - 0.5, y1=list(table.index).index(best_y) + 0.5)
    fig.update_layout(title=title or f"{value} over {x} × {y} (best outlined)", xaxis_title=x, yaxis_title=y,
                      xaxis_type="category", yaxis_type="category", height=380)
    return fig


def loss_curves(histories: pd.DataFrame, by: str = "variant", y: str = "loss", smooth: int = 10,
                title: str = "training loss") -> go.Figure:
    """One smoothed curve of column `y` per value of `by`; validation points where the column exists."""
    fig = go.Figure()
    for name, run in histories.groupby(by, sort=False):
        fig.add_scatter(x=run.step, y=run[y].rolling(smooth, min_periods=1).mean(), name=f"{name}", mode="lines")
        if "val_loss" in run and y == "loss":
            val = run.dropna(subset=["val_loss"])
            fig.add_scatter(x=val.step, y=val.val_loss, name=f"{name} (validation)", mode="markers",
                            marker_symbol="diamond")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=f"{y} ({smooth}-step mean)", height=380)
    return fig
