"""Build the course site: execute every chapter (full mode, cached), then render with Jupyter Book.

A chapter is re-executed when what can change its outputs changed since its last execution (its code
cells, the code of the dstutor modules it imports, the benchmark results it reads, the pins), or with
--force; a prose-only edit is copied into the executed chapter without running it. Chapter 00 runs
last, so its table of runtimes shows this build's numbers.
`--smoke` builds a quick site from smoke-mode runs into build/smoke-book (used by the tests).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dstutor.chapters import REPO_ROOT, chapter_paths
from dstutor_book.execution import (ChapterError, execute_chapter, is_current, record_runtime, refresh_text,
                                save_executed)
from dstutor.claims import sources_table
from dstutor.env import choose_device
from dstutor.zoo import ACCESS_LOG

BOOK = Path(__file__).resolve().parent
BOOK_FILES = ["_config.yml", "_toc.yml", "_ext"]
ZOO_LOGS = Path("_build") / "zoo"  # under the book folder


def is_tour(chapter: Path) -> bool:
    """Chapter 00, the tour: it shows every other chapter's runtime, so it runs after them."""
    return chapter.stem.startswith("00_")


def execute_all(out_dir: Path, smoke: bool, force: bool, only: list[str] | None = None) -> None:
    """Execute the chapters that changed into out_dir as .ipynb; record full-mode runtimes and zoo use.

    `only`: chapter numbers to consider (the others are left as they are).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    chapters = [c for c in chapter_paths() if only is None or c.stem[:2] in only]
    device = choose_device().device.type
    ran_any = False
    for chapter in sorted(chapters, key=is_tour):  # the tour runs last: it reads the others' runtimes
        stale_tour = is_tour(chapter) and ran_any
        if not force and not stale_tour and is_current(chapter, out_dir, smoke):
            refresh_text(chapter, out_dir, smoke)
            print(f"  {chapter.stem}: outputs current, text refreshed", flush=True)
            continue
        print(f"  {chapter.stem}: executing ({'smoke' if smoke else 'full'} mode)...", flush=True)
        # Which models the chapter built or loaded: bench/book_runtime.py tells its own time from theirs.
        zoo_log = out_dir.parent / ZOO_LOGS / f"{chapter.stem}.jsonl"
        zoo_log.parent.mkdir(parents=True, exist_ok=True)
        zoo_log.unlink(missing_ok=True)
        os.environ[ACCESS_LOG] = str(zoo_log)
        run = execute_chapter(chapter, smoke=smoke)
        del os.environ[ACCESS_LOG]
        save_executed(run, out_dir, smoke)
        if not smoke:
            record_runtime(run, device)
        print(f"  {chapter.stem}: {run.seconds:.1f} s", flush=True)
        ran_any = True
    wanted = {f"{c.stem}.ipynb" for c in chapter_paths()}
    for old in out_dir.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()


def write_sources_page(book_dir: Path) -> Path:
    """book_dir/sources.md: the guides chapters cite as [short title §section], from dstutor.claims."""
    page = book_dir / "sources.md"
    page.write_text("# Sources: the five guides the course tests\n\n"
                    "The chapters quote these Chinese blog guides only to test their claims, and cite them as "
                    "`[short title §section]`. Their numbers are claims, not results: each chapter's "
                    "claimed-vs-measured table says which hold on the reader's machine.\n\n"
                    + "| cited as | full title | author |\n|---|---|---|\n"
                    + "".join(f"| {row['cited as']} | {row['full title']} | {row['author']} |\n"
                              for _, row in sources_table().iterrows()), encoding="utf-8")
    return page


def render(book_dir: Path) -> None:
    """Run Jupyter Book on book_dir (warnings are shown, the build fails on errors)."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(book_dir)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="re-execute every chapter")
    parser.add_argument("--smoke", action="store_true", help="quick site from smoke runs (build/smoke-book)")
    parser.add_argument("--chapters", nargs="+", metavar="NN", help="execute only these chapters, e.g. 09 10")
    parser.add_argument("--no-site", action="store_true", help="execute chapters, do not render the site")
    args = parser.parse_args()
    book_dir = BOOK
    if args.smoke:
        book_dir = REPO_ROOT / "build" / "smoke-book"
        book_dir.mkdir(parents=True, exist_ok=True)
        for name in BOOK_FILES:
            source, target = BOOK / name, book_dir / name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
        (book_dir / "node_modules").unlink(missing_ok=True)
        (book_dir / "node_modules").symlink_to(BOOK / "node_modules")
    try:
        execute_all(book_dir / "chapters", smoke=args.smoke, force=args.force, only=args.chapters)
    except ChapterError as error:
        sys.exit(f"book build stopped: {error}")
    if args.no_site:
        return
    write_sources_page(book_dir)
    render(book_dir)
    print(f"site: {book_dir / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
