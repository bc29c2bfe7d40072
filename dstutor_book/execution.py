"""Executing chapters: one from a fresh kernel in full or smoke mode, checks on the result, and the build cache.

Both the tests (smoke mode) and `make book` (full mode) run chapters through `execute_chapter`, so
a failure reads the same everywhere: the chapter, the cell number, its source and the traceback.
Smoke sizes live in each chapter's front matter (`dstutor: smoke: {name: value}`) and are injected
as a cell right after the chapter's `parameters` cell (papermill's convention).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from dstutor.chapters import REPO_ROOT, RUNTIMES_FILE
from dstutor_book.dependencies import code_fingerprint, notebook_code, package_files, results_read

ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours tracebacks; reports are plain text


class ChapterError(RuntimeError):
    """A chapter failed: the message names the chapter, the cell and the error."""


@dataclass
class ChapterRun:
    """An executed chapter and its wall-clock time."""

    path: Path
    notebook: nbformat.NotebookNode
    seconds: float
    stamp: str | None = None  # content_hash when execution started (the file may change while it runs)


def read_chapter(path: Path, smoke: bool) -> nbformat.NotebookNode:
    """Read a jupytext chapter; in smoke mode insert its smoke overrides after the parameters cell."""
    notebook = jupytext.read(path)
    overrides = notebook.metadata.get("dstutor", {}).get("smoke", {})
    if not smoke or not overrides:
        return notebook
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ChapterError(f"{path.name}: has smoke overrides but {len(tagged)} cells tagged "
                           "'parameters' (need exactly one)")
    source = "# Injected by dstutor.chapters: smoke-mode sizes\n" + "\n".join(
        f"{name} = {value!r}" for name, value in overrides.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(tagged[0] + 1, cell)
    return notebook


@contextlib.contextmanager
def _kernel_env(smoke: bool):
    # The kernel inherits this process's environment: DSTUTOR_SMOKE reaches dstutor inside it, and
    # the inline backend makes plt.show() store figures (an inherited MPLBACKEND=Agg would drop them).
    wanted = {"DSTUTOR_SMOKE": "1" if smoke else "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


POLL_STEP_S = 1.0  # the longest a waiting client sleeps before it looks at its socket again


def poll_in_steps(channel, step: float = POLL_STEP_S) -> None:
    """Make an async channel's get_msg(timeout) look for a message every `step` seconds until its timeout.

    Why: the client's zmq.asyncio poll can miss the wake-up for a message that has arrived, and then
    returns it only when its timeout ends. nbclient waits for each reply with the cell timeout, so
    after a widget cell chapter 08 once stalled for exactly that timeout (900 s, visible in the
    executed notebook's timestamps; jupyter/nbclient#312 reports the same).
    """
    wait = channel.get_msg

    async def get_msg(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                return await wait(timeout=step if left is None else max(0.0, min(step, left)))
            except Empty:
                if left is not None and left <= step:
                    raise

    channel.get_msg = get_msg


def execute_chapter(path: Path, smoke: bool, timeout: int = 900) -> ChapterRun:
    """Run every cell from a fresh kernel (timeout per cell, seconds); raise ChapterError on failure."""
    stamp = content_hash(path, smoke)
    notebook = read_chapter(path, smoke)
    current = {"index": -1}

    def remember(cell, cell_index, **_):
        current["index"] = cell_index
        if cell_index == 0:  # called for every cell, markdown too; the kernel client exists by now
            poll_in_steps(client.kc.shell_channel)
            poll_in_steps(client.kc.iopub_channel)

    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=remember)
    start = time.perf_counter()
    with _kernel_env(smoke):
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            index = current["index"]
            source = notebook.cells[index].source if index >= 0 else ""
            number = sum(c.cell_type == "code" for c in notebook.cells[:index + 1])
            kind = {CellTimeoutError: f"timed out after {timeout} s",
                    DeadKernelError: "killed the kernel (out of memory?)"}.get(type(error), "raised")
            report = ANSI_COLOURS.sub("", str(error))
            raise ChapterError(f"{path.name}: code cell {number} {kind}\n--- cell source ---\n{source}\n"
                               f"--- error ---\n{report}") from None
    return ChapterRun(path, notebook, time.perf_counter() - start, stamp)


FIGURE_CALLS = ("plt.show()", "show_heatmaps(")


def missing_figures(notebook: nbformat.NotebookNode) -> list[int]:
    """Numbers (from 1) of code cells that draw a matplotlib figure but stored no image."""
    missing, number = [], 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        draws = any(call in cell.source for call in FIGURE_CALLS)
        if draws and not any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            missing.append(number)
    return missing


# JupyterLab renders markdown cells as CommonMark + HTML: MyST directives (```{note}, :::{dropdown})
# and roles ({math}`…`) show up there as raw text. Chapters use HTML instead (<details> for solutions).
# Book-only markup a chapter may still use, each with the reason it is worth the raw text in Lab: none.
BOOK_ONLY_MARKUP: dict[str, str] = {}
MYST_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\s*\{([\w-]+)\}", re.M)
MYST_ROLE = re.compile(r"(?<![`\w])\{([\w:-]+)\}`")  # {role}`text`, not inline code `{x}`


def lab_unrenderable(notebook: nbformat.NotebookNode) -> list[str]:
    """Markup in markdown cells that JupyterLab would show as raw text or break: one message each."""
    problems = []
    markdown = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    for number, cell in enumerate(markdown, start=1):
        found = [("directive", name) for name in MYST_DIRECTIVE.findall(cell.source)]
        found += [("role", name) for name in MYST_ROLE.findall(cell.source)]
        problems += [f"markdown cell {number}: MyST {kind} {{{name}}}, which Lab shows as raw text"
                     for kind, name in found if name not in BOOK_ONLY_MARKUP]
        if cell.source.count("<details>") != cell.source.count("</details>"):
            problems.append(f"markdown cell {number}: <details> opened and closed in different cells "
                            "(Lab renders each cell on its own: keep the whole block in one cell)")
    return problems


def record_runtime(run: ChapterRun, device: str, runtimes_file: Path = RUNTIMES_FILE) -> None:
    """Store a full-mode chapter runtime for this device kind ('cpu' or 'cuda'), keeping the others."""
    data = json.loads(runtimes_file.read_text()) if runtimes_file.exists() else {}
    data.setdefault(run.path.stem, {})[device] = {
        "seconds": round(run.seconds, 1),
        "cores": os.cpu_count(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    runtimes_file.parent.mkdir(parents=True, exist_ok=True)
    runtimes_file.write_text(json.dumps(data, indent=2, sort_keys=True))


def chapter_dependencies(chapter: Path, package_dir: Path | None = None) -> list[Path]:
    """The dstutor files a chapter can run (its imports, followed); all of them if its code does not parse."""
    package_dir = package_dir or REPO_ROOT / "dstutor"
    try:
        return package_files(notebook_code(jupytext.read(chapter).cells), package_dir)
    except SyntaxError:
        return sorted(package_dir.rglob("*.py"))


def _cell_fingerprint(cell) -> str:
    # Magics are not Python: they count as text, the rest by its syntax tree (comments left out).
    lines = cell.source.splitlines()
    magics = [line for line in lines if line.lstrip().startswith(("%", "!"))]
    code = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
    return "\n".join(magics) + "\0" + code_fingerprint(code) + "\0" + ",".join(cell.metadata.get("tags", []))


def _pins(root: Path) -> list[str]:
    project = root / "pyproject.toml"
    return sorted(tomllib.loads(project.read_text())["project"]["dependencies"]) if project.exists() else []


def content_hash(chapter: Path, smoke: bool, root: Path = REPO_ROOT) -> str:
    """Hash of what can change a chapter's outputs: outputs are stale when it changes.

    That is: its code cells (not comments, not prose), the mode, the code of the dstutor modules it
    imports (not comments or docstrings), the benchmark results it or they read, and the pinned versions.
    """
    notebook = read_chapter(chapter, smoke)
    digest = hashlib.sha256(b"smoke" if smoke else b"full")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(_cell_fingerprint(cell).encode() + b"\1")
    sources = [notebook_code(notebook.cells)]
    for path in chapter_dependencies(chapter, root / "dstutor"):
        text = path.read_text(encoding="utf-8")
        sources.append(text)
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + code_fingerprint(text).encode())
    names = set()
    for source in sources:
        try:
            names |= results_read(source)
        except SyntaxError:
            pass
    for name in sorted(names):
        result = root / "bench" / "results" / f"{name}.json"
        digest.update(name.encode() + b"\0" + (result.read_bytes() if result.exists() else b"missing"))
    digest.update("\n".join(_pins(root)).encode())
    return digest.hexdigest()


def save_executed(run: ChapterRun, out_dir: Path, smoke: bool) -> Path:
    """Write the executed chapter as out_dir/NN_topic.ipynb, stamped with its content hash."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run.notebook.metadata["dstutor_build"] = run.stamp or content_hash(run.path, smoke)
    target = out_dir / f"{run.path.stem}.ipynb"
    nbformat.write(run.notebook, target)
    return target


def is_current(chapter: Path, out_dir: Path, smoke: bool, root: Path = REPO_ROOT) -> bool:
    """True when out_dir holds this chapter executed from code that gives the same outputs today."""
    target = out_dir / f"{chapter.stem}.ipynb"
    return (target.exists() and
            nbformat.read(target, as_version=4).metadata.get("dstutor_build") == content_hash(chapter, smoke, root))


def refresh_text(chapter: Path, out_dir: Path, smoke: bool) -> Path:
    """Rewrite a current executed chapter with today's prose and code text, keeping its outputs.

    Only for a chapter `is_current` accepts: its code cells match the executed ones one to one.
    """
    target = out_dir / f"{chapter.stem}.ipynb"
    executed = nbformat.read(target, as_version=4)
    notebook = read_chapter(chapter, smoke)
    old_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    new_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if len(old_cells) != len(new_cells):
        raise ChapterError(f"{chapter.name}: {len(new_cells)} code cells now, {len(old_cells)} when executed")
    for old, new in zip(old_cells, new_cells):
        new.outputs, new.execution_count = old.outputs, old.execution_count
        if "execution" in old.metadata:
            new.metadata["execution"] = old.metadata["execution"]
    notebook.metadata = executed.metadata
    nbformat.write(notebook, target)
    return target
