"""Mesh benchmarks: the sidecar's added latency, a real proxy beside it, throughput, memory, xDS convergence.

Istio measures its data plane as the latency a request gains on its way through the client's and the server's
sidecars compared with going straight to the server, at a fixed request rate (fortio's open model), reported
as the difference of percentiles (istio.io/latest/docs/ops/deployment/performance-and-scalability: "2.65 ms
at the 90th percentile" for Envoy at 1,000 rps). Here every piece is its own process so the process
boundaries are real: an ``meshlab app echo`` backend, ``meshlab proxy`` sidecars configured by Pilot's real
ADS server (:class:`~meshlab.mesh.pilot.ads.AdsServer`, in this process, from a hand-built ``MeshState``),
Debian's haproxy as a one-hop yardstick, and :func:`meshlab.mesh.load.load` as the load generator (in this
process, reaching the sidecar through ``HTTP_PROXY`` as an app in a pod does). Convergence is the time from
``set_state`` (a VirtualService change) to the last proxy's ACK of the new RDS version, taken from Pilot's
event timeline and confirmed with ``proxy_status()``. Everything runs on loopback (127.0.81.x, 127.0.82.x),
bounded in time, and every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from benchmarks.mesh_mtls import citadel
from benchmarks.runtime import rss_mb
from meshlab.mesh.load import LoadResult, load
from meshlab.mesh.pilot.ads import AdsServer, serve
from meshlab.mesh.pilot.model import Endpoint, MeshState, Service, ServicePort, VirtualService
from meshlab.mesh.pilot.sync import Sync
from meshlab.mesh.xds.node import node_id
from meshlab.mesh.xds.resources import ROUTE

Row = tuple[str, str, str, str]

PORT = 9080
BACKEND = "127.0.81.2"  # the echo app (the server pod's application address)
SERVER_POD = "127.0.81.1"  # the server pod's sidecar: inbound 9080 -> BACKEND:9080
CLIENT_POD = "127.0.81.10"  # the client pod's sidecar: outbound 15001
HAPROXY = "127.0.81.20"
OUTBOUND = 15001
TWO_HOPS = f"http://echo:{PORT}/bench"  # endpoint = the server sidecar
ONE_HOP = f"http://echo-direct:{PORT}/bench"  # endpoint = the backend itself
DIRECT = f"http://{BACKEND}:{PORT}/bench"
P90_TARGET_MS = 2.65
RSS_TARGET_MB = 40.0
CONVERGENCE_TARGET_MS = 200.0


def _meshlab() -> list[str]:
    beside = Path(sys.executable).parent / "meshlab"
    found = str(beside) if beside.exists() else shutil.which("meshlab")
    if not found:
        raise RuntimeError("the meshlab command is not installed next to this Python")
    return [found]


def state(timeout: str = "30s", *, mtls: bool = False) -> MeshState:
    """Two Services for one backend: ``echo`` through the server's sidecar, ``echo-direct`` straight to the app;
    a VirtualService on ``echo`` whose ``timeout`` the convergence measurement changes. With ``mtls`` the echo
    endpoint is marked as having a sidecar, so the client's sidecar speaks mutual TLS to it (auto-mTLS)."""
    port = (ServicePort("http", PORT),)
    server = Endpoint(SERVER_POD, {"http": PORT}, {"app": "echo"}, True, "echo-server", "default",
                      service_account="echo", sidecar=mtls)
    return MeshState(
        (Service("echo", "default", "10.96.0.81", port), Service("echo-direct", "default", "10.96.0.82", port)),
        {("default", "echo"): (server,),
         ("default", "echo-direct"): (Endpoint(BACKEND, {"http": PORT}, {"app": "echo"}, True, "", "default"),)},
        (VirtualService("echo", "default", {"hosts": ["echo"], "http": [
            {"route": [{"destination": {"host": "echo"}}], "timeout": timeout}]}),),
    )


# -- processes -------------------------------------------------------------------------------------------------


