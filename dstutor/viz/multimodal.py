"""Pictures for chapter 11: image grids with captions, a similarity matrix, and an embedding map to hover over."""
from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import torch


def _rgb(image: torch.Tensor) -> np.ndarray:
    """(channels, h, w) in [0, 1] → (h, w, 3) for imshow; one channel is shown in grey."""
    array = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def image_grid(images: torch.Tensor, titles: Sequence[str], columns: int = 6, title: str = "") -> plt.Figure:
    """Images in a grid, each with its (wrapped) caption (matplotlib's fonts lack Chinese: pass English)."""
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles):
        ax.imshow(_rgb(image), interpolation="nearest")
        ax.set_title(textwrap.fill(text, 26), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def similarity_matrix(similarity: torch.Tensor, images: torch.Tensor, captions: Sequence[str], title: str) -> plt.Figure:
    """Cosine similarity of images (rows, drawn as thumbnails) and captions (columns); matches on the diagonal."""
    n = len(images)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(captions), 0.8 + 0.55 * n))
    shown = ax.imshow(similarity.float().cpu(), cmap="viridis", extent=(0, len(captions), n, 0))
    ax.set_xticks(np.arange(len(captions)) + 0.5, captions, rotation=60, ha="right", fontsize=7)
    ax.set_yticks([])
    for row, image in enumerate(images):
        ax.imshow(_rgb(image), extent=(-1.05, -0.05, row + 0.95, row + 0.05), interpolation="nearest")
    ax.set_xlim(-1.1, len(captions))
    ax.set_ylim(n, 0)  # each thumbnail's imshow resets the limits to its own extent
    fig.colorbar(shown, ax=ax, shrink=0.7, label="cosine similarity")
    ax.set_title(title)
    ax.set_xlabel("caption")
    ax.set_ylabel("image")
    return fig


def _data_uri(image: torch.Tensor) -> str:
    buffer = io.BytesIO()
    plt.imsave(buffer, _rgb(image), format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def embedding_map(image_points: np.ndarray, text_points: np.ndarray, images: torch.Tensor,
                  image_labels: Sequence[str], captions: Sequence[str], title: str, thumb: float = 0.06) -> go.Figure:
    """2-D image and caption embeddings: images drawn as thumbnails, captions as points; hover names each."""
    fig = go.Figure([
        go.Scatter(x=image_points[:, 0], y=image_points[:, 1], mode="markers", name="image",
                   marker={"size": 4, "color": "grey"}, text=list(image_labels),
                   hovertemplate="image: %{text}<extra></extra>"),
        go.Scatter(x=text_points[:, 0], y=text_points[:, 1], mode="markers", name="caption",
                   marker={"size": 7, "symbol": "diamond", "color": "crimson"}, text=list(captions),
                   hovertemplate="caption: %{text}<extra></extra>")])
    span = np.ptp(np.concatenate([image_points, text_points]), axis=0).max()
    for (x, y), image in zip(image_points, images):
        fig.add_layout_image(source=_data_uri(image), x=x, y=y, xref="x", yref="y", sizex=thumb * span,
                             sizey=thumb * span, xanchor="center", yanchor="middle", layer="above")
    fig.update_layout(title=title, xaxis_title="principal component 1", yaxis_title="principal component 2",
                      height=560, legend={"orientation": "h"})
    return fig
