"""`dstutor pretrain`: pretraining outside notebooks, with checkpoints, resume and torchrun.

    dstutor pretrain --preset nano --steps 2000 --out runs/nano [--resume]
    torchrun --nproc_per_node=2 -m dstutor pretrain --distributed fsdp --preset nano --steps 200 --out runs/fsdp
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "pretrain a model preset on the course corpus"


def run(args: argparse.Namespace) -> int:
    """Pretrain a preset on the course corpus with checkpoints; write a transformers checkpoint at the end."""
    import torch

    from dstutor import zoo
    from dstutor.env import choose_device, seed_everything
    from dstutor.models import DeepSeekConfig, DeepSeekLM
    from dstutor.models.hf import save_pretrained
    from dstutor.train import TrainConfig, fit_on_blocks
    from dstutor.train.distributed import full_model_state

    out = Path(args.out)
    checkpoints = out / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()) and not args.resume:
        print(f"error: {checkpoints} already holds checkpoints; pass --resume to continue, or choose another --out",
              file=sys.stderr)
        return 2
    config = DeepSeekConfig.preset(args.preset)
    seed_everything(args.seed)
    model = DeepSeekLM(config)
    train_blocks, val_blocks = zoo.course_blocks(config.vocab_size, args.block_size)
    train = TrainConfig(steps=args.steps, lr=args.lr, save_every=args.save_every, seed=args.seed,
                        eval_every=args.eval_every, progress=not args.quiet, distributed=args.distributed)
    main_process = os.environ.get("RANK", "0") == "0"
    if main_process:
        print(f"pretraining {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
          f"{choose_device()} for {args.steps} steps → {out}", flush=True)
    history = fit_on_blocks(model, train, train_blocks, val_blocks, args.batch_size,
                            checkpoint_dir=checkpoints, resume=args.resume)
    if args.distributed:
        model_state = full_model_state(model)  # collective: every rank takes part
        torch.distributed.destroy_process_group()
        if not main_process:
            return 0
        model = DeepSeekLM(config)
        model.load_state_dict(model_state)
    history.to_csv(out / "history.csv", index=False)
    save_pretrained(model.cpu(), out / "model")
    zoo.course_tokenizer(config.vocab_size).save_pretrained(out / "model")
    last = history.dropna(subset=["val_loss"]).iloc[-1]
    print(f"done: step {int(last.step)}, validation loss {last.val_loss:.3f} (perplexity {last.val_ppl:.1f}); "
          f"model and tokenizer in {out / 'model'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `dstutor pretrain`."""
    p.add_argument("--preset", choices=["nano", "micro", "small"], default="nano", help="model size")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps in total")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, history.csv, model/")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--block-size", type=int, default=128, help="tokens per sequence")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distributed", choices=["ddp", "fsdp"], default=None,
                   help="data parallel over the processes that torchrun starts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
