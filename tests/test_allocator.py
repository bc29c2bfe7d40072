"""dstutor.allocator: in a repeated training step, freed logits are reused instead of being faulted in again."""
import os
import subprocess
import sys

import pytest

from dstutor.allocator import KEEP_DEFAULT_VARIABLE

FAULTS_OF_LATER_STEPS = """
import resource, torch, dstutor
hidden = torch.randn(16 * 128, 128, requires_grad=True)
lm_head = torch.randn(4096, 128, requires_grad=True)  # logits of 16 × 128 tokens over 4096 words: 32 MiB
targets = torch.randint(0, 4096, (16 * 128,))
for step in range(20):
    if step == 5:  # after warm-up, while the heap settles: an occasional step still grows it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.nn.functional.cross_entropy(hidden @ lm_head.T, targets).backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 15)
"""


def faults_per_step(keep_defaults: str) -> float:
    env = {**os.environ, KEEP_DEFAULT_VARIABLE: keep_defaults}
    return float(subprocess.run([sys.executable, "-c", FAULTS_OF_LATER_STEPS], env=env, capture_output=True,
                              text=True, check=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_repeated_step_reuses_its_freed_buffers():
    logits_pages = 32 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    default, kept = faults_per_step("1"), faults_per_step("0")
    assert default > 3 * logits_pages, default  # glibc's default: each ≥ 32 MiB buffer is a fresh mmap
    assert kept < default / 4, (default, kept)  # kept: the step's buffers come back from the heap, mapped
