"""Model FLOPs utilisation of the `small` preset on a GPU in bf16 (target ≥ 40 % on an H100).

MFU = achieved training FLOP/s (6 × active params + attention, per token) / the GPU's data-sheet
bf16 peak. Without a CUDA GPU it records that nothing was measured.
Usage: python bench/gpu_mfu.py [--steps N] [--batch B] [--seq T] [--compile]
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from dstutor.bench import save_results
from dstutor.env import seed_everything
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import Trainer
from dstutor.train.callbacks import MFUMeter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        summary = "No CUDA GPU on this machine: GPU MFU was not measured (run `make bench` on a GPU machine)."
        print(summary)
        save_results("gpu_mfu", pd.DataFrame({"MFU": []}), summary)
        return
    config = DeepSeekConfig.preset("small")
    seed_everything(0)
    model = DeepSeekLM(config)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator) for _ in range(8)]
    meter = MFUMeter(config, args.seq, "cuda")
    history = Trainer(steps=args.steps, precision="bf16", compile=args.compile, eval_every=0, progress=False,
                      callbacks=[meter]).fit(model, batches)
    steady = history.iloc[args.steps // 4:]  # skip warm-up (and compilation)
    table = pd.DataFrame({"small preset": {"median tokens/s": steady.tokens_per_s.median(), "median MFU": steady.mfu.median(),
                                           "peak FLOP/s": meter.peak, "batch × seq": f"{args.batch} × {args.seq}"}}).T
    mfu = steady.mfu.median()
    summary = (f"`small` preset, bf16, batch {args.batch} × {args.seq}{', compiled' if args.compile else ''} on "
               f"{torch.cuda.get_device_name()}: MFU **{mfu:.1%}** ({meter.peak_source}).")
    print(summary)
    print(f"written: {save_results('gpu_mfu', table, summary, {'MFU ≥ 40 %': mfu >= 0.4})}")


if __name__ == "__main__":
    main()
