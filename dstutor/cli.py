"""`dstutor` on the command line, for runs outside notebooks.

    dstutor pretrain --preset nano --steps 2000 --out runs/nano [--resume]
    torchrun --nproc_per_node=2 -m dstutor.cli pretrain --distributed fsdp --preset nano --steps 200 --out runs/fsdp
    dstutor serve --model runs/nano/model [--host 127.0.0.1] [--port 8000] [--redis-url redis://127.0.0.1:6379/0]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def pretrain(args: argparse.Namespace) -> int:
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


def serve(args: argparse.Namespace) -> int:
    """Serve a checkpoint folder with the OpenAI-compatible API until interrupted."""
    import uvicorn

    from dstutor.serve.api import create_app
    from dstutor.serve.batcher import Batcher
    from dstutor.serve.cache import LRUCache, RedisCache
    from dstutor.serve.engine import Engine

    try:
        engine = Engine(args.model)
        cache = RedisCache(args.redis_url) if args.redis_url else LRUCache(args.cache_size)
    except Exception as error:  # a missing folder or an unreachable Redis: say so, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = args.name or Path(args.model).resolve().name
    if name == "model":  # `dstutor pretrain --out RUN` writes RUN/model: the run's name is the better id
        name = Path(args.model).resolve().parent.name
    app = create_app(engine, name, Batcher(engine, args.max_batch, args.max_wait_ms / 1000), cache)
    print(f"serving {name!r} ({cache.kind} cache, batches of ≤ {args.max_batch}) on http://{args.host}:{args.port}/v1",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstutor", description="dstutor: train DeepSeek-style models.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pretrain", help="pretrain a model preset on the course corpus")
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
    s = commands.add_parser("serve", help="serve a checkpoint with an OpenAI-compatible API")
    s.add_argument("--model", required=True, help="checkpoint folder (RUN/model as `dstutor pretrain` writes it)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default=None, help="model id clients send (default: the run folder's name)")
    s.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most (1: no batching)")
    s.add_argument("--max-wait-ms", type=float, default=10, help="how long the first request waits for company")
    s.add_argument("--cache-size", type=int, default=1024, help="answers kept by the in-process LRU cache (0: off)")
    s.add_argument("--redis-url", default=None, help="cache answers in this Redis instead, e.g. redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    return {"pretrain": pretrain, "serve": serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
