"""The book's runtime against its budget: each chapter's full-mode seconds from the last `make book`,
with a warm and a cold model cache, the models built and their seconds, and the slowest cells.

Reads what the build left (book/_build/runtimes.json, the executed chapters in book/chapters, the zoo
log of each chapter in book/_build/zoo) and the zoo's build records; writes
bench/results/book_runtime.json and exits non-zero when a chapter or the total is over budget.
Usage: python bench/book_runtime.py  (`make bench-book`, after `make book` or `make book-force`)
"""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import nbformat
import pandas as pd

from dstutor.bench import save_results
from dstutor.chapters import (BOOK_BUDGET_S, CHAPTER_BUDGET_S, LONG_CHAPTER_BUDGET_S, LONG_CHAPTERS_ALLOWED,
                              REPO_ROOT, RUNTIMES_FILE, chapter_paths)
from dstutor.env import cache_dir
from dstutor.zoo import BUILD_RECORD

EXECUTED = REPO_ROOT / "book" / "chapters"
ZOO_LOGS = REPO_ROOT / "book" / "_build" / "zoo"


def cell_seconds(notebook: nbformat.NotebookNode) -> list[tuple[int, float, str]]:
    """(code cell number from 1, seconds, first line) for each timed cell, from nbclient's timestamps."""
    rows, number = [], 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            first = next((line for line in cell.source.splitlines() if line and not line.startswith("#")), "")
            rows.append((number, (end - start).total_seconds(), first[:60]))
    return rows


def zoo_records(zoo_dir: Path) -> dict[str, dict]:
    """Each cached artefact's own build seconds and the artefacts its build needed."""
    return {path.parent.name: json.loads(path.read_text()) for path in zoo_dir.glob(f"*/{BUILD_RECORD}")}


def needed_closure(names: set[str], records: dict[str, dict]) -> set[str]:
    """The artefacts `names` need to be built from a cold cache, themselves included."""
    found, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += records.get(name, {}).get("needs", [])
    return found


def chapter_account(seconds: float, log: list[dict], records: dict[str, dict]) -> dict:
    """A chapter's run split into its own work and model builds; its cold-cache time from the records."""
    built = {row["artefact"] for row in log if row["built"]}
    used = needed_closure({row["artefact"] for row in log}, records)
    build_s = sum(records.get(name, {}).get("seconds", 0.0) for name in built)
    warm = seconds - build_s
    cold = warm + sum(records.get(name, {}).get("seconds", 0.0) for name in used)
    return {"seconds": round(seconds, 1), "warm-cache seconds": round(warm, 1),
            "cold-cache seconds": round(cold, 1), "models built here": len(built),
            "build seconds here": round(build_s, 1), "models used": len(used)}


def book_seconds(table: pd.DataFrame, model_seconds: float) -> float:
    """The book's time with its models built once on the way: this build's, or the warm chapters plus every model, if longer."""
    return max(float(table["seconds"].sum()), float(table["warm-cache seconds"].sum()) + model_seconds)


def budget_targets(table: pd.DataFrame, model_seconds: float = 0.0) -> dict[str, bool]:
    """The project's budget, one entry each: per chapter (warm cache), the long-chapter allowance, the book.

    model_seconds: the build seconds of every model the chapters need, each counted once (a cold model cache).
    """
    long = table.index[table["warm-cache seconds"] > CHAPTER_BUDGET_S].tolist()
    return {
        f"every chapter ≤ {LONG_CHAPTER_BUDGET_S} s": bool((table["warm-cache seconds"] <= LONG_CHAPTER_BUDGET_S).all()),
        f"at most {LONG_CHAPTERS_ALLOWED} chapters over {CHAPTER_BUDGET_S} s (over: {', '.join(long) or 'none'})":
            len(long) <= LONG_CHAPTERS_ALLOWED,
        f"the book, every model it needs built once, ≤ {BOOK_BUDGET_S} s": book_seconds(table, model_seconds) <= BOOK_BUDGET_S,
    }


def main() -> int:
    if not RUNTIMES_FILE.exists():
        sys.exit(f"{RUNTIMES_FILE} does not exist: run `make book` (or `make book-force`) first")
    runtimes = json.loads(RUNTIMES_FILE.read_text())
    records = zoo_records(cache_dir() / "zoo")
    rows, slow_cells, used = [], [], set()
    for path in chapter_paths():
        measured = runtimes.get(path.stem, {}).get("cpu")
        if measured is None:
            sys.exit(f"chapter {path.stem} has no CPU runtime in {RUNTIMES_FILE}: run `make book-force`")
        log_file = ZOO_LOGS / f"{path.stem}.jsonl"
        log = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
        used |= {row["artefact"] for row in log}
        rows.append({"chapter": path.stem[:2], "built": measured["when"][:16],
                     **chapter_account(measured["seconds"], log, records)})
        executed = EXECUTED / f"{path.stem}.ipynb"
        if executed.exists():
            cells = sorted(cell_seconds(nbformat.read(executed, as_version=4)), key=lambda r: -r[1])[:3]
            slow_cells += [{"chapter": path.stem[:2], "cell": n, "seconds": round(s, 1), "starts with": text}
                           for n, s, text in cells]
    table = pd.DataFrame(rows).set_index("chapter")
    models = needed_closure(used, records)
    model_seconds = sum(records.get(name, {}).get("seconds", 0.0) for name in models)
    targets = budget_targets(table, model_seconds)
    over = table.index[table["warm-cache seconds"] > CHAPTER_BUDGET_S].tolist()
    summary = (f"Executing every chapter in full mode took **{table['seconds'].sum() / 60:.1f} min** "
               f"({table['warm-cache seconds'].sum() / 60:.1f} min with every model already cached; "
               f"building the {len(models)} models the chapters need once adds {model_seconds / 60:.1f} min, "
               f"so the book from an empty model cache takes {book_seconds(table, model_seconds) / 60:.1f} min). "
               f"The slowest chapter is {table['warm-cache seconds'].idxmax()} "
               f"({table['warm-cache seconds'].max():.0f} s); "
               + (f"chapters over {CHAPTER_BUDGET_S} s: {', '.join(over)}." if over
                  else f"no chapter takes over {CHAPTER_BUDGET_S} s."))
    save_results("book_runtime", table, summary, targets)
    (REPO_ROOT / "bench" / "results" / "book_runtime_cells.csv").write_text(
        pd.DataFrame(slow_cells).to_csv(index=False))
    print(table.to_string(), "\n", summary, sep="")
    for target, met in targets.items():
        print(("met    " if met else "MISSED ") + target)
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
