"""The printed table of one benchmark run (the JSON holds the same figures and more)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench_util import MIB


def rows(headers: Sequence[str], body: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[cell(c) for c in row] for row in body]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("   " + line.rstrip() for line in lines)


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def header(m: dict[str, Any]) -> list[str]:
    dirty = " (uncommitted changes)" if m["worktree_dirty"] else ""
    return [
        f"PhotoSafe bench {m['when']}, commit {m['commit']}{dirty}, {m.get('total_s', '?')} s",
        f"{m['cpu']} x{m['cpus']}, load {m['load_average_before'][0]:.2f}; {m['mosquitto']}; "
        f"paho {m['paho_mqtt']}; cryptography {m['cryptography']}; suite {m['station_suite']}",
    ]


def capture_section(r: dict[str, Any]) -> list[str]:
    body = []
    stages = []
    for label, e2e in r["capture_e2e"].items():
        fl = r["floor"][label]
        body.append(
            [
                label,
                fl["median_ms"],
                fl["p95_ms"],
                e2e["median_ms"],
                e2e["p95_ms"],
                e2e["n"],
                e2e["ratio_median"],
                e2e["ratio_p95"],
            ]
        )
        f, e = fl["stages_ms"], e2e["stages_ms"]
        stages.append(
            [
                label,
                f.get("seal+sign"),
                e.get("seal+queue"),
                e.get("wipe+loop to publish"),
                f.get("to PUBACK"),
                e.get("to PUBACK"),
                f.get("to answer"),
                e.get("to signed ack"),
                e.get("ack verify to STORED"),
            ]
        )
    return [
        "1-2. Floor and capture end to end (still handed to sealing -> verified STORED), ms",
        rows(
            ["size", "floor", "floor p95", "capture", "capture p95", "n", "ratio", "ratio p95"],
            body,
        ),
        "   the floor's four MQTT 5 properties cost paho's receiver: "
        + ", ".join(
            f"{label} {r['floor'][label]['mqtt5_properties']['share_of_floor']:.0%}"
            for label in r["capture_e2e"]
        )
        + " of the floor (floor with vs without them, alternating)",
        "   where the time goes (medians, ms; PUBACK and ack/answer counted from the publish)",
        rows(
            [
                "size",
                "floor seal",
                "seal+queue",
                "to publish",
                "floor PUBACK",
                "PUBACK",
                "floor answer",
                "signed ack",
                "ack->STORED",
            ],
            stages,
        ),
    ]


def _stats(summary: dict[str, Any]) -> list[object]:
    return [summary["median_ms"], summary["p95_ms"], summary["n"]]


def pipeline_section(p: dict[str, Any]) -> list[str]:
    parts = p["extended_floor_parts_ms"]
    return [
        f"3. Full pipeline: {p['frame']}, JPEG {p['jpeg_bytes_median'] / MIB:.2f} MiB, ms",
        rows(
            ["", "median", "p95", "n"],
            [
                ["frame -> STORED", *_stats(p["pipeline"])],
                ["extended floor", *_stats(p["extended_floor"])],
                ["ratio", p["ratio_median"], p["ratio_p95"], ""],
            ],
        ),
        "   stages (medians, ms): " + ", ".join(f"{k} {v}" for k, v in p["stages_ms"].items()),
        f"   extended floor = JPEG encode {parts['jpeg_encode']} + floor {parts['floor']}",
    ]


def memory_section(mem: dict[str, Any]) -> list[str]:
    out = ["4. Memory"]
    for name, t in mem["traced_peak"].items():
        out.append(
            f"   {name}: peak traced {t['peak_above_start_bytes'] / MIB:.2f} MiB for a "
            f"{t['jpeg_bytes'] / MIB:.2f} MiB JPEG = {t['ratio']}x; peak within each stage "
            "(x JPEG): " + ", ".join(f"{k} {v}" for k, v in t["peak_by_stage_x_jpeg"].items())
        )
    rss = mem["rss"]
    after = ", ".join(f"{k}: {v}" for k, v in rss["after_mib"].items())
    out.append(
        f"   station process ({rss['camera']}): RSS idle {rss['idle_mib']} MiB; after captures "
        f"{after} MiB; settled {rss['settled_mib']} MiB ({rss['captures_per_s']} captures/s, "
        f"mlockall {rss['mlockall']})"
    )
    return out


def throughput_section(g: dict[str, Any]) -> list[str]:
    body = []
    for name in ("one", "two"):
        for run in g[name]["runs"]:
            cpu = " ".join(f"{k.split(' ')[0]}={v}" for k, v in run["cpu_s"].items())
            body.append(
                [
                    name,
                    run["captures"],
                    run["captures_per_s"],
                    run["steady_captures_per_s"],
                    run["mib_per_s"],
                    f"{run['cores_busy']} ({run['machine_cores_busy']})",
                    run["gateway_cpu_ms_per_capture"],
                    cpu,
                ]
            )
    return [
        f"6. Gateway throughput: {g['devices']} devices, {g['capture_mib']:.0f} MiB captures, "
        f"{g['window_per_device']} in flight per device, {g['cpus']} CPUs",
        rows(
            [
                "gateways",
                "captures",
                "captures/s",
                "steady/s",
                "MiB/s",
                "cores ours (machine)",
                "gw CPU ms/capture",
                "CPU s in the run",
            ],
            body,
        ),
        f"   medians: one {g['one']['captures_per_s']}/s ({g['one']['mib_per_s']} MiB/s), "
        f"two {g['two']['captures_per_s']}/s ({g['two']['mib_per_s']} MiB/s): "
        f"two/one {g['ratio_two_over_one']}",
        f"   one capture costs {g['cpu_ms_per_capture_all_processes']} ms of CPU in all (gateway, "
        f"broker, publishers): with {g['cpus']} CPUs to themselves two gateways could reach at "
        f"most {g['cpu_ceiling_two_over_one']}x one",
    ]


def aead_section(a: dict[str, Any]) -> list[str]:
    body = []
    for label, s in a["sizes"].items():
        c, g = s["chacha20"], s["aes256gcm"]
        body.append(
            [
                label,
                c["seal_ms"],
                g["seal_ms"],
                c["aead_only_ms"],
                g["aead_only_ms"],
                c["aead_gb_per_s"],
                g["aead_gb_per_s"],
            ]
        )
    return [
        "7. AEAD: the whole envelope.seal, and the bare AEAD, per suite (medians, ms)",
        rows(
            [
                "size",
                "seal chacha20",
                "seal aes256gcm",
                "chacha20 only",
                "aes-gcm only",
                "chacha GB/s",
                "aes-gcm GB/s",
            ],
            body,
        ),
        f"   station uses {a['bench_station_uses']!r}. {a['why']}",
    ]


def table(r: dict[str, Any]) -> str:
    s = r["startup"]
    out = [
        *header(r["meta"]),
        "",
        *capture_section(r),
        "",
        *pipeline_section(r["pipeline"]),
        "",
        *memory_section(r["memory"]),
        "",
        f"5. Start-up, process exec to {s['measured_to']}: median {s['median_s']} s, max "
        f"{s['max_s']} s over {s['runs']} runs ({s['camera']}, mlockall {s['mlockall']})",
        f"   to link.up {s['link_up_s']} s; baselines: bare interpreter {s['interpreter_s']} s, "
        f"interpreter + importing the station {s['imports_s']} s",
        "",
        *throughput_section(r["gateway_throughput"]),
        "",
        *aead_section(r["aead"]),
        "",
        "Targets",
        rows(
            ["target", "value", "goal", "met"],
            [
                [t["target"], t["value"], t["goal"], "yes" if t["met"] else "NO"]
                for t in r["targets"]
            ],
        ),
    ]
    return "\n".join(out)
