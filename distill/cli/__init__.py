"""The ``distill`` command line: argument parsing only.

Each stage adds its subcommands from its own module in this package (``distill/cli/*.py``,
each exposing ``register(subparsers)``); the handler it sets as ``func`` receives the parsed
namespace, builds typed configs and calls stage functions. Adding a command means adding a
module here, not editing a central list.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from distill.errors import DistillError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Distil open_clip teachers into small timm students: cache the teacher "
        "once, train students with KD / feature / adversarial / SFDA strategies, export to "
        "ONNX and TensorRT, benchmark latency.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"distill.cli.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `distill` or `distill cache` alone: show the relevant help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 0
    try:
        rc = args.func(args)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
