"""Knowledge distillation: a small student learns from a larger teacher (Hinton et al. 2015; Kim & Rush 2016).

Logit KD trains on the teacher's softened next-token distributions, α·T²·KL(teacher_T ‖ student_T)
+ (1 − α)·CE, the loss [Full training pipeline §6.2] teaches with T = 2, α = 0.7 (T² keeps the soft
term's gradients on the scale of the hard one). Sequence-level KD trains the student by plain SFT on
the teacher's own outputs: how DeepSeek-R1 distils its reasoning into small dense models (R1 §2.4).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerFast

from dstutor.models import DeepSeekLM, LMOutput
from dstutor.rl.pipeline import Recipe, cold_start, held_out
from dstutor.rl.policy import supervised, task_model
from dstutor.rl.rollouts import rejection_sample, rollout
from dstutor.rl.tasks import Problem, as_pairs
from dstutor.train.runner import run_jobs
from dstutor.timing import interleaved_seconds
from dstutor.metrics import IGNORE_INDEX

EVERY_SOLUTION = "SFT on every solution (reference: all prompts labelled)"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.7,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, KL term, CE term) over the positions whose next-token label is not -100; label_smoothing acts on the CE."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need temperature > 0 and 0 ≤ alpha ≤ 1, got temperature={temperature}, alpha={alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (the two models must share a vocabulary)")
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    student, teacher = student_logits[:, :-1][keep].float(), teacher_logits[:, :-1][keep].float()
    kl = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                  log_target=True, reduction="batchmean") * temperature ** 2
    ce = F.cross_entropy(student, targets[keep], label_smoothing=label_smoothing)
    return alpha * kl + (1 - alpha) * ce, kl, ce


class Distiller(nn.Module):
    """The student, trained by the course Trainer on distillation_loss against a frozen teacher.

    With a `memo` dict, the teacher's logits are kept per input row: a frozen teacher gives a row the same
    logits every epoch, so each distinct row costs one teacher forward (share the dict between students).
    """

    def __init__(self, student: DeepSeekLM, teacher: DeepSeekLM, temperature: float = 2.0, alpha: float = 0.7,
                 memo: dict[bytes, torch.Tensor] | None = None):
        super().__init__()
        self.student, self.teacher, self.temperature, self.alpha = student, teacher.eval(), temperature, alpha
        self.teacher.requires_grad_(False)
        self.memo = memo

    def train(self, mode: bool = True) -> "Distiller":
        """Only the student changes mode: the teacher always runs as at inference."""
        self.training = mode
        self.student.train(mode)
        return self

    @torch.no_grad()
    def teacher_logits(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch; rows already in the memo are not run again."""
        if self.memo is None:
            return self.teacher(input_ids).logits
        # The loss reads a row's logits up to the position before its last graded label. Under causal
        # attention they depend on that prefix alone, so the prefix is the key: it stays the same when
        # batches are cut to different widths. Positions past it are never read and stay 0.
        graded = labels[:, 1:] != IGNORE_INDEX
        ends = [int(row.nonzero().max()) + 1 if row.any() else 0 for row in graded]
        keys = [ids[:end].numpy().tobytes() for ids, end in zip(input_ids, ends)]
        new = [i for i, key in enumerate(keys) if key not in self.memo]
        if new:
            logits = self.teacher(input_ids[new]).logits
            self.memo.update({keys[i]: logits[j, :ends[i]].clone() for j, i in enumerate(new)})
        out = torch.zeros(*input_ids.shape, self.teacher.config.vocab_size)
        for row, (key, end) in enumerate(zip(keys, ends)):
            out[row, :end] = self.memo[key]
        return out

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> LMOutput:
        logits = self.student(input_ids).logits
        loss, kl, ce = distillation_loss(logits, self.teacher_logits(input_ids, labels), labels, self.temperature,
                                         self.alpha, label_smoothing)
        return LMOutput(logits, loss=loss, main_loss=ce)


