"""`photosafe doctor`'s operational checks: can this station's identity, keys and host work?

Beside the hardware (doctor.py), a station needs: its key and certificate, matching, for its
device id and not near expiry; a certificate the configured CA vouches for; the gateway's keys
(and the fleet's, for remote config); the broker, reached over TLS as this station; a
synchronised clock; no swap and no core dumps; and, under systemd, the unit's sandbox.

Each check is `(Wanted, Machine) -> Finding | None` like the hardware checks, and returns None
when there is no usable config (doctor.py already said why). A finding is ok, a WARNING (the
station can work, but someone should look) or a failure (it cannot): only failures make the
doctor exit non-zero. Every message that is not ok says what to do.

The broker check is a real TLS handshake and MQTT 5 CONNECT as this station (the broker's ACL
takes the certificate CN as the user name), under the client id `<device>-doctor` with a clean
session, so the running station's own session (client id = device id) is left alone.
"""

from __future__ import annotations

import datetime as dt
import resource
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.daemon.config import StationConfig
from photosafe.daemon.link import tls_context
from photosafe.protocol import ack, fleet

if TYPE_CHECKING:
    from photosafe.daemon.doctor import Machine, Wanted

__all__ = ["OPERATIONS", "RENEW_WITHIN_DAYS", "Finding", "probe_broker"]

RENEW_WITHIN_DAYS = 30
RENEW = "renew it (docs/operations.md section 7: enrol, issue, install)"
NEW_CERTIFICATE = (
    "ask estates whether it was revoked, and get a new certificate for this key "
    "(docs/operations.md section 7: enrol, issue, install)"
)
REFUSED = "the broker refused this station's certificate (revoked, expired or from another CA)"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's answer."""

    part: str  # "config", "camera", ..., "certificate", "broker", "clock", "swap", ...
    ok: bool
    message: str
    warning: bool = False  # not ok, but the station can work: does not fail the doctor
    failed: str = "MISSING"  # the word shown for a failure ("FAILED" for operational checks)

    @property
    def failure(self) -> bool:
        return not self.ok and not self.warning

    def __str__(self) -> str:
        word = "ok" if self.ok else "WARNING" if self.warning else self.failed
        return f"{word:<9}{self.part}: {self.message}"


def _ok(part: str, message: str) -> Finding:
    return Finding(part, True, message)


def _warn(part: str, message: str) -> Finding:
    return Finding(part, False, message, warning=True)


def _fail(part: str, message: str) -> Finding:
    return Finding(part, False, message, failed="FAILED")


def _under_systemd(wanted: Wanted) -> bool:
    return bool(wanted.environ.get("INVOCATION_ID"))


# -- key and certificate ------------------------------------------------------------------------


