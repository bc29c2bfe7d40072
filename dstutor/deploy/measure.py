"""What deployment changes cost: quality on held-out blocks, size on disk, and latency timed in turns."""
from __future__ import annotations

import itertools
from typing import Callable, Mapping

import datasets
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dstutor.data.packing import BlockLoader
from dstutor.deploy.int8 import model_bytes
from dstutor.timing import interleaved_seconds


@torch.no_grad()
def lm_quality(model: nn.Module, blocks: datasets.Dataset, batches: int, batch_size: int = 16) -> dict[str, float]:
    """Next-token loss, perplexity and top-1 accuracy over the first `batches` batches of held-out blocks."""
    model.eval()
    loss = correct = count = 0.0
    for ids in itertools.islice(BlockLoader(blocks, batch_size, shuffle=False), batches):
        logits = model(ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        loss += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        correct += float((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    if not count:
        raise ValueError("the blocks yielded no batches")
    return {"loss": loss / count, "perplexity": float(np.exp(loss / count)), "accuracy": correct / count}


def interleaved_latency(runs: Mapping[str, Callable[[], object]], rounds: int = 7) -> pd.DataFrame:
    """Milliseconds per call (median, min, max over rounds), every callable timed once per round in turn."""
    seconds = interleaved_seconds({name: lambda _, run=run: run() for name, run in runs.items()}, rounds + 1)
    return pd.DataFrame({"ms": {n: 1000 * np.median(t) for n, t in seconds.items()},
                         "ms_min": {n: 1000 * np.min(t) for n, t in seconds.items()},
                         "ms_max": {n: 1000 * np.max(t) for n, t in seconds.items()}})


def variant_table(variants: Mapping[str, nn.Module], blocks: datasets.Dataset, batches: int,
                  prefill: torch.Tensor, decode_prompt: torch.Tensor, new_tokens: int = 16,
                  rounds: int = 7) -> pd.DataFrame:
    """Per model variant: MB of weights, held-out quality, prefill ms (a batch) and decode ms (batch 1), timed in turns."""
    rows = {name: {"MB": model_bytes(model) / 2**20, **lm_quality(model, blocks, batches)}
            for name, model in tqdm(variants.items(), desc="quality")}
    with torch.no_grad():
        prefill_ms = interleaved_latency({n: (lambda m=m: m(prefill)) for n, m in variants.items()}, rounds)
        decode_ms = interleaved_latency({n: (lambda m=m: m.generate(decode_prompt, new_tokens))
                                         for n, m in variants.items()}, rounds)
    table = pd.DataFrame(rows).T
    table["prefill_ms"], table["prefill_ms_min"], table["prefill_ms_max"] = (
        prefill_ms.ms, prefill_ms.ms_min, prefill_ms.ms_max)
    table["decode_tokens_per_s"] = new_tokens / (decode_ms.ms / 1000)
    return table.rename_axis("variant").reset_index()


def matmul_speed(widths: list[int], rows: int = 64, rounds: int = 7) -> pd.DataFrame:
    """fp32 matmul vs our int8 path (activation quantisation included) on (rows, w) @ (w, w).T, timed in turns."""
    from dstutor.deploy.int8 import int8_matmul, quantize_rows

    out = []
    generator = torch.Generator().manual_seed(0)
    for width in widths:
        x, w = torch.randn(rows, width, generator=generator), torch.randn(width, width, generator=generator)
        q, scale = quantize_rows(w)
        ms = interleaved_latency({"fp32": lambda: x @ w.T, "int8": lambda: int8_matmul(x, q, scale)}, rounds)
        out.append({"width": width, "fp32_ms": ms.ms["fp32"], "int8_ms": ms.ms["int8"],
                    "speedup": ms.ms["fp32"] / ms.ms["int8"]})
    return pd.DataFrame(out)
