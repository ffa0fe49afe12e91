"""`photosafe-provision`: what estates teams run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from photosafe.provisioning import cli_ca, cli_fleet, cli_station
from photosafe.provisioning.pki import PkiError

if TYPE_CHECKING:
    from photosafe.provisioning.cards_sheet import BodySite


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photosafe-provision",
        description="PhotoSafe provisioning: device CA, enrolment, fleet bundles, "
        "sandbox sites and command cards.",
    )
    parser.add_argument(
        "--version", action="version", version=f"photosafe-provision {version('photosafe')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sandbox = commands.add_parser(
        "sandbox",
        help="create a site in a box: device CA, broker, gateway and station keys and configs",
    )
    sandbox.add_argument("dir", type=Path, help="new (or empty) folder for the site")
    sandbox.add_argument(
        "--device", action="append", dest="devices", metavar="ID", help="station id (repeatable)"
    )
    sandbox.add_argument("--port", type=int, default=8883, help="broker port on 127.0.0.1")
    sheet = commands.add_parser(
        "cards",
        help="print every command card (consent, implied, actions, body sites) as an A4 PDF",
    )
    sheet.add_argument("--out", type=Path, required=True, help="the PDF file to write")
    sheet.add_argument(
        "--body-site",
        action="append",
        default=[],
        type=_body_site,
        dest="body_sites",
        metavar="CODE:TERM[:sides]",
        help="add a body-site card: a SNOMED CT concept id and its term; ':sides' prints a "
        "left and a right card (repeatable; added to the built-in starter list)",
    )
    cli_ca.add_commands(commands)
    cli_station.add_commands(commands)
    cli_fleet.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "sandbox":
        return _sandbox(args.dir, args.devices or ["ward-demo-01"], args.port)
    if args.command == "cards":
        return _cards(args.out, args.body_sites)
    from photosafe.provisioning.ca import CaError
    from photosafe.provisioning.enrol import EnrolError
    from photosafe.provisioning.fleet import FleetError

    handlers = {**cli_ca.HANDLERS, **cli_station.HANDLERS, **cli_fleet.HANDLERS}
    try:
        return handlers[args.command](args)
    except FleetError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"photosafe-provision {args.command}: {len(exc.problems)} problem(s); nothing written",
            file=sys.stderr,
        )
        return 1
    except (CaError, EnrolError, PkiError, OSError) as exc:
        print(f"photosafe-provision {args.command}: {exc}", file=sys.stderr)
        return 1


def _sandbox(root: Path, devices: list[str], port: int) -> int:
    from photosafe.provisioning.sandbox import SandboxError
    from photosafe.provisioning.site_configs import create_sandbox

    try:
        site = create_sandbox(root, devices, port=port)
    except (SandboxError, PkiError, ValueError) as exc:
        print(f"photosafe-provision sandbox: {exc}", file=sys.stderr)
        return 1
    print(f"site in a box at {site.root}:")
    print(f"  broker:   mosquitto -c {site.broker_conf}")
    print(f"  gateway:  photosafe-gateway run --config {site.root / 'gateway' / 'gateway.toml'}")
    for device in site.devices:
        config = site.root / "devices" / device.device_id / "station.toml"
        print(f"  station:  photosafe run --simulate --config {config}")
    return 0


def _body_site(text: str) -> BodySite:
    from photosafe.provisioning.cards_sheet import parse_body_site

    try:
        return parse_body_site(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cards(out: Path, extra: list[BodySite]) -> int:
    from photosafe.provisioning.cards_sheet import DEFAULT_BODY_SITES, write_pdf

    try:
        pages = write_pdf(out, [*DEFAULT_BODY_SITES, *extra])
    except OSError as exc:
        print(f"photosafe-provision cards: {exc}", file=sys.stderr)
        return 1
    count = sum(len(page.cells) for page in pages)
    print(f"{out}: {count} cards on {len(pages)} A4 pages; print at 100% (no scaling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
