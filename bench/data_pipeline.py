"""The default data pipeline end to end, timed per stage: cached fetch → clean → dedup → tokenize → pack.

Target (issue 4): the whole pipeline ≤ 2 min on 2 cores. Also MinHash dedup throughput (docs/s).
The tokenizer is the course tokenizer (built once and cached, like the corpora; first builds are
not timed). Usage: python bench/data_pipeline.py
"""
from __future__ import annotations

import time

import datasets
import pandas as pd

from dstutor import zoo
from dstutor.bench import save_results
from dstutor.data.clean import CleanConfig, clean_corpus
from dstutor.data.dedup import dedup_exact, dedup_minhash
from dstutor.data.packing import pack, split_by_document
from dstutor.data.sources import load_corpus

TARGET_SECONDS = 120


def main() -> None:
    zoo.course_tokenizer()  # make sure the cached artifacts exist before timing
    for name in zoo.COURSE_CORPORA:
        load_corpus(name)
    stages, counts = {}, {}
    start = time.perf_counter()
    corpus = datasets.concatenate_datasets([load_corpus(name) for name in zoo.COURSE_CORPORA])
    stages["fetch (cached) + load"] = time.perf_counter() - start
    counts["documents in"] = len(corpus)

    mark = time.perf_counter()
    cleaned, report = clean_corpus(corpus, CleanConfig())
    stages["clean"] = time.perf_counter() - mark
    counts["after cleaning"] = len(cleaned)

    mark = time.perf_counter()
    texts = cleaned["text"]
    exact = dedup_exact(texts)
    unique = cleaned.select([i for i, keep in enumerate(exact.keep) if keep])
    near = dedup_minhash(unique["text"], threshold=0.8)
    deduped = unique.select([i for i, keep in enumerate(near.keep) if keep])
    stages["dedup (exact + MinHash 0.8)"] = time.perf_counter() - mark
    minhash_seconds = time.perf_counter() - mark
    counts["after dedup"] = len(deduped)

    mark = time.perf_counter()
    tokenizer = zoo.course_tokenizer()
    train, val = split_by_document(deduped, 0.05)
    train_blocks, val_blocks = pack(train, tokenizer, 128), pack(val, tokenizer, 128)
    stages["tokenize + pack"] = time.perf_counter() - mark
    counts["blocks of 128 tokens"] = len(train_blocks) + len(val_blocks)

    total = sum(stages.values())
    table = pd.DataFrame({"seconds": stages}).round(2)
    table.loc["total"] = round(total, 2)
    docs_per_s = len(unique) / minhash_seconds
    summary = (f"Default pipeline over the {len(zoo.COURSE_CORPORA)} course corpora: {counts['documents in']:,} documents "
               f"→ {counts['after cleaning']:,} cleaned → {counts['after dedup']:,} after dedup → "
               f"{counts['blocks of 128 tokens']:,} blocks, in **{total:.0f} s**. Dedup (exact + MinHash) throughput: "
               f"**{docs_per_s:,.0f} documents/s**.")
    print(table)
    print(summary)
    print(f"written: {save_results('data_pipeline', table, summary, {f'whole pipeline ≤ {TARGET_SECONDS} s': total <= TARGET_SECONDS})}")


if __name__ == "__main__":
    main()
