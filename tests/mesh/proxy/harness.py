"""A small mesh on loopback for the sidecar's tests: Pilot's real ADS server, sidecars, and aiohttp backends.

Addresses live in 127.0.71.x (sidecars, whose listeners use the fixed ports 15000/15001 and service ports)
and 127.0.72.x (applications), so they do not collide with other suites' 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from meshlab.mesh.pilot.ads import AdsServer, serve
from meshlab.mesh.pilot.model import DestinationRule, Endpoint, MeshState, Service, ServicePort, VirtualService
from meshlab.mesh.pilot.sync import Sync
from meshlab.mesh.proxy.admin import RecordingSession
from meshlab.mesh.proxy.server import Settings, Sidecar
from meshlab.mesh.proxy.xds_client import AdsClient
from meshlab.mesh.xds.node import ProxyIdentity

REVIEWS = "reviews.default.svc.cluster.local"
CLIENT_IP = "127.0.71.1"
PORT = 9080


@dataclass
class Backend:
    """An application pod: answers JSON naming itself and echoing the request's headers."""

    name: str
    ip: str
    port: int = PORT
    fail_rate: float = 0.0  # share of requests answered 503
    delay: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    seen: list[dict[str, str]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_rate and self.rng.random() < self.fail_rate:
            return web.Response(status=503, text="injected failure")
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = {"name": self.name, "path": request.path_qs, "headers": headers}
        return web.Response(text=json.dumps(body), content_type="application/json", headers={"server": "aiohttp"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.ip, self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def reviews_state(*, versions: dict[str, str], virtual_services: tuple[VirtualService, ...] = (),
                  traffic_policy: dict[str, Any] | None = None) -> MeshState:
    """``reviews`` with one endpoint per version (``{"v1": "127.0.72.1"}``) and a DestinationRule of subsets."""
    spec: dict[str, Any] = {"host": "reviews", "subsets": [{"name": v, "labels": {"version": v}} for v in versions]}
    if traffic_policy:
        spec["trafficPolicy"] = traffic_policy
    endpoints = tuple(Endpoint(ip, {"http": PORT}, {"version": v}, True, f"reviews-{v}", "default")
                      for v, ip in versions.items())
    return MeshState((Service("reviews", "default", "10.96.0.20", (ServicePort("http", PORT),)),),
                     {("default", "reviews"): endpoints}, virtual_services,
                     (DestinationRule("reviews", "default", spec),))


def reviews_vs(*http: dict[str, Any]) -> VirtualService:
    return VirtualService("reviews", "default", {"hosts": ["reviews"], "http": list(http)})


def to(subset: str, weight: int | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"destination": {"host": "reviews", "subset": subset}}
    if weight is not None:
        destination["weight"] = weight
    return destination


@dataclass
class RunningProxy:
    sidecar: Sidecar
    client: AdsClient
    task: asyncio.Task[None]
    lines: list[str]

    async def stop(self) -> None:
        self.task.cancel()
        await self.sidecar.stop()


class Mesh:
    """Pilot plus sidecars plus backends; ``async with Mesh(state, backends) as mesh``."""

    def __init__(self, state: MeshState, backends: list[Backend], *, header_timeout: float = 10.0) -> None:
        self.ads = AdsServer(state)
        self.backends = {b.name: b for b in backends}
        self.header_timeout = header_timeout
        self.proxies: list[RunningProxy] = []
        self.grpc: Any = None
        self.pilot_port = 0

    async def __aenter__(self) -> Mesh:
        for backend in self.backends.values():
            await backend.start()
        self.grpc, self.pilot_port = await serve(self.ads)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proxy in self.proxies:
            await proxy.stop()
        if self.grpc is not None:
            await self.grpc.stop(None)
        for backend in self.backends.values():
            await backend.stop()

    async def sidecar(self, identity: ProxyIdentity, ports: tuple[int, ...] = (15001,)) -> RunningProxy:
        lines: list[str] = []
        sidecar = Sidecar(Settings(pod_ip=identity.ip, admin_address=identity.ip,
                                   header_timeout=self.header_timeout), log_line=lines.append)
        session = RecordingSession(identity.to_node())
        client = AdsClient(session, target=f"127.0.0.1:{self.pilot_port}",
                           on_config=lambda config: sidecar.apply(config, dict(session.resources)))
        await sidecar.start()
        proxy = RunningProxy(sidecar, client, asyncio.create_task(client.run()), lines)
        self.proxies.append(proxy)
        await self.synced(proxy, ports)
        return proxy

    async def client_proxy(self) -> RunningProxy:
        return await self.sidecar(ProxyIdentity(ip=CLIENT_IP, pod="sleep", namespace="default"))

    async def synced(self, proxy: RunningProxy, ports: tuple[int, ...] = (15001,), timeout: float = 5.0) -> None:
        """Wait until Pilot sees every type ACKed and the sidecar serves that config on ``ports``."""
        deadline = time.monotonic() + timeout
        node_id = proxy.client.session.node.id
        while time.monotonic() < deadline:
            status = next((s for s in self.ads.proxy_status() if s.proxy_id == node_id), None)
            if (status is not None and all(t.status is Sync.SYNCED for t in status.types)
                    and proxy.sidecar.config is proxy.client.session.config
                    and set(ports) <= set(proxy.sidecar.listening_ports)):
                await asyncio.sleep(0.02)  # listener reconciliation of the last update
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{node_id} did not sync: {self.ads.proxy_status()}")

    async def update(self, state: MeshState) -> None:
        self.ads.set_state(state)
        for proxy in self.proxies:
            await self.synced(proxy, ())


async def send(session: aiohttp.ClientSession, url: str, *, proxy: str = f"http://{CLIENT_IP}:15001",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    async with session.get(url, proxy=proxy, headers=headers or {}) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.text()


async def many(count: int, call: Callable[[], Awaitable[Any]], *, concurrency: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one() for _ in range(count))))
