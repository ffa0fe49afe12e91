"""The station's configuration: one TOML file, environment overrides, secrets from systemd.

`load_config(path)` returns a checked `StationConfig` or raises `ConfigError` listing every problem
with its location. A missing file is an error, never an empty configuration (pydantic-settings
would silently ignore it). Environment variables `PHOTOSAFE_<SECTION>__<FIELD>` override the file.
A key file name found in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) is read from there.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from photosafe.protocol.consent import ImpliedCategory, StationKind

_SECTION = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` says where and why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class StationSettings(BaseModel):
    model_config = _SECTION
    # 64 characters: what DICOM's InstitutionName / InstitutionalDepartmentName (LO) can hold,
    # so a PACS never refuses this station's captures for a long name.
    site: str = Field(
        min_length=1, max_length=64, description="Hospital site name, recorded with each image."
    )
    location: str = Field(
        min_length=1, max_length=64, description="Ward or theatre where the station is fixed."
    )
    kind: StationKind = Field(description="ward: explicit consent only; theatre: may use implied.")
    implied_categories: list[ImpliedCategory] = Field(
        default_factory=list,
        description="Implied-consent image categories this theatre station may record.",
    )


class IdentitySettings(BaseModel):
    model_config = _SECTION
    nhs_gs1_company_prefix: str = Field(
        pattern=r"^[0-9]{7}$", description="GS1 company prefix of NHS wristband GSRNs (DCB1077)."
    )
    staff_pattern: str = Field(
        default=r"STAFF-(?P<id>[0-9]{6,8})",
        description="Regular expression a staff badge matches in full; group 'id' is the id.",
    )
    mrn_pattern: str | None = Field(
        default=None, description="Regular expression of the trust's local MRN wristbands."
    )
    mrn_authority: str | None = Field(
        default=None, description="Issuer recorded with local MRNs (e.g. the trust's code)."
    )
    gs_substitute: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="Character the scanner sends in place of GS (0x1D), if configured so.",
    )


class BrokerSettings(BaseModel):
    model_config = _SECTION
    host: str = Field(description="MQTT broker host name or address.")
    port: int = Field(default=8883, ge=1, le=65535, description="MQTT over TLS port.")
    ca_file: Path = Field(description="CA certificate that signed the broker's certificate.")
    cert_file: Path = Field(description="This station's certificate (CN = device id).")
    key_file: Path = Field(description="This station's private key (P-256).")
    keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keepalive.")
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest capture message to send; the broker's own limit also applies.",
    )
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(default=30, gt=0, description="Longest reconnect delay.")


class GatewaySettings(BaseModel):
    model_config = _SECTION
    recipient_public_key: Path = Field(description="Gateway X25519 key captures are sealed to.")
    signing_public_keys: list[Path] = Field(
        min_length=1, description="Pinned gateway ack-signing keys (Ed25519); several in rotation."
    )
    suite: Literal["chacha20", "aes256gcm"] = Field(
        default="chacha20",
        description="AEAD: chacha20 on CPUs without AES instructions (Pi 4), aes256gcm on Pi 5.",
    )


class OutboxSettings(BaseModel):
    model_config = _SECTION
    max_items: int = Field(default=20, ge=1, le=1000, description="Captures held at most.")
    max_bytes: int = Field(default=96 * 1024 * 1024, ge=1024, description="Bytes held at most.")
    ack_timeout_s: float = Field(
        default=10, gt=0, description="Republish a capture when no ack arrives within this time."
    )
    expiry_s: float = Field(
        default=300, gt=0, description="Give up, and tell the clinician to retake, after this."
    )

    @model_validator(mode="after")
    def _expiry_after_timeout(self) -> OutboxSettings:
        if self.expiry_s <= self.ack_timeout_s:
            raise ValueError("expiry_s must be longer than ack_timeout_s")
        return self


class SessionSettings(BaseModel):
    model_config = _SECTION
    patient_timeout_s: float = Field(
        default=120, gt=0, le=1800, description="A patient context expires after this idle time."
    )
    operator_timeout_s: float = Field(
        default=900, gt=0, le=7200, description="The operator is signed out after this idle time."
    )


class DriverSettings(BaseModel):
    model_config = _SECTION
    camera: str = Field(default="simulated", description="Camera backend.")
    scanner: str = Field(default="simulated", description="Scanner backend.")
    indicator: str = Field(default="console", description="Lights/buzzer/display backend.")
    button: str = Field(default="simulated", description="Capture button backend.")
    camera_width: int = Field(default=1600, ge=64, description="Still width in pixels.")
    camera_height: int = Field(default=1200, ge=64, description="Still height in pixels.")
    jpeg_quality: int = Field(default=90, ge=50, le=100, description="JPEG quality.")
    canary_hex: str | None = Field(
        default=None,
        pattern=r"^([0-9a-f]{2}){8,64}$",
        description="Simulated camera only: bytes put in every image, for never-on-disk tests.",
    )
    display: str | None = Field(
        default=None,
        description="Display backend (framebuffer, simulated); none means the station refuses "
        "intimate images, which need the patient's approval on a screen.",
    )
    display_device: str = Field(default="/dev/fb0", description="Framebuffer device node.")
    scanner_device_name: str | None = Field(
        default=None, description="evdev scanner: the input device's name, as `evtest` lists it."
    )
    scanner_vendor: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{4}$", description="evdev scanner: USB vendor id."
    )
    scanner_product: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{4}$",
        description="evdev scanner: USB product id.",
    )
    keymap: Literal["us", "uk"] = Field(
        default="us", description="evdev scanner: the keyboard layout the scanner emulates."
    )
    gpio_green: int = Field(default=17, ge=0, le=53, description="GPIO (BCM) of the green light.")
    gpio_amber: int = Field(default=27, ge=0, le=53, description="GPIO (BCM) of the amber light.")
    gpio_red: int = Field(default=22, ge=0, le=53, description="GPIO (BCM) of the red light.")
    gpio_buzzer: int | None = Field(
        default=18, ge=0, le=53, description="GPIO (BCM) of the buzzer; none if not fitted."
    )
    gpio_button: int = Field(default=5, ge=0, le=53, description="GPIO (BCM) of the button.")
    simulated_blur_every: int | None = Field(
        default=None,
        ge=2,
        description="Simulated camera only: every Nth still is out of focus (quality-gate tests).",
    )


class ShutdownSettings(BaseModel):
    model_config = _SECTION
    grace_s: float = Field(
        default=10, ge=0, le=120, description="On SIGTERM, wait this long for outstanding acks."
    )


class HardeningSettings(BaseModel):
    model_config = _SECTION
    mlockall: bool = Field(
        default=True,
        description="Lock the station's memory (mlockall) so no image page can reach swap; "
        "skipped, with a warning, where the memory-lock limit is below memlock_min_mib.",
    )
    memlock_min_mib: int = Field(
        default=1024,
        ge=1,
        description="Memory-lock limit (RLIMIT_MEMLOCK, MiB) below which mlockall is not tried; "
        "the systemd unit sets LimitMEMLOCK=infinity.",
    )


class FleetKeys(BaseModel):
    model_config = _SECTION
    public_keys: list[Path] = Field(
        default_factory=list,
        description="Pinned fleet signing keys (Ed25519): only config messages they sign are "
        "applied. Empty: remote config is ignored and the status says so.",
    )


class StationConfig(BaseSettings):
    """Everything a station needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="PHOTOSAFE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
    )
    device_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Equals the certificate CN."
    )
    station: StationSettings
    identity: IdentitySettings
    broker: BrokerSettings
    gateway: GatewaySettings
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    drivers: DriverSettings = Field(default_factory=DriverSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    hardening: HardeningSettings = Field(default_factory=HardeningSettings)
    fleet: FleetKeys = Field(default_factory=FleetKeys)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # first wins: the environment overrides the file

    @model_validator(mode="after")
    def _implied_only_in_theatre(self) -> StationConfig:
        if self.station.kind is StationKind.WARD and self.station.implied_categories:
            raise ValueError(
                "station.implied_categories: a ward station may not use implied consent"
            )
        return self


def load_config(path: Path) -> StationConfig:
    """Read, resolve and check the station configuration; every problem in one ConfigError."""
    data = _read_toml(path)
    try:
        config = StationConfig(**data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
    return _resolve_files(config, path.parent)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: {error['msg']}"


def _resolve_files(config: StationConfig, base: Path) -> StationConfig:
    problems: list[str] = []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")

    def resolve(where: str, path: Path) -> Path:
        if credentials and (Path(credentials) / path.name).is_file():
            return Path(credentials) / path.name
        full = path if path.is_absolute() else base / path
        if not full.is_file():
            problems.append(f"{where}: {full} not found")
        return full

    broker = config.broker.model_copy(
        update={
            "ca_file": resolve("broker.ca_file", config.broker.ca_file),
            "cert_file": resolve("broker.cert_file", config.broker.cert_file),
            "key_file": resolve("broker.key_file", config.broker.key_file),
        }
    )
    gateway = config.gateway.model_copy(
        update={
            "recipient_public_key": resolve(
                "gateway.recipient_public_key", config.gateway.recipient_public_key
            ),
            "signing_public_keys": [
                resolve(f"gateway.signing_public_keys.{i}", p)
                for i, p in enumerate(config.gateway.signing_public_keys)
            ],
        }
    )
    fleet = config.fleet.model_copy(
        update={
            "public_keys": [
                resolve(f"fleet.public_keys.{i}", p) for i, p in enumerate(config.fleet.public_keys)
            ]
        }
    )
    if problems:
        raise ConfigError(problems)
    return config.model_copy(update={"broker": broker, "gateway": gateway, "fleet": fleet})
