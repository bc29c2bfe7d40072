"""A bounded load generator: `concurrency` clients stream chat requests for `duration_s`, each timed.

asyncio + httpx in one process (locust patches gevent into its process and hangs Jupyter kernels).
Every request is accounted for: answered, HTTP error (4xx/5xx), or lost (connection error, timeout).
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm


@dataclass
class RequestRecord:
    """One request as the client saw it."""

    start: float                 # seconds since the load test began
    latency_s: float             # until [DONE] (or the error)
    ttft_s: float | None         # time to the first content token
    tokens: int                  # completion tokens (from the usage chunk)
    status: int | None           # HTTP status; None: lost
    error: str | None = None


async def _one(client: httpx.AsyncClient, url: str, body: dict, began: float) -> RequestRecord:
    start = time.perf_counter()
    first, tokens = None, 0
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return RequestRecord(start - began, time.perf_counter() - start, None, 0, response.status_code,
                                     response.text[:200])
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
            return RequestRecord(start - began, time.perf_counter() - start, first, tokens, 200)
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        return RequestRecord(start - began, time.perf_counter() - start, first, tokens, None, repr(error))


async def _load(base_url: str, model: str, prompts: Sequence[str], concurrency: int, duration_s: float,
                max_tokens: int, timeout_s: float) -> list[RequestRecord]:
    url = base_url + "/v1/chat/completions"
    records: list[RequestRecord] = []
    began = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        turn = 0
        while time.perf_counter() - began < duration_s:  # start no request after the deadline; finish the last
            prompt = prompts[(worker + turn * concurrency) % len(prompts)]
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 1.0, "seed": worker * 100_003 + turn, "stream": True,
                    "stream_options": {"include_usage": True}}
            records.append(await _one(client, url, body, began))
            turn += 1

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, w) for w in range(concurrency)))
    return records


def run_load(base_url: str, model: str, prompts: Sequence[str], concurrency: int, duration_s: float,
             max_tokens: int = 32, timeout_s: float = 120) -> pd.DataFrame:
    """Drive the server for duration_s with `concurrency` streaming clients; one row per request.

    Sampling (temperature 1, a seed per request) keeps answers varied and the cache out of the way.
    """
    if concurrency < 1 or duration_s <= 0:
        raise ValueError(f"need concurrency ≥ 1 and duration_s > 0, got {concurrency} and {duration_s}")
    try:  # inside Jupyter an event loop already runs: use a fresh one in a worker thread
        asyncio.get_running_loop()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            records = pool.submit(asyncio.run, _load(base_url, model, prompts, concurrency, duration_s, max_tokens,
                                                     timeout_s)).result()
    except RuntimeError:
        records = asyncio.run(_load(base_url, model, prompts, concurrency, duration_s, max_tokens, timeout_s))
    return pd.DataFrame([asdict(r) for r in records])


def summarize(records: pd.DataFrame, duration_s: float) -> dict[str, float]:
    """Throughput, latency percentiles, time to first token, time per output token, and failures."""
    ok = records[records.status == 200]
    tpot = (ok.latency_s - ok.ttft_s) / (ok.tokens - 1).clip(lower=1)
    wall = max(duration_s, float((records.start + records.latency_s).max())) if len(records) else duration_s
    return {"requests": len(records), "answered": len(ok), "lost": int(records.status.isna().sum()),
            "http_5xx": int((records.status >= 500).sum()), "http_4xx": int(((records.status >= 400)
                                                                              & (records.status < 500)).sum()),
            "requests_per_s": len(ok) / wall, "tokens_per_s": float(ok.tokens.sum()) / wall,
            "p50_latency_s": float(np.percentile(ok.latency_s, 50)) if len(ok) else float("nan"),
            "p99_latency_s": float(np.percentile(ok.latency_s, 99)) if len(ok) else float("nan"),
            "p50_ttft_s": float(ok.ttft_s.median()) if len(ok) else float("nan"),
            "p50_tpot_s": float(tpot.median()) if len(ok) else float("nan")}


def metrics_text(base_url: str) -> str:
    """The server's /metrics page: Prometheus text, one `name value` per line, what a scraper reads."""
    return httpx.get(f"{base_url}/metrics", timeout=10).raise_for_status().text


def scrape_counters(base_url: str) -> dict[str, float]:
    """The server's unlabelled /metrics values by name."""
    lines = metrics_text(base_url).splitlines()
    return {name: float(value) for name, value in (line.split() for line in lines) if "{" not in name}


def load_matrix(model_dir: str | Path, model: str, prompts: Sequence[str], settings: dict[str, int],
                concurrencies: Sequence[int], duration_s: float, max_tokens: int = 32) -> pd.DataFrame:
    """One summary row per (server setting, concurrency): each setting is a fresh `dstutor serve` process.

    settings maps a label to max_batch (1: batching off). The answer cache is off so every request decodes.
    mean_batch is the requests per decode batch over the level, read from the server's own /metrics;
    `.attrs["metrics"]` keeps each server's whole /metrics page as the load test left it.
    """
    from dstutor.serve.process import ServerProcess

    rows, final_metrics = [], {}
    for label, max_batch in settings.items():
        with ServerProcess(model_dir, max_batch=max_batch, cache_size=0) as server:
            run_load(server.base_url, model, prompts[:4], 2, 1.0, max_tokens)  # warm-up: first-call costs
            for concurrency in tqdm(concurrencies, desc=label):
                before = scrape_counters(server.base_url)
                records = run_load(server.base_url, model, prompts, concurrency, duration_s, max_tokens)
                after = scrape_counters(server.base_url)
                batches, batched = (after[k] - before[k] for k in ("dstutor_batches_total",
                                                                    "dstutor_batched_requests_total"))
                rows.append({"server": label, "max_batch": max_batch, "concurrency": concurrency,
                             **summarize(records, duration_s), "mean_batch": batched / batches if batches else np.nan})
            final_metrics[label] = metrics_text(server.base_url)
    table = pd.DataFrame(rows)
    table.attrs["metrics"] = final_metrics
    return table