def distil_logits(student: DeepSeekLM, teacher: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, pairs: pd.DataFrame,
                  steps: int, temperature: float = 2.0, alpha: float = 0.7, lr: float = 3e-3, batch_size: int = 32,
                  seed: int = 0, memo: dict[bytes, torch.Tensor] | None = None) -> pd.DataFrame:
    """Train student (in place) on pairs with the logit-KD loss; the same data and schedule as policy.supervised.

    memo (see Distiller) suits a small vocabulary: it holds rows × length × vocabulary floats.
    """
    return supervised(Distiller(student, teacher, temperature, alpha, memo), tokenizer, pairs, steps, lr, batch_size,
                      seed)


def teacher_outputs(teacher: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem],
                    max_new_tokens: int = 40) -> pd.DataFrame:
    """The teacher's greedy completion of every prompt, as (prompt, answer) rows: sequence-level KD data."""
    outputs = rollout(teacher, tokenizer, problems, 1, max_new_tokens, 0.0)
    return pd.DataFrame({"prompt": [p.prompt for p in problems], "answer": outputs.texts})


def generation_speed(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem],
                     max_new_tokens: int = 40, repeats: int = 3) -> float:
    """Greedy answering throughput in tokens/s, prefill included (median of repeats, after one warm-up).

    Counts the tokens decoded, so a model that stops at its end token earlier is not credited for the
    tokens it did not decode."""
    decoded = []
    seconds = interleaved_seconds({"greedy": lambda _: decoded.append(
        rollout(model, tokenizer, problems, 1, max_new_tokens, 0.0).decoded_tokens)}, repeats + 1)["greedy"]
    return float(np.median(np.divide(decoded[1:], seconds)))


def compare_students(teacher: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, train: list[Problem],
                     test: list[Problem], recipe: Recipe, seeds: list[int], temperature: float = 2.0,
                     alpha: float = 0.7, samples: int = 4) -> pd.DataFrame:
    """Students of recipe.size trained recipe.sft_steps steps per seed; held-out scores per run.

    The student owns the worked solutions of the first recipe.sft_examples problems (None: all) and every
    prompt. It learns by SFT on those solutions, by logit KD on them, or from the teacher's correct samples
    on every prompt (R1). With fewer solutions than prompts, a student SFT'd on every solution is the
    reference of what labelling every prompt would buy. (Sequence KD, teacher_outputs, is an exercise.)
    """
    labelled = train[:recipe.sft_examples]
    data = {"SFT on the labelled solutions": as_pairs(labelled),
            "R1 distillation: teacher's correct samples": rejection_sample(teacher, tokenizer, train, samples,
                                                                           recipe.eval_tokens)}
    if data["R1 distillation: teacher's correct samples"].empty:
        raise ValueError(f"the teacher solved none of the {len(train)} training problems in {samples} samples each: "
                         "there is nothing to distil; train it longer (more SFT or GRPO steps)")
    every = dataclasses.replace(recipe, sft_examples=None)
    cold_starts = {"SFT on the labelled solutions": recipe}  # the same recipe's cold start: sft_then_grpo loads it
    if len(labelled) < len(train):
        cold_starts[EVERY_SOLUTION] = every
        data[EVERY_SOLUTION] = as_pairs(train)
    memo = {}  # the frozen teacher's logits, computed once per training example (per worker process)

    def student(key: tuple[int, str]) -> dict:
        seed, method = key
        if method in cold_starts:
            model = cold_start(cold_starts[method], tokenizer, train, seed)
        elif method in data:
            model = task_model(tokenizer, recipe.size, seed=seed)
            supervised(model, tokenizer, data[method], recipe.sft_steps, lr=recipe.sft_lr, seed=seed)
        else:
            model = task_model(tokenizer, recipe.size, seed=seed)
            distil_logits(model, teacher, tokenizer, as_pairs(labelled), recipe.sft_steps, temperature, alpha,
                          lr=recipe.sft_lr, seed=seed, memo=memo)
        return {**held_out(recipe, model, tokenizer, test, method, seed), "method": method,
                "examples": len(data[method]) if method in data else len(labelled)}

    methods = ["SFT on the labelled solutions", f"logit KD (T={temperature:g}, α={alpha:g})",
               "R1 distillation: teacher's correct samples", *([EVERY_SOLUTION] if EVERY_SOLUTION in data else [])]
    rows = run_jobs(student, [(seed, method) for seed in seeds for method in methods], desc="students")
    return pd.DataFrame(rows).drop(columns="stage")
