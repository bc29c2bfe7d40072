"""Benchmark result files: written by bench/*.py (`make bench`), shown by the chapters."""
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


def save_results(name: str, table: pd.DataFrame, summary: str, results_dir: Path = RESULTS_DIR) -> Path:
    """Write bench/results/<name>.json with the machine description."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({"table": json.loads(table.to_json(orient="split")), "summary": summary,
                                "machine": machine_info(),
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
    summary = (data["summary"] + f"\n\n*Measured {data['when']} on {machine['cpu_cores']} CPU cores, "
               f"torch {machine['torch']}, device {machine['device']}, GPU: {machine['gpu']}.*")
    return BenchResults(table, summary, machine, data["when"])
