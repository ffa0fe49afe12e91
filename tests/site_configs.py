"""Configuration files for the programs of a sandbox site, as tests write them."""

from __future__ import annotations

import json
from pathlib import Path

from photosafe.provisioning.sandbox import Site


def _string(value: object) -> str:
    """A TOML basic string (JSON's escapes are a subset TOML accepts)."""
    return json.dumps(str(value))


def gateway_config_toml(
    site: Site,
    records_dir: Path,
    *,
    client_id: str = "photosafe-gateway-1",
    share_group: str = "photosafe-gateways",
) -> str:
    """A complete `photosafe-gateway` config for `site`, filing into `records_dir`."""
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

[sink]
kind = "folder"
path = {_string(records_dir)}
"""