class Processes:
    """Every process this benchmark starts, stopped (TERM, then KILL) when the ``with`` block ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as err:
            proc = subprocess.Popen(argv, env={**_no_proxy_env(), **(env or {})}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.started.append(proc)
        return proc

    def proxy(self, name: str, ip: str, xds_port: int, *, app: str = "",
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {"POD_NAME": name, "POD_NAMESPACE": "default", "INSTANCE_IP": ip,
               "ISTIO_METAJSON_LABELS": '{"app": "echo"}' if app else "{}", "APP_ADDRESS": app, **(extra_env or {})}
        return self.start(name, [*_meshlab(), "proxy", "--xds-address", f"127.0.0.1:{xds_port}",
                                 "--admin-address", ip], env)

    def stop(self, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
        targets = self.started if procs is None else procs
        for proc in targets:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in targets:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started = [p for p in self.started if p not in targets]


def _no_proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}


@contextlib.contextmanager
def _http_proxy(proxy: str, bypass: list[str]) -> Iterator[None]:
    """``HTTP_PROXY`` for this process, as the injector sets it in a pod; ``load`` honours it (trust_env)."""
    saved = {k: os.environ.get(k) for k in ("HTTP_PROXY", "NO_PROXY")}
    os.environ["HTTP_PROXY"], os.environ["NO_PROXY"] = proxy, ",".join(bypass)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _port_open(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            await asyncio.sleep(0.05)


async def _synced(ads: AdsServer, ids: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {s.proxy_id for s in ads.proxy_status() if all(t.status is Sync.SYNCED for t in s.types)}
        if ids <= done:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{len(ids - done)} of {len(ids)} proxies did not sync within {timeout:g} s")


@contextlib.asynccontextmanager
async def _sampling_rss(pids: list[int], peaks: dict[int, float]) -> AsyncIterator[None]:
    async def sample() -> None:
        while True:
            for pid in pids:
                peaks[pid] = max(peaks.get(pid, 0.0), rss_mb(pid))
            await asyncio.sleep(0.25)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()


# -- latency ---------------------------------------------------------------------------------------------------


def _checked(result: LoadResult, what: str) -> LoadResult:
    if result.success_rate < 0.999:
        raise RuntimeError(f"{what}: only {100 * result.success_rate:.2f} % 2xx ({dict(result.statuses)}, "
                           f"errors {dict(result.errors)})")
    return result


def _added_rows(label: str, through: LoadResult, direct: LoadResult, *, target: bool) -> list[Row]:
    a, d = through.latency, direct.latency
    p50, p90, p99 = a.p50 - d.p50, a.p90 - d.p90, a.p99 - d.p99
    verdict = ("ok" if p90 <= P90_TARGET_MS else "MISS") if target else ""
    return [(f"{label}: added p50 / p90 / p99", f"{p50:.2f} / {p90:.2f} / {p99:.2f} ms",
             f"p90 <= {P90_TARGET_MS} ms" if target else "report", verdict)]


def _direct_row(label: str, direct: LoadResult) -> Row:
    d = direct.latency
    return (f"  {label}: direct p50 / p90 / p99", f"{d.p50:.2f} / {d.p90:.2f} / {d.p99:.2f} ms", "report", "")


async def _latency(duration: float, client_pid: int, server_pid: int, haproxy_url: str | None,
                   haproxy_note: str) -> list[Row]:
    rows: list[Row] = []
    secs = f"{duration:g} s"
    bypass = [BACKEND, HAPROXY]
    with _http_proxy(f"http://{CLIENT_POD}:{OUTBOUND}", bypass):
        for url in (DIRECT, TWO_HOPS, ONE_HOP):  # warm-up: connections, the sidecars' first requests
            _checked(await load(url, rate=100, requests=50), f"warm-up {url}")
        idle = {pid: rss_mb(pid) for pid in (client_pid, server_pid)}
        peaks: dict[int, float] = {}
        direct_500: LoadResult | None = None
        for rate in (200, 500):
            direct = _checked(await load(DIRECT, rate=rate, duration=duration), f"direct at {rate}/s")
            sampler = _sampling_rss([client_pid, server_pid], peaks) if rate == 500 else contextlib.nullcontext()
            async with sampler:
                two = _checked(await load(TWO_HOPS, rate=rate, duration=duration), f"two sidecars at {rate}/s")
            rows += _added_rows(f"two sidecars vs direct, {rate} rps x {secs}", two, direct, target=True)
            rows.append(_direct_row(f"{rate} rps", direct))
            direct_500 = direct
        assert direct_500 is not None
        one = _checked(await load(ONE_HOP, rate=500, duration=duration), "one sidecar at 500/s")
        rows += _added_rows(f"one sidecar hop vs direct, 500 rps x {secs}", one, direct_500, target=False)
        if haproxy_url:
            ha = _checked(await load(haproxy_url, rate=500, duration=duration), "haproxy at 500/s")
            rows += _added_rows(f"haproxy (one hop) vs direct, 500 rps x {secs}", ha, direct_500, target=False)
        else:
            rows.append(("haproxy (one hop) vs direct", "skipped", "report", haproxy_note))
    for pid, name in ((client_pid, "client"), (server_pid, "server")):
        rows.append((f"{name} sidecar RSS idle / peak at 500 rps", f"{idle[pid]:.0f} / {peaks.get(pid, 0):.0f} MB",
                     f"<= {RSS_TARGET_MB:.0f} MB", "ok" if peaks.get(pid, 0) <= RSS_TARGET_MB else "MISS"))
    return rows


async def _throughput(seconds: float, client_pid: int, backend_pid: int) -> list[Row]:
    """One sidecar pinned to CPU 0; the backend and the generator share CPU 1 (the generator's own ceiling,
    measured direct with the same pinning, says whether the sidecar or the generator was the limit)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return [("one sidecar on one core: closed loop, 32 in flight", "skipped", "report", "needs 2 CPUs")]
    me = os.getpid()
    saved = {pid: os.sched_getaffinity(pid) for pid in (me, client_pid, backend_pid)}
    try:
        os.sched_setaffinity(client_pid, {cpus[0]})
        os.sched_setaffinity(backend_pid, {cpus[1]})
        os.sched_setaffinity(me, {cpus[1]})
        with _http_proxy(f"http://{CLIENT_POD}:{OUTBOUND}", [BACKEND]):
            via = _checked(await load(ONE_HOP, concurrency=32, duration=seconds), "sidecar throughput")
            direct = _checked(await load(DIRECT, concurrency=32, duration=seconds), "generator ceiling")
    finally:
        for pid, mask in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, mask)
    return [(f"one sidecar on one core: 32 in flight x {seconds:g} s", f"{via.throughput:.0f} req/s", "report", ""),
            ("  generator + backend on the other core, direct", f"{direct.throughput:.0f} req/s", "report", "")]


