"""A fleet from an inventory: check it whole, then write one config bundle per station.

The inventory is a CSV file with a header row naming these columns (any order):

    device_id, site, ward_or_theatre, profile, hostname

`profile` is `ward`, `theatre`, or `theatre:` followed by the implied-consent categories the
station may record, separated by `;` (e.g. `theatre:endoscopic;x-ray`). `read_inventory` reports
EVERY bad row with its line number (duplicate id or hostname, wildcard or separator in an id,
reserved id, unknown profile or category, missing site or ward, bad hostname); `write_bundles`
writes nothing at all for an invalid inventory.

A bundle (OUT/<device_id>/) holds what the station's /etc/photosafe needs except its key and
certificate, which `enrol` and `install` make on the station itself, in
/etc/photosafe/credentials/ (station.toml names credentials/device.key and credentials/device.crt;
the systemd unit hands device.key to the service with LoadCredential=):

    station.toml  ca.crt  [broker-ca.crt]  recipient.pub  signing-<n>.pub  fleet.pub
    hostname  INSTALL.txt

station.toml is written by site_configs.station_toml (the one writer of the station schema) with
file names relative to its own folder. Re-running is idempotent: unchanged bundles are not
touched, and each bundle is reported as created, updated or unchanged.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from photosafe.protocol.consent import ImpliedCategory, StationKind, StationProfile
from photosafe.provisioning.ca import CA_CERT, FLEET_PUB, device_id_problem, write_file
from photosafe.provisioning.site_configs import station_toml

COLUMNS = ("device_id", "site", "ward_or_theatre", "profile", "hostname")
MAX_TEXT = 80
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SIGNING = re.compile(r"signing-[0-9]+\.pub")

Outcome = Literal["created", "updated", "unchanged"]
Progress = Callable[[int, int], None]


class FleetError(Exception):
    """An inventory, site config or output folder that cannot be used; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# -- the inventory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Station:
    line: int
    device_id: str
    site: str
    location: str
    profile: StationProfile
    hostname: str


