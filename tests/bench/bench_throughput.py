"""Gateway throughput: 4 MiB captures from several sandbox devices, filed by one gateway process
or by two sharing the MQTT 5 shared subscription.

Each device is a paho client with its own certificate that publishes sealed captures (sealed with
`photosafe.protocol.envelope.seal` before the clock starts, each with a fresh capture id) at QoS
1 and keeps `window` of them waiting for their receipt, so the gateways always have work queued.
Every receipt is verified (`photosafe.protocol.ack.verify`) and must say "stored". Throughput is
measured from the first publish to the last receipt; the CPU time each process used in that
window shows where the machine's cores went.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_processes import start_gateways
from bench_util import MIB, BrokerLike, cpu_seconds, machine_cpu, manifest_for, median
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.daemon.link import no_delay, tls_context
from photosafe.protocol import ack, envelope, topics
from photosafe.protocol.errors import AckError
from photosafe.provisioning.sandbox import Site


class ThroughputError(RuntimeError):
    pass


class Publisher:
    """One sandbox device publishing sealed captures, `window` at a time."""

    def __init__(
        self,
        site: Site,
        device_id: str,
        captures: list[tuple[uuid.UUID, bytes]],
        window: int,
        pinned: dict[str, Ed25519PublicKey],
    ) -> None:
        files = site.device(device_id)
        self.device = device_id
        self.captures = captures
        self.pinned = pinned
        self.stored = 0
        self.failed = 0
        self.ack_times: list[float] = []
        self.first_publish: float | None = None
        self.done = threading.Event()
        self._window = threading.Semaphore(window)
        self._lock = threading.Lock()
        self._pending = {capture_id for capture_id, _ in captures}
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{device_id}-bench",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.tls_set_context(tls_context(site.ca_cert, files.cert, files.key))
        self._client.on_socket_open = no_delay
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(site.host, site.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise ThroughputError(f"publisher {device_id} did not connect")
        self._thread = threading.Thread(target=self._publish_all, name=f"pub-{device_id}")

    def start(self) -> None:
        self._thread.start()

    def _publish_all(self) -> None:
        for capture_id, sealed in self.captures:
            self._window.acquire()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = envelope.CONTENT_TYPE
            props.ResponseTopic = topics.ack(self.device)
            props.CorrelationData = capture_id.bytes
            props.MessageExpiryInterval = 300
            if self.first_publish is None:
                self.first_publish = time.perf_counter()
            info = self._client.publish(
                topics.capture(self.device), sealed, qos=1, properties=props
            )
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.failed += 1
                self._window.release()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        client.subscribe(topics.ack(self.device), qos=1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if not any(code.is_failure for code in reason_codes):
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            receipt = ack.verify(bytes(message.payload), pinned=self.pinned, device=self.device)
        except AckError:
            return
        with self._lock:
            if receipt.capture not in self._pending:
                return  # a duplicate answer to a resent message
            self._pending.discard(receipt.capture)
            if receipt.is_stored and receipt.status.value == "stored":
                self.stored += 1
            else:
                self.failed += 1
            self.ack_times.append(now)
            if not self._pending:
                self.done.set()
        self._window.release()


@dataclass(frozen=True)
class Sealer:
    """Seals 4 MiB captures for the publishing devices, as their stations would."""

    site: Site
    recipient: X25519PublicKey
    suite: envelope.SuiteName

    def seal(self, device_id: str, count: int, size: int) -> list[tuple[uuid.UUID, bytes]]:
        files = self.site.device(device_id)
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        out: list[tuple[uuid.UUID, bytes]] = []
        for _ in range(count):
            image = os.urandom(size)
            manifest = manifest_for(image, device_id)
            sealed = envelope.seal(
                manifest,
                image,
                device_key=key,
                device_cert=cert,
                recipient=self.recipient,
                suite=self.suite,
            )
            out.append((manifest.capture_id, sealed))
        return out


def one_run(
    broker: BrokerLike,
    workdir: Path,
    devices: list[str],
    gateways: int,
    *,
    sealer: Sealer,
    pinned: dict[str, Ed25519PublicKey],
    per_device: int,
    size: int,
    window: int,
    label: str,
) -> dict[str, Any]:
    """A fresh broker (no sessions left from earlier runs), `gateways` gateway processes on one
    shared subscription, every device publishing `per_device` captures."""
    site = broker.site
    broker.restart()
    records = workdir / f"records-{label}"
    names = [f"bench-gw-{label}-{i + 1}" for i in range(gateways)]
    procs = start_gateways(site, workdir, names, records)
    publishers: list[Publisher] = []
    try:
        for device in devices:
            publishers.append(
                Publisher(site, device, sealer.seal(device, per_device, size), window, pinned)
            )
        broker_pid = broker.pid
        assert broker_pid is not None
        pids = {"broker": broker_pid, **{f"gateway{i + 1}": p.pid for i, p in enumerate(procs)}}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        own_before = sum(os.times()[:2])
        machine_before = machine_cpu()
        start = time.perf_counter()
        for publisher in publishers:
            publisher.start()
        for publisher in publishers:
            if not publisher.done.wait(180):
                raise ThroughputError(
                    f"{publisher.device}: {publisher.stored} of {per_device} stored in 180 s"
                )
        end = max(max(p.ack_times) for p in publishers)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["publishers (this process)"] = sum(os.times()[:2]) - own_before
        machine_after = machine_cpu()
    finally:
        for publisher in publishers:
            publisher.close()
        for proc in procs:
            proc.stop()
    total = per_device * len(devices)
    stored = sum(p.stored for p in publishers)
    failed = sum(p.failed for p in publishers)
    if stored != total or failed:
        raise ThroughputError(f"{stored} of {total} stored, {failed} failed")
    filed = len(os.listdir(records / "by-capture"))
    shutil.rmtree(records, ignore_errors=True)
    times = sorted(t for p in publishers for t in p.ack_times)
    elapsed = end - start
    skip = total // 10  # the first receipts include connection warm-up
    steady = (total - skip) / (times[-1] - times[skip - 1]) if skip else total / elapsed
    wall = elapsed
    return {
        "gateways": gateways,
        "captures": total,
        "filed": filed,
        "elapsed_s": round(elapsed, 3),
        "captures_per_s": round(total / elapsed, 2),
        "steady_captures_per_s": round(steady, 2),
        "mib_per_s": round(total * size / MIB / elapsed, 1),
        "cpu_s": {name: round(value, 2) for name, value in cpu.items()},
        "cores_busy": round(sum(cpu.values()) / wall, 2),
        "machine_cores_busy": round(
            (machine_after[0] - machine_before[0])
            / (machine_after[1] - machine_before[1])
            * (os.cpu_count() or 1),
            2,
        ),
        "gateway_cpu_ms_per_capture": round(
            sum(v for k, v in cpu.items() if k.startswith("gateway")) / total * 1000, 1
        ),
    }


def throughput(
    broker: BrokerLike,
    workdir: Path,
    devices: list[str],
    *,
    sealer: Sealer,
    pinned: dict[str, Ed25519PublicKey],
    per_device: int,
    size: int,
    window: int,
    rounds: int,
) -> dict[str, Any]:
    """Alternating one-gateway and two-gateway runs; the median of each."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for round_ in range(rounds):
        for gateways in (1, 2):
            runs[gateways].append(
                one_run(
                    broker,
                    workdir,
                    devices,
                    gateways,
                    sealer=sealer,
                    pinned=pinned,
                    per_device=per_device,
                    size=size,
                    window=window,
                    label=f"{round_ + 1}x{gateways}",
                )
            )
    one = median([r["captures_per_s"] for r in runs[1]])
    two = median([r["captures_per_s"] for r in runs[2]])
    # What two gateways could reach if this run's processes had every CPU to themselves: all
    # CPUs divided by the CPU one capture costs (gateway + broker + publishers, one-gateway runs).
    cpus = os.cpu_count() or 1
    cpu_per_capture = median([sum(r["cpu_s"].values()) / r["captures"] for r in runs[1]])
    ceiling = min(2.0, cpus / cpu_per_capture / one) if one and cpu_per_capture else float("nan")
    return {
        "devices": len(devices),
        "capture_mib": size / MIB,
        "window_per_device": window,
        "one": {
            "captures_per_s": round(one, 2),
            "mib_per_s": round(one * size / MIB, 1),
            "runs": runs[1],
        },
        "two": {
            "captures_per_s": round(two, 2),
            "mib_per_s": round(two * size / MIB, 1),
            "runs": runs[2],
        },
        "ratio_two_over_one": round(two / one, 3) if one else float("nan"),
        "cpu_ms_per_capture_all_processes": round(cpu_per_capture * 1000, 1),
        "cpu_ceiling_two_over_one": round(ceiling, 3),
        "cpus": cpus,
    }
