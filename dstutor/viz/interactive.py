"""Interactive plotly figures whose controls work in the static book, with no kernel behind them."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go


def slider_bars(x: Sequence, y_by_step: Mapping[str, Sequence[float]], *, title: str,
                x_title: str, y_title: str, step_title: str) -> go.Figure:
    """A bar chart with a slider that switches between precomputed series (one per slider step)."""
    steps = list(y_by_step)
    fig = go.Figure([go.Bar(x=list(x), y=list(y_by_step[s]), visible=(i == 0), name=str(s))
                     for i, s in enumerate(steps)])
    slider_steps = [dict(method="update", label=str(s),
                         args=[{"visible": [j == i for j in range(len(steps))]}])
                    for i, s in enumerate(steps)]
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, showlegend=False,
                      sliders=[dict(active=0, currentvalue={"prefix": f"{step_title}: "},
                                    steps=slider_steps)])
    return fig
