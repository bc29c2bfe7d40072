"""The install lists agree: pyproject pins == environment.yml's pip list; no unpinned dependency; the layers hold."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from dstutor.chapters import REPO_ROOT


def pyproject_requirements() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]


def test_every_dependency_is_pinned_exactly():
    loose = [d for d in pyproject_requirements() if "==" not in d]
    assert not loose, f"unpinned dependencies in pyproject.toml: {loose}"


def test_environment_yml_matches_pyproject():
    conda = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_lists = [entry["pip"] for entry in conda["dependencies"] if isinstance(entry, dict)]
    assert len(pip_lists) == 1
    assert sorted(pip_lists[0]) == sorted(pyproject_requirements())
    assert "python=3.11" in conda["dependencies"]


def test_npm_lock_names_no_download_hosts():
    lock = (REPO_ROOT / "book" / "package-lock.json").read_text()
    assert '"resolved"' not in lock


def test_no_notebook_json_next_to_the_chapters():
    assert not list(Path(REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_every_module_imports_only_the_layers_below_it():
    # the contract in pyproject.toml ([tool.importlinter]): e.g. finetune may import train, never evaluate
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--config", str(REPO_ROOT / "pyproject.toml")], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_course_package_loads_no_notebook_machinery():
    # The chapter executor, prose check and Lab settings are the book's tooling (dstutor_book), not the reader's.
    code = "import sys, dstutor.train, dstutor.chapters; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('nbclient', 'nbformat', 'jupytext', 'dstutor_book')))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]"
    assert not any((REPO_ROOT / "dstutor" / f"{name}.py").exists() for name in ("execution", "dependencies", "prose_check"))
