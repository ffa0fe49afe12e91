"""`photosafe-provision` commands run on the station: enrol (its key and CSR) and install (its
certificate)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enrol = commands.add_parser(
        "enrol", help="on the station: make its key (never leaves it) and a CSR"
    )
    enrol.add_argument("--device-id", required=True, help="the station id (certificate CN)")
    enrol.add_argument("--dir", type=Path, required=True, help="e.g. /etc/photosafe")
    enrol.add_argument("--owner", help="give the key to this user (the service user; root only)")
    enrol.add_argument(
        "--new-key", action="store_true", help="renew with a new key (device.key.next)"
    )
    enrol.add_argument("--service", action="store_true", help="a service identity, not a station")
    install = commands.add_parser(
        "install", help="on the station: check the issued certificate, then write it"
    )
    install.add_argument("cert", type=Path, help="the certificate from `issue`")
    install.add_argument("--dir", type=Path, required=True, help="the folder enrol used")
    install.add_argument("--ca", type=Path, required=True, help="the device CA certificate")


def _enrol(args: argparse.Namespace) -> int:
    from photosafe.provisioning.enrol import enrol

    done = enrol(
        args.device_id, args.dir, owner=args.owner, new_key=args.new_key, allow_service=args.service
    )
    print(f"{done.key}: {'existing key kept' if done.reused_key else 'new P-256 key (0600)'}")
    print(f"{done.csr}: take this CSR (not the key) to the CA machine for `issue`")
    return 0


def _install(args: argparse.Namespace) -> int:
    from photosafe.provisioning.enrol import install

    done = install(args.cert, args.dir, args.ca)
    print(
        f"{done.cert}: certificate for {done.device_id} installed, valid until "
        f"{done.not_after:%Y-%m-%d}" + ("; the new key is in place" if done.new_key else "")
    )
    print("  restart the service (systemctl restart photosafe) to use it")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"enrol": _enrol, "install": _install}
