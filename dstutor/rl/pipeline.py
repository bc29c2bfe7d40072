"""R1's recipe at CPU scale, once per seed: cold-start SFT, then GRPO, evaluated on held-out problems at each stage.

Chapter 09 and bench/grpo.py both run it, so the chapter's curves and the benchmark's numbers come
from one code path.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from dstutor.models import DeepSeekLM
from dstutor.rl.grpo import GRPOConfig, train_grpo
from dstutor.rl.policy import supervised, task_model
from dstutor.rl.rewards import total_reward
from dstutor.rl.rollouts import evaluate_policy
from dstutor.rl.tasks import Problem, as_pairs


@dataclasses.dataclass
class Recipe:
    """The stages and their budgets; every field is one of the chapter's parameters."""

    size: str = "small"           # policy size (dstutor.rl.policy.SIZES)
    sft_steps: int = 250          # cold-start SFT steps: enough for pass@8 between ~0.2 and ~0.8
    sft_lr: float = 3e-3          # SFT peak learning rate
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    eval_samples: int = 8         # samples per held-out problem for pass@k
    eval_tokens: int = 40         # longest completion when evaluating


def cold_start(recipe: Recipe, tokenizer: PreTrainedTokenizerFast, train: list[Problem], seed: int) -> DeepSeekLM:
    """A freshly initialised policy after the cold-start SFT (initialisation and batch order follow seed)."""
    policy = task_model(tokenizer, recipe.size, seed=seed)
    supervised(policy, tokenizer, as_pairs(train), recipe.sft_steps, lr=recipe.sft_lr, seed=seed)
    return policy


def held_out(recipe: Recipe, model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, test: list[Problem],
             stage: str, seed: int) -> dict:
    """One row of held-out metrics (pass@1, pass@k, greedy accuracy, format, length) for a stage and seed."""
    return {"stage": stage, "seed": seed, **evaluate_policy(model, tokenizer, test, recipe.eval_samples,
                                                             (1, recipe.eval_samples), max_new_tokens=recipe.eval_tokens,
                                                             seed=seed)}


def sft_then_grpo(recipe: Recipe, tokenizer: PreTrainedTokenizerFast, train: list[Problem], test: list[Problem],
                  seeds: Sequence[int], reward: Callable = total_reward
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, DeepSeekLM], dict[int, DeepSeekLM]]:
    """Per seed: evaluate at init, after SFT and after GRPO. Returns scores, GRPO histories, SFT starts, RL'd policies."""
    if not seeds:
        raise ValueError("sft_then_grpo needs at least one seed")
    scores, histories, starts, policies = [], [], {}, {}
    for seed in tqdm(seeds, desc="seeds"):
        policy = task_model(tokenizer, recipe.size, seed=seed)
        scores.append(held_out(recipe, policy, tokenizer, test, "initialised", seed))
        starts[seed] = cold_start(recipe, tokenizer, train, seed)
        scores.append(held_out(recipe, starts[seed], tokenizer, test, "after SFT", seed))
        policies[seed] = copy.deepcopy(starts[seed])
        history = train_grpo(policies[seed], tokenizer, train, reward, dataclasses.replace(recipe.grpo, seed=seed))
        histories.append(history.assign(seed=seed))
        scores.append(held_out(recipe, policies[seed], tokenizer, test, "after GRPO", seed))
    return pd.DataFrame(scores), pd.concat(histories, ignore_index=True), starts, policies
