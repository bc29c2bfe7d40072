"""The GPU check: on a CUDA machine, the GPU tests, the GPU benchmarks and two chapters in full mode.

Each step runs as its own process under a time limit, in the order of what it tells us; the outcome and
seconds of each go to bench/results/gpu_check.json, the benchmarks write their own results there, and
the chapters' GPU runtimes go to book/_build/runtimes.json. Without CUDA it says so and exits 0.
Usage: python bench/gpu_check.py [--chapters 03 05] [--budget-s 420]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pandas as pd
import torch

from dstutor.bench import save_results
from dstutor.chapters import REPO_ROOT


def steps(chapters: list[str]) -> list[tuple[str, list[str]]]:
    """(name, command) of each check, most telling first."""
    python = sys.executable
    return [("GPU unit tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py",
                                "tests/test_trainer.py", "tests/test_trainer_features.py"]),
            ("bf16 MFU of the small preset", [python, "bench/gpu_mfu.py"]),
            ("train-step speed vs transformers", [python, "bench/model_speed.py"]),
            (f"chapters {', '.join(chapters)} in full mode",
             [python, "book/build.py", "--chapters", *chapters, "--no-site"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chapters", nargs="+", default=["03", "05"], help="chapters to execute in full mode")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all steps together")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: nothing to check (run `make gpu-check` on a GPU machine).")
        return 0
    began, rows = time.monotonic(), []
    for name, command in steps(args.chapters):
        left = args.budget_s - (time.monotonic() - began)
        if left <= 0:
            rows.append({"check": name, "outcome": "not run: the budget was spent", "seconds": 0.0})
            continue
        start = time.monotonic()
        try:
            code = subprocess.run(command, cwd=REPO_ROOT, timeout=left).returncode
            outcome = "passed" if code == 0 else f"failed (exit code {code})"
        except subprocess.TimeoutExpired:
            outcome = f"stopped after {left:.0f} s (the budget)"
        rows.append({"check": name, "outcome": outcome, "seconds": round(time.monotonic() - start, 1)})
        print(f"{name}: {outcome}", flush=True)
    table = pd.DataFrame(rows).set_index("check")
    passed = int((table.outcome == "passed").sum())
    summary = (f"{torch.cuda.get_device_name(0)}: {passed} of {len(table)} GPU checks passed in "
               f"{time.monotonic() - began:.0f} s.")
    print(summary)
    save_results("gpu_check", table, summary, {"every GPU check passed": passed == len(table)})
    return 0 if passed == len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
