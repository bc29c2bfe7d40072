"""Benchmark result files: written by bench/*.py (`make bench`), shown by the chapters.

A chapter shows a benchmark as what it is: a result from the machine and date in the file, which
the reader reproduces with `make bench`. The project's own targets are kept apart (`targets`), for
developers; they are not part of the reader-facing summary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from dstutor.chapters import REPO_ROOT
from dstutor.env import machine_info

RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclass
class BenchResults:
    """One benchmark's last results: a table, a one-paragraph summary and the machine it ran on."""

    table: pd.DataFrame
    summary: str
    machine: dict
    when: str
    targets: dict[str, bool]


def save_results(name: str, table: pd.DataFrame, summary: str, targets: dict[str, bool] | None = None,
                 results_dir: Path = RESULTS_DIR) -> Path:
    """Write bench/results/<name>.json with the machine description and whether each project target was met."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({"table": json.loads(table.to_json(orient="split")), "summary": summary,
                                "targets": targets or {}, "machine": machine_info(),
                                "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1))
    return path


def load_results(name: str, results_dir: Path = RESULTS_DIR) -> BenchResults | None:
    """The last results of a benchmark, or None if it never ran here."""
    path = results_dir / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    table = pd.DataFrame(**{k: data["table"][k] for k in ("data", "index", "columns")})
    machine = data["machine"]
    summary = (data["summary"] + f"\n\n*Not measured by this chapter: from `make bench` on {data['when'][:10]}, "
               f"on a machine with {machine['cpu_cores']} CPU cores, torch {machine['torch']}, device "
               f"{machine['device']}, GPU: {machine['gpu']}. Run `make bench` to measure it on yours.*")
    return BenchResults(table, summary, machine, data["when"], data.get("targets", {}))