def _read(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        hint = " — run the doctor as root (or the service user)" if exc.errno == 13 else ""
        return f"cannot read {path}: {exc.strerror}{hint}"


def _certificate(path: Path) -> x509.Certificate | str:
    data = _read(path)
    if isinstance(data, str):
        return data
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return f"{path} is not a PEM certificate"


def _device_key(path: Path) -> ec.EllipticCurvePrivateKey | str:
    data = _read(path)
    if isinstance(data, str):
        return data
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return f"{path} is not an unencrypted PEM private key"
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return f"{path} is not an EC P-256 key"
    return key


def check_device_identity(wanted: Wanted, machine: Machine) -> Finding | None:
    """Key and certificate present, matching, and the certificate's CN is the device id."""
    if (config := wanted.config) is None:
        return None
    broker = config.broker
    key = _device_key(broker.key_file)
    cert = _certificate(broker.cert_file)
    problems = [p for p in (key, cert) if isinstance(p, str)]
    if problems:
        return _fail(
            "certificate",
            "; ".join(problems) + " — enrol and install this station's key and certificate "
            "(docs/operations.md, provisioning)",
        )
    assert not isinstance(key, str) and not isinstance(cert, str)
    if cert.public_key() != key.public_key():
        return _fail(
            "certificate",
            f"{broker.cert_file} is not for this station's key ({broker.key_file}) — install the "
            "certificate issued for this key (photosafe-provision install), or enrol again",
        )
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if names != [config.device_id]:
        return _fail(
            "certificate",
            f"the certificate is for {', '.join(names) or 'no CN'}, not device_id "
            f"{config.device_id!r} — install this station's own certificate, or correct device_id",
        )
    return _ok("certificate", f"key and certificate match, CN {config.device_id}")


def check_certificate_expiry(wanted: Wanted, machine: Machine) -> Finding | None:
    """Valid now, and not within RENEW_WITHIN_DAYS of expiry (a warning)."""
    if (config := wanted.config) is None:
        return None
    cert = _certificate(config.broker.cert_file)
    if isinstance(cert, str):
        return None  # said by check_device_identity
    now = machine.now()
    until = cert.not_valid_after_utc
    if now < cert.not_valid_before_utc:
        return _fail(
            "certificate",
            f"not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC — check the clock "
            "(timedatectl) or wait",
        )
    if now > until:
        return _fail(
            "certificate",
            f"expired on {until:%Y-%m-%d}: the broker refuses it — {RENEW} now",
        )
    days = (until - now).days
    if days < RENEW_WITHIN_DAYS:
        return _warn(
            "certificate", f"expires in {days} days ({until:%Y-%m-%d}) — {RENEW} before then"
        )
    return _ok("certificate", f"valid until {until:%Y-%m-%d} ({days} days)")


def check_certificate_chain(wanted: Wanted, machine: Machine) -> Finding | None:
    """The device certificate is issued by a CA in broker.ca_file (the site's device CA)."""
    if (config := wanted.config) is None:
        return None
    ca_file = config.broker.ca_file
    cert = _certificate(config.broker.cert_file)
    if isinstance(cert, str):
        return None  # said by check_device_identity
    data = _read(ca_file)
    if isinstance(data, str):
        return _fail("CA", f"{data} — copy ca.crt from the station's bundle")
    try:
        authorities = x509.load_pem_x509_certificates(data)
    except ValueError:
        return _fail("CA", f"{ca_file} holds no PEM certificate — copy ca.crt from the bundle")
    if not any(ca.subject == cert.issuer for ca in authorities):
        return _warn(
            "CA",
            f"cannot verify the certificate here: its issuer ({cert.issuer.rfc4514_string()}) is "
            f"not in {ca_file}; if the device CA differs from the broker's CA that is expected, "
            "and the broker check below is the test",
        )
    try:
        verifier = PolicyBuilder().store(Store(authorities)).time(machine.now())
        verifier.build_client_verifier().verify(cert, [])
    except VerificationError as exc:
        return _fail(
            "CA",
            f"the certificate does not verify against {ca_file}: {exc} — install a certificate "
            "issued by this site's device CA",
        )
    return _ok("CA", f"the certificate chains to {ca_file}")


# -- gateway and fleet keys ---------------------------------------------------------------------


def _public_key(path: Path, kind: type[Any], what: str) -> Any:
    data = _read(path)
    if isinstance(data, str):
        return data
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return f"{path} is not a PEM public key"
    return key if isinstance(key, kind) else f"{path} is not an {what} public key"


def check_gateway_keys(wanted: Wanted, machine: Machine) -> Finding | None:
    """The recipient key captures are sealed to, and the pinned receipt-signing keys."""
    if (config := wanted.config) is None:
        return None
    gateway = config.gateway
    recipient = _public_key(gateway.recipient_public_key, X25519PublicKey, "X25519")
    signing = [_public_key(p, Ed25519PublicKey, "Ed25519") for p in gateway.signing_public_keys]
    problems = [k for k in (recipient, *signing) if isinstance(k, str)]
    if problems:
        return _fail(
            "gateway keys",
            "; ".join(problems) + " — copy recipient.pub and signing-*.pub from the station's "
            "bundle",
        )
    ids = ", ".join(ack.pin(*signing))
    return _ok("gateway keys", f"recipient key loads; {len(signing)} signing key(s) pinned: {ids}")


def check_fleet_keys(wanted: Wanted, machine: Machine) -> Finding | None:
    """Pinned fleet keys: without one the station ignores remote config (a warning)."""
    if (config := wanted.config) is None:
        return None
    paths = config.fleet.public_keys
    if not paths:
        return _warn(
            "fleet keys",
            "none pinned: remote config is disabled — to enable it, add fleet.public_keys = "
            '["fleet.pub"] from the bundle',
        )
    keys = [_public_key(p, Ed25519PublicKey, "Ed25519") for p in paths]
    problems = [k for k in keys if isinstance(k, str)]
    if problems:
        return _fail("fleet keys", "; ".join(problems) + " — copy fleet.pub from the bundle")
    return _ok("fleet keys", f"{len(keys)} pinned: {', '.join(fleet.pin(*keys))}")


# -- the broker ---------------------------------------------------------------------------------


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho lets a failed TLS handshake escape without closing the socket (a leak): close it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


@dataclass
class _Attempt:
    connack: ReasonCode | None = None
    error: BaseException | None = None  # raised by connect(): TCP or the TLS handshake
    lost: str | None = None  # the connection dropped after the handshake, before a CONNACK
    elapsed_s: float = 0.0


def _connect_once(config: StationConfig, context: ssl.SSLContext, timeout: float) -> _Attempt:
    broker = config.broker
    context.sslsocket_class = _ClosingSSLSocket
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{config.device_id}-doctor",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set_context(context)
    client.connect_timeout = timeout
    attempt = _Attempt()
    errors: list[str] = []

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        attempt.connack = reason

    def on_log(client: mqtt.Client, userdata: Any, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            errors.append(message)

    client.on_connect = on_connect
    client.on_log = on_log
    started = time.monotonic()
    try:
        client.connect(
            broker.host,
            broker.port,
            keepalive=broker.keepalive_s,
            clean_start=True,
            properties=Properties(1),  # type: ignore[no-untyped-call]  # CONNECT; no expiry
        )
    except OSError as exc:  # ssl.SSLError, refused, unresolved, timed out
        attempt.error = exc
    else:
        deadline = started + timeout
        while attempt.connack is None and time.monotonic() < deadline:
            if client.loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                attempt.lost = errors[-1] if errors else "the connection was closed"
                break
    finally:
        attempt.elapsed_s = time.monotonic() - started
        if client.is_connected():
            client.disconnect()
        sock = client.socket()
        if sock is not None:
            sock.close()
    return attempt


def _tls_alert(exc: BaseException | None) -> str | None:
    """The refusal the broker sent during the handshake (TLS 1.2), in OpenSSL's words."""
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.reason or ""
        if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return reason.lower().replace("_", " ")
    return None


def probe_broker(config: StationConfig, timeout: float = 5.0) -> Finding:
    """A TLS handshake and MQTT 5 CONNECT as this station; the answer in plain words."""
    broker = config.broker
    where = f"{broker.host}:{broker.port}"
    try:
        context = tls_context(broker.ca_file, broker.cert_file, broker.key_file)
    except (OSError, ValueError) as problem:
        return _fail(
            "broker",
            f"not tried: this station's TLS identity does not load ({problem}) — see the "
            "certificate findings",
        )
    attempt = _connect_once(config, context, timeout)
    exc = attempt.error
    if attempt.connack is not None:
        if attempt.connack.is_failure:
            return _fail(
                "broker",
                f"{where} answered CONNECT with {attempt.connack} — check that the broker's ACL "
                f"and configuration admit {config.device_id} (the CN is the user name)",
            )
        return _ok(
            "broker",
            f"{where} accepted this station over TLS (CONNACK {attempt.connack}, client id "
            f"{config.device_id}-doctor, {attempt.elapsed_s * 1000:.0f} ms)",
        )
    if attempt.lost is not None:
        # TLS 1.3: the broker checks the client certificate after the client's handshake is done,
        # so a refusal is only a closed connection. Over TLS 1.2 it comes as an alert, with why.
        retry = tls_context(broker.ca_file, broker.cert_file, broker.key_file)
        retry.maximum_version = ssl.TLSVersion.TLSv1_2
        alert = _tls_alert(_connect_once(config, retry, timeout).error)
        why = f"TLS: {alert}" if alert else f"it closed the connection: {attempt.lost}"
        return _fail(
            "broker",
            f"{REFUSED} at {where} ({why}) — {NEW_CERTIFICATE}",
        )
    if (alert := _tls_alert(exc)) is not None:
        return _fail("broker", f"{REFUSED} at {where} (TLS: {alert}) — {NEW_CERTIFICATE}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _fail(
            "broker",
            f"the broker at {where} is not trusted: {exc.verify_message} — check that "
            f"broker.ca_file ({broker.ca_file}) is the site's CA and broker.host is the name in "
            "the broker's certificate",
        )
    if isinstance(exc, ssl.SSLError):
        return _fail(
            "broker",
            f"TLS with {where} failed ({exc.reason or exc}) — is {broker.port} the broker's TLS "
            "port?",
        )
    if isinstance(exc, ConnectionRefusedError):
        return _fail(
            "broker",
            f"nothing is listening at {where} (connection refused) — check broker.host and "
            "broker.port, and that the broker is running",
        )
    if isinstance(exc, socket.gaierror):
        return _fail(
            "broker",
            f"cannot resolve {broker.host} ({exc.strerror}) — check DNS or give the address",
        )
    if isinstance(exc, TimeoutError):
        return _fail(
            "broker",
            f"no answer from {where} within {timeout:g} s — check the network, the firewall and "
            "broker.host",
        )
    if exc is not None:
        return _fail("broker", f"cannot reach {where}: {exc} — check the network and broker.host")
    return _fail(
        "broker",
        f"{where} completed TLS but sent no CONNACK within {timeout:g} s — check the broker",
    )


def check_broker(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.config is None:
        return None
    return machine.probe_broker(wanted.config)


# -- the host -----------------------------------------------------------------------------------


def check_clock(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.config is None:
        return None
    synchronised = machine.clock()
    if synchronised:
        return _ok("clock", "synchronised (NTP)")
    advice = (
        "enable systemd-timesyncd with the hospital's NTP servers (timedatectl status; "
        "/etc/systemd/timesyncd.conf); certificates, receipts and capture times depend on it"
    )
    if synchronised is None:
        return _warn("clock", f"cannot tell whether the clock is synchronised — {advice}")
    return _warn("clock", f"not synchronised — {advice}")


def _cgroup_swap_max(machine: Machine) -> str | None:
    """This process's cgroup v2 memory.swap.max ("0" under MemorySwapMax=0), if readable."""
    try:
        line = (machine.proc / "self" / "cgroup").read_text().splitlines()[0]
        path = line.split("::", 1)[1].strip().lstrip("/")
        return (machine.sys / "fs" / "cgroup" / path / "memory.swap.max").read_text().strip()
    except (OSError, IndexError):
        return None


def check_swap(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.config is None:
        return None
    swaps = machine.proc / "swaps"
    try:
        lines = swaps.read_text().splitlines()[1:]
    except OSError:
        if _cgroup_swap_max(machine) == "0":
            return _ok("swap", f"{swaps} is hidden here, but this service may not swap (cgroup)")
        return _warn(
            "swap",
            f"cannot read {swaps} (the unit's ProcSubset=pid hides it) — run photosafe doctor "
            "from a shell to check",
        )
    devices = [line.split()[0] for line in lines if line.strip()]
    if not devices:
        return _ok("swap", "off")
    if all(Path(d).name.startswith("zram") for d in devices):
        return _warn(
            "swap",
            f"on, in compressed RAM only ({', '.join(devices)}): nothing reaches the disk, and the "
            "unit's MemorySwapMax=0 keeps the station out of it",
        )
    return _fail(
        "swap",
        f"on ({', '.join(devices)}): memory, images included, may be written to disk — "
        "sudo swapoff -a and systemctl disable --now dphys-swapfile (or remove the swap entry "
        "from /etc/fstab)",
    )


def _limit(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


def check_core_dumps(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.config is None:
        return None
    soft, _hard = machine.core_limit()
    try:
        pattern = (machine.proc / "sys" / "kernel" / "core_pattern").read_text().strip()
    except OSError:
        pattern = None
    handler = f"; core_pattern {pattern!r}" if pattern else ""
    if soft == 0:
        return _ok("core dumps", f"off: core size limit 0{handler}")
    advice = "keep LimitCORE=0 in photosafe.service (the station also makes itself not dumpable)"
    if _under_systemd(wanted):
        return _fail(
            "core dumps",
            f"allowed: this service's core size limit is {_limit(soft)}{handler} — set "
            "LimitCORE=0 in photosafe.service and systemctl daemon-reload",
        )
    return _warn(
        "core dumps",
        f"this shell's core size limit is {_limit(soft)}{handler}; the service's own is set by "
        f"the unit — {advice}",
    )


_SANDBOX = "install systemd/photosafe.service as shipped, then systemctl daemon-reload"


def check_sandbox(wanted: Wanted, machine: Machine) -> Finding | None:
    """Under systemd, this process's own restrictions: no new privileges, seccomp, no caps."""
    if wanted.config is None:
        return None
    if not _under_systemd(wanted):
        return _warn(
            "sandbox",
            "not running under systemd: the unit's sandbox cannot be checked from here — "
            "systemd-analyze security photosafe.service shows it",
        )
    try:
        text = (machine.proc / "self" / "status").read_text()
    except OSError as exc:
        return _warn("sandbox", f"cannot read /proc/self/status ({exc.strerror})")
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key: value.strip() for key, value in status.items()}
    problems = []
    if fields.get("NoNewPrivs") != "1":
        problems.append(f"NoNewPrivs {fields.get('NoNewPrivs', '?')} (NoNewPrivileges=yes)")
    if fields.get("Seccomp") != "2":
        problems.append(f"Seccomp {fields.get('Seccomp', '?')} (SystemCallFilter=)")
    if int(fields.get("CapBnd", "1") or "1", 16) != 0:
        problems.append(f"CapBnd {fields.get('CapBnd')} (CapabilityBoundingSet=)")
    if int(fields.get("CapEff", "1") or "1", 16) != 0:
        problems.append(f"CapEff {fields.get('CapEff')} (AmbientCapabilities=)")
    if problems:
        return _fail("sandbox", f"not in place: {'; '.join(problems)} — {_SANDBOX}")
    return _ok("sandbox", "no new privileges, seccomp filter, no capabilities")


OPERATIONS: list[Callable[[Wanted, Machine], Finding | None]] = [
    check_device_identity,
    check_certificate_expiry,
    check_certificate_chain,
    check_gateway_keys,
    check_fleet_keys,
    check_broker,
    check_clock,
    check_swap,
    check_core_dumps,
    check_sandbox,
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def core_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_CORE)
