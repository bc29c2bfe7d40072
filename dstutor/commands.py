"""The `dstutor` command, one argument parser for every sub-command; `python -m dstutor` and torchrun run it too.

    dstutor pretrain ...   (dstutor.cli: training; `torchrun --nproc_per_node=2 -m dstutor pretrain ...`)
    dstutor serve ...      (dstutor.serve.cli: the OpenAI-compatible server)

Each command module defines HELP, add_arguments(parser) and run(args); it imports torch only inside run,
so `dstutor --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {"pretrain": "dstutor.cli", "serve": "dstutor.serve.cli"}  # name: module with HELP, add_arguments, run


def parser() -> argparse.ArgumentParser:
    """`dstutor COMMAND [options]`, with every command's options."""
    root = argparse.ArgumentParser(prog="dstutor", description="dstutor: train and serve DeepSeek-style models.",
                                   epilog="`dstutor COMMAND --help` lists a command's options.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP))
    return root


def main(argv: list[str] | None = None) -> int:
    """Parse argv (default: sys.argv) and run its command; the exit status (2: bad arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"dstutor: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a bad option (2): argparse has printed why
        return int(exit.code or 0)
    return importlib.import_module(COMMANDS[args.command]).run(args)
