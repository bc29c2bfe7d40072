"""What can change a chapter's outputs: the dstutor code it runs, followed through imports, and the
benchmark results it reads.

`make book` re-executes a chapter when one of these changes, not when any file of the package does:
a new module for chapter 11 should not re-run ten chapters that never import it. A module counts by
its code (its syntax tree without docstrings), so a comment or docstring edit re-runs nothing.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "dstutor"  # the course package the chapters import
PACKAGE = PACKAGE_DIR.name
# Module names written as strings, e.g. `torchrun -m dstutor.cli` started from a chapter.
DOTTED_NAME = re.compile(rf"\b{PACKAGE}(?:\.\w+)+")
RESULTS_READER = "load_results"  # dstutor.bench.load_results("name") reads bench/results/name.json


def module_file(name: str, package_dir: Path | None = None) -> Path | None:
    """The source file of module `dstutor.a.b` (a .py file or a package's __init__), None if no module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = (package_dir or PACKAGE_DIR).joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    # Importing dstutor.a.b runs dstutor/__init__ and dstutor/a/__init__ first.
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with every module, class and function docstring removed (in place)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=1024)  # the build hashes every chapter: each module is parsed once per text
def code_fingerprint(source: str) -> str:
    """What of `source` can change what it does: its syntax tree without docstrings, comments or layout.

    Source that does not parse (IPython magics) counts as its text.
    """
    try:
        return ast.dump(without_docstrings(ast.parse(source)))
    except SyntaxError:
        return source


def _strings(tree: ast.AST) -> list[str]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


@functools.lru_cache(maxsize=1024)
def imported_names(code: str, package: str = "") -> frozenset[str]:
    """Absolute module names that code imports (anywhere, functions included) or names in a string.

    Comments and docstrings are not code: a module named there is no dependency.
    """
    tree = without_docstrings(ast.parse(code))
    names = {name for text in _strings(tree) for name in DOTTED_NAME.findall(text)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` inside package `package`
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return frozenset(parent for name in names for parent in _with_parents(name))


def results_read(code: str) -> set[str]:
    """Benchmark result names that code reads with a literal `load_results("name")`."""
    return {node.args[0].value for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == RESULTS_READER}


def package_files(code: str, package_dir: Path | None = None) -> list[Path]:
    """Every dstutor file that code can execute through imports, followed transitively, sorted."""
    found: dict[Path, None] = {}
    pending = [(code, "")]
    while pending:
        source, package = pending.pop()
        for name in imported_names(source, package):
            path = module_file(name, package_dir)
            if path is None or path in found:
                continue
            found[path] = None
            module_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            pending.append((path.read_text(encoding="utf-8"), module_package))
    return sorted(found)


def notebook_code(cells: list) -> str:
    """The code cells of a notebook as one Python source; IPython magics and shell lines left out."""
    lines = [line for cell in cells if cell.cell_type == "code"
             for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)
