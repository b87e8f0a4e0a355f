"""The `derain` command line (also `python -m derain`).

Each subcommand lives in derain/commands/<name>.py with `add_parser(subparsers)`
(which sets `func`) and is listed in COMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["bench", "infer", "eval", "demo", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derain", description="Rain O'er Me derain toolkit on fused kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"derain.commands.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser()  # imports torch: a Ctrl-C in these first seconds is not a crash
    except KeyboardInterrupt:
        print("derain: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"derain {args.command}: error: {exc}", file=sys.stderr)
        return 2
