"""The sidecar's I/O shell: listeners from xDS, Envoy's per-request router steps, and the admin listener.

One :class:`Sidecar` serves what the current :class:`ProxyConfig` says (envoyproxy.io/docs/envoy/latest/intro/
life_of_a_request): the ``virtualOutbound`` listener on ``<pod IP>:15001``, which applications reach through
``HTTP_PROXY`` with absolute-form targets (RFC 9112 §3.2.2), routed by RDS ``outbound``; one inbound listener
per ``virtualInbound`` filter chain on ``<pod IP>:<port>``, routed by ``inbound|<port>`` to the application;
and the admin listener (15000). Per request it does what Envoy's connection manager, fault filter and router
do, in that order: give the request an ``x-request-id``, pick a route (404 ``NR``) and a cluster (503 ``NC``),
apply the fault (delay, then abort), fire the mirrors (copies whose answers are dropped), then attempt —
circuit breaker, load balancer minus ejected hosts, the call bounded by the per-try and route timeouts —
feeding each result to outlier detection and the retry state until the retry state says stop. The response
gets ``x-envoy-upstream-service-time`` and ``server: envoy`` (Envoy's default ``server_name``, which Istio's
sidecar listeners keep; only Istio's gateways say ``istio-envoy``), and one access-log line goes to stdout.
When Pilot goes away nothing changes here: the ADS client keeps the last good config. Inbound ports with
filter chains go through :mod:`inbound_security` first (TLS sniffing, mTLS, RBAC); upstream connections to
``tlsMode: istio`` endpoints are mTLS (:mod:`upstream`); both use :attr:`Sidecar.tls`, the workload
certificate's contexts, rebuilt on every rotation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2

from meshlab.mesh.proxy import admin, http1, inbound, probes
from meshlab.mesh.proxy.accesslog import AccessRecord, ensure_request_id, format_line
from meshlab.mesh.proxy.config import ProxyConfig, Route
from meshlab.mesh.proxy.inbound_security import InboundSecurity, _Downstream, _Listener
from meshlab.mesh.proxy.policies import (
    LocalReply,
    ResponseFlag,
    attempt_timeout,
    cluster_not_found_reply,
    connect_failure_reply,
    decide_fault,
    decide_mirrors,
    fault_abort_reply,
    no_healthy_upstream_reply,
    no_route_reply,
    overflow_reply,
    reset_reply,
    shadow_authority,
    timeout_reply,
    upstream_service_time_header,
)
from meshlab.mesh.proxy.retrying import Outcome, RetryState
from meshlab.mesh.proxy.routing import RequestHead, route_request
from meshlab.mesh.proxy.tls import WorkloadTls, describe
from meshlab.mesh.proxy.upstream import AttemptResult, ClusterState
from meshlab.mesh.xds import resources as xds

if TYPE_CHECKING:
    from meshlab.mesh.proxy.mixer_plugin import MixerPlugin
    from meshlab.mesh.proxy.stats_plugin import StatsPlugin

log = logging.getLogger(__name__)

ADMIN_PORT = 15000
#: Envoy's default ``server_name``; the sidecar overwrites the application's ``server`` header with it.
SERVER_NAME = "envoy"
#: A mirror's copy gives up after this long when its route has no timeout (Envoy shadows use the route timeout).
SHADOW_TIMEOUT = 30.0
#: Request records kept for readers in the process (telemetry): the most recent ones.
RECORDS_KEPT = 1000


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Settings:
    pod_ip: str
    admin_address: str = "127.0.0.1"
    admin_port: int = ADMIN_PORT
    header_timeout: float = 10.0  # request_headers_timeout: the whole head must arrive within this
    idle_timeout: float = 300.0  # a keep-alive connection without a request for this long is closed
    drain_time: float = 5.0  # how long /quitquitquit and stop() wait for requests in flight
    require_certificate: bool = False  # the mesh has a CA: not ready before the first workload certificate
    #: Rewritten kubelet probes (ISTIO_KUBE_APP_PROBERS) served on the status port 15020, and the app's host.
    app_probers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    app_host: str = ""


@dataclass
class Sidecar(InboundSecurity):
    """The running proxy. :meth:`apply` takes each accepted config; :meth:`start`/:meth:`stop` run it."""

    settings: Settings
    log_line: Callable[[str], None] = _stdout
    draw: Callable[[int], int] = random.randrange
    config: ProxyConfig = field(default_factory=ProxyConfig)
    resources: Mapping[str, list[any_pb2.Any]] = field(default_factory=dict)
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # no new requests from now on
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # drained and closed
    _listeners: dict[int, _Listener] = field(default_factory=dict)
    _admin: asyncio.Server | None = None
    _status: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _in_flight: int = 0
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)
    _reconcile_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tls: WorkloadTls = field(default_factory=WorkloadTls)  # the workload certificate's contexts (none: no CA)
    records: deque[AccessRecord] = field(default_factory=lambda: deque(maxlen=RECORDS_KEPT))
    on_record: list[Callable[[AccessRecord], None]] = field(default_factory=list)
    telemetry: StatsPlugin | None = None  # peer metadata, istio_* metrics, spans (set by main)
    mixer: MixerPlugin | None = None  # classic profile: Mixer Check before forwarding, Report after (set by main)

    # ---- configuration -------------------------------------------------------------------------------------

    def apply(self, config: ProxyConfig, resources: Mapping[str, list[any_pb2.Any]] | None = None) -> None:
        """Take a newly accepted config: cluster state now, listeners in the background (binding is async)."""
        self.config = config
        if resources is not None:
            self.resources = resources
        for name in [n for n in self.clusters if n not in config.clusters]:
            self.clusters.pop(name).close()
        for name, policy in config.clusters.items():
            endpoints = config.endpoints_of(name)
            state = self.clusters.get(name)
            if state is not None and state.policy == policy:
                if state.endpoints != endpoints:
                    state.set_endpoints(endpoints)
                continue
            if state is not None:
                state.close()
            self.clusters[name] = ClusterState(policy, endpoints, draw=self.draw, client_tls=self._client_tls)
        self._spawn(self._reconcile_listeners())

    def _wanted_listeners(self) -> dict[int, _Listener]:
        wanted: dict[int, _Listener] = {}
        outbound = self.config.listeners.get(xds.OUTBOUND_LISTENER)
        if outbound is not None:
            wanted[outbound.port] = _Listener(outbound.name, outbound.route_config_name, outbound.fault_filter)
        virtual_inbound = self.config.listeners.get(xds.INBOUND_LISTENER)
        if virtual_inbound is not None:
            ports = sorted({c.destination_port for c in virtual_inbound.chains if c.destination_port})
            for port in ports:
                chains = virtual_inbound.chains_for(port)
                wanted[port] = _Listener(f"{virtual_inbound.name}|{port}", chains[0].route_config_name,
                                         chains[0].fault_filter, chains=chains, port=port)
            if not ports and virtual_inbound.route_config_name.startswith("inbound|"):
                port = int(virtual_inbound.route_config_name.split("|")[1])
                wanted[port] = _Listener(f"{virtual_inbound.name}|{port}", virtual_inbound.route_config_name,
                                         virtual_inbound.fault_filter, port=port)
        return wanted

    def _client_tls(self) -> ssl.SSLContext | None:
        return self.tls.client

    async def _reconcile_listeners(self) -> None:
        async with self._reconcile_lock:
            if self.stopping.is_set():
                return
            wanted = self._wanted_listeners()
            for port in [p for p in self._listeners if p not in wanted]:
                old = self._listeners.pop(port)
                if old.server is not None:
                    old.server.close()
            for port, listener in wanted.items():
                current = self._listeners.get(port)
                if current is not None:
                    current.route_name, current.fault_filter = listener.route_name, listener.fault_filter
                    current.chains = listener.chains  # new connections take the new chains (TLS mode, RBAC)
                    continue
                try:
                    listener.server = await self._listen(self.settings.pod_ip, port, listener)
                except OSError as err:
                    log.error("cannot listen on %s:%d for %s: %s", self.settings.pod_ip, port, listener.name, err)
                    self.stats["listener_manager.listener_create_failure"] += 1
                    continue
                self._listeners[port] = listener

    @property
    def ready(self) -> bool:
        """Envoy's /ready: LIVE once listeners and their routes have been applied."""
        certified = self.tls.certificate is not None or not self.settings.require_certificate
        return bool(self.config.versions.get(xds.LISTENER)) and bool(self.config.versions.get(xds.ROUTE)) and certified

    @property
    def listening_ports(self) -> list[int]:
        return sorted(p for p, lst in self._listeners.items() if lst.server is not None)

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        async def admin_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_connection(reader, writer, None)

        self._admin = await asyncio.start_server(admin_connection, self.settings.admin_address,
                                                 self.settings.admin_port, limit=http1.MAX_HEAD + 1024)
        if self.settings.app_probers:
            self._status = await probes.serve_status(self.settings.pod_ip, self.settings.app_probers,
                                                     self.settings.app_host or self.settings.pod_ip,
                                                     lambda: self.ready)
        self._spawn(self._sweep_outliers())

    async def stop(self) -> None:
        """Graceful exit: stop accepting, let requests in flight finish (up to ``drain_time``), close."""
        if self.stopping.is_set():
            await self.stopped.wait()
            return
        self.stopping.set()
        servers = [lst.server for lst in self._listeners.values() if lst.server is not None]
        if self._admin is not None:
            servers.append(self._admin)
        if self._status is not None:
            servers.append(self._status)
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.settings.drain_time
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for writer in list(self._connections):
            writer.close()  # idle keep-alive connections; the busy ones finished (or ran out of drain time)
        for state in self.clusters.values():
            state.close()
        self.stopped.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_outliers(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for state in self.clusters.values():
                state.sweep(now)

    async def _listen(self, host: str, port: int, listener: _Listener) -> asyncio.Server | inbound.InboundServer:
        if listener.chains:
            async def accepted(sock: socket.socket) -> None:
                await self._serve_inbound(sock, listener)

            return await inbound.InboundServer.listen(host, port, accepted)

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_connection(reader, writer, listener)

        return await asyncio.start_server(connection, host, port, limit=http1.MAX_HEAD + 1024)

    # ---- downstream connections ----------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                listener: _Listener | None, *, mtls: bool = False, principal: str = "") -> None:
        local, remote = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        downstream = _Downstream(f"{local[0]}:{local[1]}", f"{remote[0]}:{remote[1]}", mtls, principal)
        self.stats["downstream_cx_total"] += 1
        self._connections.add(writer)
        try:
            while not self.stopping.is_set():
                try:
                    request = await http1.read_request(reader, writer, idle_timeout=self.settings.idle_timeout,
                                                       header_timeout=self.settings.header_timeout)
                except http1.HttpError as err:
                    self.stats[f"downstream_rq_{err.status}"] += 1
                    writer.write(http1.error_response(err.status, str(err)))
                    await writer.drain()
                    break
                if request is None:
                    break
                self._in_flight += 1
                drain = False
                try:
                    if listener is None:
                        response = await self._admin_request(request)
                    else:
                        listener, drain = self._current_chain(listener)
                        response = await self._proxy(listener, request, downstream)
                finally:
                    self._in_flight -= 1
                keep = request.keep_alive and not self.stopping.is_set() and not drain
                if not keep:
                    response.headers.append(("connection", "close"))
                writer.write(http1.encode_response(response, method=request.method))
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            self.stats["downstream_cx_destroy_remote"] += 1  # the client reset or vanished: only this connection
        finally:
            self._connections.discard(writer)
            writer.close()

    # ---- the router ----------------------------------------------------------------------------------------

    async def _proxy(self, listener: _Listener, request: http1.Request, downstream: _Downstream) -> http1.Response:
        start, started_at = time.monotonic(), datetime.now(UTC)
        authority, path = http1.split_target(request.target)
        authority = authority if authority is not None else request.header("host") or ""
        headers = [(k, v) for k, v in http1.forwardable(request.headers) if k.lower() != "host"]
        headers_t, request_id = ensure_request_id(headers)
        headers = list(headers_t)
        exchange = None
        if self.telemetry is not None:
            headers, exchange = self.telemetry.on_request(headers, inbound=listener.name != xds.OUTBOUND_LISTENER)
        record = AccessRecord(started_at, request.method, path, request.version, bytes_received=len(request.body),
                              x_forwarded_for=request.header("x-forwarded-for"),
                              user_agent=request.header("user-agent"),
                              request_id=request_id, authority=authority, downstream_local_address=downstream.local,
                              downstream_remote_address=downstream.remote, mtls=downstream.mtls,
                              peer_principal=downstream.principal or None)
        denied = self._authorize(listener, request.method, path, authority, headers, downstream)
        inbound = listener.name != xds.OUTBOUND_LISTENER
        if denied is None and self.mixer is not None:
            denied = await self.mixer.check(inbound, request, path, authority, downstream.mtls, downstream.principal)
        if denied is not None:
            response, record = denied[0], replace(record, response_code_details=denied[1])
        else:
            response, record = await self._route(listener, request, path, authority, headers, record)
        response.headers = [(k, v) for k, v in response.headers if k.lower() != "server"]
        response.headers.append(("server", SERVER_NAME))
        self.stats["downstream_rq_total"] += 1
        self.stats[f"downstream_rq_{response.status // 100}xx"] += 1
        record = replace(record, response_code=response.status, bytes_sent=len(response.body),
                         duration=time.monotonic() - start)
        if self.mixer is not None:  # before the peer's metadata headers are stripped: Mixer wants the callee
            self.mixer.report(inbound, request, path, authority, response.headers, record)
        if self.telemetry is not None and exchange is not None:
            response.headers = self.telemetry.on_response(exchange, record, response.headers)
        self.log_line(format_line(record))
        self.records.append(record)
        for callback in self.on_record:
            callback(record)
        return response

    async def _route(self, listener: _Listener, request: http1.Request, path: str, authority: str,
                     headers: http1.Headers, record: AccessRecord) -> tuple[http1.Response, AccessRecord]:
        table = self.config.route_tables.get(listener.route_name)
        head = RequestHead(request.method, path, authority, tuple(headers))
        decision = route_request(table, head, draw=self.draw) if table is not None else None
        if decision is None:
            return _local(no_route_reply()), _flagged(record, no_route_reply())
        route = decision.route
        record = replace(record, route_name=route.name or None, upstream_cluster=decision.cluster)
        cluster = self.clusters.get(decision.cluster)
        if cluster is None:
            return _local(cluster_not_found_reply()), _flagged(record, cluster_not_found_reply())
        fault = decide_fault(route.fault, self.draw) if listener.fault_filter else None
        flags: set[ResponseFlag] = set(fault.flags) if fault is not None else set()
        if fault is not None and fault.delay is not None:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.abort_status is not None:
            reply = fault_abort_reply(fault.abort_status)
            return _local(reply), replace(_flagged(record, reply), response_flags=frozenset(flags))
        upstream_headers = [*headers, ("host", authority), ("x-forwarded-proto", "http")]
        for mirror in decide_mirrors(route, self.draw):
            shadow = [*headers, ("host", shadow_authority(authority)), ("x-forwarded-proto", "http")]
            self._spawn(self._shadow(mirror, route, request.method, path, shadow, request.body))
        return await self._attempts(route, cluster, request, path, upstream_headers, record, flags)

    async def _attempts(self, route: Route, cluster: ClusterState, request: http1.Request, path: str,
                        headers: http1.Headers, record: AccessRecord,
                        flags: set[ResponseFlag]) -> tuple[http1.Response, AccessRecord]:
        retry = RetryState(route.retry, draw=self.draw)
        router_start = time.monotonic()
        result: AttemptResult | None = None
        reply: LocalReply | None = None
        held_retries = 0
        try:
            while True:
                timeout = attempt_timeout(route, time.monotonic() - router_start)
                if timeout is not None and timeout <= 0:
                    reply = timeout_reply()
                    break
                endpoint = cluster.pick()
                if endpoint is None:
                    cluster.stats["upstream_cx_none_healthy"] += 1
                    reply = no_healthy_upstream_reply()
                    break
                per_try = route.retry.per_try_timeout if route.retry is not None else None
                per_try_bound = per_try is not None and timeout is not None and per_try <= timeout
                result = await cluster.attempt(endpoint, request.method, path, headers, request.body, timeout)
                outcome = result.attempt.outcome
                if outcome is Outcome.OVERFLOW:
                    reply = overflow_reply()
                    break
                if outcome is Outcome.PER_TRY_TIMEOUT and not per_try_bound:
                    reply = timeout_reply()  # the route's own timeout fired: never retried
                    break
                step = retry.after(result.attempt, acquire_retry=cluster.breaker.try_acquire_retry)
                if step.flag is not None:
                    flags.add(step.flag)
                    if step.flag is ResponseFlag.UO:
                        cluster.stats["upstream_rq_retry_overflow"] += 1
                if not step.retry:
                    break
                held_retries += 1
                cluster.stats["upstream_rq_retry"] += 1
                await asyncio.sleep(step.wait)
        finally:
            for _ in range(held_retries):
                cluster.breaker.release_retry()
        service_time = time.monotonic() - router_start
        if result is not None:
            record = replace(record, upstream_host=result.host, upstream_local_address=result.local_address,
                             upstream_mtls=result.mtls)
        if reply is None and result is not None and result.response is None:
            outcome = result.attempt.outcome
            reply = {Outcome.CONNECT_FAILURE: connect_failure_reply, Outcome.PER_TRY_TIMEOUT: timeout_reply}.get(
                outcome, reset_reply)()
        if reply is not None:
            return _local(reply), replace(_flagged(record, reply), response_flags=frozenset(flags | reply.flags))
        assert result is not None and result.response is not None
        upstream = result.response
        response = http1.Response(upstream.status, http1.forwardable(upstream.headers), upstream.body,
                                  reason=upstream.reason)
        response.headers.append(upstream_service_time_header(service_time))
        record = replace(record, response_flags=frozenset(flags), upstream_service_time=service_time,
                         response_code_details="via_upstream")
        return response, record

    async def _shadow(self, cluster_name: str, route: Route, method: str, path: str, headers: http1.Headers,
                      body: bytes) -> None:
        """A mirror copy: one attempt, its answer dropped (Envoy's shadow requests are fire-and-forget)."""
        cluster = self.clusters.get(cluster_name)
        endpoint = cluster.pick() if cluster is not None else None
        if cluster is None or endpoint is None:
            self.stats["shadow_rq_dropped"] += 1
            return
        cluster.stats["upstream_rq_shadow"] += 1
        await cluster.attempt(endpoint, method, path, headers, body, route.timeout or SHADOW_TIMEOUT)

    # ---- admin ---------------------------------------------------------------------------------------------

    async def _admin_request(self, request: http1.Request) -> http1.Response:
        path, _, query = http1.split_target(request.target)[1].partition("?")
        text = "text/plain; charset=UTF-8"
        if path == "/ready":
            return _text(200, "LIVE\n") if self.ready else _text(503, "PRE_INITIALIZING\n")
        if path == "/config_dump":
            return _text(200, admin.config_dump(self.resources, self.config.versions, self.tls.certificate),
                         "application/json")
        if path == "/certs":
            return _text(200, json.dumps(describe(self.tls.certificate), indent=2), "application/json")
        if path == "/clusters":
            return _text(200, admin.clusters_page(self._cluster_views()), text)
        if path == "/stats":
            as_json = "format=json" in query
            return _text(200, admin.stats_page(self.all_stats(), as_json=as_json),
                         "application/json" if as_json else text)
        if path == "/stats/prometheus":  # also on the pod IP's port 15090 (stats_plugin), as istio-proxy does
            from meshlab.mesh.proxy.metrics import render_counters

            counters = self.all_stats()
            return _text(200, self.telemetry.prometheus_text(counters) if self.telemetry is not None
                         else render_counters(counters))
        if path == "/quitquitquit":
            if request.method != "POST":
                return _text(405, "This endpoint requires POST\n")
            self._spawn(self.stop())
            return _text(200, "OK\n")
        return _text(404, "invalid path; try /config_dump /certs /clusters /stats /ready /quitquitquit\n")

    def all_stats(self) -> dict[str, int]:
        counters = {f"http.{k}" if k.startswith("downstream_rq") else k: v for k, v in self.stats.items()}
        for name, state in self.clusters.items():
            counters.update(admin.stat_names(f"cluster.{name}", state.stats))
            counters[f"cluster.{name}.membership_total"] = len(state.endpoints)
            counters[f"cluster.{name}.outlier_detection.ejections_active"] = (
                len(state.outlier.ejected) if state.outlier is not None else 0)
        return counters

    def _cluster_views(self) -> list[tuple[str, Mapping[str, int], list[admin.HostView]]]:
        views: list[tuple[str, Mapping[str, int], list[admin.HostView]]] = []
        for name, state in sorted(self.clusters.items()):
            ejected = state.outlier.ejected if state.outlier is not None else frozenset()
            hosts = [admin.HostView(e.host, e.healthy, e.host in ejected, state.active.get(e.host, 0),
                                    state.host_stats.get(e.host, Counter())) for e in state.endpoints]
            views.append((name, state.stats, hosts))
        return views


def _local(reply: LocalReply) -> http1.Response:
    headers = [("content-type", "text/plain"), ("date", formatdate(usegmt=True)), *reply.headers]
    return http1.Response(reply.status, headers, reply.body.encode())


def _flagged(record: AccessRecord, reply: LocalReply) -> AccessRecord:
    return replace(record, response_flags=reply.flags, response_code_details=reply.details)


def _text(status: int, body: str, content_type: str = "text/plain; charset=UTF-8") -> http1.Response:
    return http1.Response(status, [("content-type", content_type)], body.encode())
