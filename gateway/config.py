"""The gateway's configuration: one TOML file, environment overrides, keys from systemd.

    load_config(path) -> GatewayConfig, or ConfigError listing every problem at once

Sources, first wins: environment variables `PHOTOSAFE_GATEWAY_<SECTION>__<FIELD>`, then the TOML
file. Relative paths resolve against the config file's folder. A key file whose name exists in
`$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) is read from there instead, so the unit can
hand keys to the service without them being readable by anyone else.

Every file the gateway will need is opened and parsed while the config is validated (the paths
are checked by field validators that run only inside `load_config`), so `check-config` finds a
missing, unreadable or wrong key before the service starts rather than when the first capture
arrives. `GatewayConfig.material()` loads the keys again for the running service.
"""

from __future__ import annotations

import os
import ssl
import stat
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from photosafe.protocol.envelope import DeviceTrust, key_id
from photosafe.protocol.errors import ConfigRejected

ENV_PREFIX = "PHOTOSAFE_GATEWAY_"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds every "location: message"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# -- where files are: set only while load_config validates ----------------------------------


@dataclass(frozen=True)
class _Where:
    file: Path
    credentials: Path | None


_WHERE: ContextVar[_Where | None] = ContextVar("photosafe_gateway_config", default=None)


def _locate(path: Path, *, secret: bool = False) -> Path:
    where = _WHERE.get()
    if where is None:
        return path
    if secret and where.credentials is not None:
        credential = where.credentials / path.name
        if credential.is_file():
            return credential
    return where.file.parent / path.expanduser()  # an absolute path stays as it is


def _read(path: Path, *, secret: bool = False) -> bytes:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    if secret and mode & stat.S_IROTH:
        raise ValueError(f"{path}: a private key readable by every user; chmod o-r it")
    return data


def _checked(secret: bool, load: Callable[[bytes], object] | None = None) -> AfterValidator:
    """Resolve a path and, inside load_config only, read it and try `load` on its bytes."""

    def check(path: Path) -> Path:
        path = _locate(path, secret=secret)
        if _WHERE.get() is not None:
            data = _read(path, secret=secret)
            if load is not None:
                try:
                    load(data)
                except (ValueError, TypeError, ConfigRejected) as exc:
                    raise ValueError(f"{path}: {exc}") from None
        return path

    return AfterValidator(check)


def _recipient_key(pem: bytes) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, X25519PrivateKey):
        raise TypeError("not an X25519 private key (PEM PKCS#8)")
    return key


def _signing_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("not an Ed25519 private key (PEM PKCS#8)")
    return key


def _folder(path: Path) -> Path:
    path = _locate(path)
    if _WHERE.get() is not None:
        if not path.is_dir():
            raise ValueError(f"{path}: no such folder (create it; the gateway will not guess)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{path}: the gateway cannot write in this folder")
    return path


PublicFile = Annotated[Path, _checked(secret=False)]
SecretFile = Annotated[Path, _checked(secret=True)]
RecipientKeyFile = Annotated[Path, _checked(secret=True, load=_recipient_key)]
SigningKeyFile = Annotated[Path, _checked(secret=True, load=_signing_key)]
CaFile = Annotated[Path, _checked(secret=False, load=x509.load_pem_x509_certificate)]
CrlFile = Annotated[Path, _checked(secret=False, load=x509.load_pem_x509_crl)]
Folder = Annotated[Path, AfterValidator(_folder)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]

_SECTION = ConfigDict(extra="forbid", hide_input_in_errors=True)


# -- the model ------------------------------------------------------------------------------


class BrokerSection(BaseModel):
    model_config = _SECTION
    host: str = Field(min_length=1, description="Broker host name; the TLS name checked.")
    port: int = Field(default=8883, ge=1, le=65535, description="Broker TLS port.")
    ca_file: PublicFile = Field(description="CA certificate(s) the broker's certificate is from.")
    cert_file: PublicFile = Field(description="This gateway's TLS client certificate (PEM).")
    key_file: SecretFile = Field(description="Its private key (PEM); credentials dir first.")
    client_id: Name = Field(
        description="MQTT client id, unique per gateway process: it names the persistent session."
    )
    share_group: Name = Field(
        default="photosafe-gateways",
        description="Shared-subscription group; gateways in one group split the captures.",
    )
    keepalive: int = Field(default=30, ge=5, le=65535, description="MQTT keepalive, seconds.")
    session_expiry_s: int = Field(
        default=86400,
        ge=60,
        le=0xFFFFFFFF,
        description="How long the broker keeps this gateway's session and queued captures "
        "while it is away; at least the stations' message expiry.",
    )

    @model_validator(mode="after")
    def _tls_loads(self) -> BrokerSection:
        if _WHERE.get() is not None:
            try:
                tls_context(self)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"TLS files do not load together: {exc}") from None
        return self


