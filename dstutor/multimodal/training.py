"""Training a dual encoder with the course Trainer: joint from scratch, or in stages, and its retrieval scores.

Stages follow [Training essentials §3.2]: each tower pretrained on its own modality (images: a
denoising autoencoder; captions: next-token prediction), then alignment with both towers frozen,
then a joint fine-tune of everything. Each stage is one Trainer run with its own cosine schedule.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerFast

from dstutor.multimodal.clip import DualEncoder, chance_recall, embed, recall_at_k
from dstutor.multimodal.data import ImageSet, tokenize_captions
from dstutor.multimodal.fusion import FusionMatcher, fused_similarity
from dstutor.data.packing import BlockLoader
from dstutor.env import seed_everything
from dstutor.metrics import IGNORE_INDEX
from dstutor.train import TrainConfig, Trainer
from dstutor.train.runner import run_jobs

GUIDE_PROPORTIONS = (200, 200, 100, 50)  # [Training essentials §3.2]: image, text, alignment, joint (K steps)


@dataclass
class LossOutput:
    loss: torch.Tensor
    main_loss: torch.Tensor

    def logged(self) -> dict[str, torch.Tensor]:
        return {}


class ImageDenoiser(nn.Module):
    """Unimodal image pretraining: rebuild the clean image from a noisy one through the encoder's features."""

    def __init__(self, encoder: nn.Module, noise: float = 0.3):
        super().__init__()
        self.encoder, self.noise = encoder, noise
        self.decoder = nn.Linear(encoder.features, encoder.channels * encoder.side ** 2)

    def forward(self, pixels: torch.Tensor, **_) -> LossOutput:
        rebuilt = self.decoder(self.encoder(pixels + self.noise * torch.randn_like(pixels))).view_as(pixels)
        loss = F.mse_loss(rebuilt, pixels)
        return LossOutput(loss, loss)


@dataclass(frozen=True)
class Stages:
    """Optimiser steps per stage of progressive training."""

    image: int   # image tower alone (denoising)
    text: int    # text tower alone (next-token prediction on the training captions)
    align: int   # projections, norms and temperature only; both towers frozen
    joint: int   # everything

    @property
    def total(self) -> int:
        return self.image + self.text + self.align + self.joint

    @classmethod
    def like_guide(cls, total: int) -> "Stages":
        """`total` steps split in the guide's proportions 200K : 200K : 100K : 50K."""
        if total < len(GUIDE_PROPORTIONS):
            raise ValueError(f"staged training needs at least {len(GUIDE_PROPORTIONS)} steps, got {total}")
        parts = [max(1, round(total * p / sum(GUIDE_PROPORTIONS))) for p in GUIDE_PROPORTIONS]
        parts[-1] = total - sum(parts[:-1])
        return cls(*parts)


def fit_clip(model: DualEncoder | FusionMatcher, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor],
             config: TrainConfig, batch_size: int, contents: torch.Tensor | None = None) -> pd.DataFrame:
    """Contrastive training; validation loss on shuffled held-out batches of the same size (chance = ln B).

    With `contents` (one id per training pair), no training batch holds two pairs of the same content
    while the data allows it, so every other caption in a batch is a true negative.
    """
    train_loader = BlockLoader(train, batch_size, shuffle=True, seed=config.seed, fields=tuple(train), groups=contents)
    # the same shuffled held-out batches at every evaluation (a fresh loader's first pass: epoch 0),
    # so the curve compares like with like
    val_loader = list(BlockLoader(val, min(batch_size, len(val["pixels"])), shuffle=True, seed=12345,
                                  fields=tuple(val)))
    return Trainer(config).fit(model, train_loader, val_loader)


def _stage(model: nn.Module, data: dict[str, torch.Tensor], config: TrainConfig, steps: int, batch_size: int,
           name: str) -> pd.DataFrame:
    history = Trainer(dataclasses.replace(config, steps=steps, eval_every=0)).fit(
        model, BlockLoader(data, batch_size, shuffle=True, seed=config.seed, fields=tuple(data)))
    return history.assign(stage=name)


