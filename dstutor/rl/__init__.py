"""Reasoning by reinforcement learning, as DeepSeek-R1 does it, at CPU scale: tasks, rule rewards, GRPO."""
from dstutor.rl.grpo import GRPOConfig, clipped_surrogate, group_advantages, grpo_loss, k3_kl, token_logprobs, train_grpo
from dstutor.rl.policy import SIZES, supervised, task_model
from dstutor.rl.rewards import accuracy_reward, evaluate_expression, extract_answer, format_reward, total_reward
from dstutor.rl.rollouts import Rollouts, evaluate_policy, pass_at_k, rejection_sample, rollout, score
from dstutor.rl.tasks import TASKS, Problem, as_pairs, make_problems, task_tokenizer

__all__ = ["GRPOConfig", "clipped_surrogate", "group_advantages", "grpo_loss", "k3_kl", "token_logprobs", "train_grpo",
           "SIZES", "supervised", "task_model", "accuracy_reward", "evaluate_expression", "extract_answer",
           "format_reward", "total_reward", "Rollouts", "evaluate_policy", "pass_at_k", "rejection_sample", "rollout",
           "score", "TASKS", "Problem", "as_pairs", "make_problems", "task_tokenizer"]