class KeysSection(BaseModel):
    model_config = _SECTION
    recipient_keys: list[RecipientKeyFile] = Field(
        min_length=1,
        description="X25519 private keys captures are sealed to (PEM PKCS#8); during a key "
        "rotation list the new key and the old one.",
    )
    signing_key: SigningKeyFile = Field(description="Ed25519 key that signs acks (PEM PKCS#8).")


class TrustSection(BaseModel):
    model_config = _SECTION
    device_ca: CaFile = Field(description="The device CA certificate (PEM).")
    crl: CrlFile | None = Field(
        default=None, description="The device CA's revocation list (PEM); none if not used."
    )

    @model_validator(mode="after")
    def _crl_from_ca(self) -> TrustSection:
        if _WHERE.get() is not None:
            load_trust(self)  # the CRL must be signed by this CA
        return self


class FolderSinkSection(BaseModel):
    model_config = _SECTION
    kind: Literal["folder"] = Field(default="folder", description="Record store kind.")
    path: Folder = Field(description="Root folder of the record store; must exist.")

    def summary(self) -> str:
        return f"folder {self.path}"


class DicomWebSinkSection(BaseModel):
    """A PACS over DICOMweb: each capture a VL Photographic Image sent with STOW-RS."""

    model_config = _SECTION
    kind: Literal["dicomweb"] = Field(description="File into a PACS with DICOMweb STOW-RS.")
    url: str = Field(
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="The PACS's DICOMweb root, e.g. https://pacs.example.nhs.uk/dicom-web "
        "(no user:password@ in it: credentials go in files).",
    )
    username: str | None = Field(
        default=None, min_length=1, description="HTTP basic auth user; needs password_file."
    )
    password_file: SecretFile | None = Field(
        default=None, description="File holding the basic auth password; credentials dir first."
    )
    token_file: SecretFile | None = Field(
        default=None,
        description="File holding a bearer token (instead of basic auth); credentials dir first.",
    )
    ca_file: CaFile | None = Field(
        default=None, description="CA certificate for an https PACS; the system's CAs if unset."
    )
    timeout_s: float = Field(default=20, gt=0, le=300, description="HTTP timeout, seconds.")
    verify: bool = Field(
        default=True,
        description="Query the PACS (WADO-RS metadata) before each store, to tell a duplicate "
        "from a capture id reused for another capture, and after it, so that only an instance "
        "the PACS shows is acked stored.",
    )

    @model_validator(mode="after")
    def _one_auth(self) -> DicomWebSinkSection:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if self.token_file is not None and self.username is not None:
            raise ValueError("choose basic auth (username) or a bearer token, not both")
        return self

    def secrets(self) -> tuple[str | None, str | None]:
        """(password, token) read from their files; ConfigError if they cannot be read."""

        def read(path: Path | None) -> str | None:
            if path is None:
                return None
            try:
                return path.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError([f"sink: cannot read {path}: {exc}"]) from exc

        return read(self.password_file), read(self.token_file)

    def summary(self) -> str:
        auth = "no auth"
        if self.username:
            auth = f"basic auth as {self.username}"
        elif self.token_file:
            auth = "bearer token"
        check = "verified by WADO-RS" if self.verify else "store answer trusted"
        return f"dicomweb STOW-RS {self.url} ({auth}; {check}; timeout {self.timeout_s}s)"


AeTitle = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9._-](?:[A-Za-z0-9 ._-]{0,14}[A-Za-z0-9._-])?$"),
]


class DimseSinkSection(BaseModel):
    """A PACS over DIMSE: each capture a VL Photographic Image sent with C-STORE."""

    model_config = _SECTION
    kind: Literal["dimse"] = Field(description="File into a PACS with DICOM C-STORE.")
    host: str = Field(min_length=1, description="The PACS's host name or address.")
    port: int = Field(default=104, ge=1, le=65535, description="The PACS's DICOM port.")
    called_aet: AeTitle = Field(description="The PACS's AE title (1-16 characters).")
    calling_aet: AeTitle = Field(
        default="PHOTOSAFE", description="This gateway's AE title, as the PACS knows it."
    )
    timeout_s: float = Field(default=20, gt=0, le=300, description="Network timeout, seconds.")
    verify: bool = Field(
        default=True,
        description="Query the PACS (C-FIND) before and after each store, as for dicomweb; "
        "turn off for a PACS that takes no queries from the gateway.",
    )

    def summary(self) -> str:
        check = "verified by C-FIND" if self.verify else "store answer trusted"
        return (
            f"dimse C-STORE {self.called_aet}@{self.host}:{self.port} as {self.calling_aet} "
            f"({check}; timeout {self.timeout_s}s)"
        )


