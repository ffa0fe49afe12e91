"""Assemble a station from its configuration and run it until SIGTERM.

This is the only module that knows every part: config -> keys -> drivers -> workflow -> delivery
-> link -> event loop. Everything it builds is in memory; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from types import FrameType
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from photosafe.daemon.config import DriverSettings, StationConfig
from photosafe.daemon.credentials import StationKeys, load_keys
from photosafe.daemon.delivery import Delivery
from photosafe.daemon.hardening import MIB, clock_synchronised, harden
from photosafe.daemon.link import LinkSettings, MqttLink
from photosafe.daemon.notify import Notifier
from photosafe.daemon.outbox import Outbox, OutboxFull, OutboxLimits
from photosafe.daemon.quality import QualityGate
from photosafe.daemon.remote_config import RemoteConfig
from photosafe.daemon.station import EventQueue, StationLoop
from photosafe.daemon.workflow import Timeouts, Workflow
from photosafe.drivers import backends
from photosafe.drivers.button import Button
from photosafe.drivers.camera import Camera, Still
from photosafe.drivers.display import Display
from photosafe.drivers.indicator import Indicator
from photosafe.drivers.indicator_display import DisplayedIndicator
from photosafe.drivers.scanner import Scanner
from photosafe.protocol import envelope
from photosafe.protocol.consent import StationProfile
from photosafe.protocol.fleet import StationStatus
from photosafe.protocol.identity import IdentityRules
from photosafe.protocol.manifest import Manifest, StationRef

log = logging.getLogger(__name__)
_SUITES: dict[str, envelope.SuiteName] = {
    "chacha20": envelope.CHACHA20,
    "aes256gcm": envelope.AES256GCM,
}


@dataclass
class SealingSender:
    """Seal with the device key to the gateway's key, then queue for delivery."""

    keys: StationKeys
    suite: envelope.SuiteName
    delivery: Delivery

    def send(self, manifest: Manifest, still: Still) -> None:
        reason = self.delivery.outbox.room_for(len(still.jpeg))
        if reason:  # refuse before sealing: the clinician hears it at once
            raise OutboxFull(reason)
        sealed = envelope.seal(
            manifest,
            still.jpeg.view(),
            device_key=self.keys.device_key,
            device_cert=self.keys.device_cert,
            recipient=self.keys.recipient,
            suite=self.suite,
        )
        self.delivery.submit(manifest.capture_id, sealed)

    def use_recipient(self, key: X25519PublicKey) -> None:
        """A gateway key rotation: captures from now on are sealed to `key`."""
        self.keys = dataclasses.replace(self.keys, recipient=key)


def identity_rules(config: StationConfig) -> IdentityRules:
    i = config.identity
    return IdentityRules(
        nhs_gs1_company_prefix=i.nhs_gs1_company_prefix,
        staff_pattern=i.staff_pattern,
        mrn_pattern=i.mrn_pattern,
        mrn_authority=i.mrn_authority,
        gs_substitute=i.gs_substitute,
    )


def station_ref(config: StationConfig) -> StationRef:
    return StationRef(
        device_id=config.device_id,
        site=config.station.site,
        location=config.station.location,
        profile=StationProfile(
            kind=config.station.kind, implied_categories=tuple(config.station.implied_categories)
        ),
    )


@dataclass
class Station:
    """A station assembled from its config, not yet started."""

    config: StationConfig
    events: EventQueue
    camera: Camera
    scanner: Scanner
    indicator: Indicator
    button: Button
    link: MqttLink
    delivery: Delivery
    workflow: Workflow
    loop: StationLoop
    remote: RemoteConfig
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    display: Display | None = None

    def start(self) -> None:
        self.camera.start()
        self.link.start()
        self.scanner.start(self.events.scan)
        self.button.start(self.events.press)
        log.info("station.started", extra={"device": self.config.device_id})
        self.notifier.starting()

    def run(self) -> dict[str, int]:
        """Run the event loop until stop() and the grace period; then release everything."""
        try:
            return self.loop.run()
        finally:
            self.workflow.close()  # wipes an image left waiting for approval, also after an error
            self.scanner.stop()
            self.button.stop()
            self.link.stop()
            self.camera.close()
            self.indicator.close()
            if self.display is not None:
                self.display.close()

    def stop(self) -> None:
        self.events.stop()


