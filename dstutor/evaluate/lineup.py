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


LINEUP = ("SFT", "LoRA", "distilled")  # the fine-tuned models the lineup trains, in the order it returns them


def fine_tuned_lineup(base: DeepSeekLM, student_start: DeepSeekLM, tokenizer: PreTrainedTokenizerFast,
                      pairs: pd.DataFrame, steps: int, seed: int = 0, sft_lr: float = 1e-3, lora_rank: int = 8,
                      lora_lr: float = 3e-3, names: tuple[str, ...] = LINEUP,
                      teacher: DeepSeekLM | None = None) -> dict[str, DeepSeekLM]:
    """The `names` of {'SFT', 'LoRA', 'distilled'} trained for `steps` on the same pairs and seed; inputs stay unchanged.

    The distilled student learns from `teacher`, by default this seed's SFT model (then trained as well).
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: need ≥ 1 training step")
    unknown = set(names) - set(LINEUP)
    if unknown:
        raise ValueError(f"unknown lineup models {sorted(unknown)}; choose from {LINEUP}")
    models = {}
    if "SFT" in names or ("distilled" in names and teacher is None):
        seed_everything(seed)
        models["SFT"] = copy.deepcopy(base)
        supervised(models["SFT"], tokenizer, pairs, steps, lr=sft_lr, seed=seed)
    if "LoRA" in names:
        seed_everything(seed)
        lora = add_lora(copy.deepcopy(base), lora_rank, 2 * lora_rank)
        supervised(lora, tokenizer, pairs, steps, lr=lora_lr, seed=seed)
        models["LoRA"] = lora.merge_and_unload()
    if "distilled" in names:
        seed_everything(seed)
        models["distilled"] = copy.deepcopy(student_start)
        # memo={}: the frozen teacher runs once per distinct row, not once per batch that holds it
        distil_logits(models["distilled"], teacher if teacher is not None else models["SFT"], tokenizer, pairs, steps,
                      lr=sft_lr, seed=seed, memo={})
    return {name: models[name].eval() for name in LINEUP if name in names}
