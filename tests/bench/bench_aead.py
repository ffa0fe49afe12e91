"""The AEAD choice: ChaCha20-Poly1305 against AES-256-GCM, and which one the station uses.

Two measurements per suite and size, interleaved: the whole `envelope.seal` (what the station
pays: SHA-256 check of the image, signature, the inner layout, HPKE, wipe) and the bare AEAD
(`cryptography`'s ChaCha20Poly1305 / AESGCM encrypt), so the share of the cipher is visible.
"""

from __future__ import annotations

import os
import time
import typing
from typing import Any

from bench_util import MIB, cpu_flags, manifest_for, median
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from photosafe.daemon.config import GatewaySettings, StationConfig
from photosafe.protocol import envelope

SUITES: dict[str, envelope.SuiteName] = {
    "chacha20": envelope.CHACHA20,
    "aes256gcm": envelope.AES256GCM,
}


def hpke_suite(name: str) -> Suite:
    """The HPKE suite `envelope.seal` uses for a station config's `gateway.suite` name."""
    aead = AEAD.CHACHA20_POLY1305 if name == "chacha20" else AEAD.AES_256_GCM
    return Suite(KEM.X25519, KDF.HKDF_SHA256, aead)


def _cipher(name: str) -> ChaCha20Poly1305 | AESGCM:
    key = os.urandom(32)
    return ChaCha20Poly1305(key) if name == "chacha20" else AESGCM(key)


def aead(
    config: StationConfig,
    *,
    device_id: str,
    device_key: ec.EllipticCurvePrivateKey,
    device_cert: x509.Certificate,
    recipient: X25519PublicKey,
    sizes: list[int],
    reps: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in sizes:
        image = os.urandom(size)
        manifest = manifest_for(image, device_id)
        nonce = os.urandom(12)
        seal_s: dict[str, list[float]] = {name: [] for name in SUITES}
        bare_s: dict[str, list[float]] = {name: [] for name in SUITES}
        ciphers = {name: _cipher(name) for name in SUITES}
        for _ in range(reps):
            for name, suite in SUITES.items():
                start = time.perf_counter()
                envelope.seal(
                    manifest,
                    image,
                    device_key=device_key,
                    device_cert=device_cert,
                    recipient=recipient,
                    suite=suite,
                )
                seal_s[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                ciphers[name].encrypt(nonce, image, None)
                bare_s[name].append(time.perf_counter() - start)
        results[f"{size // MIB}MiB"] = {
            name: {
                "seal_ms": round(median(seal_s[name]) * 1000, 3),
                "aead_only_ms": round(median(bare_s[name]) * 1000, 3),
                "aead_gb_per_s": round(size / median(bare_s[name]) / 1e9, 2),
            }
            for name in SUITES
        }
    flags = cpu_flags()
    has_aes = bool(flags & {"aes", "pmull"})  # x86 AES-NI; ARMv8 crypto extensions
    largest = results[f"{sizes[-1] // MIB}MiB"]
    faster = min(SUITES, key=lambda name: float(largest[name]["seal_ms"]))
    default = GatewaySettings.model_fields["suite"].default
    allowed = list(typing.get_args(GatewaySettings.model_fields["suite"].annotation))
    return {
        "sizes": results,
        "cpu_has_aes_instructions": has_aes,
        "faster_here": faster,
        "station_config_default": default,
        "station_config_choices": allowed,
        "bench_station_uses": config.gateway.suite,
        "why": (
            f"The station does not detect the CPU: it seals with gateway.suite from its config, "
            f"default {default!r} (GatewaySettings: chacha20 for CPUs without AES instructions, "
            f"e.g. the Pi 4's Cortex-A72 as Raspberry Pi ships it; aes256gcm on a Pi 5). "
            f"This CPU {'has' if has_aes else 'lacks'} AES instructions "
            f"(/proc/cpuinfo {'aes' if has_aes else 'no aes'}), so {faster} seals faster here."
        ),
    }
