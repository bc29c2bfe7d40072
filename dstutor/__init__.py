"""dstutor: train DeepSeek-style language models from scratch, measured on your machine.

Importing any part of the package first keeps transformers and datasets off the model hub: without
these settings a missing model retries the network for about 50 s before it fails. It also keeps
freed large tensors in the process for reuse (dstutor.allocator), which makes CPU training steps faster.
"""
import os

from dstutor.allocator import keep_freed_buffers

OFFLINE_VARS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def set_offline() -> None:
    """Set the offline variables (a value the reader has set already is kept)."""
    for key, value in OFFLINE_VARS.items():
        os.environ.setdefault(key, value)


set_offline()
keep_freed_buffers()
