"""Artifacts chapters share, built deterministically on first use and cached by a hash of their recipe.

A chapter that needs "the course tokenizer" or "a pretrained nano model" asks the zoo; the first
call builds it (minutes at most on a CPU), later calls load it. Delete `<cache>/zoo` to rebuild.
Each artefact is built under a file lock (two kernels or torchrun ranks asking at once build it once)
in a temporary folder that is renamed into place, with a completion marker, only when every file is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import datasets
import pandas as pd
from filelock import FileLock
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import pack, split_by_document
from dstutor.data.sources import load_corpus
from dstutor.data.tokenizer import train_tokenizer
from dstutor.env import cache_dir, seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig, fit_on_blocks
from dstutor.train.callbacks import Callback

ZOO_VERSION = 2  # bump when a recipe changes in a way its key does not capture (2: per-epoch shuffle, fit seeds)
COMPLETE = ".complete"  # written last into a finished artefact folder
# The pretraining mix: English literature, Chinese reviews and poems, idioms and Python code.
COURSE_CORPORA = ("shakespeare", "reviews", "tang_poems", "idioms", "python_code")


def _key(recipe: dict) -> str:
    text = json.dumps({"zoo": ZOO_VERSION, **recipe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


BUILD_RECORD = "build.json"  # seconds the build took (its own work, nested builds left out) and what it needed
ACCESS_LOG = "DSTUTOR_ZOO_LOG"  # env var: a JSON-lines file where every artefact asked for is logged
_building: list[dict] = []  # the builds under way in this process, innermost last


def _log_access(folder: Path, built: bool) -> None:
    # `make bench-book` reads this log to tell a chapter's own time from the models it built or loaded.
    if _building:
        _building[-1]["needs"].append(folder.name)
    log = os.environ.get(ACCESS_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(json.dumps({"artefact": folder.name, "built": built}) + "\n")


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Return `folder`, first building it with build(temporary_folder) unless a complete one exists.

    Under a file lock beside it, so concurrent callers wait for one build instead of writing over it.
    """
    if (folder / COMPLETE).exists():
        _log_access(folder, built=False)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / COMPLETE).exists():  # built by another process while this one waited
            _log_access(folder, built=False)
            return folder
        temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        record = {"needs": [], "nested_seconds": 0.0}
        _building.append(record)
        start = time.perf_counter()
        try:
            build(temporary)
            seconds = time.perf_counter() - start
            (temporary / BUILD_RECORD).write_text(json.dumps(
                {"seconds": round(seconds - record["nested_seconds"], 1), "needs": record["needs"]}))
            (temporary / COMPLETE).write_text("")
            shutil.rmtree(folder, ignore_errors=True)  # an unfinished folder from before markers existed
            temporary.rename(folder)
        finally:
            _building.pop()
            shutil.rmtree(temporary, ignore_errors=True)
    if _building:
        _building[-1]["nested_seconds"] += time.perf_counter() - start
    _log_access(folder, built=True)
    return folder


def course_corpus() -> datasets.Dataset:
    """All course corpora in one Dataset (text + metadata)."""
    return datasets.concatenate_datasets([load_corpus(name) for name in COURSE_CORPORA])


