"""`photosafe doctor`'s operational checks, against a sandbox site and a real mosquitto.

A valid station passes (warning only where it should: no fleet key, not under systemd); a revoked
certificate, a key that is not the certificate's, swap on, core dumps allowed or a missing
sandbox fail, each with what to do; a certificate near expiry only warns and the exit stays 0.
The host (/proc, the clock, the core limit) is a fake tree or an injected probe.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from broker import Broker
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from photosafe.daemon.config import load_config
from photosafe.daemon.doctor import Machine, Wanted, run
from photosafe.daemon.doctor_ops import (
    REFUSED,
    check_certificate_expiry,
    check_clock,
    check_core_dumps,
    check_fleet_keys,
    check_sandbox,
    check_swap,
    probe_broker,
)
from photosafe.provisioning import pki
from photosafe.provisioning.sandbox import Site, build_site, free_port, revoke
from photosafe.provisioning.site_configs import write_station_config

DEVICE = "ward-a-01"
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
SANDBOXED = "NoNewPrivs:\t1\nSeccomp:\t2\nCapBnd:\t0000000000000000\nCapEff:\t0000000000000000\n"
OPEN = "NoNewPrivs:\t0\nSeccomp:\t0\nCapBnd:\t000001ffffffffff\nCapEff:\t0000000000000000\n"


def fake_proc(root: Path, swaps: str = "", status: str = SANDBOXED) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "swaps").write_text(SWAPS_HEADER + swaps)
    (proc / "self" / "status").write_text(status)
    (proc / "sys" / "kernel" / "core_pattern").write_text("core\n")
    return proc


def host(
    tmp_path: Path,
    *,
    swaps: str = "",
    status: str = SANDBOXED,
    clock: bool | None = True,
    core: int = 0,
    now: dt.datetime | None = None,
) -> Machine:
    return Machine(
        proc=fake_proc(tmp_path, swaps, status),
        clock=lambda: clock,
        core_limit=lambda: (core, -1),
        now=(lambda: now) if now else (lambda: dt.datetime.now(dt.UTC)),
        broker_timeout_s=2.0,
    )


def doctor(config: Path, machine: Machine, **environ: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = run(config, machine=machine, environ=environ, out=out)
    return status, [line.strip() for line in out.getvalue().splitlines()]


def lines_for(lines: list[str], part: str) -> list[str]:
    return [line for line in lines if line.split(" ", 1)[-1].strip().startswith(f"{part}:")]


def with_cert(site: Site, cert_path: Path, name: str = "other.toml") -> Path:
    """The station's config with broker.cert_file pointing at `cert_path`."""
    path = write_station_config(site, DEVICE)
    text = path.read_text()
    old = f'cert_file = "{site.device(DEVICE).cert}"'
    assert old in text
    other = path.with_name(name)
    other.write_text(text.replace(old, f'cert_file = "{cert_path}"'))
    return other


