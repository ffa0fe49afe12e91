"""`photosafe check-config` and the station config loader: every problem, with its location."""

from __future__ import annotations

from pathlib import Path

import pytest

from photosafe.daemon.cli import main
from photosafe.daemon.config import ConfigError, load_config
from photosafe.provisioning.sandbox import Site, build_site, free_port
from photosafe.provisioning.site_configs import write_station_config


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("s") / "site", ["ward-a-01"], port=free_port())


def test_sandbox_station_config_is_valid(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_station_config(site, "ward-a-01")
    assert main(["check-config", "--config", str(path)]) == 0
    assert "OK: station ward-a-01" in capsys.readouterr().out


def test_missing_file_is_an_error_not_an_empty_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_every_problem_is_reported_with_its_location(site: Site, tmp_path: Path) -> None:
    text = write_station_config(site, "ward-a-01").read_text()
    text = text.replace('kind = "ward"', 'kind = "kitchen"')
    text = text.replace("expiry_s = 60", "expiry_s = 60\nexpiri_s = 3")
    text = text.replace('nhs_gs1_company_prefix = "9506000"', 'nhs_gs1_company_prefix = "95"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    where = {problem.split(":")[0] for problem in caught.value.problems}
    assert {"station.kind", "outbox.expiri_s", "identity.nhs_gs1_company_prefix"} <= where


def test_check_config_exits_non_zero_and_names_missing_key_files(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = write_station_config(site, "ward-a-01").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(str(site.device("ward-a-01").key), "/nonexistent/device.key"))
    assert main(["check-config", "--config", str(bad)]) == 1
    assert "broker.key_file: /nonexistent/device.key not found" in capsys.readouterr().err


def test_environment_overrides_the_file(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_station_config(site, "ward-a-01")
    monkeypatch.setenv("PHOTOSAFE_BROKER__PORT", "18883")
    assert load_config(path).broker.port == 18883


def test_credentials_directory_supplies_the_key(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = write_station_config(site, "ward-a-01").read_text()
    moved = tmp_path / "station.toml"
    moved.write_text(text.replace(str(site.device("ward-a-01").key), "device.key"))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "device.key").write_bytes(site.device("ward-a-01").key.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_config(moved).broker.key_file == creds / "device.key"


def test_certificate_for_another_device_is_refused(site: Site, tmp_path: Path) -> None:
    text = write_station_config(site, "ward-a-01").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('device_id = "ward-a-01"', 'device_id = "ward-a-09"'))
    assert main(["check-config", "--config", str(bad)]) == 1


def test_implied_consent_on_a_ward_station_is_refused(site: Site, tmp_path: Path) -> None:
    path = write_station_config(site, "ward-a-01", implied=("x-ray",))
    with pytest.raises(ConfigError, match="ward station may not use implied consent"):
        load_config(path)


def test_provision_sandbox_writes_configs_that_check(tmp_path: Path) -> None:
    from photosafe.gateway.cli import main as gateway_main
    from photosafe.provisioning.cli import main as provision_main

    root = tmp_path / "site"
    assert provision_main(["sandbox", str(root), "--device", "ward-b-01", "--port", "18883"]) == 0
    assert main(["check-config", "--config", str(root / "devices/ward-b-01/station.toml")]) == 0
    assert gateway_main(["check-config", "--config", str(root / "gateway/gateway.toml")]) == 0
    # A second run refuses to overwrite the site (and its CA) rather than replacing it.
    assert provision_main(["sandbox", str(root), "--device", "ward-b-01"]) == 1


def test_an_overridden_backend_gets_its_own_options_not_the_configured_ones(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bench override to simulated drivers must not receive the evdev/GPIO settings."""
    from photosafe.daemon.app import build_station
    from photosafe.drivers.button import SimulatedButton
    from photosafe.drivers.scanner_simulated import SimulatedScanner

    text = write_station_config(site, "ward-a-01").read_text()
    text = text.replace('scanner = "simulated"', 'scanner = "evdev"\nkeymap = "uk"')
    text = text.replace('button = "simulated"', 'button = "gpiozero"')
    path = tmp_path / "station.toml"
    path.write_text(text)
    monkeypatch.setenv("PHOTOSAFE_SCANNER", "simulated")
    monkeypatch.setenv("PHOTOSAFE_BUTTON", "simulated")
    station = build_station(load_config(path))
    assert isinstance(station.scanner, SimulatedScanner)
    assert isinstance(station.button, SimulatedButton)
    assert station.display is None  # no display configured: intimate images are refused
