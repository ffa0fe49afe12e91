"""The gateway through a real mosquitto: stations publish sealed captures, gateways answer."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import Broker
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from keys import manifest_for
from mqtt_clients import ClientPool, capture_properties, publish, subscribe

from photosafe.gateway.config import load_config
from photosafe.gateway.service import Gateway, GatewayError
from photosafe.protocol import ack, envelope, topics
from photosafe.protocol.ack import AckStatus, Receipt
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import gateway_config_toml

pytestmark = pytest.mark.broker

IMAGE = b"\xff\xd8\xff\xe0 wound photo " + bytes(range(256)) * 8 + b"\xff\xd9"
StartGateway = Callable[..., Gateway]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    return folder


@pytest.fixture
def start_gateway(broker: Broker, records: Path, tmp_path: Path) -> Iterator[StartGateway]:
    """Starts Gateway processes' worth of clients on the site; stops them all at teardown."""
    running: list[Gateway] = []

    def start(client_id: str = "photosafe-gateway-1", wait: float | None = 10.0) -> Gateway:
        path = tmp_path / f"{client_id}.toml"
        path.write_text(gateway_config_toml(broker.site, records, client_id=client_id))
        gateway = Gateway(load_config(path))
        running.append(gateway)
        gateway.start(wait)
        return gateway

    try:
        yield start
    finally:
        for gateway in running:
            gateway.stop()


class Station:
    """A device: its own TLS identity, sealing to the site's gateway key, reading its acks."""

    def __init__(self, site: Site, pool: ClientPool, device_id: str) -> None:
        files = site.device(device_id)
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        recipient = serialization.load_pem_public_key(site.recipient_pub.read_bytes())
        signing = serialization.load_pem_public_key(site.signing_pub.read_bytes())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(recipient, x25519.X25519PublicKey)
        assert isinstance(signing, ed25519.Ed25519PublicKey)
        self.device_id, self.key, self.recipient = device_id, key, recipient
        self.cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        self.pinned = ack.pin(signing)
        self.client, self.recorder = pool.connect(device_id)
        assert not subscribe(self.client, self.recorder, topics.ack(device_id))[0].is_failure

    def seal(self, capture: uuid.UUID) -> bytes:
        return envelope.seal(
            manifest_for(IMAGE, self.device_id, capture),
            IMAGE,
            device_key=self.key,
            device_cert=self.cert,
            recipient=self.recipient,
        )

    def send(self, sealed: bytes, capture: uuid.UUID, response_topic: str | None = None) -> None:
        props = capture_properties(
            content_type=envelope.CONTENT_TYPE,
            response_topic=response_topic or topics.ack(self.device_id),
            correlation=capture.bytes,
            expiry=300,
        )
        code = publish(
            self.client, self.recorder, topics.capture(self.device_id), sealed, properties=props
        )
        assert code.value == 0, f"PUBACK {code}"  # 0x10 would mean no gateway session

    def receipt(self, timeout: float = 5.0) -> Receipt:
        """The next ack, verified as the station verifies it."""
        message = self.recorder.get(timeout)
        return self.verify(message)

    def verify(self, message: mqtt.MQTTMessage) -> Receipt:
        assert message.topic == topics.ack(self.device_id)
        receipt = ack.verify(bytes(message.payload), pinned=self.pinned, device=self.device_id)
        assert getattr(message.properties, "CorrelationData", None) == receipt.capture.bytes
        return receipt


def _filed(records: Path) -> list[str]:
    return sorted(p.name for p in (records / "by-capture").iterdir())


def test_a_capture_is_stored_and_the_signed_ack_verifies(
    start_gateway: StartGateway, mqtt_clients: ClientPool, records: Path
) -> None:
    gateway = start_gateway()
    station = Station(mqtt_clients.site, mqtt_clients, "ward-a-01")
    capture = uuid.uuid4()
    sealed = station.seal(capture)
    station.send(sealed, capture)
    receipt = station.receipt()
    assert (receipt.status, receipt.capture) == (AckStatus.STORED, capture)
    assert receipt.sealed_sha256 == ack.sealed_digest(sealed)
    assert _filed(records) == [str(capture)]
    assert gateway.counts["stored"] == 1
    sock = gateway._client.socket()  # REFERENCE 9: Nagle would cost ~40 ms per leg
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_tampered_is_rejected_and_a_replay_is_a_duplicate(
    start_gateway: StartGateway, mqtt_clients: ClientPool, records: Path
) -> None:
    start_gateway()
    station = Station(mqtt_clients.site, mqtt_clients, "ward-a-02")
    capture = uuid.uuid4()
    sealed = station.seal(capture)
    tampered = bytearray(sealed)
    tampered[-3] ^= 0x10
    station.send(bytes(tampered), capture)
    rejected = station.receipt()
    assert rejected.status is AckStatus.REJECTED
    assert rejected.reason is not None
    assert rejected.reason.startswith("DecryptionFailed")
    assert not (records / "by-capture" / str(capture)).exists()

    station.send(sealed, capture)
    assert station.receipt().status is AckStatus.STORED
    station.send(sealed, capture)  # the station never heard the ack, so it sends again
    assert station.receipt().status is AckStatus.DUPLICATE
    assert _filed(records) == [str(capture)]