# -- haproxy ---------------------------------------------------------------------------------------------------


def _ensure_haproxy() -> tuple[str | None, str]:
    """The haproxy binary, installing Debian's package when root; else None and why."""
    found = shutil.which("haproxy") or (Path("/usr/sbin/haproxy").exists() and "/usr/sbin/haproxy") or None
    if found:
        return str(found), ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "not installed (not root or no apt-get)"
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "haproxy"], check=True,
                       capture_output=True, timeout=300, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError) as err:
        return None, f"apt-get install haproxy failed: {str(err)[:60]}"
    found = shutil.which("haproxy") or (Path("/usr/sbin/haproxy").exists() and "/usr/sbin/haproxy") or None
    return (str(found), "") if found else (None, "haproxy not found after install")


HAPROXY_CONFIG = f"""\
# generated by benchmarks/mesh.py: one HTTP hop with keep-alive on both sides, like a sidecar
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind {HAPROXY}:{PORT}
    default_backend echo
backend echo
    server echo1 {BACKEND}:{PORT}
"""


# -- the same with mutual TLS ---------------------------------------------------------------------------------


async def _with_mtls(procs: Processes, ads: AdsServer, xds_port: int, duration: float, logs: Path) -> list[Row]:
    """New sidecars holding Citadel certificates; the client's speaks mTLS to the server's (auto-mTLS)."""
    rows: list[Row] = []
    async with citadel(logs / "citadel", {"echo-server": "echo", "sleep": "sleep"}) as ca:
        ads.set_state(state(mtls=True))
        procs.proxy("echo-server", SERVER_POD, xds_port, app=f"{BACKEND}:{PORT}", extra_env=ca.proxy_env("echo-server"))
        procs.proxy("sleep", CLIENT_POD, xds_port, extra_env=ca.proxy_env("sleep"))
        await _synced(ads, {node_id(SERVER_POD, "echo-server", "default"), node_id(CLIENT_POD, "sleep", "default")})
        for ip in (SERVER_POD, CLIENT_POD):
            await _admin_until(ip, "/certs", "spiffe://")
        await _port_open(SERVER_POD, PORT)
        await _port_open(CLIENT_POD, OUTBOUND)
        with _http_proxy(f"http://{CLIENT_POD}:{OUTBOUND}", [BACKEND]):
            _checked(await load(TWO_HOPS, rate=100, requests=50), "warm-up through mTLS")
            for rate in (200, 500):
                label = f"two sidecars with mTLS vs direct, {rate} rps x {duration:g} s"
                direct = _checked(await load(DIRECT, rate=rate, duration=duration), f"direct at {rate}/s")
                try:
                    two = _checked(await load(TWO_HOPS, rate=rate, duration=duration), f"mTLS at {rate}/s")
                except RuntimeError as err:  # more than the sidecars can serve: say so, keep the other rows
                    rows.append((f"{label}: added p90", "overloaded", f"p90 <= {P90_TARGET_MS} ms", "MISS"))
                    rows.append((f"  {err}"[:110], "", "report", ""))
                    continue
                rows += _added_rows(label, two, direct, target=True)
        handshakes = await _admin_until(SERVER_POD, "/stats", "listener.ssl.handshake: ")
        count = handshakes.split("listener.ssl.handshake: ", 1)[1].split()[0]
        rows.append(("  mTLS handshakes the server sidecar accepted (keep-alive reuses them)", count, "report", ""))
    ads.set_state(state())
    return rows


