"""`photosafe`: the capture station's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosafe",
        description="PhotoSafe capture station: scan badge, wristband and consent, capture, "
        "seal in memory, deliver to the record gateway.",
    )
    parser.add_argument("--version", action="version", version=f"photosafe {version('photosafe')}")
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
