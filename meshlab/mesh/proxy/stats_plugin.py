"""The sidecar's per-request telemetry: peer metadata exchange, Istio metrics, a span per hop, and port 15090.

What Istio's ``istio.metadata_exchange`` + ``istio.stats`` filters and Envoy's Zipkin tracer do, in the order
a request meets them. Request: the client sidecar (outbound listener) adds its peer metadata
(:mod:`peer_metadata`); the server sidecar (inbound listener) takes the caller's off; each opens a span —
child of the context the request carries, else the root of a new trace (:mod:`tracing`) — and writes it into
the forwarded headers. Response: the server sidecar adds its metadata, the client sidecar takes it off and now
knows the destination workload; both record one ``istio_*`` sample (only while Pilot's listeners carry the
``istio.stats`` filter: the ``classic`` profile leaves metrics to Mixer) and hand the finished span to the
reporter. Labels follow Istio: ``connection_security_policy`` is ``mutual_tls``/``none`` at the destination,
``unknown`` at the source ("cannot be properly populated" there, istio.io's metrics reference).
:func:`serve_prometheus` answers ``GET /stats/prometheus`` on the pod IP's port 15090, as istio-proxy does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

from aiohttp import web

from meshlab.mesh.proxy import peer_metadata, tracing
from meshlab.mesh.proxy.accesslog import AccessRecord
from meshlab.mesh.proxy.config import ProxyConfig
from meshlab.mesh.proxy.metrics import IstioLabels, IstioMetrics, render_counters
from meshlab.mesh.proxy.peer_metadata import UNKNOWN, PeerMetadata
from meshlab.mesh.proxy.policies import format_flags
from meshlab.mesh.proxy.tracing_reporter import DEFAULT_ADDRESS, SpanReporter

if TYPE_CHECKING:
    from meshlab.mesh.proxy.server import Sidecar
    from meshlab.mesh.xds.node import ProxyIdentity

log = logging.getLogger(__name__)
PROMETHEUS_PORT = 15090
Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Exchange:
    """One request's telemetry state between its arrival and its response."""

    inbound: bool
    span: tracing.SpanContext
    caller: PeerMetadata | None = None  # inbound: who called (from the request)


def service_fqdn(authority: str, namespace: str) -> tuple[str, int]:
    """The Service FQDN and port a Host header means, as the pod's DNS search path would expand it."""
    host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
    number = int(port) if port.isdigit() else 80
    parts = host.split(".")
    if not host or host.replace(".", "").isdigit():
        return host or UNKNOWN, number
    if len(parts) == 1:
        host = f"{host}.{namespace}.svc.cluster.local"
    elif len(parts) == 2:
        host = f"{host}.svc.cluster.local"
    elif len(parts) == 3 and parts[2] == "svc":
        host = f"{host}.cluster.local"
    return host, number