async def _admin_until(ip: str, path: str, wanted: str, timeout: float = 30.0) -> str:
    """GET ``path`` from a sidecar's admin port until the answer contains ``wanted``; returns it."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get() -> str:
        try:
            with opener.open(f"http://{ip}:15000{path}", timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    deadline = time.monotonic() + timeout
    while wanted not in (text := await asyncio.to_thread(get)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ip}:15000{path} did not show {wanted!r} within {timeout:g} s: {text[:300]!r}")
        await asyncio.sleep(0.1)
    return text


# -- xDS convergence -------------------------------------------------------------------------------------------


async def _convergence(procs: Processes, counts: tuple[int, ...], changes: int) -> list[Row]:
    ads = AdsServer(state())
    grpc_server, xds_port = await serve(ads)
    rows: list[Row] = []
    ids: set[str] = set()
    started: list[subprocess.Popen[bytes]] = []
    try:
        for count in counts:
            for i in range(len(ids), count):
                ip = f"127.0.82.{i + 1}"
                started.append(procs.proxy(f"conv-{i}", ip, xds_port))
                ids.add(node_id(ip, f"conv-{i}", "default"))
            await _synced(ads, ids)
            times = [await _one_change(ads, ids, f"{count * 100 + k + 1}ms") for k in range(changes)]
            p50 = statistics.median(times)
            p99 = sorted(times)[max(0, int(len(times) * 0.99 + 0.5) - 1)]
            rows.append((f"xDS convergence, {count} proxies ({changes} VS changes): p50 / p99",
                         f"{p50:.1f} / {p99:.1f} ms", f"p99 <= {CONVERGENCE_TARGET_MS:.0f} ms",
                         "ok" if p99 <= CONVERGENCE_TARGET_MS else "MISS"))
    finally:
        procs.stop(started)
        await grpc_server.stop(None)
    return rows


async def _one_change(ads: AdsServer, ids: set[str], timeout: str) -> float:
    """Milliseconds from ``set_state`` (translation for every proxy included) to the last RDS ACK."""
    await asyncio.sleep(0.2)  # let the previous change settle
    start = time.monotonic()
    if not ads.set_state(state(timeout)):
        raise RuntimeError(f"a VirtualService timeout of {timeout} changed no proxy's configuration")
    wanted = {s.proxy_id: s.of(ROUTE).latest for s in ads.proxy_status() if s.proxy_id in ids}
    deadline = start + 10
    while True:
        acked = {s.proxy_id for s in ads.proxy_status()
                 if s.proxy_id in ids and s.of(ROUTE).acked == wanted[s.proxy_id]}
        if acked == ids:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids - acked)} proxies did not ACK RDS within 10 s")
        await asyncio.sleep(0.002)
    # Pilot's timeline holds the exact moment of each ACK; polling only confirmed that all arrived.
    last = max(e.at for e in ads.events if e.kind == "ack" and e.type_url == ROUTE and e.proxy_id in ids
               and e.at >= start and e.version == wanted[e.proxy_id])
    return (last - start) * 1000


# -- the run ---------------------------------------------------------------------------------------------------


async def _run(duration: float, throughput_seconds: float, changes: int, counts: tuple[int, ...],
               logs: Path) -> list[Row]:
    # Other work on the machine shows up as latency here: say how busy it was.
    rows: list[Row] = [("load average (1 min) at start, on this many CPUs",
                        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()}", "report", "")]
    procs = Processes(logs)
    ads = AdsServer(state())
    grpc_server, xds_port = await serve(ads)
    haproxy, note = await asyncio.to_thread(_ensure_haproxy)
    try:
        backend = procs.start("echo", [*_meshlab(), "app", "echo", "--host", BACKEND, "--port", str(PORT)])
        server = procs.proxy("echo-server", SERVER_POD, xds_port, app=f"{BACKEND}:{PORT}")
        client = procs.proxy("sleep", CLIENT_POD, xds_port)
        haproxy_url = None
        if haproxy:
            config = logs / "haproxy.cfg"
            config.write_text(HAPROXY_CONFIG)
            procs.start("haproxy", [haproxy, "-db", "-f", str(config)])
            await _port_open(HAPROXY, PORT)
            haproxy_url = f"http://{HAPROXY}:{PORT}/bench"
        await _port_open(BACKEND, PORT)
        await _synced(ads, {node_id(SERVER_POD, "echo-server", "default"), node_id(CLIENT_POD, "sleep", "default")})
        await _port_open(SERVER_POD, PORT)
        await _port_open(CLIENT_POD, OUTBOUND)
        rows += await _latency(duration, client.pid, server.pid, haproxy_url, note)
        rows += await _throughput(throughput_seconds, client.pid, backend.pid)
        procs.stop([client, server])
        rows += await _with_mtls(procs, ads, xds_port, duration, logs)
        procs.stop()
        await grpc_server.stop(None)
        rows += await _convergence(procs, counts, changes)
    finally:
        procs.stop()
        await grpc_server.stop(None)
    return rows


def bench_mesh(duration: float = 10.0, *, throughput_seconds: float = 5.0, changes: int = 10,
               counts: tuple[int, ...] = (10, 50)) -> list[Row]:
    """Run every mesh measurement once; rows as ``python -m benchmarks`` prints them."""
    logs = Path(tempfile.mkdtemp(prefix="meshlab-bench-mesh-"))
    try:
        rows = asyncio.run(_run(duration, throughput_seconds, changes, counts, logs))
    except Exception:
        print(f"mesh benchmark failed; process logs in {logs}", file=sys.stderr)
        raise
    shutil.rmtree(logs, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in bench_mesh(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0, throughput_seconds=2, changes=3):
        print(row)