def parse_profile(text: str) -> StationProfile:
    """`ward`, `theatre` or `theatre:cat;cat` as a StationProfile; ValueError if not."""
    kind_text, _, categories = text.strip().partition(":")
    try:
        kind = StationKind(kind_text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown profile {text!r}: use ward, theatre or theatre:CATS") from None
    names = [c.strip() for c in re.split(r"[;,]", categories) if c.strip()]
    if kind is StationKind.WARD and names:
        raise ValueError("a ward station may not accept implied consent categories")
    known = {c.value for c in ImpliedCategory}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown implied-consent categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return StationProfile(kind=kind, implied_categories=tuple(ImpliedCategory(n) for n in names))


def hostname_problem(hostname: str) -> str | None:
    if not hostname:
        return "hostname is missing"
    if len(hostname) > 253 or not all(
        _HOSTNAME_LABEL.fullmatch(label) for label in hostname.split(".")
    ):
        return (
            f"hostname {hostname!r} is not valid: dot-separated labels of 1-63 letters, "
            "digits and '-', not starting or ending with '-'"
        )
    return None


def _text_problem(what: str, value: str) -> str | None:
    if not value:
        return f"{what} is missing"
    if len(value) > MAX_TEXT or _CONTROL.search(value):
        return f"{what} must be 1-{MAX_TEXT} printable characters"
    return None


def parse_inventory(text: str, name: str = "inventory") -> list[Station]:
    """Every station, or FleetError listing every problem as `name:line: message`."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: list[str] | None = None
    stations: list[Station] = []
    ids: dict[str, int] = {}  # device id (case-folded) -> first line
    hostnames: dict[str, int] = {}
    start = 1
    for row in reader:
        line, start = start, reader.line_num + 1  # a quoted cell may span lines
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in COLUMNS if c not in header]
            extra = [c for c in header if c not in COLUMNS]
            if missing or extra or len(set(header)) != len(header):
                problems.append(
                    f"{name}:{line}: the header must name the columns {', '.join(COLUMNS)}"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + (f"; unknown {', '.join(extra)}" if extra else "")
                )
                break
            continue
        if len(row) != len(header):
            problems.append(f"{name}:{line}: {len(row)} cells, the header names {len(header)}")
            continue
        cells = {column: cell.strip() for column, cell in zip(header, row, strict=True)}
        found = _row_problems(cells, line, ids, hostnames)
        problems += [f"{name}:{line}: {p}" for p in found]
        if not found:
            stations.append(
                Station(
                    line,
                    cells["device_id"],
                    cells["site"],
                    cells["ward_or_theatre"],
                    parse_profile(cells["profile"]),
                    cells["hostname"].lower(),
                )
            )
    if header is None and not problems:
        problems.append(f"{name}: no header row (and no stations)")
    if problems:
        raise FleetError(problems)
    return stations


def _row_problems(
    cells: dict[str, str], line: int, ids: dict[str, int], hostnames: dict[str, int]
) -> list[str]:
    found: list[str] = []
    device_id = cells["device_id"]
    problem = "device id is missing" if not device_id else device_id_problem(device_id)
    if problem:
        found.append(problem)
    elif device_id.lower() in ids:
        first = ids[device_id.lower()]
        found.append(
            f"duplicate device id {device_id!r} (first on line {first}; ids that "
            "differ only in case count as the same)"
        )
    else:
        ids[device_id.lower()] = line
    for what, column in (("site", "site"), ("ward or theatre", "ward_or_theatre")):
        problem = _text_problem(what, cells[column])
        if problem:
            found.append(problem)
    try:
        parse_profile(cells["profile"])
    except ValueError as exc:
        found.append(str(exc))
    hostname = cells["hostname"].lower()
    problem = hostname_problem(hostname)
    if problem:
        found.append(problem)
    elif hostname in hostnames:
        found.append(f"duplicate hostname {hostname!r} (first on line {hostnames[hostname]})")
    else:
        hostnames[hostname] = line
    return found


def read_inventory(path: Path) -> list[Station]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError([f"{path}: cannot read it ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise FleetError([f"{path}: not UTF-8 text (save the CSV as UTF-8)"]) from None
    return parse_inventory(text, str(path))


def plan_summary(stations: Iterable[Station]) -> list[str]:
    """Human lines: how many stations per site and per kind."""
    by_site: dict[str, list[Station]] = {}
    for station in stations:
        by_site.setdefault(station.site, []).append(station)
    lines = []
    for site, members in sorted(by_site.items()):
        theatres = sum(1 for s in members if s.profile.kind is StationKind.THEATRE)
        wards = len({s.location for s in members})
        lines.append(
            f"  {site}: {len(members)} stations ({len(members) - theatres} ward, "
            f"{theatres} theatre) in {wards} wards/theatres"
        )
    return lines


# -- the site config --------------------------------------------------------------------------

_SECTION = ConfigDict(extra="forbid")
Scalar = str | int | float | bool


class SiteBroker(BaseModel):
    model_config = _SECTION
    host: str = Field(min_length=1, description="Broker host name the stations connect to.")
    port: int = Field(default=8883, ge=1, le=65535)
    ca_file: Path | None = Field(
        default=None, description="CA of the broker's server certificate, if not the device CA."
    )
    max_message_bytes: int | None = Field(default=None, ge=1024)


class SiteGateway(BaseModel):
    model_config = _SECTION
    recipient_public_key: Path = Field(description="The gateway's current X25519 public key.")
    signing_public_keys: list[Path] = Field(min_length=1, description="Ack signing keys.")
    suite: Literal["chacha20", "aes256gcm"] = "chacha20"


class SiteIdentity(BaseModel):
    model_config = _SECTION
    nhs_gs1_company_prefix: str = Field(pattern=r"^[0-9]{7}$")
    staff_pattern: str | None = None
    mrn_pattern: str | None = None
    mrn_authority: str | None = None
    gs_substitute: str | None = None


class SiteConfig(BaseModel):
    """What every station of the estate shares (`--site-config site.toml`)."""

    model_config = _SECTION
    broker: SiteBroker
    gateway: SiteGateway
    identity: SiteIdentity
    outbox: dict[str, Scalar] = Field(default_factory=dict)
    session: dict[str, Scalar] = Field(default_factory=dict)
    drivers: dict[str, Scalar] = Field(default_factory=dict)
    shutdown: dict[str, Scalar] = Field(default_factory=dict)
    hardening: dict[str, Scalar] = Field(default_factory=dict)


def read_site_config(path: Path) -> tuple[SiteConfig, dict[str, bytes]]:
    """The site config and the files it names (read now, so a bad path fails before writing)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            config = SiteConfig.model_validate(tomllib.load(handle))
    except OSError as exc:
        raise FleetError([f"{path}: cannot read it ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError([f"{path}: not valid TOML: {exc}"]) from None
    except ValidationError as exc:
        raise FleetError(
            [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        ) from None
    wanted = {"recipient.pub": config.gateway.recipient_public_key}
    for i, key in enumerate(config.gateway.signing_public_keys, start=1):
        wanted[f"signing-{i}.pub"] = key
    if config.broker.ca_file is not None:
        wanted["broker-ca.crt"] = config.broker.ca_file
    files, problems = {}, []
    for name, named in wanted.items():
        full = named if named.is_absolute() else path.parent / named
        try:
            files[name] = full.read_bytes()
        except OSError as exc:
            problems.append(f"{path}: {full}: {exc.strerror}")
    if problems:
        raise FleetError(problems)
    return config, files


# -- bundles ----------------------------------------------------------------------------------


@dataclass
class BundleReport:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)  # folders for ids not in the inventory

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    def summary(self) -> str:
        text = (
            f"{len(self.outcomes)} bundles: {self.count('created')} created, "
            f"{self.count('updated')} updated, {self.count('unchanged')} unchanged"
        )
        if self.strays:
            text += (
                f"; {len(self.strays)} folder(s) for stations no longer in the inventory, "
                f"left in place: {', '.join(self.strays[:5])}"
                + (" ..." if len(self.strays) > 5 else "")
            )
        return text


def bundle_files(station: Station, site: SiteConfig, shared: dict[str, bytes]) -> dict[str, bytes]:
    """The file name -> content map of one station's bundle."""
    signing = sorted(name for name in shared if _SIGNING.fullmatch(name))
    toml = station_toml(
        comment=(
            f"PhotoSafe station {station.device_id}: {station.site}, {station.location}\n"
            "Written by `photosafe-provision fleet bundle`; file names are relative to this file."
        ),
        device_id=station.device_id,
        station={
            "site": station.site,
            "location": station.location,
            "kind": station.profile.kind.value,
            "implied_categories": [c.value for c in station.profile.implied_categories],
        },
        identity=site.identity.model_dump(),
        broker={
            "host": site.broker.host,
            "port": site.broker.port,
            "ca_file": "broker-ca.crt" if "broker-ca.crt" in shared else "ca.crt",
            "cert_file": "credentials/device.crt",
            "key_file": "credentials/device.key",
            "max_message_bytes": site.broker.max_message_bytes,
        },
        gateway={
            "recipient_public_key": "recipient.pub",
            "signing_public_keys": signing,
            "suite": site.gateway.suite,
        },
        outbox=site.outbox,
        session=site.session,
        drivers=site.drivers,
        shutdown=site.shutdown,
        hardening=site.hardening,
    )
    install = f"""\
PhotoSafe station {station.device_id} ({station.hostname}): {station.site}, {station.location}

On the station, as root (docs/operations.md has the whole procedure):
  hostnamectl set-hostname {station.hostname}
  install -d -m 0755 /etc/photosafe && cp station.toml *.crt *.pub /etc/photosafe/
  photosafe-provision enrol --device-id {station.device_id} --dir /etc/photosafe/credentials
Bring /etc/photosafe/credentials/device.csr (never device.key) to the CA machine:
  photosafe-provision issue device.csr --ca CA_DIR --out {station.device_id}.crt
Back on the station:
  photosafe-provision install {station.device_id}.crt --dir /etc/photosafe/credentials \\
      --ca /etc/photosafe/ca.crt
  photosafe check-config --config /etc/photosafe/station.toml
"""
    return {
        "station.toml": toml.encode(),
        **shared,
        "hostname": f"{station.hostname}\n".encode(),
        "INSTALL.txt": install.encode(),
    }


def write_bundles(
    inventory: Path,
    ca_dir: Path,
    site_config: Path,
    out: Path,
    *,
    progress: Progress | None = None,
) -> BundleReport:
    """Validate everything first; then create or update each station's bundle folder."""
    problems: list[str] = []
    stations: list[Station] = []
    try:
        stations = read_inventory(inventory)
    except FleetError as exc:
        problems += exc.problems
    try:
        site, shared = read_site_config(site_config)
    except FleetError as exc:
        problems += exc.problems
    shared_ca: dict[str, bytes] = {}
    for name, source in (("ca.crt", CA_CERT), ("fleet.pub", FLEET_PUB)):
        try:
            shared_ca[name] = (ca_dir / source).read_bytes()
        except OSError as exc:
            hint = (
                f" (make it: photosafe-provision ca fleet-key {ca_dir})"
                if name == "fleet.pub"
                else ""
            )
            problems.append(f"{ca_dir / source}: {exc.strerror}{hint}")
    if out.exists() and not out.is_dir():
        problems.append(f"{out} exists and is not a folder")
    if problems:
        raise FleetError(problems)
    shared = {**shared_ca, **shared}

    out.mkdir(mode=0o755, parents=True, exist_ok=True)
    report = BundleReport()
    for done, station in enumerate(stations, start=1):
        report.outcomes[station.device_id] = _write_bundle(
            out / station.device_id, bundle_files(station, site, shared)
        )
        if progress is not None:
            progress(done, len(stations))
    wanted = {s.device_id for s in stations}
    report.strays = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name not in wanted)
    return report


def _write_bundle(folder: Path, files: dict[str, bytes]) -> Outcome:
    created = not folder.exists()
    folder.mkdir(mode=0o755, exist_ok=True)
    changed = False
    for name, data in files.items():
        path = folder / name
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        write_file(path, data, 0o644, sync=False)  # regenerated at will: no fsync per file
        changed = True
    for stale in folder.iterdir():
        if _SIGNING.fullmatch(stale.name) and stale.name not in files:
            stale.unlink()
            changed = True
    if created:
        return "created"
    return "updated" if changed else "unchanged"