def _cluster_service(cluster: str | None) -> tuple[str, int] | None:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` → (FQDN, 9080)."""
    parts = (cluster or "").split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[1].isdigit():
        return parts[3], int(parts[1])
    return None


class StatsPlugin:
    """Telemetry for one sidecar; :meth:`on_request` and :meth:`on_response` are called by its router."""

    def __init__(self, me: PeerMetadata, *, trust_domain: str = peer_metadata.DEFAULT_TRUST_DOMAIN,
                 config: Callable[[], ProxyConfig] = ProxyConfig, reporter: SpanReporter | None = None,
                 pod_ip: str = "", new_id: tracing.IdSource = tracing.random_id) -> None:
        self.me, self.trust_domain, self.reporter, self.pod_ip = me, trust_domain, reporter, pod_ip
        self.metrics = IstioMetrics()
        self._config, self._new_id = config, new_id
        self._checked: tuple[int, bool] = (0, False)

    @property
    def stats_enabled(self) -> bool:
        """Whether Pilot's listeners carry ``istio.stats`` (the ``modern`` profile)."""
        config = self._config()
        if self._checked[0] != id(config):
            enabled = any(chain.stats is not None for listener in config.listeners.values()
                          for chain in listener.chains)
            self._checked = (id(config), enabled)
        return self._checked[1]

    def on_request(self, headers: Headers, *, inbound: bool) -> tuple[Headers, Exchange]:
        """The headers to forward and the request's telemetry state."""
        caller = peer_metadata.decode(headers) if inbound else None
        headers = peer_metadata.strip(headers)
        if not inbound:
            headers += peer_metadata.encode(self.me)
        span = tracing.start_span(tracing.extract(headers), new_id=self._new_id)
        return tracing.inject(headers, span), Exchange(inbound, span, caller)

    def on_response(self, exchange: Exchange, record: AccessRecord, headers: Headers) -> Headers:
        """The response headers to send back; records the metric sample and reports the span."""
        callee = None if exchange.inbound else peer_metadata.decode(headers)
        headers = peer_metadata.strip(headers)
        if exchange.inbound:
            headers += peer_metadata.encode(self.me)
        labels = self.labels(exchange, record, callee)
        if self.stats_enabled:
            self.metrics.record(labels, duration_ms=record.duration * 1000, request_bytes=record.bytes_received,
                                response_bytes=record.bytes_sent)
        if self.reporter is not None:
            self.reporter.submit(self.span(exchange, record, labels))
        return headers

    def labels(self, exchange: Exchange, record: AccessRecord, callee: PeerMetadata | None) -> IstioLabels:
        namespace = self.me.namespace
        service, _ = _cluster_service(record.upstream_cluster) or service_fqdn(record.authority or "", namespace)
        if exchange.inbound:
            source, destination = exchange.caller or PeerMetadata(), self.me
            source_principal = record.peer_principal or UNKNOWN if record.mtls else UNKNOWN
            destination_principal = self.me.principal(self.trust_domain) if record.mtls else UNKNOWN
            security = "mutual_tls" if record.mtls else "none"
        else:
            source, destination = self.me, callee or PeerMetadata()
            source_principal = self.me.principal(self.trust_domain) if record.upstream_mtls else UNKNOWN
            destination_principal = (destination.principal(self.trust_domain) if record.upstream_mtls and callee
                                     else UNKNOWN)
            security = UNKNOWN
        service_name, _, service_namespace = service.partition(".")
        return IstioLabels(
            reporter="destination" if exchange.inbound else "source",
            source_workload=source.workload, source_workload_namespace=source.namespace,
            source_principal=source_principal, source_app=source.app, source_version=source.version,
            destination_workload=destination.workload, destination_workload_namespace=destination.namespace,
            destination_principal=destination_principal, destination_app=destination.app,
            destination_version=destination.version, destination_service=service,
            destination_service_name=service_name or UNKNOWN,
            destination_service_namespace=service_namespace.partition(".")[0] or UNKNOWN,
            request_protocol="http", response_code=str(record.response_code),
            response_flags=format_flags(record.response_flags), connection_security_policy=security)

    def span(self, exchange: Exchange, record: AccessRecord, labels: IstioLabels) -> tracing.Span:
        """The finished span of this hop, named as Istio's are (``<service FQDN>:<port>/*``)."""
        service, port = (_cluster_service(record.upstream_cluster)
                         or service_fqdn(record.authority or "", self.me.namespace))
        tags = {
            "http.method": record.method, "http.url": f"http://{record.authority or ''}{record.path}",
            "http.protocol": record.protocol, "http.status_code": str(record.response_code),
            "response_flags": labels.response_flags, "upstream_cluster": record.upstream_cluster or "-",
            "node_id": self.me.node_id, "istio.namespace": self.me.namespace,
            "istio.canonical_service": self.me.app if self.me.app != UNKNOWN else self.me.workload,
            "peer.address": record.downstream_remote_address or "", "component": "proxy",
            tracing.REQUEST_ID_TAG: record.request_id or "",
        }
        if record.response_code >= 500 or record.response_code == 0:
            tags["error"] = "true"
        start = record.start_time.astimezone(UTC)
        name = self.me.app if self.me.app != UNKNOWN else self.me.workload
        return tracing.Span(
            context=exchange.span, name=f"{service}:{port}/*", kind="SERVER" if exchange.inbound else "CLIENT",
            timestamp_us=int(start.timestamp() * 1_000_000), duration_us=int(record.duration * 1_000_000),
            local=tracing.Endpoint(f"{name}.{self.me.namespace}", self.pod_ip),
            remote=None if exchange.inbound or not record.upstream_host
            else tracing.Endpoint(labels.destination_service_name or UNKNOWN,
                                  record.upstream_host.rpartition(":")[0]),
            tags=tags)

    def prometheus_text(self, counters: dict[str, int]) -> str:
        """Port 15090's page: the ``istio_*`` metrics (modern profile), then the proxy's own counters."""
        extra = dict(self.reporter.stats) if self.reporter is not None else {}
        istio = self.metrics.render() if self.stats_enabled or self.metrics.requests() else ""
        return istio + render_counters({**counters, **extra})


async def serve_prometheus(host: str, render: Callable[[], str], *, port: int = PROMETHEUS_PORT) -> web.AppRunner:
    """``GET /stats/prometheus`` on ``host:port``; the caller cleans the returned runner up."""
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=render(), content_type="text/plain", charset="utf-8",
                            headers={"x-prometheus-format": "0.0.4"})

    app = web.Application()
    app.router.add_get("/stats/prometheus", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await asyncio.sleep(0)
    return runner


async def start_telemetry(sidecar: Sidecar, identity: ProxyIdentity, env: Mapping[str, str],
                          resolve: Callable[[str], str]) -> Callable[[], Awaitable[None]]:
    """Give ``sidecar`` its telemetry (peer metadata, metrics, spans to ``$ZIPKIN_ADDRESS`` or Istio's default
    collector) and serve port 15090; returns the coroutine function that stops both."""
    reporter = SpanReporter(env.get("ZIPKIN_ADDRESS") or DEFAULT_ADDRESS,
                            resolve=lambda address: asyncio.to_thread(resolve, address))
    plugin = StatsPlugin(peer_metadata.of_identity(identity),
                         trust_domain=env.get("TRUST_DOMAIN") or peer_metadata.DEFAULT_TRUST_DOMAIN,
                         config=lambda: sidecar.config, reporter=reporter, pod_ip=identity.ip)
    sidecar.telemetry = plugin
    reporter.start()
    runner: web.AppRunner | None = None
    try:
        runner = await serve_prometheus(identity.ip, lambda: plugin.prometheus_text(sidecar.all_stats()))
    except OSError as err:
        log.error("cannot serve /stats/prometheus on %s:%d: %s", identity.ip, PROMETHEUS_PORT, err)

    async def stop() -> None:
        await reporter.stop()
        if runner is not None:
            await runner.cleanup()

    return stop
