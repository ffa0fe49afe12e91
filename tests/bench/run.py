"""PhotoSafe benchmarks: how close to the floor, measured in one run (`make bench`).

    .venv/bin/python tests/bench/run.py [--out bench.json] [--quick] [--keep]

Builds a sandbox site on tmpfs, starts its own mosquitto (TLS, client certificates, the ACL,
set_tcp_nodelay true), runs every section, stops everything it started (also on errors and on
SIGTERM / Ctrl-C), prints a table and writes JSON. Every figure that is a time is also given as
a ratio to a floor measured in the same run, because the machine is shared and noisy. The
benchmark reports; it never fails on a timing. See tests/bench/README.md for what each figure
means and the latest results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from bench_aead import SUITES, aead, hpke_suite
from bench_floor import FLOOR_STAGES, FloorClient, Responder, floor_seconds
from bench_processes import TWELVE_MP, GatewayProcess, rss_over_captures, startup
from bench_report import table
from bench_station import (
    E2E_STAGES,
    PIPELINE_STAGES,
    BenchStation,
    FrameStampCamera,
    SizedStillCamera,
)
from bench_throughput import Sealer, throughput
from bench_util import (
    MIB,
    REPO,
    Stamps,
    cpu_flags,
    cpu_model,
    make_broker,
    median,
    p95,
    ratio,
    stage_medians,
    summary_ms,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from photosafe.daemon.config import StationConfig, load_config
from photosafe.daemon.logs import AllowListFormatter
from photosafe.protocol import ack
from photosafe.provisioning.sandbox import Site, build_site, free_port
from photosafe.provisioning.site_configs import write_station_config

FLOOR = "bench-floor"
STATION = "bench-station"
PIPELINE = "bench-pipeline"
PROCESS = "bench-process"
PUBLISHERS = [f"bench-pub-{i}" for i in range(1, 5)]
SIZES = [1 * MIB, 4 * MIB, 12 * MIB]
TARGETS = {"e2e": 1.3, "pipeline": 1.3, "memory": 2.5, "startup_s": 1.5, "gateways": 1.6}
RSS_NOISE_MIB = 4.0  # growth below this over 90 captures counts as none (allocator noise)


class Plan:
    """How many samples each section takes: full (make bench) or quick (a smoke run)."""

    def __init__(self, quick: bool) -> None:
        self.warmup = 2 if quick else 3
        self.samples = 8 if quick else 40
        self.pipeline = 5 if quick else 20
        self.rss_captures = 20 if quick else 100
        self.rss_checkpoints = (1, 5, 10, 20) if quick else (1, 10, 50, 100)
        self.startup_runs = 2 if quick else 5
        self.per_device = 4 if quick else 16
        self.rounds = 1 if quick else 3
        self.aead_reps = 5 if quick else 15


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "bench.json", help="JSON results")
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args(argv)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds the ExitStack: everything started is stopped

    signal.signal(signal.SIGTERM, on_signal)
    # In-process stations must not talk to a service manager this benchmark may run under.
    os.environ.pop("NOTIFY_SOCKET", None)
    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="photosafe-bench-", dir=shm if shm.is_dir() else None))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            print(f"work folder (kept): {workdir}", file=sys.stderr)
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        results = run_all(stack, workdir, Plan(args.quick))
    results["meta"]["total_s"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    print(table(results))
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out} ({results['meta']['total_s']} s)")
    return 0


def step(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def run_all(stack: contextlib.ExitStack, workdir: Path, plan: Plan) -> dict[str, Any]:
    _log_to(workdir / "bench.log")
    site = build_site(
        workdir / "site", [FLOOR, STATION, PIPELINE, PROCESS, *PUBLISHERS], port=free_port()
    )
    broker = make_broker(site)
    broker.start()
    stack.callback(broker.stop)
    configs = {
        device: write_station_config(
            site,
            device,
            workdir / f"{device}.toml",
            ack_timeout_s=15,
            expiry_s=120,
            grace_s=5,
            patient_timeout_s=1800,
        )
        for device in (STATION, PIPELINE, PROCESS)
    }
    config = load_config(configs[STATION])
    keys = _device_keys(site, STATION)
    recipient = _recipient(site)
    results: dict[str, Any] = {"meta": meta(config)}

    step("7. AEAD: ChaCha20-Poly1305 vs AES-256-GCM")
    results["aead"] = aead(
        config,
        device_id=STATION,
        device_key=keys[0],
        device_cert=keys[1],
        recipient=recipient,
        sizes=SIZES,
        reps=plan.aead_reps,
    )

    records = workdir / "records"
    gateway = GatewayProcess(site, workdir, "photosafe-gateway-1", records)
    stack.callback(gateway.stop)
    responder = Responder(site, FLOOR, workdir / "responder.log")
    stack.callback(responder.stop)
    gateway.wait_ready()
    responder.wait_ready()
    floor = FloorClient(site, FLOOR, suite=hpke_suite(config.gateway.suite), recipient=recipient)
    stack.callback(floor.close)

    step("1-2. floor and capture end to end, alternating")
    results["floor"], results["capture_e2e"], trace_4mib = capture_e2e(
        stack, configs[STATION], floor, plan
    )

    step("3. full pipeline at 12 MP and the extended floor")
    results["pipeline"], trace_12mp = pipeline(stack, configs[PIPELINE], floor, plan)
    results["memory"] = {"traced_peak": {"12MP_capture": trace_12mp, "4MiB_still": trace_4mib}}
    floor.close()
    responder.stop()

    step(f"4. station process RSS over {plan.rss_captures} captures at 12 MP")
    results["memory"]["rss"] = rss_over_captures(
        configs[PROCESS], plan.rss_captures, plan.rss_checkpoints, TWELVE_MP
    )

    step("5. station start-up")
    results["startup"] = startup(configs[PROCESS], workdir, plan.startup_runs)
    gateway.stop()

    step("6. gateway throughput: one process, then two on the shared subscription")
    results["gateway_throughput"] = throughput(
        broker,
        workdir,
        PUBLISHERS,
        sealer=Sealer(site, recipient, SUITES[config.gateway.suite]),
        pinned=ack.pin(*_signing_keys(site)),
        per_device=plan.per_device,
        size=4 * MIB,
        window=2,
        rounds=plan.rounds,
    )
    results["meta"]["load_average_after"] = os.getloadavg()
    return results


def capture_e2e(
    stack: contextlib.ExitStack, config: Path, floor: FloorClient, plan: Plan
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    camera = SizedStillCamera.from_simulated()
    station = BenchStation(config, camera)
    stack.callback(station.stop)
    station.start()
    floors: dict[str, Any] = {}
    e2e: dict[str, Any] = {}
    for size in SIZES:
        label = f"{size // MIB}MiB"
        camera.set_size(size)
        floor.payload(size)
        for _ in range(plan.warmup):
            floor.measure(size)
            station.capture()
        floor_runs: list[Stamps] = []
        e2e_runs: list[Stamps] = []
        for i in range(plan.samples):  # alternate, and alternate which goes first
            if i % 2:
                floor_runs.append(floor.measure(size))
                e2e_runs.append(station.capture())
            else:
                e2e_runs.append(station.capture())
                floor_runs.append(floor.measure(size))
        bare = properties_cost(floor, size, max(4, plan.samples // 4))
        floor.forget(size)
        floor_s = [floor_seconds(s) for s in floor_runs]
        e2e_s = [_between(s, "send", "stored") for s in e2e_runs]
        floors[label] = {
            **summary_ms(floor_s),
            "stages_ms": stage_medians(floor_runs, FLOOR_STAGES),
            "mqtt5_properties": bare,
        }
        e2e[label] = {
            **summary_ms(e2e_s),
            "ratio_median": ratio(median(e2e_s), median(floor_s)),
            "ratio_p95": ratio(p95(e2e_s), p95(floor_s)),
            "stages_ms": stage_medians(e2e_runs, E2E_STAGES),
        }
        step(f"   {label}: floor {_ms(floor_s)} ms, capture {_ms(e2e_s)} ms")
    camera.set_size(4 * MIB)
    station.capture()
    trace = traced_capture(station, start="press")
    station.stop()
    return floors, e2e, trace


def properties_cost(floor: FloorClient, size: int, pairs: int) -> dict[str, float]:
    """The floor with and without the capture's four MQTT 5 properties, alternating: what the
    properties cost (paho decodes them by re-slicing the whole packet, REFERENCE section 9)."""
    with_props: list[float] = []
    without: list[float] = []
    for _ in range(pairs):
        with_props.append(floor_seconds(floor.measure(size)))
        without.append(floor_seconds(floor.measure(size, properties=False)))
    return {
        "pairs": pairs,
        "with_median_ms": round(median(with_props) * 1000, 3),
        "without_median_ms": round(median(without) * 1000, 3),
        "share_of_floor": round(1 - median(without) / median(with_props), 3),
    }


def pipeline(
    stack: contextlib.ExitStack, config: Path, floor: FloorClient, plan: Plan
) -> tuple[dict[str, Any], dict[str, Any]]:
    camera = FrameStampCamera(width=4056, height=3040)
    station = BenchStation(config, camera)
    stack.callback(station.stop)
    station.start()
    for _ in range(plan.warmup):
        station.capture()
        floor.measure(camera.encode_last()[1])
    runs: list[Stamps] = []
    extended: list[float] = []
    encode: list[float] = []
    floor_only: list[float] = []
    jpeg_sizes: list[int] = []
    for _ in range(plan.pipeline):
        runs.append(station.capture())
        encode_s, size = camera.encode_last()
        floor_s = floor_seconds(floor.measure(size))
        floor.forget(size)
        encode.append(encode_s)
        floor_only.append(floor_s)
        extended.append(encode_s + floor_s)
        jpeg_sizes.append(runs[-1].size)
    total = [_between(s, "frame", "stored") for s in runs]
    result = {
        "frame": "4056x3040 simulated (Pillow test scene), JPEG quality 90",
        "jpeg_bytes_median": int(median(jpeg_sizes)),
        "pipeline": summary_ms(total),
        "extended_floor": summary_ms(extended),
        "extended_floor_parts_ms": {
            "jpeg_encode": round(median(encode) * 1000, 3),
            "floor": round(median(floor_only) * 1000, 3),
        },
        "ratio_median": ratio(median(total), median(extended)),
        "ratio_p95": ratio(p95(total), p95(extended)),
        "stages_ms": stage_medians(runs, PIPELINE_STAGES),
    }
    step(
        f"   pipeline {median(total) * 1e3:.1f} ms, extended floor {median(extended) * 1e3:.1f} ms"
    )
    trace = traced_capture(station, start="press")
    station.stop()
    camera.last_frame = None
    return result, trace


def traced_capture(station: BenchStation, *, start: str) -> dict[str, Any]:
    """One capture under tracemalloc: the peak traced allocation above the level at `start`,
    over the JPEG size, and the peak within each stage (marks reset tracemalloc's peak)."""
    tracemalloc.start()
    try:
        stamps = station.capture(trace=True)
    finally:
        tracemalloc.stop()
    base = stamps.memory[start][0]
    names = sorted(stamps.memory, key=lambda n: stamps.times[n])
    size = stamps.size
    phases: dict[str, float] = {}
    previous = start
    for name in names[names.index(start) + 1 :]:
        phases[f"{previous}->{name}"] = round((stamps.memory[name][1] - base) / size, 2)
        previous = name
    peak = max(stamps.memory[name][1] for name in names[names.index(start) + 1 :]) - base
    return {
        "jpeg_bytes": size,
        "peak_above_start_bytes": peak,
        "ratio": round(peak / size, 2),
        "peak_by_stage_x_jpeg": phases,
    }


def _ms(values: Sequence[float]) -> str:
    return f"{median(values) * 1000:.1f}"


def _between(stamps: Stamps, start: str, end: str) -> float:
    value = stamps.between(start, end)
    if value is None:
        raise RuntimeError(f"capture without {start!r} or {end!r} stamps: {stamps.times}")
    return value


# -- keys and environment -------------------------------------------------------------------


def _device_keys(site: Site, device_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    files = site.device(device_id)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate(files.cert.read_bytes())


def _recipient(site: Site) -> X25519PublicKey:
    key = serialization.load_pem_public_key(site.recipient_pub.read_bytes())
    assert isinstance(key, X25519PublicKey)
    return key


def _signing_keys(site: Site) -> list[Any]:
    return [serialization.load_pem_public_key(site.signing_pub.read_bytes())]


def _log_to(path: Path) -> None:
    """The station logs as in production (allow-listed lines), into the work folder."""
    handler = logging.FileHandler(path)
    handler.setFormatter(AllowListFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def meta(config: StationConfig) -> dict[str, Any]:
    mosquitto = subprocess.run(
        ["mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(_git("status", "--porcelain")),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_aes": "aes" in cpu_flags(),
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
        "paho_mqtt": version("paho-mqtt"),
        "cryptography": version("cryptography"),
        "pillow": version("pillow"),
        "mosquitto": mosquitto[0] if mosquitto else "unknown",
        "station_suite": config.gateway.suite,
        "sink": "folder on tmpfs (/dev/shm)",
    }


# -- targets and the table ------------------------------------------------------------------


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, target: str, met: bool) -> None:
        out.append({"target": name, "value": value, "goal": target, "met": met})

    for label, row in r["capture_e2e"].items():
        value = row["ratio_median"]
        add(
            f"capture end to end {label} / floor",
            value,
            f"<= {TARGETS['e2e']}",
            value <= TARGETS["e2e"],
        )
    value = r["pipeline"]["ratio_median"]
    add(
        "full pipeline 12 MP / extended floor",
        value,
        f"<= {TARGETS['pipeline']}",
        value <= TARGETS["pipeline"],
    )
    value = r["memory"]["traced_peak"]["12MP_capture"]["ratio"]
    add(
        "peak traced allocation / JPEG (12 MP capture)",
        value,
        f"<= {TARGETS['memory']}",
        value <= TARGETS["memory"],
    )
    rss = r["memory"]["rss"]
    growth = next(v for k, v in rss.items() if k.startswith("growth_"))
    add(
        "station RSS growth over the captures (MiB)",
        growth,
        f"<= {RSS_NOISE_MIB} (noise)",
        growth <= RSS_NOISE_MIB,
    )
    value = r["startup"]["median_s"]
    add(
        f"station start to {r['startup']['measured_to']} (s)",
        value,
        f"<= {TARGETS['startup_s']}",
        value <= TARGETS["startup_s"],
    )
    value = r["gateway_throughput"]["ratio_two_over_one"]
    add("two gateways / one", value, f">= {TARGETS['gateways']}", value >= TARGETS["gateways"])
    return out


if __name__ == "__main__":
    sys.exit(main())
