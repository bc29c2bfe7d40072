"""Group Relative Policy Optimization from scratch (DeepSeekMath §4.1), as DeepSeek-R1 uses it (§2.2.1).

For each problem the policy samples a group of G completions; each completion's advantage is its
reward normalised within the group, so no value network (critic) is needed. The policy maximises the
PPO-style clipped ratio times the advantage, minus β times the k3 estimate of KL to a frozen reference.
A group whose samples all get the same reward has zero advantages: it teaches nothing, which is why
the run logs the fraction of such degenerate groups.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from dstutor.models import DeepSeekLM
from dstutor.rl.rewards import accuracy_reward
from dstutor.rl.rollouts import Reward, Rollouts, rollout, score
from dstutor.rl.tasks import Problem


@dataclass
class GRPOConfig:
    """One GRPO run: how many updates, how many samples, and the objective's constants."""

    steps: int = 100               # policy updates (one batch of fresh rollouts each)
    prompts_per_step: int = 16     # problems per step, P
    group_size: int = 8            # completions per problem, G ≥ 2 (DeepSeekMath: 64; R1: 16)
    lr: float = 1e-4               # AdamW peak learning rate, reached after warmup (DeepSeekMath: 1e-6 at 7B)
    min_lr_ratio: float = 1.0      # after warmup the rate falls by a cosine to min_lr_ratio·lr at `steps`; 1: constant
    clip_eps: float = 0.2          # ε of the clipped ratio (PPO's usual 0.1–0.3)
    beta: float = 0.04             # weight of the KL penalty to the reference (DeepSeekMath: 0.04); 0: no reference
    temperature: float = 1.0       # sampling temperature of the rollouts (R1: 1.0 in RL)
    max_new_tokens: int = 40       # longest completion; longer ones are cut (and usually score 0)
    warmup_steps: int = 10         # linear learning-rate warmup: Adam's first steps move every weight by ~lr
    inner_steps: int = 1           # updates per batch of rollouts, μ; the clip only acts when μ > 1
    drop_degenerate: bool = False  # leave groups with one reward for all samples out of the update (DAPO §3.2)
    sampling: str = "uniform"      # "uniform" over the problems, or "informative": levels by their chance of a useful group
    grad_clip: float = 1.0         # max gradient norm
    time_limit_s: float | None = None  # stop early after this much wall-clock (a CPU budget); None: run all steps
    seed: int = 0                  # problem order and sampling
    progress: bool = True          # show a progress bar

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range."""
        rules = {"steps": self.steps >= 1, "prompts_per_step": self.prompts_per_step >= 1,
                 "group_size": self.group_size >= 2, "lr": self.lr > 0, "clip_eps": 0 < self.clip_eps < 1,
                 "beta": self.beta >= 0, "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
                 "temperature": self.temperature > 0, "max_new_tokens": self.max_new_tokens >= 1,
                 "inner_steps": self.inner_steps >= 1, "warmup_steps": self.warmup_steps >= 0,
                 "time_limit_s": self.time_limit_s is None or self.time_limit_s > 0,
                 "sampling": self.sampling in ("uniform", "informative")}
        for name, ok in rules.items():
            if not ok:
                hint = " (advantages are normalised within a group: one sample has nothing to compare with)" \
                    if name == "group_size" else ""
                raise ValueError(f"GRPOConfig.{name}={getattr(self, name)!r} is out of range{hint}")


class InformativeLevels:
    """Draws a step's problems level by level, in proportion to the chance that a level's group is informative,
    1 − p^G − (1 − p)^G for its running accuracy p: rollouts go where a group can still carry a gradient."""

    def __init__(self, problems: list[Problem], group_size: int, rng: random.Random, floor: float = 0.05,
                 decay: float = 0.9):
        self.pools: dict[int, list[Problem]] = {}
        for problem in problems:
            self.pools.setdefault(problem.level, []).append(problem)
        self.accuracy = {level: 0.5 for level in self.pools}  # no evidence yet: every level equally likely
        self.group_size, self.rng, self.decay = group_size, rng, decay
        self.floor = min(floor, 1 / len(self.pools))  # many levels: the floors alone cannot exceed the whole

    def weights(self) -> dict[int, float]:
        """Each level's share of the next step's problems (a floor keeps every level's accuracy measured)."""
        useful = {level: 1 - p ** self.group_size - (1 - p) ** self.group_size for level, p in self.accuracy.items()}
        total, spare = sum(useful.values()), 1 - self.floor * len(useful)
        return {level: self.floor + spare * (u / total if total else 1 / len(useful)) for level, u in useful.items()}

    def draw(self, n: int) -> list[Problem]:
        weights = self.weights()
        levels = self.rng.choices(list(weights), list(weights.values()), k=n)
        return [problem for level, pool in self.pools.items()
                for problem in self.rng.sample(pool, min(levels.count(level), len(pool)))]

    def observe(self, batch: list[Problem], correct: torch.Tensor) -> None:
        """Fold one step's accuracy per level (correct: (problems, G) of 0/1) into the running estimates."""
        for level in {problem.level for problem in batch}:
            rows = [i for i, problem in enumerate(batch) if problem.level == level]
            self.accuracy[level] = self.decay * self.accuracy[level] + (1 - self.decay) * correct[rows].mean().item()


def lr_factor(step: int, config: GRPOConfig) -> float:
    """The learning rate at update `step` (from 0) as a fraction of config.lr: linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r − mean of its group) / (std of its group + eps) for rewards (P, G): zero for a degenerate group."""
    mean, std = rewards.mean(dim=1, keepdim=True), rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate exp(r − l) − (r − l) − 1 (Schulman's k3): unbiased, never negative."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float) -> torch.Tensor:
    """min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) per token, ρ = π/π_old: an update cannot profit from moving ρ far."""
    ratio = torch.exp(logp - old_logp)
    return torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)


def token_logprobs(model: DeepSeekLM, sequences: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(token t+1 | tokens ≤ t) for every position, π at the sampling temperature: (batch, length − 1)."""
    logits = model(sequences).logits[:, :-1].float() / temperature
    return -F.cross_entropy(logits.transpose(1, 2), sequences[:, 1:], reduction="none")


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The negated GRPO objective: per-token terms averaged over each completion, then over completions."""
    per_token = clipped_surrogate(logp, old_logp, advantages[:, None], clip_eps)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    per_token = per_token - beta * kl
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = -((per_token * mask).sum(dim=1) / lengths).mean()
    clipped = ((torch.exp(logp - old_logp) - 1).abs() > clip_eps).float()

    def per_completion_token(values: torch.Tensor) -> float:
        return ((values * mask).sum() / mask.sum()).item()

    return loss, {"kl": per_completion_token(kl), "clip_fraction": per_completion_token(clipped)}


def train_grpo(policy: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem], reward: Reward,
               config: GRPOConfig, reference: DeepSeekLM | None = None,
               callback: Callable[[int, DeepSeekLM], dict | None] | None = None) -> pd.DataFrame:
    """Improve policy in place by GRPO on problems; one row per step (reward, accuracy, length, KL, degenerate groups).

    callback(step, policy) runs after every update; a dict it returns is added to that step's row.
    """
    config.validate()
    if not problems:
        raise ValueError("the prompt set is empty: GRPO needs problems to sample")
    if reference is None and config.beta > 0:
        reference = copy.deepcopy(policy)  # the KL anchor: the policy as it was before RL
    if reference is not None:
        reference.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=config.lr,
                                  betas=(0.9, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, config))
    rng, generator = random.Random(config.seed), torch.Generator().manual_seed(config.seed)
    levels = InformativeLevels(problems, config.group_size, rng) if config.sampling == "informative" else None
    rows, trained_s = [], 0.0  # GRPO's own time: callbacks (evaluations) are not counted
    for step in tqdm(range(config.steps), desc="GRPO", disable=not config.progress, leave=False):
        started = time.perf_counter()
        batch = (levels.draw(config.prompts_per_step) if levels else
                 rng.sample(problems, min(config.prompts_per_step, len(problems))))
        samples = rollout(policy, tokenizer, batch, config.group_size, config.max_new_tokens, config.temperature,
                          generator)
        generation_s = time.perf_counter() - started
        rewards = score(samples, reward)
        advantages = group_advantages(rewards).flatten()
        informative = (rewards.std(dim=1) > 0).repeat_interleave(config.group_size)
        # Dropping degenerate groups changes the objective's average: it runs over the completions that carry
        # an advantage, so each informative group weighs more, and the KL term no longer acts on the others.
        keep = informative if config.drop_degenerate else torch.ones_like(informative)
        row = _update(policy, reference, optimizer, samples.subset(keep), advantages[keep], config) \
            if keep.any() else {}
        schedule.step()
        correct = score(samples, accuracy_reward)
        if levels:
            levels.observe(batch, correct)
        trained_s += time.perf_counter() - started
        rows.append({"step": step + 1, "reward": rewards.mean().item(), "accuracy": correct.mean().item(),
                     "length": samples.lengths.float().mean().item(),
                     "degenerate": (rewards.std(dim=1) == 0).float().mean().item(), **row,
                     **({f"share level {level}": share for level, share in levels.weights().items()} if levels else {}),
                     "rollout_tokens_per_s": samples.decoded_tokens / generation_s,
                     "step_s": time.perf_counter() - started, "elapsed_s": trained_s})
        rows[-1].update((callback(step + 1, policy) if callback else None) or {})
        if config.time_limit_s is not None and rows[-1]["elapsed_s"] >= config.time_limit_s:
            break
    policy.eval()
    return pd.DataFrame(rows)


def _update(policy: DeepSeekLM, reference: DeepSeekLM | None, optimizer: torch.optim.Optimizer, samples: Rollouts,
            advantages: torch.Tensor, config: GRPOConfig) -> dict[str, float]:
    """μ optimiser steps on one batch of rollouts; the ratio's denominator is the policy that sampled them."""
    with torch.no_grad():
        # With μ = 1 the policy that sampled is the one being updated: its log-probs are the update's own
        # forward, detached (as TRL does), so they need no pass of their own.
        old_logp = (token_logprobs(policy.eval(), samples.sequences, config.temperature)
                    if config.inner_steps > 1 else None)
        ref_logp = (token_logprobs(reference, samples.sequences, config.temperature)
                    if reference is not None and config.beta > 0 else None)
    policy.train()
    for _ in range(config.inner_steps):
        logp = token_logprobs(policy, samples.sequences, config.temperature)
        loss, stats = grpo_loss(logp, logp.detach() if old_logp is None else old_logp, ref_logp, advantages,
                                samples.mask, config.clip_eps, config.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        optimizer.step()
    return {"loss": loss.item(), **stats}
