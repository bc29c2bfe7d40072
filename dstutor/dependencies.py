"""Which dstutor source files a piece of code can run: its imports, followed through the package.

`make book` re-executes a chapter when one of these files changes, not when any file of the package
does: a new module for chapter 11 should not re-run ten chapters that never import it (~50 min).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
# Module names written as strings, e.g. `torchrun -m dstutor.cli` started from a chapter.
DOTTED_NAME = re.compile(rf"\b{PACKAGE}(?:\.\w+)+")


def module_file(name: str) -> Path | None:
    """The source file of module `dstutor.a.b` (a .py file or a package's __init__), None if no module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    # Importing dstutor.a.b runs dstutor/__init__ and dstutor/a/__init__ first.
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_names(code: str, package: str = "") -> set[str]:
    """Absolute module names that code imports (anywhere, functions included) or names in a string."""
    names = set(DOTTED_NAME.findall(code))
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` inside package `package`
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {parent for name in names for parent in _with_parents(name)}


def package_files(code: str) -> list[Path]:
    """Every dstutor file that code can execute through imports, followed transitively, sorted."""
    found: dict[Path, None] = {}
    pending = [(code, "")]
    while pending:
        source, package = pending.pop()
        for name in imported_names(source, package):
            path = module_file(name)
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
