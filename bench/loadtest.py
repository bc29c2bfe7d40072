"""`dstutor serve` under load on loopback: concurrency 1 / 8 / 32 for a fixed duration, batching off and on.

The course's nano model (1600 pretraining steps, as chapters 05 and 12 use it) answers streaming chat
requests built from held-out reviews. Reports throughput, p50/p99 latency, time to first token and time
per output token. Target (issue 16): zero lost requests and zero 5xx in every run.
Usage: python bench/loadtest.py [--duration-s 20] [--max-tokens 32]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dstutor import zoo
from dstutor.bench import save_results
from dstutor.evaluate.suite import held_out_texts
from dstutor.models.hf import save_pretrained
from dstutor.serve.loadtest import load_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds of load per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per request")
    args = parser.parse_args()
    model, _ = zoo.pretrained_nano(1600)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "nano" / "model")
        zoo.course_tokenizer(model.config.vocab_size).save_pretrained(folder)
        prompts = held_out_texts("reviews", 64, chars=40)
        table = load_matrix(folder, "nano", prompts, {"batching off": 1, "batching on": 32}, [1, 8, 32],
                            args.duration_s, args.max_tokens)
    on = table[table.server == "batching on"].set_index("concurrency")
    off = table[table.server == "batching off"].set_index("concurrency")
    gain = 100 * (on.requests_per_s / off.requests_per_s - 1)
    summary = (f"nano model, {args.max_tokens} new tokens per streaming chat request, {args.duration_s:.0f} s per "
               f"level. Dynamic batching (≤ 32 per batch, 10 ms wait) vs one request at a time: throughput "
               + ", ".join(f"{gain[c]:+.0f} % at concurrency {c}" for c in gain.index)
               + f". p50 latency at concurrency 32: {on.p50_latency_s[32]:.2f} s batched vs "
               f"{off.p50_latency_s[32]:.2f} s unbatched. {int(table.requests.sum())} requests, "
               f"{int(table.lost.sum())} lost, {int(table.http_5xx.sum())} answered with 5xx.")
    targets = {"zero lost requests": bool(table.lost.sum() == 0), "zero 5xx": bool(table.http_5xx.sum() == 0)}
    print(table.round(3).to_string(index=False))
    print(summary)
    path = save_results("loadtest", table, summary, targets)
    print(f"results: {path}")
    if not all(targets.values()):
        raise SystemExit(f"load test failed its targets: {targets}")


if __name__ == "__main__":
    main()
