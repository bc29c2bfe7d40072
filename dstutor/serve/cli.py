"""`dstutor serve`: the OpenAI-compatible server for a checkpoint folder, until interrupted.

    dstutor serve --model runs/nano/model [--host 127.0.0.1] [--port 8000] [--redis-url redis://127.0.0.1:6379/0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "serve a checkpoint with an OpenAI-compatible API"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `dstutor serve`."""
    p.add_argument("--model", required=True, help="checkpoint folder (RUN/model as `dstutor pretrain` writes it)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default=None, help="model id clients send (default: the run folder's name)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=10, help="how long the first request waits for company")
    p.add_argument("--cache-size", type=int, default=1024, help="answers kept by the in-process LRU cache (0: off)")
    p.add_argument("--redis-url", default=None, help="cache answers in this Redis instead, e.g. redis://127.0.0.1:6379/0")


def run(args: argparse.Namespace) -> int:
    """Serve the checkpoint until interrupted (2: the model or the cache could not be opened)."""
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
    folder = Path(args.model).resolve()
    # `dstutor pretrain --out RUN` writes RUN/model: the run's name is the better id.
    name = args.name or (folder.parent.name if folder.name == "model" else folder.name)
    app = create_app(engine, name, Batcher(engine, args.max_batch, args.max_wait_ms / 1000), cache)
    print(f"serving {name!r} ({cache.kind} cache, batches of ≤ {args.max_batch}) on http://{args.host}:{args.port}/v1",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

