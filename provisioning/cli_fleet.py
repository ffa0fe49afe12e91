"""`photosafe-provision` commands for the fleet: inventory plan, config bundles, signed settings
changes, gateway key rotation and publishing the signed messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from photosafe.provisioning.cli_ca import ASK_HELP, ask_passphrase

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_ROTATION_HELP = """\
Make a new gateway X25519 recipient key (recipient-<kid>.key/.pub in --dir) and sign a config
message per station naming it. The old keys stay. Then:
  1. add the new key to keys.recipient_keys in gateway.toml (keep the old ones listed) and
     restart the gateway, so it opens captures sealed to either key;
  2. publish the messages: photosafe-provision fleet publish OUT ...;
  3. the gateway MUST keep every old key until the longest station outbox expiry
     (outbox.expiry_s) plus the gateway's session expiry has passed since step 2: captures
     queued before the switch are sealed to the old key and are lost if it is removed sooner.
"""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = commands.add_parser("fleet", help="inventory checks, bundles and remote config")
    sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    plan = sub.add_parser("plan", help="check an inventory; list every bad row; write nothing")
    plan.add_argument(
        "inventory",
        type=Path,
        help="CSV with a header: device_id, site, ward_or_theatre, profile "
        "(ward | theatre[:cat;cat]), hostname",
    )
    bundle = sub.add_parser("bundle", help="write one config bundle per station (idempotent)")
    bundle.add_argument("inventory", type=Path, help="the inventory CSV")
    bundle.add_argument("--ca", type=Path, required=True, help="CA folder (ca.crt, fleet key)")
    bundle.add_argument("--site-config", type=Path, required=True, help="site TOML")
    bundle.add_argument("--out", type=Path, required=True, help="folder of bundles")

    config = sub.add_parser(
        "config", help="sign a settings change (location, profile, thresholds) for stations"
    )
    rotate = commands.add_parser(
        "rotate-gateway-key",
        help="new gateway recipient key + fleet-signed config telling stations; keep old keys",
        description=_ROTATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rotate.add_argument("--dir", type=Path, required=True, help="the gateway's key folder")
    for parser in (config, rotate):
        parser.add_argument("--ca", type=Path, required=True, help="CA folder (fleet key)")
        parser.add_argument("--inventory", type=Path, help="every station in this CSV")
        parser.add_argument("--device", action="append", default=[], help="station (repeat)")
        parser.add_argument("--out", type=Path, required=True, help="folder for the messages")
        parser.add_argument("--passphrase-file", type=Path, help=ASK_HELP)
    config.add_argument("--location", help="new ward or theatre name")
    config.add_argument("--profile", help="ward | theatre[:cat;cat]")
    config.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="e.g. min_focus=50 (min_focus, max_shadows_clipped, max_highlights_clipped, "
        "min_width, min_height, patient_timeout_s)",
    )

    publish = sub.add_parser(
        "publish", help="publish signed config messages, retained, as the fleet identity"
    )
    publish.add_argument("messages", type=Path, help="folder of <device>.config.json")
    publish.add_argument("--host", required=True, help="broker host")
    publish.add_argument("--port", type=int, default=8883, help="broker TLS port")
    publish.add_argument("--ca-file", type=Path, required=True, help="CA of the broker")
    publish.add_argument("--cert", type=Path, required=True, help="fleet client certificate")
    publish.add_argument("--key", type=Path, required=True, help="fleet client key")


class _ProgressBar:
    """Plain text on stderr: a redrawn bar on a terminal, a line per 10% otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = done * (50 if self.tty else 10) // max(total, 1)
        if step == self.shown and done != total:
            return
        self.shown = step
        if self.tty:
            bar = "#" * step + "-" * (50 - step)
            end = "\n" if done == total else ""
            print(f"\r{self.label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)
        else:
            print(f"{self.label}: {done}/{total}", file=sys.stderr)


def _fleet(args: argparse.Namespace) -> int:
    from photosafe.provisioning import fleet

    if args.fleet_command == "plan":
        stations = fleet.read_inventory(args.inventory)
        print(f"{args.inventory}: {len(stations)} stations, no problems")
        for line in fleet.plan_summary(stations):
            print(line)
        return 0
    if args.fleet_command == "bundle":
        report = fleet.write_bundles(
            args.inventory, args.ca, args.site_config, args.out, progress=_ProgressBar("bundling")
        )
        print(f"{args.out}: {report.summary()}")
        return 0
    if args.fleet_command == "config":
        from photosafe.provisioning.ca import load_fleet_key

        change, devices = _settings_change(args), _targets(args)
        _sign(args, change, devices, load_fleet_key(args.ca, ask_passphrase(args.passphrase_file)))
        return 0
    return _publish(args)


def _targets(args: argparse.Namespace) -> list[str]:
    from photosafe.provisioning.ca import CaError
    from photosafe.provisioning.fleet import read_inventory

    devices = list(args.device)
    if args.inventory is not None:
        devices += [s.device_id for s in read_inventory(args.inventory)]
    if not devices:
        raise CaError("name the stations: --inventory CSV or --device ID")
    return list(dict.fromkeys(devices))


def _settings_change(args: argparse.Namespace) -> dict[str, object]:
    from photosafe.provisioning.ca import CaError
    from photosafe.provisioning.fleet import parse_profile

    change: dict[str, object] = {}
    if args.location is not None:
        change["location"] = args.location
    if args.profile is not None:
        try:
            change["profile"] = parse_profile(args.profile).model_dump(mode="json")
        except ValueError as exc:
            raise CaError(str(exc)) from None
    thresholds: dict[str, float | int] = {}
    for item in args.threshold:
        name, _, value = item.partition("=")
        try:
            thresholds[name] = int(value) if name in ("min_width", "min_height") else float(value)
        except ValueError:
            raise CaError(f"--threshold {item!r}: use NAME=NUMBER") from None
    if thresholds:
        change["thresholds"] = thresholds
    if not change:
        raise CaError("nothing to change: give --location, --profile or --threshold")
    return change


def _sign(
    args: argparse.Namespace,
    change: Mapping[str, object],
    devices: list[str],
    key: Ed25519PrivateKey,
) -> None:
    from photosafe.provisioning.fleet_config import sign_updates, write_messages

    paths = write_messages(args.out, sign_updates(args.ca, key, devices, change))
    print(f"{args.out}: {len(paths)} signed config message(s); publish them with")
    print(
        f"  photosafe-provision fleet publish {args.out} --host BROKER --ca-file CA "
        "--cert FLEET.crt --key FLEET.key"
    )


def _rotate(args: argparse.Namespace) -> int:
    from photosafe.provisioning.ca import load_fleet_key
    from photosafe.provisioning.fleet_config import rotate_gateway_key

    devices = _targets(args)
    key = load_fleet_key(args.ca, ask_passphrase(args.passphrase_file))  # before any key is made
    rotation = rotate_gateway_key(args.dir)
    _sign(args, rotation.change(), devices, key)
    names = [rotation.key.name, *(p.name for p in rotation.kept.values())]
    print(f"new recipient key {rotation.kid}: {rotation.key} ({len(devices)} stations told)")
    print("  1. gateway.toml: recipient_keys = [" + ", ".join(f'"{n}"' for n in names) + "]")
    print("     and restart the gateway BEFORE publishing;")
    print("  2. publish the messages (fleet publish);")
    print(
        "  3. keep the old key(s) "
        + (", ".join(rotation.kept) or "(none)")
        + " until the longest outbox expiry plus the gateway session expiry has passed"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from photosafe.provisioning.ca import CaError
    from photosafe.provisioning.fleet_config import publish_configs, read_messages

    messages = read_messages(args.messages)
    if not messages:
        raise CaError(f"no <device>.config.json messages in {args.messages}")
    codes = publish_configs(
        messages,
        host=args.host,
        port=args.port,
        ca_file=args.ca_file,
        cert_file=args.cert,
        key_file=args.key,
    )
    refused = {d: c for d, c in codes.items() if c >= 0x80}
    print(f"published {len(codes) - len(refused)} of {len(codes)} config message(s), retained")
    for device, code in sorted(refused.items()):
        print(f"  {device}: refused by the broker (reason code 0x{code:02x})", file=sys.stderr)
    return 1 if refused else 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fleet": _fleet,
    "rotate-gateway-key": _rotate,
}
