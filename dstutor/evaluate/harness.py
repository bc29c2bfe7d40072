"""lm-evaluation-harness on the course's checkpoints, offline, with task definitions kept in this package.

The YAML files in `lm_eval_tasks/` define the prompts and metrics; `write_task` writes a suite's docs
as the JSON-lines file a definition reads, so lm-eval and `evaluate` score the very same documents.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerFast

from dstutor.models import DeepSeekLM
from dstutor.models.hf import save_pretrained

DEFINITIONS = resources.files("dstutor.evaluate") / "lm_eval_tasks"
DATA_PLACEHOLDER = "DATA_FILE"  # replaced by the absolute path of the task's documents


def export_checkpoint(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """The model in transformers format with its tokenizer beside it: what `lm_eval --model hf` loads."""
    save_pretrained(model, folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def write_task(folder: str | Path, task: str, docs: Sequence[dict], definition: str = "multiple_choice") -> None:
    """Write docs (context, choices, label) and the packaged definition as lm-eval task `task` into folder."""
    if not docs:
        raise ValueError(f"task {task!r} has no documents")
    template = DEFINITIONS / f"{definition}.yaml"
    if not template.is_file():
        raise ValueError(f"no task definition {definition!r}; the package has "
                         f"{sorted(p.name.removesuffix('.yaml') for p in DEFINITIONS.iterdir() if p.name.endswith('.yaml'))}")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps({k: d[k] for k in ("context", "choices", "label")}, ensure_ascii=False) + "\n"
                            for d in docs), encoding="utf-8")
    text = template.read_text(encoding="utf-8").replace(DATA_PLACEHOLDER, str(data))
    (folder / f"{task}.yaml").write_text(f"task: {task}\n{text}", encoding="utf-8")


def run_lm_eval(checkpoint: str | Path, task_folder: str | Path, tasks: Sequence[str],
                batch_size: int = 16) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """lm_eval.simple_evaluate on local tasks: per task (accuracy, its stderr, n) and each doc's choice log-likelihoods."""
    if not (Path(checkpoint) / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {str(checkpoint)!r}: write one with export_checkpoint")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval  # heavy import (datasets, evaluate): only when a run is asked for
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its INFO lines repeat what the returned table says
    with contextlib.redirect_stderr(io.StringIO()):  # per-request progress bars of a run that takes seconds
        result = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={Path(checkpoint).resolve()},dtype=float32,experts_implementation=eager",
            tasks=list(tasks), task_manager=TaskManager(include_path=str(Path(task_folder).resolve())),
            batch_size=batch_size, device="cpu", log_samples=True)
    table = pd.DataFrame([{"task": task, "accuracy": result["results"][task]["acc,none"],
                           "stderr": result["results"][task]["acc_stderr,none"],
                           "n": len(result["samples"][task])} for task in tasks])
    logliks = {task: [np.array([r[0] for r in sample["filtered_resps"]])
                      for sample in sorted(result["samples"][task], key=lambda s: s["doc_id"])] for task in tasks}
    return table, logliks
