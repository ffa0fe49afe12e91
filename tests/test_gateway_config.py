"""Gateway configuration: TOML plus environment, every file checked, every problem at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from photosafe.gateway import cli
from photosafe.gateway.config import ConfigError, GatewayConfig, load_config
from photosafe.protocol.envelope import key_id
from photosafe.provisioning import pki
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import gateway_config_toml


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def _write(site: Site, tmp_path: Path, text: str | None = None) -> Path:
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    path = tmp_path / "gateway.toml"
    path.write_text(text if text is not None else gateway_config_toml(site, records))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_valid_file_loads_with_defaults(site: Site, tmp_path: Path) -> None:
    text = gateway_config_toml(site, tmp_path / "records").replace("share_group", "# share_group")
    config = load_config(_write(site, tmp_path, text))
    assert config.broker.port == site.port
    assert config.broker.share_group == "photosafe-gateways"
    assert config.keys.recipient_keys == [site.recipient_key]
    material = config.material()
    assert len(material.recipient_keys) == 1
    assert material.trust.crl is not None


def test_relative_paths_resolve_against_the_config_folder(site: Site, tmp_path: Path) -> None:
    folder = site.root / "gateway"
    (folder / "records").mkdir()
    text = gateway_config_toml(site, Path("records")).replace(f'"{folder}/', '"')
    path = folder / "gateway.toml"
    path.write_text(text)
    assert '"client.key"' in text
    config = load_config(path)
    assert config.broker.key_file == site.gateway_key
    assert config.sink.kind == "folder"
    assert config.sink.path == folder / "records"


def test_a_missing_file_is_an_error_not_an_empty_config(tmp_path: Path) -> None:
    problems = _problems(tmp_path / "absent.toml")
    assert problems == [f"{tmp_path / 'absent.toml'}: no such file"]


def test_invalid_toml_is_reported_with_its_line(site: Site, tmp_path: Path) -> None:
    (problem,) = _problems(_write(site, tmp_path, "[broker\nhost = 1\n"))
    assert "not valid TOML" in problem
    assert "line 1" in problem


def test_an_unknown_key_is_named_with_its_location(site: Site, tmp_path: Path) -> None:
    text = gateway_config_toml(site, tmp_path / "records").replace(
        "keepalive = 30", "keeplive = 30"
    )
    assert _problems(_write(site, tmp_path, text)) == [
        "broker.keeplive: Extra inputs are not permitted"
    ]


def test_environment_overrides_the_file(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(site, tmp_path)
    monkeypatch.setenv("PHOTOSAFE_GATEWAY_BROKER__PORT", "18883")  # a string: lax mode takes it
    monkeypatch.setenv("PHOTOSAFE_GATEWAY_BROKER__CLIENT_ID", "gw-east")
    config = load_config(path)
    assert config.broker.port == 18883
    assert config.broker.client_id == "gw-east"
    assert config.broker.host == site.host  # the rest of the section still comes from the file


def test_a_bad_environment_value_names_the_variable(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTOSAFE_GATEWAY_BROKER__PORT", "not-a-port")
    (problem,) = _problems(_write(site, tmp_path))
    assert problem.startswith("broker.port (from $PHOTOSAFE_GATEWAY_BROKER__PORT): ")
    assert "not-a-port" not in problem  # hide_input_in_errors


def test_every_problem_is_reported_at_once(site: Site, tmp_path: Path) -> None:
    text = (
        gateway_config_toml(site, tmp_path / "nowhere")
        .replace(f"port = {site.port}", "port = 70000")
        .replace("keepalive = 30", "keepalive = 30\nspeed = 1")
        .replace(str(site.signing_key), str(site.recipient_key))  # the wrong kind of key
        .replace(str(site.crl), str(tmp_path / "missing-crl.pem"))
        .replace('client_id = "photosafe-gateway-1"', 'client_id = "has space"')
    )
    problems = _problems(_write(site, tmp_path, text))
    where = [p.split(":", 1)[0] for p in problems]
    assert sorted(where) == sorted(
        [
            "broker.port",
            "broker.client_id",
            "broker.speed",
            "keys.signing_key",
            "trust.crl",
            "sink.path",
        ]
    ), problems
    assert any("not an Ed25519 private key" in p for p in problems)
    assert any("missing-crl.pem: no such file" in p for p in problems)


def test_missing_sections_and_unreadable_keys_are_problems(site: Site, tmp_path: Path) -> None:
    text = gateway_config_toml(site, tmp_path / "records")
    text = text.replace(str(site.recipient_key), str(tmp_path / "gone.key"))
    text = text[: text.index("[sink]")]
    problems = _problems(_write(site, tmp_path, text))
    assert f"keys.recipient_keys[0]: {tmp_path / 'gone.key'}: no such file" in problems
    assert "sink: Field required" in problems


def test_a_private_key_readable_by_everyone_is_refused(site: Site, tmp_path: Path) -> None:
    site.signing_key.chmod(0o644)
    (problem,) = _problems(_write(site, tmp_path))
    assert problem.startswith("keys.signing_key: ")
    assert "readable by every user" in problem


def test_broker_certificate_and_key_must_belong_together(site: Site, tmp_path: Path) -> None:
    text = gateway_config_toml(site, tmp_path / "records").replace(
        str(site.gateway_key), str(site.fleet_key)
    )
    (problem,) = _problems(_write(site, tmp_path, text))
    assert problem.startswith("broker: TLS files do not load together")


def test_a_crl_from_another_ca_is_refused(site: Site, tmp_path: Path) -> None:
    other = pki.new_authority("Some Other CA")
    foreign = tmp_path / "foreign-crl.pem"
    foreign.write_bytes(pki.crl_pem(pki.revocation_list(other)))
    text = gateway_config_toml(site, tmp_path / "records").replace(str(site.crl), str(foreign))
    (problem,) = _problems(_write(site, tmp_path, text))
    assert problem.startswith("trust: crl: ")


def test_credentials_directory_takes_precedence(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd LoadCredential=: the key named in the config is taken from the credentials dir.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(site.recipient_key, credentials / "recipient.key")
    text = gateway_config_toml(site, tmp_path / "records").replace(
        str(site.recipient_key), "/etc/photosafe/recipient.key"
    )
    path = _write(site, tmp_path, text)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load_config(path)
    assert config.keys.recipient_keys == [credentials / "recipient.key"]
    assert config.keys.signing_key == site.signing_key  # not in the credentials dir

    # Both present: the credential wins over the configured file.
    shutil.copy(site.signing_key, credentials / "recipient.key")  # a wrong key, to tell them apart
    text = text.replace("/etc/photosafe/recipient.key", str(site.recipient_key))
    path.write_text(text)
    (problem,) = _problems(path)
    assert problem.startswith(f"keys.recipient_keys[0]: {credentials / 'recipient.key'}: ")


def test_several_recipient_keys_during_a_rotation(site: Site, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    new = X25519PrivateKey.generate()
    new_path = tmp_path / "recipient-2026.key"
    new_path.write_bytes(
        new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    new_path.chmod(0o600)
    text = gateway_config_toml(site, tmp_path / "records").replace(
        f'recipient_keys = ["{site.recipient_key}"]',
        f'recipient_keys = ["{new_path}", "{site.recipient_key}"]',
    )
    material = load_config(_write(site, tmp_path, text)).material()
    assert key_id(new.public_key()) in material.recipient_keys
    assert len(material.recipient_keys) == 2


def test_every_field_has_a_description() -> None:
    def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
        found = []
        for name, info in model.model_fields.items():
            found.append((prefix + name, info.description))
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found += fields(annotation, f"{prefix}{name}.")
        return found

    listed = fields(GatewayConfig)
    assert len(listed) > 15
    assert [name for name, description in listed if not description] == []


def test_check_config_prints_a_summary_or_every_problem(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(site, tmp_path)
    assert cli.main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK")
    assert "photosafe-gateway-1" in out

    bad = tmp_path / "bad.toml"
    bad.write_text(gateway_config_toml(site, tmp_path / "nowhere").replace("port =", "prot ="))
    assert cli.main(["check-config", "--config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out  # port has a default: only the stray key
    assert "broker.prot: Extra inputs are not permitted" in out
    assert "sink.path: " in out
