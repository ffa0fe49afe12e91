"""`photosafe`: the capture station's command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from photosafe.daemon.config import ConfigError, load_config
from photosafe.daemon.credentials import load_keys
from photosafe.daemon.logs import setup_logging

DEFAULT_CONFIG = Path("/etc/photosafe/station.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosafe",
        description="PhotoSafe capture station: scan badge, wristband and consent, capture, "
        "seal in memory, deliver to the record gateway.",
    )
    parser.add_argument("--version", action="version", version=f"photosafe {version('photosafe')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the station until SIGTERM")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="station TOML file")
    run.add_argument(
        "--simulate",
        action="store_true",
        help="simulated camera, scanner and button; scans are read from standard input, "
        "one per line (\\x1d or <GS> for the GS1 separator)",
    )
    check = commands.add_parser("check-config", help="check the configuration and keys")
    check.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="station TOML file")
    doctor = commands.add_parser(
        "doctor",
        help="list the configured and detected camera, scanner, lights, button and display, "
        "and what is missing; exit 1 when the station cannot work",
    )
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="station TOML file")
    identify = commands.add_parser(
        "identify",
        help="decode and classify a scan (or a picture of a barcode) as this station would; "
        "prints JSON; exit 0 recognised, 1 refused, 2 unusable input",
    )
    identify.add_argument(
        "text", nargs="?", help="what the scanner sent (\\x1d or <GS> for the GS1 separator)"
    )
    identify.add_argument("--image", type=Path, help="a picture of a wristband, badge or card")
    identify.add_argument(
        "--config",
        type=Path,
        default=None,
        help="station TOML file whose [identity] rules apply (default: documented test rules)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "run":
        return _run(args.config, simulate=args.simulate)
    if args.command == "doctor":
        from photosafe.daemon.doctor import run as doctor

        return doctor(args.config)
    if args.command == "identify":
        from photosafe.daemon.identify import run as identify

        return identify(args.text, args.image, args.config)
    return 2


def _check_config(path: Path) -> int:
    try:
        config = load_config(path)
        load_keys(config)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"{path}: OK: station {config.device_id} ({config.station.kind.value}, "
        f"{config.station.location}), broker {config.broker.host}:{config.broker.port}"
    )
    return 0


def _run(path: Path, *, simulate: bool) -> int:
    from photosafe.daemon.app import run_station

    setup_logging()
    if simulate:
        for part in ("CAMERA", "SCANNER", "BUTTON"):
            os.environ.setdefault(f"PHOTOSAFE_{part}", "simulated")
    try:
        config = load_config(path)
        return run_station(config, scans_from=sys.stdin if simulate else None)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
