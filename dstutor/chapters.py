"""The course's chapters: where they are, their titles, and the runtimes `make book` recorded.

Chapters import this module (each opens with `runtime_note`), so it holds only what they read: the
machinery that executes them lives in `dstutor_book.execution`, and changing it re-runs no chapter.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
RUNTIMES_FILE = REPO_ROOT / "book" / "_build" / "runtimes.json"
# The course's runtime budget on a 2-core CPU, full mode (`make bench-book` checks the last build against it).
CHAPTER_BUDGET_S = 300  # a chapter ...
LONG_CHAPTER_BUDGET_S = 480  # ... except at most LONG_CHAPTERS_ALLOWED chapters, up to this
LONG_CHAPTERS_ALLOWED = 2
BOOK_BUDGET_S = 2400  # every chapter, the models they build included


def chapter_paths(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The chapters in course order: `NN_topic.md` files."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.md"))


def chapter_title(path: Path) -> str:
    """The chapter's first `# ` heading."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def chapter_runtimes(runtimes_file: Path = RUNTIMES_FILE, directory: Path = NOTEBOOK_DIR) -> pd.DataFrame:
    """Every chapter with its last measured full-mode runtime on CPU and GPU (NaN: not measured yet)."""
    data = json.loads(runtimes_file.read_text()) if runtimes_file.exists() else {}
    rows = []
    for path in chapter_paths(directory):
        measured = data.get(path.stem, {})
        rows.append({"chapter": path.stem[:2], "title": chapter_title(path),
                     "CPU seconds": measured.get("cpu", {}).get("seconds", float("nan")),
                     "GPU seconds": measured.get("cuda", {}).get("seconds", float("nan"))})
    return pd.DataFrame(rows).set_index("chapter")


def runtime_table(runtimes_file: Path = RUNTIMES_FILE, directory: Path = NOTEBOOK_DIR):
    """chapter_runtimes() styled for reading: whole seconds, "not measured yet" where there is no run."""
    return chapter_runtimes(runtimes_file, directory).style.format(precision=0, na_rep="not measured yet")


def budget_sentence() -> str:
    """The runtime budget in words, from the constants `make bench-book` checks."""
    return (f"The course's budget is {CHAPTER_BUDGET_S / 60:.0f} minutes a chapter on a 2-core CPU "
            f"({LONG_CHAPTERS_ALLOWED} chapters may take up to {LONG_CHAPTER_BUDGET_S / 60:.0f}), "
            f"{BOOK_BUDGET_S / 60:.0f} minutes for the whole book.")


def runtime_note(number: str, runtimes_file: Path = RUNTIMES_FILE) -> str:
    """One sentence for a chapter's opening: its runtimes from the last full build, or that none exists."""
    table = chapter_runtimes(runtimes_file)
    if number not in table.index:
        raise ValueError(f"no chapter numbered {number!r}; chapters are {list(table.index)}")
    row = table.loc[number]
    parts = [f"{row[kind]:.0f} s on {label}" for kind, label in
             (("CPU seconds", "this course's CPU build machine"), ("GPU seconds", "a GPU"))
             if row[kind] == row[kind]]  # NaN != NaN: not measured yet
    if not parts:
        return "Runtime: not measured yet (it is recorded by `make book`)."
    return "Runtime in the last `make book`: " + "; ".join(parts) + "."
