"""MQTT topic names, in one place.

The device id is the certificate's CN. No patient data ever goes into a topic.
"""

from __future__ import annotations

import re

ROOT = "photosafe/v1"

# MQTT wildcards and separators would let one device's id address another's topics.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def valid_device_id(device_id: str) -> bool:
    """True when the id is safe as a certificate CN, an MQTT username and a topic level."""
    return _DEVICE_ID.fullmatch(device_id) is not None


def _topic(device_id: str, leaf: str) -> str:
    if not valid_device_id(device_id):
        raise ValueError(
            "device id must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return f"{ROOT}/{device_id}/{leaf}"


def capture(device_id: str) -> str:
    """Device to gateway: sealed captures, QoS 1, never retained."""
    return _topic(device_id, "capture")


def ack(device_id: str) -> str:
    """Gateway to device: signed receipts, QoS 1."""
    return _topic(device_id, "ack")


def status(device_id: str) -> str:
    """Device, retained, with a matching last will. No PHI."""
    return _topic(device_id, "status")


def config(device_id: str) -> str:
    """Fleet to device, retained, fleet-signed."""
    return _topic(device_id, "config")


def gateway_capture_subscription(group: str) -> str:
    """The MQTT 5 shared subscription several gateway processes split the captures over."""
    return f"$share/{group}/{ROOT}/+/capture"


def device_of(topic: str) -> str | None:
    """The device id level of one of our topics, or None if the topic is not ours."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != ROOT or not valid_device_id(parts[2]):
        return None
    return parts[2]