def build_station(
    config: StationConfig,
    *,
    camera: Camera | None = None,
    scanner: Scanner | None = None,
    indicator: Indicator | None = None,
    button: Button | None = None,
    display: Display | None = None,
    notifier: Notifier | None = None,
) -> Station:
    """Assemble a station; drivers come from the config unless given (tests pass their own).

    `notifier` tells systemd how the station is; by default from $NOTIFY_SOCKET (or nothing).
    """
    keys = load_keys(config)
    events = EventQueue()
    camera = camera or _camera(config.drivers)
    scanner = scanner or _scanner(config.drivers, camera, events)
    indicator = indicator or _indicator(config.drivers)
    button = button or _button(config.drivers)
    display = display or _display(config.drivers)
    if display is not None:
        indicator = DisplayedIndicator(indicator, display)  # the status line shows each signal
    link = MqttLink(
        LinkSettings(
            device_id=config.device_id,
            host=config.broker.host,
            port=config.broker.port,
            ca_file=config.broker.ca_file,
            cert_file=config.broker.cert_file,
            key_file=config.broker.key_file,
            keepalive_s=config.broker.keepalive_s,
            max_message_bytes=config.broker.max_message_bytes,
            reconnect_min_s=config.broker.reconnect_min_s,
            reconnect_max_s=config.broker.reconnect_max_s,
            session_expiry_s=int(config.outbox.expiry_s),
        ),
        events,
    )
    o = config.outbox
    delivery = Delivery(
        device_id=config.device_id,
        outbox=Outbox(OutboxLimits(o.max_items, o.max_bytes, o.ack_timeout_s, o.expiry_s)),
        publisher=link,
        pinned=keys.pinned,
    )
    quality = QualityGate()
    sender = SealingSender(keys, _SUITES[config.gateway.suite], delivery)
    workflow = Workflow(
        station=station_ref(config),
        indicator=indicator,
        camera=camera,
        quality=quality,
        sender=sender,
        display=display,
        timeouts=Timeouts(
            patient_s=config.session.patient_timeout_s, operator_s=config.session.operator_timeout_s
        ),
    )
    notifier = notifier or Notifier.from_environment()

    remote = RemoteConfig(
        device_id=config.device_id,
        pinned=keys.fleet,
        workflow=workflow,
        quality=quality,
        sealer=sender,
    )

    def report(status: dict[str, object]) -> None:
        link.publish_status(station_status(config, keys, workflow, remote, status))
        notifier.update(status, connected=loop.connected)

    loop = StationLoop(
        events=events,
        workflow=workflow,
        delivery=delivery,
        indicator=indicator,
        rules=identity_rules(config),
        grace_s=config.shutdown.grace_s,
        status=report,
        heartbeat=notifier.heartbeat,
        on_config=remote.handle,
    )
    return Station(
        config=config,
        events=events,
        camera=camera,
        scanner=scanner,
        indicator=indicator,
        button=button,
        link=link,
        delivery=delivery,
        workflow=workflow,
        loop=loop,
        remote=remote,
        notifier=notifier,
        display=display,
    )


def station_status(
    config: StationConfig,
    keys: StationKeys,
    workflow: Workflow,
    remote: RemoteConfig,
    status: Mapping[str, object],
) -> StationStatus:
    """The retained status estates see (`photosafe-gateway fleet`); no patient data fits in it."""
    now = dt.datetime.now(dt.UTC)
    outbox, last_error = status.get("outbox"), status.get("last_error")
    return StationStatus(
        device=config.device_id,
        online=True,
        at=now.replace(microsecond=0),
        version=version("photosafe"),
        profile=workflow.station.profile,
        cert_days_left=(keys.device_cert.not_valid_after_utc - now).days,
        clock_synchronised=clock_synchronised(),
        outbox=outbox if isinstance(outbox, int) else None,
        config_version=remote.version or None,
        config_error=remote.error,
        step=workflow.step.value,
        last_error=last_error if isinstance(last_error, str) else None,
    )


def run_station(config: StationConfig, *, scans_from: TextIO | None = None) -> int:
    """Run until SIGTERM/SIGINT; `scans_from` feeds the simulated scanner (scripted runs)."""
    hardened = harden(  # first: everything below runs under the never-on-disk audit hook
        mlockall=config.hardening.mlockall,
        memlock_min_bytes=config.hardening.memlock_min_mib * MIB,
    )
    station = build_station(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        station.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    station.start()
    if scans_from is not None:
        feed = getattr(station.scanner, "feed_lines", None)
        if feed is None:
            raise RuntimeError("scripted scans need the simulated scanner")
        feed(scans_from)
    counts = {**station.run(), "write_refused": hardened.guard.total}
    station.notifier.stopped(counts)
    print(
        "station stopped: "
        + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())),
        file=sys.stderr,
    )
    return 0


# Each backend gets the options of the backend actually chosen (see backends.chosen).


def _camera(d: DriverSettings) -> Camera:
    name = backends.chosen("PHOTOSAFE_CAMERA", d.camera)
    options: dict[str, Any] = {
        "width": d.camera_width,
        "height": d.camera_height,
        "quality": d.jpeg_quality,
    }
    if name == "simulated":
        if d.canary_hex:
            options["canary"] = bytes.fromhex(d.canary_hex)
        if d.simulated_blur_every:
            options["blur_every"] = d.simulated_blur_every
    return backends.camera_backend(name, **options)


def _scanner(d: DriverSettings, camera: Camera, events: EventQueue) -> Scanner:
    name = backends.chosen("PHOTOSAFE_SCANNER", d.scanner)
    options: dict[str, Any] = {}
    if name == "evdev":
        options = {
            "name": d.scanner_device_name,
            "vendor": d.scanner_vendor,
            "product": d.scanner_product,
            "keymap": d.keymap,
            # A garbled or overlong burst is shown as REFUSED, so the clinician scans again.
            "on_refused": lambda refused: events.scan_refused(str(refused.reason)),
        }
    return backends.scanner_backend(name, camera=camera, **options)


def _indicator(d: DriverSettings) -> Indicator:
    name = backends.chosen("PHOTOSAFE_INDICATOR", d.indicator)
    options: dict[str, Any] = {}
    if name == "gpiozero":
        options = {
            "green": d.gpio_green,
            "amber": d.gpio_amber,
            "red": d.gpio_red,
            "buzzer": d.gpio_buzzer,
        }
    return backends.indicator_backend(name, **options)


def _button(d: DriverSettings) -> Button:
    name = backends.chosen("PHOTOSAFE_BUTTON", d.button)
    options: dict[str, Any] = {"pin": d.gpio_button} if name == "gpiozero" else {}
    return backends.button_backend(name, **options)


def _display(d: DriverSettings) -> Display | None:
    name = backends.chosen("PHOTOSAFE_DISPLAY", d.display or "")
    if not name:
        return None
    options: dict[str, Any] = {"device": d.display_device} if name == "framebuffer" else {}
    return backends.display_backend(name, **options)
