"""The course's models for the evaluation chapter, rebuilt with the recipes of chapters 08 and 09.

All share the course tokenizer, so one suite scores them all: the base model fine-tuned on idiom
instructions (full SFT and LoRA), and a student distilled from the SFT model into a less-trained base.
"""
from __future__ import annotations

import copy

import pandas as pd
from transformers import PreTrainedTokenizerFast

from dstutor.distill import distil_logits
from dstutor.env import seed_everything
from dstutor.finetune.lora import add_lora
from dstutor.models import DeepSeekLM
from dstutor.rl.policy import supervised


def fine_tuned_lineup(base: DeepSeekLM, student_start: DeepSeekLM, tokenizer: PreTrainedTokenizerFast,
                      pairs: pd.DataFrame, steps: int, seed: int = 0, sft_lr: float = 1e-3, lora_rank: int = 8,
                      lora_lr: float = 3e-3) -> dict[str, DeepSeekLM]:
    """{'SFT', 'LoRA', 'distilled'} trained for `steps` on the same instruction pairs and seed; inputs stay unchanged."""
    if steps < 1:
        raise ValueError(f"steps={steps}: need ≥ 1 training step")
    seed_everything(seed)
    sft = copy.deepcopy(base)
    supervised(sft, tokenizer, pairs, steps, lr=sft_lr, seed=seed)
    seed_everything(seed)
    lora = add_lora(copy.deepcopy(base), lora_rank, 2 * lora_rank)
    supervised(lora, tokenizer, pairs, steps, lr=lora_lr, seed=seed)
    seed_everything(seed)
    student = copy.deepcopy(student_start)
    distil_logits(student, sft, tokenizer, pairs, steps, lr=sft_lr, seed=seed)
    return {"SFT": sft.eval(), "LoRA": lora.merge_and_unload().eval(), "distilled": student.eval()}
