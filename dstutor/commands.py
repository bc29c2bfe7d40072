"""The `dstutor` command: each sub-command lives in its own module, imported only when it runs.

    dstutor pretrain ...   (dstutor.cli: training, also under torchrun)
    dstutor serve ...      (dstutor.serve.cli: the OpenAI-compatible server)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name: (module with main(argv), one line of help)
    "pretrain": ("dstutor.cli", "pretrain a model preset on the course corpus"),
    "serve": ("dstutor.serve.cli", "serve a checkpoint with an OpenAI-compatible API"),
}


def usage() -> str:
    lines = ["usage: dstutor {" + ",".join(COMMANDS) + "} ...", "", "commands:"]
    lines += [f"  {name:<10} {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines + ["", "`dstutor COMMAND --help` lists a command's options."])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv)


if __name__ == "__main__":
    sys.exit(main())
