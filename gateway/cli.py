"""`photosafe-gateway`: the reference record gateway's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosafe-gateway",
        description="PhotoSafe record gateway: receive sealed captures, verify, file, "
        "and answer each with a signed receipt.",
    )
    parser.add_argument(
        "--version", action="version", version=f"photosafe-gateway {version('photosafe')}"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
