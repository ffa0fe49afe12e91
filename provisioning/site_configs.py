"""Config files for the stations and the gateway of a sandbox site (the demo and the tests).

A real estate writes these from its inventory (`fleet bundle`, later); the sandbox needs the same
files for its own loopback broker, so the station and gateway run exactly as in production.
"""

from __future__ import annotations

from pathlib import Path

from photosafe.provisioning.sandbox import Site

# GS1's example prefix range (950): not a real NHS prefix, so sandbox wristbands are never real.
SANDBOX_NHS_PREFIX = "9506000"


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
    implied_list = ", ".join(f'"{c}"' for c in implied)
    canary = f'canary_hex = "{canary_hex}"\n' if canary_hex else ""
    return f"""# PhotoSafe station {device_id} (sandbox site {site.root.name})
device_id = "{device_id}"

[station]
site = "Sandbox General Hospital"
location = "{location}"
kind = "{kind}"
implied_categories = [{implied_list}]

[identity]
nhs_gs1_company_prefix = "{SANDBOX_NHS_PREFIX}"
staff_pattern = "STAFF-(?P<id>[0-9]{{6,8}})"
mrn_pattern = "MRN-(?P<mrn>[0-9]{{8}})"
mrn_authority = "SANDBOX"

[broker]
host = "{site.host}"
port = {site.port}
ca_file = "{site.ca_cert}"
cert_file = "{device.cert}"
key_file = "{device.key}"
max_message_bytes = {site.max_packet_size}
reconnect_min_s = 0.2
reconnect_max_s = 5

[gateway]
recipient_public_key = "{site.recipient_pub}"
signing_public_keys = ["{site.signing_pub}"]
suite = "chacha20"

[outbox]
ack_timeout_s = {ack_timeout_s}
expiry_s = {expiry_s}

[session]
patient_timeout_s = {patient_timeout_s}

[drivers]
camera = "simulated"
scanner = "simulated"
indicator = "console"
button = "simulated"
{canary}
[shutdown]
grace_s = {grace_s}
"""


def write_station_config(
    site: Site, device_id: str, path: Path | None = None, **options: object
) -> Path:
    path = path or site.root / "devices" / device_id / "station.toml"
    path.write_text(station_config_toml(site, device_id, **options))  # type: ignore[arg-type]
    return path
