"""Run under torchrun by test_distributed.py: train the tiny test model with DDP or FSDP, save history."""
import json
import sys
from pathlib import Path

import torch.distributed as dist

from test_trainer import pattern_batches, tiny_model  # torchrun puts this folder on sys.path

from dstutor.train import Trainer

strategy, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
trainer = Trainer(steps=steps, lr=1e-2, warmup_steps=2, progress=False, eval_every=3, eval_batches=2,
                  device="cpu", distributed=strategy, save_every=3)
history = trainer.fit(tiny_model(bias_update_speed=0.01), pattern_batches(), pattern_batches(2), checkpoint_dir=out / "checkpoints")
if trainer.is_main:
    (out / "history.json").write_text(history.to_json(orient="records"))
    (out / "world.json").write_text(json.dumps(trainer.context.world_size))
dist.destroy_process_group()
