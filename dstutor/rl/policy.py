"""The policy models of chapter 09: DeepSeek models sized for the character-level tasks, and their SFT.

Supervised fine-tuning on worked solutions is R1's cold start (§2.3.1): a policy that never produces
a correct answer gets the same reward for every sample, so GRPO has nothing to learn from.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dstutor.finetune.methods import finetune
from dstutor.finetune.sft import encode_sft
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig

SIZES = {  # dense MLA models (no experts): the tasks are small, and GRPO's cost is sampling
    "nano": dict(hidden_size=48, num_layers=2, num_heads=4, intermediate_size=128, kv_lora_rank=16,
                 qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=12),
    "small": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384, kv_lora_rank=32,
                  qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32),
}
MAX_LEN = 64  # prompt + completion tokens: the longest countdown solution at 4 numbers is ~45


def task_model(tokenizer: PreTrainedTokenizerFast, size: str = "nano", seed: int = 0) -> DeepSeekLM:
    """A freshly initialised (seeded) DeepSeek model of a named size over the task tokenizer's vocabulary."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    torch.manual_seed(seed)
    config = DeepSeekConfig(vocab_size=len(tokenizer), n_routed_experts=0, max_position_embeddings=MAX_LEN + 16,
                            **SIZES[size])
    return DeepSeekLM(config)


def supervised(model: nn.Module, tokenizer: PreTrainedTokenizerFast, pairs: pd.DataFrame, steps: int,
               lr: float = 3e-3, batch_size: int = 32, seed: int = 0) -> pd.DataFrame:
    """SFT on (prompt, answer) rows, loss on the answer only; returns the training history.

    model is a DeepSeekLM, or a module whose forward(input_ids, labels) gives the loss (distill.Distiller).
    """
    data = encode_sft(pairs, tokenizer, MAX_LEN)
    config = TrainConfig(steps=steps, lr=lr, seed=seed, progress=False, eval_every=0, warmup_steps=min(20, steps // 10))
    history = finetune(model, config, data, None, min(batch_size, len(data)), fields=("input_ids", "labels"))
    model.eval()
    return history
