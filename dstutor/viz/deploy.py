"""Plots for deployment: size vs quality, int8 speed by width, QAT by recipe, pruning, decoding by context, load."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def _finish(fig: plt.Figure, axes, title: str) -> plt.Figure:
    """A small legend and a light grid on every panel, the title above them all."""
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def size_quality(table: pd.DataFrame, title: str) -> plt.Figure:
    """Each variant as a point: megabytes of weights against held-out perplexity, named in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    markers = "osD^vP*X"
    for i, row in enumerate(table.itertuples()):  # a legend, not labels: variants can share a size
        ax.scatter(row.MB, row.perplexity, marker=markers[i % len(markers)], s=60, label=row.variant)
    ax.set(title=title, xlabel="weights (MB)", ylabel="held-out perplexity (lower is better)")
    # At least ±1 % around the points: a change in the fifth digit should not fill the plot.
    low, high = table.perplexity.min(), table.perplexity.max()
    middle, half = (low + high) / 2, max((high - low) / 2 * 1.3, 0.01 * low)
    ax.set_ylim(middle - half, middle + half)
    ax.margins(x=0.15)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def speed_by_width(table: pd.DataFrame, title: str) -> plt.Figure:
    """int8 matmul speed-up over fp32 at each width, with the break-even line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(table.width, table.speedup, marker="o", label="int8 (ours, with activation quantisation)")
    ax.axhline(1, color="grey", linestyle="--", label="fp32 (break-even)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(table.width, [str(w) for w in table.width])
    ax.set(title=title, xlabel="matrix width (hidden size)", ylabel="speed-up over fp32 (×)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def recipe_bars(results: pd.DataFrame, value: str, title: str, ylabel: str) -> plt.Figure:
    """Mean over seeds per (bits, recipe) as bars, with the lowest and highest seed as an error bar."""
    stats = results.groupby(["bits", "recipe"], sort=False)[value].agg(["mean", "min", "max"]).reset_index()
    recipes = list(dict.fromkeys(results.recipe))
    bits = sorted(results.bits.unique(), reverse=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / len(recipes)
    for i, recipe in enumerate(recipes):
        rows = stats[stats.recipe == recipe].set_index("bits").reindex(bits)  # a recipe not run at a width: no bar
        positions = [b + (i - (len(recipes) - 1) / 2) * width for b in range(len(bits))]
        ax.bar(positions, rows["mean"], width, yerr=[rows["mean"] - rows["min"], rows["max"] - rows["mean"]],
               capsize=3, label=recipe)
    ax.set_xticks(range(len(bits)), [f"{b} bits" for b in bits])
    ax.set(title=title, ylabel=ylabel)
    ax.set_ylim(bottom=min(stats["min"]) * 0.95)
    ax.legend(fontsize=8)
    return fig


def pruning_curves(table: pd.DataFrame, title: str, speed_label: str) -> plt.Figure:
    """Perplexity and prefill time against the share removed, one line per method; every line starts at the dense row."""
    fig, (quality_ax, speed_ax) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    dense = table.iloc[0]
    for method, group in table.iloc[1:].groupby("method"):
        points = pd.concat([dense.to_frame().T, group])
        quality_ax.plot(points.removed, points.perplexity, marker="o", label=method)
        speed_ax.errorbar(points.removed, points.prefill_ms, yerr=[points.prefill_ms - points.prefill_ms_min,
                          points.prefill_ms_max - points.prefill_ms], marker="o", capsize=3, label=method)
    quality_ax.set(xlabel="share removed", ylabel="held-out perplexity", title="quality")
    speed_ax.set(xlabel="share removed", ylabel=speed_label, title="speed")
    return _finish(fig, (quality_ax, speed_ax), title)


def decoding_curves(table: pd.DataFrame, title: str) -> plt.Figure:
    """Left: decoding tokens/s against context per implementation. Right: cache megabytes per layout."""
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for name, group in table.dropna(subset=["tokens_per_s"]).groupby("implementation", sort=False):
        speed.plot(group.context, group.tokens_per_s, marker="o", label=name)
    for name, group in table.dropna(subset=["cache_bytes"]).groupby("implementation", sort=False):
        memory.plot(group.context, group.cache_bytes / 2**20, marker="o", label=name.removeprefix("cache: "))
    speed.set(xlabel="context (tokens)", ylabel="decoding speed (tokens/s, batch 1)", title="speed")
    memory.set(xlabel="context (tokens)", ylabel="KV cache (MB, fp32, one sequence)", title="cache memory")
    return _finish(fig, (speed, memory), title)


def load_curves(table: pd.DataFrame, title: str) -> plt.Figure:
    """Throughput, p50/p99 latency and time to first token against concurrency, one line per server setting."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for name, group in table.groupby("server", sort=False):
        line = axes[0].plot(group.concurrency, group.requests_per_s, marker="o", label=name)[0]
        axes[1].plot(group.concurrency, group.p50_latency_s, marker="o", color=line.get_color(), label=f"{name}, p50")
        axes[1].plot(group.concurrency, group.p99_latency_s, linestyle=":", color=line.get_color(), label=f"{name}, p99")
        axes[2].plot(group.concurrency, group.p50_ttft_s, marker="o", color=line.get_color(), label=name)
    labels = ["throughput (answered requests/s)", "latency per request (s)", "time to first token, p50 (s)"]
    for ax, label in zip(axes, labels):
        ax.set(xlabel="concurrent clients", ylabel=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table.concurrency.unique()), [str(c) for c in sorted(table.concurrency.unique())])
    return _finish(fig, axes, title)
