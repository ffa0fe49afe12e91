"""`photosafe-gateway`: the reference record gateway's command line.

photosafe-gateway run [--config PATH]            serve until SIGTERM / SIGINT
photosafe-gateway check-config [--config PATH]   list every problem (exit 1) or a summary
photosafe-gateway fleet [--config PATH] [--wait S]  the stations' retained statuses as a table
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from photosafe.gateway.config import GatewayConfig

DEFAULT_CONFIG = Path("/etc/photosafe/gateway.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosafe-gateway",
        description="PhotoSafe record gateway: receive sealed captures, verify, file, "
        "and answer each with a signed receipt.",
    )
    parser.add_argument(
        "--version", action="version", version=f"photosafe-gateway {version('photosafe')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("run", "serve: file captures and answer them until SIGTERM or SIGINT"),
        ("check-config", "check the configuration and every file it names, then exit"),
        ("fleet", "print every station's retained status (online, certificate, warnings)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            metavar="PATH",
            help=f"TOML configuration (default {DEFAULT_CONFIG}); environment variables "
            "PHOTOSAFE_GATEWAY_<SECTION>__<FIELD> override it",
        )
        if name == "fleet":
            command.add_argument(
                "--wait",
                type=float,
                default=2.0,
                metavar="S",
                help="seconds to collect retained statuses after subscribing (default 2)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # Imported here so --help and --version stay fast and work without the crypto stack.
    from photosafe.gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        out = sys.stdout if args.command == "check-config" else sys.stderr  # its result, or why
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=out)
        for problem in exc.problems:
            print(f"  {problem}", file=out)
        return 1
    if args.command == "check-config":
        return _summary(config)
    if args.command == "fleet":
        return _fleet(config, args.wait)
    return _run(config)


def _summary(config: GatewayConfig) -> int:
    from photosafe.protocol.ack import signing_key_id

    material = config.material()
    broker = config.broker
    print("config OK")
    print(f"  broker    {broker.host}:{broker.port} as {broker.client_id}")
    print(f"  group     {broker.share_group} (session kept {broker.session_expiry_s}s)")
    print(f"  recipient key ids {', '.join(sorted(material.recipient_keys))}")
    print(f"  signing key id    {signing_key_id(material.signing_key.public_key())}")
    print(f"  device CA {config.trust.device_ca}; CRL {config.trust.crl or 'none'}")
    print(f"  records   {config.sink.summary()}")
    return 0


def _fleet(config: GatewayConfig, wait: float) -> int:
    from photosafe.gateway.fleet import FleetError, run

    try:
        return run(config.broker, wait, sys.stdout)
    except FleetError as exc:
        print(f"photosafe-gateway fleet: {exc}", file=sys.stderr)
        return 1


def _run(config: GatewayConfig) -> int:
    from photosafe.gateway.service import Gateway

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    Gateway(config).run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
