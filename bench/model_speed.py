"""Train-step throughput: our DeepSeekLM vs transformers' DeepseekV3ForCausalLM vs a dense baseline.

Same config (the `micro` preset), same weights (logits checked equal first), same batches.
Variants take turns step by step (round-robin); warm-up steps, then timed steps; median and IQR.
Targets (issue 3): ours ≥ 1.5× transformers' eager experts; ours ≤ 1.3× the dense step time.
Usage: python bench/model_speed.py [--steps N] [--batch B] [--seq T]
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from transformers import DeepseekV3ForCausalLM

from dstutor.bench import save_results
from dstutor.env import choose_device, seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM, dense_baseline_config
from dstutor.models.hf import to_hf
from dstutor.timing import train_step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--preset", default="micro")
    args = parser.parse_args()
    device = choose_device().device
    seed_everything(0)
    config = DeepSeekConfig.preset(args.preset)
    ours = DeepSeekLM(config).to(device)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator).to(device)
               for _ in range(args.steps + args.warmup)]

    def transformers_model(experts: str) -> DeepseekV3ForCausalLM:
        hf = to_hf(ours.cpu(), attn_implementation="sdpa", experts_implementation=experts).to(device)
        ours.to(device)
        with torch.no_grad():
            gap = (hf(batches[0]).logits - ours.eval()(batches[0]).logits).abs().max().item()
        if gap > 1e-4:
            raise SystemExit(f"logits differ by {gap:.2e} with experts={experts}: not comparing unequal models")
        return hf

    models = {"transformers V3, eager experts": transformers_model("eager"),
              "transformers V3, grouped_mm experts": transformers_model("grouped_mm"),
              "dstutor DeepSeekLM": ours,  # built after the copies above, which took its weights
              "dstutor dense baseline (equal active params)": DeepSeekLM(dense_baseline_config(config)).to(device)}
    rows = {}
    for name, times in train_step_seconds(models, batches, args.warmup).items():
        median = float(np.median(times))
        q1, q3 = np.percentile(times, [25, 75])
        rows[name] = {"median step (s)": median, "IQR (s)": float(q3 - q1), "tokens/s": args.batch * args.seq / median}
        print(f"{name}: {median:.3f} s/step (IQR {q3 - q1:.3f}), {rows[name]['tokens/s']:.0f} tokens/s", flush=True)
    table = pd.DataFrame(rows).T
    ours_time = table.loc["dstutor DeepSeekLM", "median step (s)"]
    vs_eager = table.loc["transformers V3, eager experts", "median step (s)"] / ours_time
    vs_grouped = table.loc["transformers V3, grouped_mm experts", "median step (s)"] / ours_time
    vs_dense = ours_time / table.loc["dstutor dense baseline (equal active params)", "median step (s)"]
    table["speed vs ours"] = ours_time / table["median step (s)"]
    summary = (f"`{args.preset}` preset, batch {args.batch} × {args.seq} tokens, {args.steps} timed steps on "
               f"{device}. Ours is **{vs_eager:.2f}×** as fast as transformers' V3 with eager experts and "
               f"**{vs_grouped:.2f}×** with grouped_mm experts. Our MoE step takes **{vs_dense:.2f}×** the dense "
               f"baseline's.")
    print(summary)
    targets = {"ours ≥ 1.5× transformers (eager)": vs_eager >= 1.5, "MoE step ≤ 1.3× dense": vs_dense <= 1.3}
    print("written:", save_results("model_speed", table.round(4), summary, targets))


if __name__ == "__main__":
    main()
