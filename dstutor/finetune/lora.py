"""LoRA through `peft` on the course's DeepSeek model, routed experts included, and checks of what it adapted.

Routed experts keep their weights as 3-D parameters (experts × out × in), not nn.Linear modules, so
peft reaches them through `target_parameters`. The report lists every adapted weight: trust it, not
the configuration (on transformers' DeepseekV3 peft silently skips the shared and dense MLPs).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer, ParamWrapper
from torch import nn

from dstutor.finetune.classify import LastTokenClassifier
from dstutor.models import DeepSeekLM
from dstutor.models.hf import to_hf

# Target groups by role; names as in DeepSeek-V3 (q_proj without query compression, q_a/q_b_proj with it).
LORA_TARGETS = {
    "attention": ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),   # dense layers and shared experts (nn.Linear)
    "experts": ("experts.gate_up_proj", "experts.down_proj"),  # routed experts' 3-D parameters
}


def lora_config(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = ("attention", "mlp"),
                dropout: float = 0.0, trainable_modules: tuple[str, ...] = ()) -> LoraConfig:
    """A LoraConfig for the named target groups (see LORA_TARGETS), checked against the model's modules."""
    if rank <= 0 or alpha <= 0:
        raise ValueError(f"LoRA needs rank > 0 and alpha > 0, got rank={rank}, alpha={alpha}")
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA target groups {sorted(unknown)}; choose from {sorted(LORA_TARGETS)}")
    names = [name for name, _ in model.named_modules()]
    params = [name for name, _ in model.named_parameters()]
    present = lambda suffix, pool: any(n == suffix or n.endswith("." + suffix) for n in pool)  # noqa: E731
    modules = [m for group in targets if group != "experts" for m in LORA_TARGETS[group] if present(m, names)]
    parameters = [p for p in LORA_TARGETS["experts"] if "experts" in targets and present(p, params)]
    for group in targets:
        if not any(m in modules + parameters for m in LORA_TARGETS[group]):
            raise ValueError(f"LoRA target group {group!r} matches nothing in {type(model).__name__} "
                             f"(looked for {LORA_TARGETS[group]})")
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules or None,
                      target_parameters=parameters or None, modules_to_save=list(trainable_modules) or None)


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = ("attention", "mlp"),
             dropout: float = 0.0, trainable_modules: tuple[str, ...] = ()) -> PeftModel:
    """Wrap model with LoRA adapters (base weights frozen); trainable_modules (e.g. a classifier's "score" head) train fully."""
    return get_peft_model(model, lora_config(model, rank, alpha, targets, dropout, trainable_modules))


def adapted_weights(model: PeftModel) -> pd.DataFrame:
    """One row per weight that received a LoRA adapter: its module, group and adapter parameters."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            short = name.removeprefix("base_model.model.").replace(".base_layer", "")
            parameter = module.parameter_name if isinstance(module, ParamWrapper) else None  # a 3-D parameter, not a module
            weight = f"{short}.{parameter}" if parameter else short
            group = "experts" if parameter else next(
                g for g, suffixes in LORA_TARGETS.items() if short.rsplit(".", 1)[-1] in suffixes)
            lora_params = sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
            rows.append({"weight": weight, "group": group, "lora_parameters": lora_params})
    return pd.DataFrame(rows)


def save_merged_for_transformers(model: PeftModel, folder: str | Path, tokenizer=None) -> Path:
    """Merge the adapters into the base LM and save it as a transformers DeepseekV3 checkpoint folder."""
    merged = model.merge_and_unload()
    lm = merged.lm if isinstance(merged, LastTokenClassifier) else merged
    if not isinstance(lm, DeepSeekLM):
        raise TypeError(f"expected a DeepSeekLM (or a classifier around one) under the adapters, got {type(lm).__name__}")
    folder = Path(folder)
    to_hf(lm).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
