"""Shared fixtures: a sandbox site, a real mosquitto for it, and MQTT test clients.

pytest's default `prepend` import mode puts this folder (it has no `__init__.py`) on `sys.path`,
so tests import the helpers beside it as `from broker import Broker`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Broker
from mqtt_clients import ClientPool

from photosafe.provisioning.sandbox import Site, build_site, free_port

DEVICES = ("ward-a-01", "ward-a-02", "theatre-1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts mosquitto carries the `broker` marker (`-m "not broker"`)."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A fresh sandbox site with three stations, on a free loopback port."""
    return build_site(tmp_path / "site", DEVICES, port=free_port())


@pytest.fixture
def broker(site: Site) -> Iterator[Broker]:
    """mosquitto running for `site`; stopped at teardown. The site is `broker.site`."""
    running = Broker(site)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def mqtt_clients(broker: Broker) -> Iterator[ClientPool]:
    """Connects the site's identities to the running broker; closes them all at teardown."""
    pool = ClientPool(broker.site, [])
    try:
        yield pool
    finally:
        pool.close_all()