def fit_staged(model: DualEncoder, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor],
               stages: Stages, config: TrainConfig, batch_size: int, contents: torch.Tensor | None = None) -> pd.DataFrame:
    """Progressive training; one history over all stages (`stage` column, `step` counted across them).

    `contents` (see fit_clip) shapes the batches of the two contrastive stages.
    """
    pieces = [_stage(ImageDenoiser(model.image_encoder), {"pixels": train["pixels"]}, config, stages.image,
                     batch_size, "image"),
              _stage(model.text_encoder.lm, {"input_ids": train["input_ids"], "labels": caption_labels(train)},
                     config, stages.text, batch_size, "text")]
    towers = [model.image_encoder, model.text_encoder]
    for tower in towers:
        tower.requires_grad_(False)
    pieces.append(fit_clip(model, train, val, dataclasses.replace(config, steps=stages.align), batch_size, contents)
                  .assign(stage="align"))
    for tower in towers:
        tower.requires_grad_(True)
    pieces.append(fit_clip(model, train, val, dataclasses.replace(config, steps=stages.joint), batch_size, contents)
                  .assign(stage="joint"))
    offset = 0
    for piece in pieces:
        piece["step"] += offset
        offset = int(piece["step"].max())
    return pd.concat(pieces, ignore_index=True)


def caption_labels(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token labels for captions: the ids, with -100 after each caption's last real token."""
    positions = torch.arange(tensors["input_ids"].shape[1])
    return tensors["input_ids"].masked_fill(positions > tensors["last"][:, None], IGNORE_INDEX)


def pair_similarity(model: DualEncoder | FusionMatcher, pixels: torch.Tensor, input_ids: torch.Tensor,
                    last: torch.Tensor) -> torch.Tensor:
    """(images, captions) scores: cosine of embeddings for a dual encoder, fused scores for a FusionMatcher."""
    if isinstance(model, FusionMatcher):
        return fused_similarity(model, pixels, input_ids, last)
    return embed(model, pixels=pixels) @ embed(model, input_ids=input_ids, last=last).T


def retrieval_scores(model: DualEncoder | FusionMatcher, pairs: pd.DataFrame, images: ImageSet, tokenizer: PreTrainedTokenizerFast,
                     ks: tuple[int, ...] = (1, 5, 10)) -> pd.DataFrame:
    """Recall@k both ways on held-out pairs (a hit: any item stating the same content), next to chance."""
    unique = pairs.drop_duplicates("image")
    ids, last = tokenize_captions(list(pairs.caption), tokenizer, 24)
    similarity = pair_similarity(model, images.images[torch.tensor(unique.image.values)], ids, last)
    relevant = torch.tensor(unique.content.to_numpy(dtype=object)[:, None] == pairs.content.to_numpy(dtype=object)[None, :])
    rows = []
    for direction, sim, rel in (("image→text", similarity, relevant), ("text→image", similarity.T, relevant.T)):
        recall, chance = recall_at_k(sim, rel, ks), chance_recall(rel, ks)
        rows += [{"direction": direction, "k": k, "recall": recall[k], "chance": chance[k]} for k in ks]
    return pd.DataFrame(rows)


def seeded_runs(variants: Mapping[str, Callable[[TrainConfig], tuple[nn.Module, pd.DataFrame]]], config: TrainConfig,
                seeds: Sequence[int], score: Callable[[nn.Module], dict]) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Each variant once per seed (initialisation and batches follow it): one row of scores and seconds per run.

    `seconds` times the training, `score_seconds` the scoring, and `threads` is the run's torch threads (how
    run_jobs shared the cores with it: see `timed_alike`). Returns the table, the model of the first seed per
    variant (for pictures), and every run's history.
    """
    if not seeds or not variants:
        raise ValueError("seeded_runs needs at least one variant and one seed")

    def one_run(key: tuple[str, int]) -> tuple[dict, nn.Module, pd.DataFrame]:
        name, seed = key
        seed_everything(seed)
        began = time.perf_counter()
        model, history = variants[name](dataclasses.replace(config, seed=seed, progress=False))  # one bar: the runs
        trained = time.perf_counter()
        scores = score(model)
        row = {"variant": name, "seed": seed, "seconds": trained - began, "score_seconds": time.perf_counter() - trained,
               "threads": torch.get_num_threads(), "val_loss": history.val_loss.dropna().iloc[-1], **scores}
        return row, model if seed == seeds[0] else None, history.assign(variant=name, seed=seed)

    runs = run_jobs(one_run, [(name, seed) for name in variants for seed in seeds], desc="runs")
    models = {row["variant"]: model for row, model, _ in runs if model is not None}
    return pd.DataFrame([row for row, _, _ in runs]), models, pd.concat([h for _, _, h in runs], ignore_index=True)


def timed_alike(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of a seeded_runs table (or several concatenated) whose seconds compare: those on the fewest threads.

    run_jobs runs pairs of runs side by side, one thread each, and a last odd run alone on every thread,
    which is faster: a variant timed in a call of 3 runs and one timed in a call of 6 would otherwise be
    clocked differently. With one worker every run has the same threads and all of them are kept.
    """
    return runs[runs.threads == runs.threads.min()]