def course_tokenizer(vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the course corpus (cached)."""
    folder = cache_dir() / "zoo" / f"tokenizer-{_key({'vocab_size': vocab_size, 'corpora': COURSE_CORPORA})}"
    build_once(folder, lambda into: train_tokenizer(course_corpus()["text"], vocab_size).save_pretrained(into))
    return PreTrainedTokenizerFast.from_pretrained(folder)


def course_blocks(vocab_size: int = 4096, block_size: int = 128,
                  val_fraction: float = 0.05) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and validation token blocks of the course corpus, split by document (cached)."""
    recipe = {"vocab_size": vocab_size, "block_size": block_size, "val": val_fraction, "corpora": COURSE_CORPORA}
    folder = cache_dir() / "zoo" / f"blocks-{_key(recipe)}"

    def build(into: Path) -> None:
        tokenizer = course_tokenizer(vocab_size)
        train, val = split_by_document(course_corpus(), val_fraction)
        pack(train, tokenizer, block_size).save_to_disk(str(into / "train"))
        pack(val, tokenizer, block_size).save_to_disk(str(into / "val"))

    build_once(folder, build)
    return datasets.load_from_disk(str(folder / "train")), datasets.load_from_disk(str(folder / "val"))


def snapshot_steps(steps: int) -> list[int]:
    """The steps a pretraining run keeps weights of besides its last: each quarter of the run."""
    return sorted({steps * quarter // 4 for quarter in (1, 2, 3)} - {0})


class _SaveSnapshots(Callback):
    """Trainer callback: the weights after each of `steps`, as <folder>/step-N.safetensors."""

    def __init__(self, steps: list[int], folder: Path):
        self.steps, self.folder = set(steps), folder

    def __call__(self, trainer, model: DeepSeekLM, row: dict) -> None:
        if row["step"] in self.steps:
            _save_weights(model, self.folder / f"step-{row['step']}.safetensors")


def _save_weights(model: DeepSeekLM, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)


def pretrained(config: DeepSeekConfig, train: TrainConfig, batch_size: int = 16, block_size: int = 128,
               at: int | None = None) -> tuple[DeepSeekLM, pd.DataFrame]:
    """A DeepSeekLM pretrained on the course corpus with this recipe, and its training history (cached).

    at: an earlier step of the same run (one of `snapshot_steps(train.steps)`): its weights and history so far.
    """
    kept = snapshot_steps(train.steps)
    if at is not None and at not in kept + [train.steps]:
        raise ValueError(f"at={at}: a {train.steps}-step run keeps the weights of steps {kept + [train.steps]}")
    recipe = {"model": asdict(config), "train": asdict(train), "batch": batch_size, "block": block_size,
              "snapshots": kept}
    folder = cache_dir() / "zoo" / f"model-{_key(recipe)}"

    def build(into: Path) -> None:
        seed_everything(train.seed)
        model = DeepSeekLM(config)
        train_blocks, val_blocks = course_blocks(config.vocab_size, block_size)
        history = fit_on_blocks(model, train, train_blocks, val_blocks, batch_size,
                                callbacks=[_SaveSnapshots(kept, into)])
        _save_weights(model, into / "model.safetensors")
        history.to_csv(into / "history.csv", index=False)
        (into / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))

    build_once(folder, build)
    seed_everything(train.seed)  # callers see the same random state whether the model was built or loaded
    model = DeepSeekLM(config)
    step = train.steps if at is None else at
    model.load_state_dict(load_file(folder / ("model.safetensors" if step == train.steps else f"step-{step}.safetensors")))
    history = pd.read_csv(folder / "history.csv")
    return model.eval(), history[history.step <= step].reset_index(drop=True)


def pretrained_nano(steps: int, seed: int = 0, at: int | None = None) -> tuple[DeepSeekLM, pd.DataFrame]:
    """The course's nano DeepSeek model after `steps` pretraining steps, or at an earlier quarter of that run (`at`)."""
    config = DeepSeekConfig.preset("nano")
    train = TrainConfig(steps=steps, lr=3e-3, warmup_steps=min(20, steps // 10), eval_every=max(1, steps // 10),
                        eval_batches=10, seed=seed)
    return pretrained(config, train, at=at)


def trained_model(name: str, recipe: dict, build: Callable[[], DeepSeekLM]) -> DeepSeekLM:
    """The model build() trains, built once per machine and then loaded; `recipe` must name all that determines it."""
    folder = cache_dir() / "zoo" / f"{name}-{_key({'name': name, **recipe})}"

    def save(into: Path) -> None:
        model = build()
        _save_weights(model, into / "model.safetensors")
        (into / "config.json").write_text(json.dumps(asdict(model.config)))
        (into / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))

    build_once(folder, save)
    model = DeepSeekLM(DeepSeekConfig(**json.loads((folder / "config.json").read_text())))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()
