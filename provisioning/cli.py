"""`photosafe-provision`: what estates teams run."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from photosafe.provisioning.pki import PkiError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from photosafe.provisioning.ca import DeviceCa, Passphrase
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
    _add_ca_commands(commands)
    _add_station_commands(commands)
    _add_fleet_commands(commands)
    return parser


_ASK_HELP = (
    "read the CA passphrase from the first line of this file (default: ask at a prompt; "
    "never give it on the command line)"
)
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
_RENEW_HELP = """\
A renewal is a new certificate for the same device id, from the same key or a new one:
  on the station:  photosafe-provision enrol --device-id ID --dir /etc/photosafe   (same key)
              or:  photosafe-provision enrol --device-id ID --dir /etc/photosafe --new-key
  CA machine:      photosafe-provision issue device.csr --ca CA_DIR --out ID.crt
  on the station:  photosafe-provision install ID.crt --dir /etc/photosafe --ca ca.crt
                   systemctl restart photosafe
`issue` accepts the CSR while the old certificate is still valid; the old one stays valid until
it expires (revoke it early with: revoke ID --serial SERIAL). This command lists what is due.
"""


def _add_ca_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = commands.add_parser("ca", help="the device CA folder: init, import, crl, fleet-key")
    sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="make a new device CA (P-256, key encrypted)")
    init.add_argument("dir", type=Path, help="new (or empty) CA folder")
    init.add_argument("--name", default="PhotoSafe device CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, help="CA lifetime (default 3650)")
    imp = sub.add_parser(
        "import", help="use the hospital's existing CA (P-256 or RSA >= 2048, may sign)"
    )
    imp.add_argument("dir", type=Path, help="new (or empty) CA folder")
    imp.add_argument("--cert", type=Path, required=True, help="the CA certificate (PEM)")
    imp.add_argument("--key", type=Path, required=True, help="the CA private key (PEM)")
    imp.add_argument(
        "--key-passphrase-file", type=Path, help="passphrase of --key if it is encrypted"
    )
    crl = sub.add_parser("crl", help="re-sign the CRL (do it before its next update date)")
    crl.add_argument("dir", type=Path, help="CA folder")
    crl.add_argument("--days", type=int, default=30, help="days until the next update")
    fleet_key = sub.add_parser(
        "fleet-key", help="make the fleet signing key in a CA folder that has none"
    )
    fleet_key.add_argument("dir", type=Path, help="CA folder")
    for parser in (init, imp, crl, fleet_key):
        parser.add_argument("--passphrase-file", type=Path, help=_ASK_HELP)

    issue = commands.add_parser("issue", help="sign a station's CSR with the device CA")
    issue.add_argument("csr", type=Path, help="the device.csr made by enrol")
    issue.add_argument("--ca", type=Path, required=True, help="CA folder")
    issue.add_argument("--days", type=int, default=397, help="lifetime, at most 825 days")
    issue.add_argument("--out", type=Path, required=True, help="certificate file to write")
    issue.add_argument("--service", action="store_true", help="a service identity's CSR")
    issue.add_argument("--passphrase-file", type=Path, help=_ASK_HELP)

    revoke = commands.add_parser(
        "revoke", help="revoke a station's certificates and rewrite the CRL (crl.pem)"
    )
    revoke.add_argument("device_id", nargs="?", help="revoke this station's certificates")
    revoke.add_argument("--ca", type=Path, required=True, help="CA folder")
    revoke.add_argument("--serial", help="only the certificate with this serial (hex)")
    revoke.add_argument("--cert", type=Path, help="revoke this certificate file instead")
    revoke.add_argument("--passphrase-file", type=Path, help=_ASK_HELP)

    renew = commands.add_parser(
        "renew",
        help="how to renew a certificate, and which are due",
        description=_RENEW_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    renew.add_argument("--ca", type=Path, required=True, help="CA folder")
    renew.add_argument("--within", type=int, default=30, help="due within this many days")


def _add_station_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_fleet_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        parser.add_argument("--passphrase-file", type=Path, help=_ASK_HELP)
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

    handlers = {
        "ca": _ca,
        "issue": _issue,
        "revoke": _revoke,
        "renew": _renew,
        "enrol": _enrol,
        "install": _install,
        "fleet": _fleet,
        "rotate-gateway-key": _rotate,
    }
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


# -- the device CA ----------------------------------------------------------------------------


def _passphrase(file: Path | None) -> Passphrase:
    """Read on first need only (an unencrypted sandbox key needs none), then remembered."""
    from photosafe.provisioning.ca import read_passphrase_file

    remembered: list[bytes] = []

    def get(prompt: str) -> bytes:
        if not remembered:
            if file is not None:
                remembered.append(read_passphrase_file(file))
            else:
                remembered.append(getpass.getpass(f"{prompt}: ").encode())
        return remembered[0]

    return get


def _new_passphrase(file: Path | None) -> bytes:
    from photosafe.provisioning.ca import CaError, check_new_passphrase, read_passphrase_file

    if file is not None:
        return check_new_passphrase(read_passphrase_file(file))
    first = getpass.getpass("new CA passphrase (12 characters or more): ").encode()
    check_new_passphrase(first)
    if getpass.getpass("again: ").encode() != first:
        raise CaError("the passphrases differ")
    return first


def _open_ca(root: Path, passphrase: Passphrase | Path | None) -> DeviceCa:
    from photosafe.provisioning.ca import open_ca

    if passphrase is None or isinstance(passphrase, Path):
        passphrase = _passphrase(passphrase)
    ca = open_ca(root, passphrase)
    if not ca.key_encrypted:
        print(
            f"warning: {root}/ca.key is not encrypted (a sandbox CA?); a real CA key must be "
            "(ca init / ca import)",
            file=sys.stderr,
        )
    return ca


def _ca(args: argparse.Namespace) -> int:
    from photosafe.provisioning import ca

    if args.ca_command == "init":
        opened = ca.init_ca(
            args.dir, args.name, _new_passphrase(args.passphrase_file), days=args.days
        )
    elif args.ca_command == "import":
        key_passphrase = _passphrase(args.key_passphrase_file)
        opened = ca.import_ca(
            args.dir,
            args.cert.read_bytes(),
            args.key.read_bytes(),
            _new_passphrase(args.passphrase_file),
            key_passphrase=key_passphrase,
        )
    elif args.ca_command == "crl":
        crl = ca.write_crl(_open_ca(args.dir, args.passphrase_file), days=args.days)
        print(
            f"{args.dir / ca.CRL}: {len(crl)} revoked; next update {crl.next_update_utc:%Y-%m-%d}"
        )
        print("copy it to the broker (crlfile) and the gateway (trust.crl), then restart both")
        return 0
    else:
        opened = _open_ca(args.dir, args.passphrase_file)
        ca.create_fleet_key(
            args.dir,
            _passphrase(args.passphrase_file)("fleet key passphrase")
            if opened.key_encrypted
            else None,
        )
        print(f"{args.dir / ca.FLEET_PUB}: the fleet public key every station pins")
        return 0
    print(f"device CA {opened.cert.subject.rfc4514_string()} in {args.dir}")
    print(f"  give {args.dir / ca.CA_CERT} to the broker (cafile), the gateway and every station")
    print(f"  CRL {args.dir / ca.CRL}: the broker's crlfile and the gateway's trust.crl")
    print(f"  fleet key {args.dir / ca.FLEET_PUB}: stations pin it; keep this folder offline")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from photosafe.provisioning.ca import issue, write_file
    from photosafe.provisioning.pki import cert_pem

    ca = _open_ca(args.ca, args.passphrase_file)
    issued = issue(ca, args.csr.read_bytes(), days=args.days, allow_service=args.service)
    write_file(args.out, cert_pem(issued.cert))
    cert = issued.cert
    print(
        f"{args.out}: {issued.device_id}, serial {cert.serial_number:x}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}"
        + (" (shortened to the CA's own expiry)" if issued.shortened else "")
    )
    for old in issued.still_valid:
        print(
            f"  renewal: serial {old.serial:x} stays valid until {old.not_after:%Y-%m-%d}; "
            f"end it early with: photosafe-provision revoke {issued.device_id} --serial "
            f"{old.serial:x} --ca {args.ca}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from cryptography import x509

    from photosafe.provisioning.ca import CRL, revoke

    if args.device_id is None and args.cert is None:
        print("photosafe-provision revoke: name a DEVICE_ID or give --cert", file=sys.stderr)
        return 2
    cert = None if args.cert is None else x509.load_pem_x509_certificate(args.cert.read_bytes())
    serial = None if args.serial is None else int(args.serial, 16)
    ca = _open_ca(args.ca, args.passphrase_file)
    new = revoke(ca, args.device_id, serial=serial, cert=cert)
    what = ", ".join(f"{s:x}" for s in new) or "nothing new (already revoked)"
    print(f"revoked: {what}; CRL rewritten: {args.ca / CRL}")
    print("  the broker reads its crlfile at start: copy the CRL there and restart mosquitto;")
    print("  the gateway reads trust.crl at start: copy it and restart the gateway")
    return 0


def _renew(args: argparse.Namespace) -> int:
    import datetime as dt

    from photosafe.provisioning.ca import read_index

    print(_RENEW_HELP)
    now = dt.datetime.now(dt.UTC)
    newest: dict[str, dt.datetime] = {}
    for entry in read_index(args.ca):
        if entry.valid_at(now):
            newest[entry.device] = max(newest.get(entry.device, entry.not_after), entry.not_after)
    due = sorted(
        (when, device) for device, when in newest.items() if (when - now).days < args.within
    )
    print(f"due within {args.within} days: {len(due)}")
    for when, device in due:
        print(f"  {device}: expires {when:%Y-%m-%d} ({(when - now).days} days)")
    return 0


# -- on the station -----------------------------------------------------------------------------


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


# -- the fleet --------------------------------------------------------------------------------


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
        _sign(args, change, devices, load_fleet_key(args.ca, _passphrase(args.passphrase_file)))
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
    key = load_fleet_key(args.ca, _passphrase(args.passphrase_file))  # before any key is made
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


if __name__ == "__main__":
    sys.exit(main())