def test_the_ack_goes_to_the_publisher_never_to_its_response_topic(
    start_gateway: StartGateway, mqtt_clients: ClientPool
) -> None:
    start_gateway()
    sender = Station(mqtt_clients.site, mqtt_clients, "ward-a-01")
    bystander = Station(mqtt_clients.site, mqtt_clients, "ward-a-02")
    capture = uuid.uuid4()
    sender.send(sender.seal(capture), capture, response_topic=topics.ack("ward-a-02"))
    assert sender.receipt().capture == capture
    assert bystander.recorder.drain() == []


def test_captures_wait_in_the_broker_while_the_gateway_is_away(
    start_gateway: StartGateway, mqtt_clients: ClientPool, records: Path
) -> None:
    start_gateway("photosafe-gateway-1").stop()  # leaves a persistent session behind
    station = Station(mqtt_clients.site, mqtt_clients, "theatre-1")
    capture = uuid.uuid4()
    station.send(station.seal(capture), capture)  # PUBACK success: the session holds it
    assert station.recorder.drain() == []
    start_gateway("photosafe-gateway-1")
    assert station.receipt().status is AckStatus.STORED
    assert _filed(records) == [str(capture)]


def test_a_gateway_started_before_the_broker_connects_when_it_comes_up(
    broker: Broker, start_gateway: StartGateway, mqtt_clients: ClientPool
) -> None:
    broker.stop()
    gateway = start_gateway(wait=None)  # paho's thread keeps trying
    with pytest.raises(GatewayError):
        start_gateway("photosafe-gateway-2", wait=0.5)
    broker.start()
    assert gateway.wait_subscribed(10)
    station = Station(mqtt_clients.site, mqtt_clients, "ward-a-01")
    capture = uuid.uuid4()
    station.send(station.seal(capture), capture)
    assert station.receipt().status is AckStatus.STORED


def test_two_gateways_in_one_group_file_every_capture_exactly_once(
    start_gateway: StartGateway, mqtt_clients: ClientPool, records: Path
) -> None:
    gateways = [start_gateway("photosafe-gateway-1"), start_gateway("photosafe-gateway-2")]
    stations = [Station(mqtt_clients.site, mqtt_clients, d) for d in ("ward-a-01", "ward-a-02")]
    sent: dict[str, dict[uuid.UUID, bytes]] = {s.device_id: {} for s in stations}
    for _ in range(50):
        for station in stations:
            capture = uuid.uuid4()
            sealed = station.seal(capture)
            sent[station.device_id][capture] = sealed
            station.send(sealed, capture)

    for station in stations:
        receipts = [station.receipt() for _ in range(50)]
        assert {r.capture for r in receipts} == set(sent[station.device_id])
        assert {r.status for r in receipts} == {AckStatus.STORED}
        assert station.recorder.drain() == []  # exactly one ack per capture
    every = {str(c) for captures in sent.values() for c in captures}
    assert _filed(records) == sorted(every)
    on_disk = [p for p in records.glob("nhs-*/*") if p.is_dir()]
    assert len(on_disk) == 100
    assert all(g.counts["stored"] > 0 for g in gateways)  # the group split the work
    assert sum(g.counts["stored"] for g in gateways) == 100

    # Replays land on either gateway; both know the capture is filed.
    station = stations[0]
    for capture, sealed in list(sent[station.device_id].items())[:10]:
        station.send(sealed, capture)
    assert {station.receipt().status for _ in range(10)} == {AckStatus.DUPLICATE}
    assert len([p for p in records.glob("nhs-*/*") if p.is_dir()]) == 100


def test_the_command_serves_until_sigterm_and_reports_its_counts(
    broker: Broker, mqtt_clients: ClientPool, records: Path, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_config_toml(broker.site, records))
    log = tmp_path / "gateway.log"
    command = Path(sys.executable).parent / "photosafe-gateway"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [command, "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while "gateway.subscribed" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        station = Station(mqtt_clients.site, mqtt_clients, "ward-a-01")
        capture = uuid.uuid4()
        station.send(station.seal(capture), capture)
        assert station.receipt().status is AckStatus.STORED
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "gateway.stopped stored=1" in text
    assert "9434765919" not in text  # the patient's NHS number never reaches a log
