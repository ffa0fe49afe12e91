"""`photosafe-provision` commands of the device CA: ca init/import/crl/fleet-key, issue, revoke
and renew; and the CA passphrase, asked for once and never taken from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from photosafe.provisioning.ca import DeviceCa, Passphrase

ASK_HELP = (
    "read the CA passphrase from the first line of this file (default: ask at a prompt; "
    "never give it on the command line)"
)
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


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        parser.add_argument("--passphrase-file", type=Path, help=ASK_HELP)

    issue = commands.add_parser("issue", help="sign a station's CSR with the device CA")
    issue.add_argument("csr", type=Path, help="the device.csr made by enrol")
    issue.add_argument("--ca", type=Path, required=True, help="CA folder")
    issue.add_argument("--days", type=int, default=397, help="lifetime, at most 825 days")
    issue.add_argument("--out", type=Path, required=True, help="certificate file to write")
    issue.add_argument("--service", action="store_true", help="a service identity's CSR")
    issue.add_argument("--passphrase-file", type=Path, help=ASK_HELP)

    revoke = commands.add_parser(
        "revoke", help="revoke a station's certificates and rewrite the CRL (crl.pem)"
    )
    revoke.add_argument("device_id", nargs="?", help="revoke this station's certificates")
    revoke.add_argument("--ca", type=Path, required=True, help="CA folder")
    revoke.add_argument("--serial", help="only the certificate with this serial (hex)")
    revoke.add_argument("--cert", type=Path, help="revoke this certificate file instead")
    revoke.add_argument("--passphrase-file", type=Path, help=ASK_HELP)

    renew = commands.add_parser(
        "renew",
        help="how to renew a certificate, and which are due",
        description=_RENEW_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    renew.add_argument("--ca", type=Path, required=True, help="CA folder")
    renew.add_argument("--within", type=int, default=30, help="due within this many days")


# -- the passphrase ---------------------------------------------------------------------------


def ask_passphrase(file: Path | None) -> Passphrase:
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
        passphrase = ask_passphrase(passphrase)
    ca = open_ca(root, passphrase)
    if not ca.key_encrypted:
        print(
            f"warning: {root}/ca.key is not encrypted (a sandbox CA?); a real CA key must be "
            "(ca init / ca import)",
            file=sys.stderr,
        )
    return ca


# -- the commands -----------------------------------------------------------------------------


def _ca(args: argparse.Namespace) -> int:
    from photosafe.provisioning import ca

    if args.ca_command == "init":
        opened = ca.init_ca(
            args.dir, args.name, _new_passphrase(args.passphrase_file), days=args.days
        )
    elif args.ca_command == "import":
        key_passphrase = ask_passphrase(args.key_passphrase_file)
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
            ask_passphrase(args.passphrase_file)("fleet key passphrase")
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


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ca": _ca,
    "issue": _issue,
    "revoke": _revoke,
    "renew": _renew,
}