def authority(site: Site) -> pki.Authority:
    key = serialization.load_pem_private_key(site.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return pki.Authority(key, x509.load_pem_x509_certificate(site.ca_cert.read_bytes()))


# -- against the real broker ----------------------------------------------------------------------


def test_a_valid_station_passes_with_the_expected_warnings(broker: Broker, tmp_path: Path) -> None:
    config = write_station_config(broker.site, DEVICE)
    status, lines = doctor(config, host(tmp_path))
    assert status == 0, lines
    ops = lines[
        lines.index("ok       display: none configured: intimate images are refused here") :
    ]
    assert [line.split()[0] for line in ops[1:-2]] == [
        "ok",  # certificate: key and certificate match
        "ok",  # certificate: validity
        "ok",  # CA
        "ok",  # gateway keys
        "WARNING",  # fleet keys: none pinned
        "ok",  # broker
        "ok",  # clock
        "ok",  # swap
        "ok",  # core dumps
        "WARNING",  # sandbox: not under systemd
    ]
    assert f"ok       certificate: key and certificate match, CN {DEVICE}" in lines
    assert lines_for(lines, "broker")[0].startswith(
        f"ok       broker: 127.0.0.1:{broker.site.port} accepted this station over TLS "
        f"(CONNACK Success, client id {DEVICE}-doctor,"
    )
    assert lines_for(lines, "fleet keys") == [
        "WARNING  fleet keys: none pinned: remote config is disabled — to enable it, add "
        'fleet.public_keys = ["fleet.pub"] from the bundle'
    ]
    assert lines_for(lines, "sandbox") == [
        "WARNING  sandbox: not running under systemd: the unit's sandbox cannot be checked from "
        "here — systemd-analyze security photosafe.service shows it"
    ]
    assert lines[-2:] == [
        "2 warning(s): the station can work; see what each says.",
        "everything the configuration needs is here.",
    ]


def test_a_revoked_station_is_refused_by_the_broker_in_plain_words(
    broker: Broker, tmp_path: Path
) -> None:
    config = write_station_config(broker.site, DEVICE)
    revoke(broker.site, DEVICE)
    broker.restart()
    status, lines = doctor(config, host(tmp_path))
    assert status == 1
    (line,) = lines_for(lines, "broker")
    assert line.startswith(f"FAILED   broker: {REFUSED} at 127.0.0.1:{broker.site.port} (TLS: ")
    assert "certificate revoked" in line
    assert "get a new certificate for this key" in line
    assert "certificate verify failed" in broker.log(run=True)
    assert lines[-1] == "1 problem(s): this station cannot work as configured."


def test_a_certificate_near_expiry_warns_and_the_exit_stays_zero(
    broker: Broker, tmp_path: Path
) -> None:
    site = broker.site
    key = serialization.load_pem_private_key(site.device(DEVICE).key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = pki.issue_client_certificate(authority(site), DEVICE, key.public_key(), days=10)
    path = tmp_path / "short.crt"
    path.write_bytes(pki.cert_pem(cert))
    status, lines = doctor(with_cert(site, path), host(tmp_path))
    assert status == 0, lines
    expiry = lines_for(lines, "certificate")[1]
    assert expiry.startswith("WARNING  certificate: expires in 9 days (")
    assert expiry.endswith(
        "renew it (docs/operations.md section 7: enrol, issue, install) before then"
    )
    assert lines_for(lines, "broker")[0].startswith("ok       broker:")


def test_a_broker_that_is_not_running_is_named(site: Site) -> None:
    config = load_config(write_station_config(site, DEVICE))
    finding = probe_broker(config, timeout=2.0)
    assert finding.failure
    assert str(finding) == (
        f"FAILED   broker: nothing is listening at 127.0.0.1:{site.port} (connection refused) — "
        "check broker.host and broker.port, and that the broker is running"
    )


def test_a_ca_file_from_another_site_fails_both_ways(broker: Broker, tmp_path: Path) -> None:
    stranger = build_site(tmp_path / "stranger", [DEVICE], port=free_port())
    path = write_station_config(broker.site, DEVICE)
    text = path.read_text().replace(str(broker.site.ca_cert), str(stranger.ca_cert))
    path.write_text(text)
    status, lines = doctor(path, host(tmp_path))
    assert status == 1
    (ca,) = lines_for(lines, "CA")
    # The stranger's CA has the same name as ours: it claims to be the issuer, and is not.
    assert ca.startswith(f"FAILED   CA: the certificate does not verify against {stranger.ca_cert}")
    assert "signature does not match" in ca
    (line,) = lines_for(lines, "broker")
    assert line.startswith(
        f"FAILED   broker: the broker at 127.0.0.1:{broker.site.port} is not trusted"
    )


# -- without a broker -----------------------------------------------------------------------------


def test_a_certificate_for_another_key_fails(site: Site, tmp_path: Path) -> None:
    status, lines = doctor(with_cert(site, site.device("ward-a-02").cert), host(tmp_path))
    assert status == 1
    assert lines_for(lines, "certificate")[0] == (
        f"FAILED   certificate: {site.device('ward-a-02').cert} is not for this station's key "
        f"({site.device(DEVICE).key}) — install the certificate issued for this key "
        "(photosafe-provision install), or enrol again"
    )
    assert lines_for(lines, "broker")[0].startswith(
        "FAILED   broker: not tried: this station's TLS identity does not load"
    )


def test_an_expired_certificate_fails(site: Site, tmp_path: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    config = load_config(write_station_config(site, DEVICE))
    finding = check_certificate_expiry(Wanted({}, config=config), host(tmp_path, now=later))
    assert finding is not None and finding.failure
    assert "expired on" in finding.message and "the broker refuses it" in finding.message


def test_fleet_keys_pinned_pass(site: Site, tmp_path: Path) -> None:
    path = write_station_config(site, DEVICE)
    path.write_text(path.read_text() + f'\n[fleet]\npublic_keys = ["{site.signing_pub}"]\n')
    finding = check_fleet_keys(Wanted({}, config=load_config(path)), host(tmp_path))
    assert finding is not None and finding.ok
    assert finding.message.startswith("1 pinned: ")


# -- the host -------------------------------------------------------------------------------------


@pytest.fixture
def wanted(site: Site) -> Wanted:
    return Wanted({}, config=load_config(write_station_config(site, DEVICE)))


def test_swap_on_fails(wanted: Wanted, tmp_path: Path) -> None:
    machine = host(tmp_path, swaps="/var/swap\tfile\t\t102396\t\t0\t\t-2\n")
    finding = check_swap(wanted, machine)
    assert finding is not None and finding.failure
    assert str(finding).startswith("FAILED   swap: on (/var/swap): memory, images included")
    assert "systemctl disable --now dphys-swapfile" in finding.message


def test_zram_swap_only_warns(wanted: Wanted, tmp_path: Path) -> None:
    finding = check_swap(wanted, host(tmp_path, swaps="/dev/zram0\tpartition\t1024\t0\t100\n"))
    assert finding is not None and finding.warning


def test_hidden_swaps_with_a_no_swap_cgroup_pass(wanted: Wanted, tmp_path: Path) -> None:
    machine = host(tmp_path)
    (machine.proc / "swaps").unlink()
    (machine.proc / "self" / "cgroup").write_text("0::/system.slice/photosafe.service\n")
    cgroup = tmp_path / "sys" / "fs" / "cgroup" / "system.slice" / "photosafe.service"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.swap.max").write_text("0\n")
    machine.sys = tmp_path / "sys"
    finding = check_swap(wanted, machine)
    assert finding is not None and finding.ok, finding


def test_not_under_systemd_the_sandbox_warns(wanted: Wanted, tmp_path: Path) -> None:
    finding = check_sandbox(wanted, host(tmp_path))
    assert finding is not None and finding.warning
    assert finding.message.startswith(
        "not running under systemd: the unit's sandbox cannot be checked from here"
    )


def test_under_systemd_the_sandbox_is_read_from_proc(site: Site, tmp_path: Path) -> None:
    config = load_config(write_station_config(site, DEVICE))
    under = Wanted({}, config=config, environ={"INVOCATION_ID": "0123"})
    ok = check_sandbox(under, host(tmp_path / "a"))
    assert ok is not None and ok.ok
    bare = check_sandbox(under, host(tmp_path / "b", status=OPEN))
    assert bare is not None and bare.failure
    assert bare.message == (
        "not in place: NoNewPrivs 0 (NoNewPrivileges=yes); Seccomp 0 (SystemCallFilter=); "
        "CapBnd 000001ffffffffff (CapabilityBoundingSet=) — install "
        "systemd/photosafe.service as shipped, then systemctl daemon-reload"
    )


def test_core_dumps_fail_under_systemd_and_warn_from_a_shell(site: Site, tmp_path: Path) -> None:
    config = load_config(write_station_config(site, DEVICE))
    machine = host(tmp_path, core=-1)
    shell = check_core_dumps(Wanted({}, config=config), machine)
    assert shell is not None and shell.warning
    assert "this shell's core size limit is unlimited" in shell.message
    assert "LimitCORE=0" in shell.message
    unit = check_core_dumps(Wanted({}, config=config, environ={"INVOCATION_ID": "1"}), machine)
    assert unit is not None and unit.failure
    assert "set LimitCORE=0 in photosafe.service" in unit.message


@pytest.mark.parametrize("synchronised", [False, None])
def test_an_unsynchronised_or_unknown_clock_warns(
    wanted: Wanted, tmp_path: Path, synchronised: bool | None
) -> None:
    finding = check_clock(wanted, host(tmp_path, clock=synchronised))
    assert finding is not None and finding.warning
    assert "systemd-timesyncd" in finding.message
