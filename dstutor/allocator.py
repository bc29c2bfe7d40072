"""Large CPU tensors: keep freed buffers in the process for the next step instead of returning them.

glibc serves each allocation of 32 MiB or more with a fresh mmap and unmaps it when it is freed. A
training step's logits (16 × 128 tokens × 4096 words, 32 MiB in float32) and their gradients are
such allocations, so every step page-faults and zeroes them again: a sixth of the nano model's step on
2 cores (bench/allocator.py). Raising the mmap threshold keeps them in the heap; results are bit-identical.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
HEAP_LIMIT = 1 << 30  # allocations below 1 GiB come from the heap; larger ones are rare and still mmap'd
KEEP_DEFAULT_VARIABLE = "DSTUTOR_GLIBC_MALLOC_DEFAULTS"  # set to 1 to measure glibc's own behaviour


def keep_freed_buffers() -> bool:
    """Ask glibc to serve allocations below 1 GiB from its heap and keep what is freed; False where it cannot."""
    if sys.platform != "linux" or os.environ.get(KEEP_DEFAULT_VARIABLE) == "1":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt: nothing to tune
        return False
    # The trim threshold must exceed the buffers we keep, or freeing the heap's top returns them anyway.
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * HEAP_LIMIT))
