"""R1's recipe at CPU scale, once per seed: cold-start SFT, then GRPO, evaluated on held-out problems at each stage.

Chapter 09 and bench/grpo.py both run it, so the chapter's curves and the benchmark's numbers come
from one code path.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import pandas as pd
from transformers import PreTrainedTokenizerFast

from dstutor import zoo
from dstutor.models import DeepSeekLM
from dstutor.rl.grpo import GRPOConfig, train_grpo
from dstutor.rl.policy import MAX_LEN, SIZES, supervised, task_model
from dstutor.rl.rewards import total_reward
from dstutor.rl.rollouts import evaluate_policy
from dstutor.rl.tasks import Problem, as_pairs
from dstutor.train.runner import run_jobs

SFT_BATCH = 32  # cold-start SFT batch (problems per step)
STAGES = ("initialised", "after SFT", "after GRPO")  # where sft_then_grpo can evaluate


@dataclasses.dataclass
class Recipe:
    """The stages and their budgets; every field is one of the chapter's parameters."""

    size: str = "small"           # policy size (dstutor.rl.policy.SIZES)
    sft_steps: int = 250          # cold-start SFT steps: enough for pass@8 between ~0.2 and ~0.8
    sft_lr: float = 3e-3          # SFT peak learning rate
    sft_examples: int | None = None  # worked solutions the cold start trains on (the first ones); None: all
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    eval_samples: int = 8         # samples per held-out problem for pass@k
    eval_tokens: int = 40         # longest completion when evaluating
    init_problems: int | None = None  # held-out problems (the first ones) for the initialised model; None: all.
    # It never answers, so a few dozen show that, and it never stops early: each costs eval_tokens decode steps.


def cold_start(recipe: Recipe, tokenizer: PreTrainedTokenizerFast, train: list[Problem], seed: int) -> DeepSeekLM:
    """A freshly initialised policy after the cold-start SFT on the first recipe.sft_examples problems' solutions.

    Initialisation and batch order follow seed. Cached by the zoo: chapter 09's runs, its SFT student and
    bench/grpo.py load one build per recipe and seed.
    """
    if recipe.sft_examples is not None and not 1 <= recipe.sft_examples <= len(train):
        raise ValueError(f"sft_examples={recipe.sft_examples}: need 1 ≤ sft_examples ≤ {len(train)} "
                         "(the training problems), or None for all")
    policy = task_model(tokenizer, recipe.size, seed=seed)  # refuses an unknown size before the key reads it
    pairs = as_pairs(train[:recipe.sft_examples])
    data = hashlib.sha256(pairs[["prompt", "answer"]].to_json(orient="values").encode()).hexdigest()
    key = {"size": SIZES[recipe.size], "max_len": MAX_LEN, "vocab": sorted(tokenizer.get_vocab().items()),
           "sft_steps": recipe.sft_steps, "sft_lr": recipe.sft_lr, "batch_size": SFT_BATCH, "seed": seed, "data": data}

    def build() -> DeepSeekLM:
        supervised(policy, tokenizer, pairs, recipe.sft_steps, lr=recipe.sft_lr, batch_size=SFT_BATCH, seed=seed)
        return policy

    return zoo.trained_model("rl-cold-start", key, build)


def held_out(recipe: Recipe, model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, test: list[Problem],
             stage: str, seed: int) -> dict:
    """One row of held-out metrics (pass@1, pass@k, greedy accuracy, format, length) for a stage and seed."""
    return {"stage": stage, "seed": seed, **evaluate_policy(model, tokenizer, test, recipe.eval_samples,
                                                             (1, recipe.eval_samples), max_new_tokens=recipe.eval_tokens,
                                                             seed=seed)}


@dataclasses.dataclass
class Runs:
    """What sft_then_grpo measured and trained, per seed."""

    scores: pd.DataFrame                 # held-out metrics, one row per stage and seed
    histories: pd.DataFrame              # GRPO's per-step log, all seeds
    starts: dict[int, DeepSeekLM]        # the SFT models GRPO started from
    policies: dict[int, DeepSeekLM]      # the policies after GRPO
    snapshots: dict[int, DeepSeekLM]     # the policies after `snapshot_step` GRPO steps (none without one)


def sft_then_grpo(recipe: Recipe, tokenizer: PreTrainedTokenizerFast, train: list[Problem], test: list[Problem],
                  seeds: Sequence[int], reward: Callable = total_reward, snapshot_step: int | None = None,
                  stages: Sequence[str] = STAGES) -> Runs:
    """Per seed: cold-start SFT, then GRPO, evaluated held out at `stages`; keeps the policy after snapshot_step steps.

    Up to snapshot_step, the run is the one a snapshot_step-step run would be (same seed, problem order
    and sampling; the learning rate is constant after warmup), so a shorter comparison can reuse it.
    """
    if not seeds:
        raise ValueError("sft_then_grpo needs at least one seed")
    if set(stages) - set(STAGES):
        raise ValueError(f"unknown stages {sorted(set(stages) - set(STAGES))}; choose from {STAGES}")
    if snapshot_step is not None and not 1 <= snapshot_step <= recipe.grpo.steps:
        raise ValueError(f"snapshot_step={snapshot_step}: need 1 ≤ snapshot_step ≤ the GRPO steps, "
                         f"{recipe.grpo.steps}")
    if snapshot_step is not None and recipe.grpo.min_lr_ratio != 1:
        raise ValueError("a snapshot equals a shorter run only at a constant learning rate: "
                         f"min_lr_ratio={recipe.grpo.min_lr_ratio}, need 1")

    def seed_run(seed: int) -> tuple[list[dict], pd.DataFrame, DeepSeekLM, DeepSeekLM, DeepSeekLM | None]:
        scores, snapshots = [], {}
        if "initialised" in stages:
            scores.append(held_out(recipe, task_model(tokenizer, recipe.size, seed=seed), tokenizer,
                                   test[:recipe.init_problems], "initialised", seed))
        start = cold_start(recipe, tokenizer, train, seed)
        if "after SFT" in stages:
            scores.append(held_out(recipe, start, tokenizer, test, "after SFT", seed))
        policy = copy.deepcopy(start)

        def snapshot(step: int, model: DeepSeekLM) -> None:
            if step == snapshot_step:
                snapshots[seed] = copy.deepcopy(model).eval()

        history = train_grpo(policy, tokenizer, train, reward, dataclasses.replace(recipe.grpo, seed=seed),
                             callback=snapshot)
        if "after GRPO" in stages:
            scores.append(held_out(recipe, policy, tokenizer, test, "after GRPO", seed))
        return scores, history.assign(seed=seed), start, policy, snapshots.get(seed)

    runs = dict(zip(seeds, run_jobs(seed_run, list(seeds), desc="seeds")))
    scores = [row for seed in seeds for row in runs[seed][0]]
    histories = [runs[seed][1] for seed in seeds]
    starts, policies = ({seed: runs[seed][i] for seed in seeds} for i in (2, 3))
    snapshots = {seed: runs[seed][4] for seed in seeds if runs[seed][4] is not None}
    return Runs(pd.DataFrame(scores), pd.concat(histories, ignore_index=True), starts, policies, snapshots)
