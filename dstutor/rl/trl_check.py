"""The same GRPO run with TRL's GRPOTrainer, fully offline: a cross-check of dstutor.rl.grpo.

The policy goes to TRL as a local transformers checkpoint (`save_pretrained` + the task tokenizer)
and comes back as a DeepSeekLM, so both runs are evaluated by the same code. TRL's settings are
mapped from our GRPOConfig one by one; its defaults that differ from DeepSeekMath's GRPO (loss "dapo",
β = 0, linear decay, weight decay) are set back explicitly. One difference stays: transformers' warmup
gives the first update a learning rate of 0, ours gives it lr / (warmup_steps + 1).
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import datasets
import pandas as pd
import torch
from transformers import PreTrainedTokenizerFast, PrinterCallback
from transformers.utils import logging as hf_logging

from dstutor.models import DeepSeekLM
from dstutor.models.hf import from_hf, save_pretrained
from dstutor.rl.grpo import GRPOConfig
from dstutor.rl.rewards import accuracy_reward
from dstutor.rl.rollouts import Reward, Rollouts
from dstutor.rl.tasks import Problem

LOGGED = {"reward": "reward", "rewards/accuracy/mean": "accuracy", "completions/mean_length": "length",
          "kl": "kl", "frac_reward_zero_std": "degenerate", "step_time": "step_s"}


@contextlib.contextmanager
def quiet_transformers():
    """No weight-loading bars and no deprecation warnings from transformers' own internals while TRL runs."""
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.enable_progress_bar()


def trl_arguments(config: GRPOConfig, output_dir: str):
    """TRL's GRPOConfig equivalent to ours: same batch, group, learning rate, clip, β and sampling."""
    from trl import GRPOConfig as TRLConfig  # imported here: TRL takes seconds to import
    return TRLConfig(output_dir=output_dir, max_steps=config.steps, num_generations=config.group_size,
                     per_device_train_batch_size=config.prompts_per_step * config.group_size,
                     max_completion_length=config.max_new_tokens, temperature=config.temperature,
                     learning_rate=config.lr, lr_scheduler_type="constant_with_warmup",
                     warmup_steps=config.warmup_steps, weight_decay=0.0, adam_beta2=0.99,
                     max_grad_norm=config.grad_clip, beta=config.beta, epsilon=config.clip_eps,
                     num_iterations=config.inner_steps, loss_type="grpo", scale_rewards="group", seed=config.seed,
                     use_cpu=True, bf16=False, report_to="none", logging_steps=1, save_strategy="no",
                     disable_tqdm=not config.progress,
                     reward_weights=[1.0, 0.0])  # trl_grpo's second reward (accuracy) is logged, not rewarded


def trl_grpo(policy: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem], reward: Reward,
             config: GRPOConfig) -> tuple[DeepSeekLM, pd.DataFrame]:
    """Train a copy of policy with TRL's GRPOTrainer; return it as a DeepSeekLM and TRL's log in our column names."""
    from trl import GRPOTrainer
    config.validate()
    if not problems:
        raise ValueError("the prompt set is empty: GRPO needs problems to sample")
    by_prompt = {p.prompt: p for p in problems}

    def task_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
        return [reward(c, by_prompt[p]) for p, c in zip(prompts, completions)]

    def accuracy(prompts: list[str], completions: list[str], **_) -> list[float]:
        return [accuracy_reward(c, by_prompt[p]) for p, c in zip(prompts, completions)]

    with tempfile.TemporaryDirectory() as folder, quiet_transformers():
        start = save_pretrained(policy, Path(folder) / "start")  # β > 0 needs a path: TRL loads the reference from it
        tokenizer.save_pretrained(start)
        trainer = GRPOTrainer(model=str(start), reward_funcs=[task_reward, accuracy], args=trl_arguments(config, folder),
                              train_dataset=datasets.Dataset.from_dict({"prompt": list(by_prompt)}),
                              processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the log is returned as a table instead of printed
        trainer.train()
    logged = [row for row in trainer.state.log_history if "reward" in row]
    history = pd.DataFrame(logged).rename(columns=LOGGED)[["step", *LOGGED.values()]]
    return from_hf(trainer.model.float()).eval(), history


def trl_grpo_loss(policy: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, samples: Rollouts, advantages: torch.Tensor,
                  ref_logp: torch.Tensor | None, config: GRPOConfig) -> torch.Tensor:
    """TRL's GRPO loss (`GRPOTrainer._compute_loss`) on one fixed batch of rollouts, the policy loaded by TRL.

    Every prompt must have the same length (TRL would left-pad shorter ones); ref_logp is (rows,
    length − 1) as dstutor.rl.token_logprobs gives it. μ = 1: the sampling policy is the policy.
    """
    from trl import GRPOTrainer

    def no_reward(prompts: list[str], **_) -> list[float]:  # TRL needs reward functions; this batch is scored
        return [0.0] * len(prompts)

    starts = samples.mask.argmax(dim=1)  # each row's first completion position
    if (starts != starts[0]).any():
        raise ValueError(f"prompts of {sorted(set((starts + 1).tolist()))} tokens: TRL would left-pad the shorter "
                         "ones, so this check needs prompts of one length")
    prompt_length = int(starts[0]) + 1
    prompt_ids = samples.sequences[:, :prompt_length]
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
              "completion_ids": samples.sequences[:, prompt_length:],
              "completion_mask": samples.mask[:, prompt_length - 1:].long(), "advantages": advantages}
    if ref_logp is not None:
        inputs["ref_per_token_logps"] = ref_logp[:, prompt_length - 1:]
    with tempfile.TemporaryDirectory() as folder, quiet_transformers():
        start = save_pretrained(policy, Path(folder) / "policy")
        tokenizer.save_pretrained(start)
        trainer = GRPOTrainer(model=str(start), reward_funcs=[no_reward, no_reward], args=trl_arguments(config, folder),
                              train_dataset=datasets.Dataset.from_dict({"prompt": ["-"]}), processing_class=tokenizer)
        trainer.model.float().eval()  # eval: TRL divides a training loss by the gradient-accumulation steps
        with torch.no_grad():
            return trainer._compute_loss(trainer.model, inputs)
