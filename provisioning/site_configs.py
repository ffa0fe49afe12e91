"""Config files for the stations and the gateway of a sandbox site (the demo and the tests).

A real estate writes station files from its inventory (`fleet bundle`, provisioning/fleet.py); the
sandbox needs the same files for its own loopback broker, so the station and gateway run exactly
as in production. Both go through `station_toml`, the one writer of the station schema.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from photosafe.provisioning.sandbox import Site, build_site


def _string(value: object) -> str:
    """A TOML basic string (JSON's escapes are a subset TOML accepts)."""
    return json.dumps(str(value))


# GS1's example prefix range (950): not a real NHS prefix, so sandbox wristbands are never real.
SANDBOX_NHS_PREFIX = "9506000"

TomlValue = str | int | float | bool | Path | Sequence[str | Path]
Section = Mapping[str, TomlValue | None]
_EMPTY: Section = {}


def _value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written to a station config")
        return repr(value)
    if isinstance(value, str | Path):
        return _string(value)
    return "[" + ", ".join(_string(item) for item in value) + "]"


def station_toml(
    *,
    comment: str,
    device_id: str,
    station: Section,
    identity: Section,
    broker: Section,
    gateway: Section,
    fleet: Section = _EMPTY,
    outbox: Section = _EMPTY,
    session: Section = _EMPTY,
    drivers: Section = _EMPTY,
    shutdown: Section = _EMPTY,
    hardening: Section = _EMPTY,
) -> str:
    """The one writer of station.toml (photosafe.daemon.config's schema), for the sandbox and
    for `fleet bundle`. Sections come in the schema's order; None values and empty optional
    sections are left out, so the station's defaults apply. `fleet` is reserved for the pinned
    fleet key(s), once photosafe.daemon.config has that section (nobody passes it yet)."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines.append(f"device_id = {_string(device_id)}")
    sections = {
        "station": station,
        "identity": identity,
        "broker": broker,
        "gateway": gateway,
        "fleet": fleet,
        "outbox": outbox,
        "session": session,
        "drivers": drivers,
        "shutdown": shutdown,
        "hardening": hardening,
    }
    for name, values in sections.items():
        present = {k: v for k, v in values.items() if v is not None}
        if not present and name not in ("station", "identity", "broker", "gateway"):
            continue
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_value(value)}" for key, value in present.items()]
    return "\n".join(lines) + "\n"


def station_config_toml(
    site: Site,
    device_id: str,
    *,
    kind: str = "ward",
    location: str = "Dermatology OPD",
    implied: tuple[str, ...] = (),
    canary_hex: str | None = None,
    patient_timeout_s: float = 120,
    ack_timeout_s: float = 5,
    expiry_s: float = 60,
    grace_s: float = 10,
) -> str:
    device = site.device(device_id)
    return station_toml(
        comment=f"PhotoSafe station {device_id} (sandbox site {site.root.name})",
        device_id=device_id,
        station={
            "site": "Sandbox General Hospital",
            "location": location,
            "kind": kind,
            "implied_categories": list(implied),
        },
        identity={
            "nhs_gs1_company_prefix": SANDBOX_NHS_PREFIX,
            "staff_pattern": "STAFF-(?P<id>[0-9]{6,8})",
            "mrn_pattern": "MRN-(?P<mrn>[0-9]{8})",
            "mrn_authority": "SANDBOX",
        },
        broker={
            "host": site.host,
            "port": site.port,
            "ca_file": site.ca_cert,
            "cert_file": device.cert,
            "key_file": device.key,
            "max_message_bytes": site.max_packet_size,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 5,
        },
        gateway={
            "recipient_public_key": site.recipient_pub,
            "signing_public_keys": [site.signing_pub],
            "suite": "chacha20",
        },
        outbox={"ack_timeout_s": ack_timeout_s, "expiry_s": expiry_s},
        session={"patient_timeout_s": patient_timeout_s},
        drivers={
            "camera": "simulated",
            "scanner": "simulated",
            "indicator": "console",
            "button": "simulated",
            "canary_hex": canary_hex,
        },
        shutdown={"grace_s": grace_s},
    )


def write_station_config(
    site: Site, device_id: str, path: Path | None = None, **options: object
) -> Path:
    path = path or site.root / "devices" / device_id / "station.toml"
    path.write_text(station_config_toml(site, device_id, **options))  # type: ignore[arg-type]
    return path


SinkSettings = Mapping[str, str | int | float | bool]


def _sink_toml(records_dir: Path, sink: SinkSettings | None) -> str:
    """The [sink] section: the folder `records_dir`, or the keys given (e.g. a dicomweb PACS)."""
    if sink is None:
        sink = {"kind": "folder", "path": str(records_dir)}

    def value(v: str | int | float | bool) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return _string(v) if isinstance(v, str) else str(v)

    return "[sink]\n" + "".join(f"{key} = {value(v)}\n" for key, v in sink.items())


def gateway_config_toml(
    site: Site,
    records_dir: Path,
    *,
    client_id: str = "photosafe-gateway-1",
    share_group: str = "photosafe-gateways",
    sink: SinkSettings | None = None,
) -> str:
    """A complete `photosafe-gateway` config for `site`, filing into `records_dir`, or into the
    record store `sink` describes (the keys of the [sink] section, e.g. `{"kind": "dicomweb",
    "url": ...}`)."""
    return f"""\
[broker]
host = {_string(site.host)}
port = {site.port}
ca_file = {_string(site.ca_cert)}
cert_file = {_string(site.gateway_cert)}
key_file = {_string(site.gateway_key)}
client_id = {_string(client_id)}
share_group = {_string(share_group)}
keepalive = 30
session_expiry_s = 3600

[keys]
recipient_keys = [{_string(site.recipient_key)}]
signing_key = {_string(site.signing_key)}

[trust]
device_ca = {_string(site.ca_cert)}
crl = {_string(site.crl)}

{_sink_toml(records_dir, sink)}"""


def write_gateway_config(
    site: Site, records_dir: Path, path: Path | None = None, *, sink: SinkSettings | None = None
) -> Path:
    """Write the gateway config (and, for the folder sink, create the folder it files into)."""
    if sink is None:
        records_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = path or site.root / "gateway" / "gateway.toml"
    path.write_text(gateway_config_toml(site, records_dir, sink=sink))
    return path


# -- a sandbox PACS: Orthanc with its DICOMweb plugin (Debian: orthanc, orthanc-dicomweb) -------

ORTHANC_AET = "SANDBOXPACS"
GATEWAY_AET = "PHOTOSAFE"  # the gateway's calling AE title (the dimse sink's default)
_DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)


def dicomweb_plugin() -> Path:
    """Where Debian's orthanc-dicomweb put its plugin; FileNotFoundError if it is not installed."""
    for pattern in _DICOMWEB_PLUGINS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    raise FileNotFoundError("Orthanc's DICOMweb plugin is not installed (apt: orthanc-dicomweb)")


def orthanc_config(
    folder: Path, *, http_port: int, dicom_port: int, aet: str = ORTHANC_AET
) -> dict[str, object]:
    """An Orthanc configuration keeping everything in `folder`, on loopback only as far as
    Orthanc 1.10 allows: it binds every interface but answers HTTP from this host only
    (RemoteAccessAllowed false) and DICOM from the gateway's AE title at 127.0.0.1 only."""
    return {
        "Name": "PhotoSafe sandbox PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(dicomweb_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"photosafe-gateway": [GATEWAY_AET, "127.0.0.1", 104]},
        "SaveJobs": False,
    }


def write_orthanc_config(
    folder: Path, *, http_port: int, dicom_port: int, **options: object
) -> Path:
    """`folder/orthanc.json` (the folder is created); `options` are merged over the defaults."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = orthanc_config(folder, http_port=http_port, dicom_port=dicom_port) | options
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def create_sandbox(root: Path, device_ids: list[str], *, port: int) -> Site:
    """`photosafe-provision sandbox`: a site with the config files of every program in it."""
    site = build_site(root, device_ids, port=port)
    for device_id in device_ids:
        write_station_config(site, device_id)
    write_gateway_config(site, root / "records")
    return site
