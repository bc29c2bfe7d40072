"""Run under torchrun by test_distributed.py: train the tiny test model with DDP or FSDP, save history.

argv: strategy, steps, output folder, JSON of trainer and model options ({"train": {...}, "model": {...}}).
Every rank also writes its final weights and buffers (DDP), so the test can see that replicas agree.
"""
import json
import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from test_trainer import pattern_batches, record_expert_loads, tiny_model  # torchrun puts this folder on sys.path

from dstutor.train import Trainer

strategy, steps, out, options = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
trainer = Trainer(steps=steps, lr=1e-2, warmup_steps=2, progress=False, eval_every=3, eval_batches=2,
                  device="cpu", distributed=strategy, save_every=3, **options["train"])
model = tiny_model(**options["model"])
with record_expert_loads() as recorded:
    history = trainer.fit(model, pattern_batches(), pattern_batches(2), checkpoint_dir=out / "checkpoints")
(out / f"loads-rank{trainer.context.rank}.json").write_text(json.dumps(recorded.loads))
if strategy == "ddp":
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"rank{trainer.context.rank}.safetensors")
if trainer.is_main:
    (out / "history.json").write_text(history.to_json(orient="records"))
dist.destroy_process_group()