def _sink_kind(value: object) -> str:
    """The sink's kind; a section without one is a folder (as before there were others)."""
    kind = value.get("kind", "folder") if isinstance(value, dict) else getattr(value, "kind", "")
    return str(kind)


SinkSection = Annotated[
    Annotated[FolderSinkSection, Tag("folder")]
    | Annotated[DicomWebSinkSection, Tag("dicomweb")]
    | Annotated[DimseSinkSection, Tag("dimse")],
    Discriminator(
        _sink_kind,
        custom_error_type="sink_kind",
        custom_error_message="kind must be folder, dicomweb or dimse",
    ),
]
SINK_KINDS = frozenset({"folder", "dicomweb", "dimse"})


class GatewayConfig(BaseSettings):
    """One gateway process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
    )
    broker: BrokerSection = Field(description="How to reach the MQTT broker.")
    keys: KeysSection = Field(description="HPKE recipient keys and the ack signing key.")
    trust: TrustSection = Field(description="What device certificates must chain to.")
    sink: SinkSection = Field(description="Where records are filed.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        where = _WHERE.get()
        if where is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, where.file))

    def material(self) -> Material:
        """Load the keys and trust anchors (again) for the running service."""
        try:
            recipients = [_recipient_key(p.read_bytes()) for p in self.keys.recipient_keys]
            signing = _signing_key(self.keys.signing_key.read_bytes())
            trust = load_trust(self.trust)
        except (OSError, ValueError, TypeError, ConfigRejected) as exc:
            raise ConfigError([f"keys: cannot load: {exc}"]) from exc
        by_id = {key_id(k.public_key()): k for k in recipients}
        return Material(recipient_keys=by_id, signing_key=signing, trust=trust)


@dataclass(frozen=True)
class Material:
    """What the running gateway decrypts, signs and verifies with."""

    recipient_keys: dict[str, X25519PrivateKey]
    signing_key: Ed25519PrivateKey
    trust: DeviceTrust


def load_trust(section: TrustSection) -> DeviceTrust:
    ca = x509.load_pem_x509_certificate(section.device_ca.read_bytes())
    crl = None if section.crl is None else x509.load_pem_x509_crl(section.crl.read_bytes())
    try:
        return DeviceTrust(ca, crl)
    except ConfigRejected as exc:
        raise ValueError(f"crl: {exc}") from None


def tls_context(broker: BrokerSection) -> ssl.SSLContext:
    """Verify the broker (host name included) against ca_file; present our certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=broker.ca_file)
    context.load_cert_chain(certfile=broker.cert_file, keyfile=broker.key_file)
    return context


# -- loading --------------------------------------------------------------------------------


def load_config(path: Path | str) -> GatewayConfig:
    """Read, resolve and check everything; raise ConfigError listing every problem."""
    env = dict(os.environ)
    file = Path(path).expanduser().absolute()
    try:
        with file.open("rb") as handle:
            tomllib.load(handle)  # syntax first: pydantic-settings would raise it bare
    except FileNotFoundError:
        raise ConfigError([f"{file}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{file}: is a folder, not a config file"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read it ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None

    credentials = env.get(CREDENTIALS_ENV)
    with _bound(_Where(file, Path(credentials) if credentials else None)):
        try:
            return GatewayConfig()  # type: ignore[call-arg]  # the sources supply the fields
        except ValidationError as exc:
            raise ConfigError(_problems(exc, env)) from None


def _problems(exc: ValidationError, env: dict[str, str]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        if loc[:1] == ("sink",) and len(loc) > 1 and loc[1] in SINK_KINDS:
            loc = (loc[0], *loc[2:])  # the union's tag: "sink.url", not "sink.dicomweb.url"
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        source = _env_name(loc, env)
        if source:
            where += f" (from ${source})"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where or '(top level)'}: {message}")
    return problems


def _env_name(loc: tuple[int | str, ...], env: dict[str, str]) -> str | None:
    """The environment variable that set this location (or a section above it), if any."""
    names = {name.upper(): name for name in env}
    parts = [p for p in loc if isinstance(p, str)]
    for depth in range(len(parts), 0, -1):
        candidate = (ENV_PREFIX + "__".join(parts[:depth])).upper()
        if candidate in names:
            return names[candidate]
    return None


@contextmanager
def _bound(where: _Where) -> Iterator[None]:
    token = _WHERE.set(where)
    try:
        yield
    finally:
        _WHERE.reset(token)
