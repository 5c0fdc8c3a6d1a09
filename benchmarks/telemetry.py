"""Telemetry benchmark: what Mixer's Check+Report cost against in-proxy telemetry, on the same traffic.

The lesson's headline numbers. Istio's 1.0-era performance page put the mesh's added p90 at about 7 ms with
Mixer in the request path; after Istio 1.5 moved telemetry into the proxy ("telemetry v2") it is 2.65 ms
(istio.io/latest/docs/ops/deployment/performance-and-scalability). Here the same two-sidecar path as
:mod:`benchmarks.mesh` (whose harness we import: the echo backend, ``meshlab proxy`` processes configured by
Pilot's real ADS server from a hand-built ``MeshState``, ``meshlab.mesh.load`` at a fixed rate, open model) runs
twice in one process tree: with the ``modern`` profile (the ``istio.stats`` filter counts in each proxy) and with
the ``classic`` profile (each proxy calls a real ``meshlab mixer`` process: Check before forwarding, batched
Report after). Each run reports the latency added over going straight to the backend (p50/p90, the difference
of percentiles, as Istio reports it) and the CPU seconds per 1,000 requests of everything on the path's mesh
side — both proxies, plus Mixer in classic — read from ``/proc/<pid>/stat`` (utime + stime) around the measured
run; the difference between the two profiles is what Mixer costs. The machine's load average is the first row:
on a busy machine the latencies say more about the scheduler than about the mesh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from benchmarks.mesh import (
    BACKEND,
    CLIENT_POD,
    DIRECT,
    OUTBOUND,
    PORT,
    SERVER_POD,
    TWO_HOPS,
    Processes,
    _checked,
    _http_proxy,
    _meshlab,
    _port_open,
    _synced,
    state,
)
from meshlab.mesh.load import LoadResult, load
from meshlab.mesh.pilot.ads import AdsServer, serve
from meshlab.mesh.pilot.model import MeshState, TelemetrySettings
from meshlab.mesh.xds.node import node_id
from meshlab.telemetry.metrics import parse_text

Row = tuple[str, str, str]

RATE = 200.0
MIXER = "127.0.81.30"
MIXER_GRPC, MIXER_METRICS = 9091, 42422
MIXER_ERA_P90_MS = 7.0  # Istio 1.0-1.4 with Mixer (istio.io performance page, archived)
IN_PROXY_P90_MS = 2.65  # Istio 1.5+ telemetry v2, 1,000 rps


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mixer_requests() -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{MIXER}:{MIXER_METRICS}/metrics", timeout=5) as resp:
        samples = parse_text(resp.read().decode())
    return sum(v for (name, labels), v in samples.items()
               if name == "istio_requests_total" and ("reporter", "destination") in labels)


def profile_state(profile: str) -> MeshState:
    telemetry = TelemetrySettings(profile=profile, mixer_address=f"{MIXER}:{MIXER_GRPC}", fail_open=True)
    return dataclasses.replace(state(), telemetry=telemetry)


async def _measure(label: str, pids: dict[str, int], duration: float) -> tuple[list[Row], LoadResult]:
    """Direct, then through both sidecars at :data:`RATE`; rows for the added latency and CPU per 1,000."""
    with _http_proxy(f"http://{CLIENT_POD}:{OUTBOUND}", [BACKEND]):
        _checked(await load(TWO_HOPS, rate=100, requests=100), f"{label}: warm-up")
        direct = _checked(await load(DIRECT, rate=RATE, duration=duration), f"{label}: direct")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        two = _checked(await load(TWO_HOPS, rate=RATE, duration=duration), f"{label}: two sidecars")
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    a, d = two.latency, direct.latency
    per_k = 1000 / max(1, two.answered)
    parts = " + ".join(f"{name} {seconds * per_k:.3f}" for name, seconds in spent.items())
    rows = [(f"{label}: added p50 / p90, two sidecars vs direct, {RATE:g} rps x {duration:g} s",
             f"{a.p50 - d.p50:.2f} / {a.p90 - d.p90:.2f} ms", "report"),
            (f"{label}: CPU seconds per 1,000 requests ({parts})", f"{sum(spent.values()) * per_k:.3f} s", "report")]
    return rows, two


async def _profile(procs: Processes, ads: AdsServer, xds_port: int, profile: str, duration: float,
                   extra: dict[str, int]) -> list[Row]:
    ads.set_state(profile_state(profile))
    server = procs.proxy("echo-server", SERVER_POD, xds_port, app=f"{BACKEND}:{PORT}")
    client = procs.proxy("sleep", CLIENT_POD, xds_port)
    try:
        await _synced(ads, {node_id(SERVER_POD, "echo-server", "default"), node_id(CLIENT_POD, "sleep", "default")})
        await _port_open(SERVER_POD, PORT)
        await _port_open(CLIENT_POD, OUTBOUND)
        label = "Mixer Check+Report (classic)" if profile == "classic" else "in-proxy telemetry (modern)"
        rows, two = await _measure(label, {"client proxy": client.pid, "server proxy": server.pid, **extra},
                                   duration)
        if profile == "classic":
            # The measurement means something only if Mixer really was in the path: its reports counted.
            for _ in range(50):  # Reports are batched (about once a second): give the last batch time
                reported = await asyncio.to_thread(_mixer_requests)
                if reported >= two.answered:
                    break
                await asyncio.sleep(0.1)
            if reported < two.answered:
                raise RuntimeError(f"Mixer counted {reported:g} requests, the load sent {two.answered}: "
                                   "the proxies did not report to it")
            rows.append(("  Mixer's istio_requests_total (reporter=destination) after the classic runs",
                         f"{reported:g}", "report"))
        return rows
    finally:
        procs.stop([client, server])


async def _run(duration: float, logs: Path) -> list[Row]:
    rows: list[Row] = [("telemetry bench: load average (1 min) at start",
                        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", "report")]
    procs = Processes(logs)
    ads = AdsServer(profile_state("modern"))
    grpc_server, xds_port = await serve(ads)
    try:
        procs.start("echo", [*_meshlab(), "app", "echo", "--host", BACKEND, "--port", str(PORT)])
        await _port_open(BACKEND, PORT)
        policy = logs / "policy.yaml"
        policy.write_text("{}\n")
        mixer = procs.start("mixer", [*_meshlab(), "mixer", "--grpc-port", str(MIXER_GRPC), "--metrics-port",
                                      str(MIXER_METRICS), "--policy-file", str(policy)], {"POD_IP": MIXER})
        await _port_open(MIXER, MIXER_GRPC)
        modern = await _profile(procs, ads, xds_port, "modern", duration, {})
        classic = await _profile(procs, ads, xds_port, "classic", duration, {"Mixer": mixer.pid})
        rows += modern + classic
        extra_cpu = float(classic[1][1].split()[0]) - float(modern[1][1].split()[0])
        rows.append(("Mixer's price: extra CPU seconds per 1,000 requests, classic - modern", f"{extra_cpu:.3f} s",
                     "report"))
        rows.append(("Istio's figures: added p90 with Mixer (1.0-1.4) / in-proxy (1.5+, 1,000 rps)",
                     f"{MIXER_ERA_P90_MS:g} / {IN_PROXY_P90_MS:g} ms", "context"))
    finally:
        procs.stop()
        await grpc_server.stop(None)
    return rows


def run(duration: float = 10.0) -> list[Row]:
    """Both profiles, one after the other, in one run; rows (measure, result, target)."""
    logs = Path(tempfile.mkdtemp(prefix="meshlab-bench-telemetry-"))
    try:
        rows = asyncio.run(_run(duration, logs))
    except Exception:
        print(f"telemetry benchmark failed; process logs in {logs}", file=sys.stderr)
        raise
    shutil.rmtree(logs, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in run(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0):
        print(row)
