"""The sidecar's Mixer client (classic profile): ``Check`` before forwarding, batched ``Report`` after.

As Istio's ``mixer`` filter did (istio/proxy ``src/envoy/http/mixer``, Istio 0.8-1.4), the sidecar describes each
request as an attribute bag: Pilot's ``mixer_attributes`` (who this workload is, which side reports), the
peer's workload from the peer metadata exchange headers (``x-envoy-peer-metadata``; Istio 1.x sent the
client's attributes to the server sidecar in ``x-istio-attributes`` instead), and the request's own
(``request.method``, ``request.path``, ``destination.service.host``, ``connection.mtls``, and once answered
``response.code``, ``response.duration``, sizes). The server's sidecar asks ``Check`` (with a ``requestcount``
quota of 1) and refuses the request when Mixer says so, the ``google.rpc.Code`` mapped to HTTP as Istio's
client did (``PERMISSION_DENIED`` → 403, ``RESOURCE_EXHAUSTED`` → 429, ...), with the body
``<CODE>:<message>``. When Mixer cannot be reached (transport error or deadline), ``network_fail_policy``
decides: ``FAIL_OPEN`` lets the request through, ``FAIL_CLOSE`` answers 503 ``UNAVAILABLE``. Both sides queue
a Report per request and send the batch every ``report_batch_max_time`` or at ``report_batch_max_entries``;
a batch Mixer does not take is dropped and counted (Istio's client dropped too). No Check cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from meshlab.mesh.mixer import mixer_pb2
from meshlab.mesh.mixer.core import REQUEST_COUNT, to_proto
from meshlab.mesh.proxy import http1, peer_metadata
from meshlab.mesh.proxy.accesslog import AccessRecord
from meshlab.mesh.proxy.config import ProxyConfig
from meshlab.mesh.proxy.mixer_decoding import MixerConfig
from meshlab.mesh.proxy.policies import format_flags
from meshlab.mesh.proxy.stats_plugin import service_fqdn
from meshlab.mesh.xds import resources as xds

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 1.0  # seconds; then Mixer counts as unreachable
REPORT_TIMEOUT = 2.0
#: google.rpc.Code -> HTTP status, as Istio's Mixer client mapped a failed precondition (utils/status.cc).
HTTP_STATUS = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
               12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
CODE_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
              6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
              10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
              15: "DATA_LOSS", 16: "UNAUTHENTICATED"}

Bag = dict[str, Any]


class Transport(Protocol):
    async def check(self, address: str, request: mixer_pb2.CheckRequest, timeout: float) -> mixer_pb2.CheckResponse:
        ...

    async def report(self, address: str, request: mixer_pb2.ReportRequest, timeout: float) -> None:
        ...


class GrpcTransport:
    """``istio.mixer.v1.Mixer`` over plaintext gRPC, one channel per Mixer address (re-resolved on failure)."""

    def __init__(self, resolve: Callable[[str], Awaitable[str]] | None = None) -> None:
        self._resolve = resolve
        self._channels: dict[str, Any] = {}

    async def _channel(self, address: str) -> Any:
        import grpc

        channel = self._channels.get(address)
        if channel is None:
            target = await self._resolve(address) if self._resolve is not None else address
            channel = self._channels[address] = grpc.aio.insecure_channel(
                target, options=[("grpc.enable_http_proxy", 0)])
        return channel

    async def _call(self, address: str, method: str, request: Any, response_type: Any, timeout: float) -> Any:
        channel = await self._channel(address)
        call = channel.unary_unary(method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_type.FromString)
        try:
            return await call(request, timeout=timeout)
        except Exception:
            # The Service may have moved (a new Mixer pod): resolve again next time.
            stale = self._channels.pop(address, None)
            if stale is not None:
                await stale.close()
            raise

    async def check(self, address: str, request: mixer_pb2.CheckRequest, timeout: float) -> mixer_pb2.CheckResponse:
        from meshlab.mesh.mixer.server import CHECK

        response: mixer_pb2.CheckResponse = await self._call(address, CHECK, request, mixer_pb2.CheckResponse, timeout)
        return response

    async def report(self, address: str, request: mixer_pb2.ReportRequest, timeout: float) -> None:
        from meshlab.mesh.mixer.server import REPORT

        await self._call(address, REPORT, request, mixer_pb2.ReportResponse, timeout)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _cluster_service(cluster: str | None) -> str | None:
    parts = (cluster or "").split("|")
    return parts[3] if len(parts) == 4 and parts[0] == "outbound" else None


def _service_attributes(host: str) -> Bag:
    name, _, rest = host.partition(".")
    return {"destination.service.host": host, "destination.service.name": name,
            "destination.service.namespace": rest.partition(".")[0] or "unknown"}


def _peer_attributes(peer: peer_metadata.PeerMetadata | None, side: str) -> Bag:
    if peer is None:
        return {}
    bag: Bag = {f"{side}.workload.name": peer.workload, f"{side}.workload.namespace": peer.namespace}
    if peer.pod:
        bag[f"{side}.uid"] = f"kubernetes://{peer.pod}.{peer.namespace}"
    bag.update({f"{side}.labels.{k}": v for k, v in peer.labels.items()})
    return bag


class MixerPlugin:
    """One sidecar's Mixer client; the router calls :meth:`check` and :meth:`report`."""

    def __init__(self, config: Callable[[], ProxyConfig], transport: Transport, *,
                 stats: Counter[str] | None = None, trust_domain: str = peer_metadata.DEFAULT_TRUST_DOMAIN) -> None:
        self._config, self.transport = config, transport
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.trust_domain = trust_domain
        self._cached: tuple[int, dict[bool, MixerConfig]] = (0, {})
        self._queue: list[tuple[str, Bag]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def settings(self, inbound: bool) -> MixerConfig | None:
        """The ``mixer`` filter of the inbound or outbound listeners (none: not the classic profile)."""
        config = self._config()
        if self._cached[0] != id(config):
            found: dict[bool, MixerConfig] = {}
            for name, listener in config.listeners.items():
                for chain in listener.chains:
                    if chain.mixer is not None:
                        found.setdefault(name != xds.OUTBOUND_LISTENER, chain.mixer)
            self._cached = (id(config), found)
        return self._cached[1].get(inbound)

    def _request_bag(self, settings: MixerConfig, method: str, path: str, authority: str,
                     request_headers: http1.Headers, mtls: bool, principal: str) -> Bag:
        namespace = settings.attributes.get("destination.workload.namespace" if settings.inbound
                                            else "source.workload.namespace", "default")
        host, _ = service_fqdn(authority, namespace)
        bag: Bag = {**settings.attributes, "context.protocol": "http", "request.method": method,
                    "request.path": path, "request.host": authority, **_service_attributes(host)}
        if settings.inbound:
            bag.update(_peer_attributes(peer_metadata.decode(request_headers), "source"))
            bag["connection.mtls"] = mtls
            if mtls and principal:
                bag["source.principal"] = principal  # only a verified certificate names the caller
            else:
                bag.pop("destination.principal", None)
        return bag

    async def check(self, inbound: bool, request: http1.Request, path: str, authority: str, mtls: bool,
                    principal: str) -> tuple[http1.Response, str] | None:
        """None lets the request through; else the local reply and its response code details."""
        settings = self.settings(inbound)
        if settings is None or not settings.check:
            return None
        bag = self._request_bag(settings, request.method, path, authority, request.headers, mtls, principal)
        message = mixer_pb2.CheckRequest(attributes=to_proto(bag))
        message.quotas[REQUEST_COUNT].amount = 1
        self.stats["mixer.check.total"] += 1
        try:
            response = await self.transport.check(settings.address, message, CHECK_TIMEOUT)
        except Exception as err:  # grpc.RpcError (UNAVAILABLE, DEADLINE_EXCEEDED), resolution failures
            self.stats["mixer.check.unreachable"] += 1
            if settings.fail_open:
                log.warning("mixer %s unreachable (%s): FAIL_OPEN lets the request through", settings.address, err)
                return None
            return _reply(503, f"UNAVAILABLE:mixer {settings.address} unreachable"), "mixer_unavailable_fail_closed"
        status = response.precondition.status
        if status.code == 0:
            return None
        self.stats["mixer.check.denied"] += 1
        name = CODE_NAMES.get(status.code, str(status.code))
        return _reply(HTTP_STATUS.get(status.code, 500), f"{name}:{status.message}"), f"mixer_check_{name.lower()}"

    def report(self, inbound: bool, request: http1.Request, path: str, authority: str,
               response_headers: Iterable[tuple[str, str]], record: AccessRecord) -> None:
        """Queue the Report of one answered request (``response_headers`` before the peer's are stripped)."""
        settings = self.settings(inbound)
        if settings is None:
            return
        bag = self._request_bag(settings, request.method, path, authority, request.headers, record.mtls,
                                record.peer_principal or "")
        if not inbound:
            callee = peer_metadata.decode(response_headers)
            bag.update(_peer_attributes(callee, "destination"))
            service = _cluster_service(record.upstream_cluster)
            if service:
                bag.update(_service_attributes(service))
            if record.upstream_mtls and callee is not None and callee.service_account:
                bag["destination.principal"] = callee.principal(self.trust_domain)
            elif not record.upstream_mtls:
                bag.pop("source.principal", None)
        bag.update({"response.code": record.response_code, "response.duration": float(record.duration),
                    "request.total_size": record.bytes_received, "response.total_size": record.bytes_sent,
                    "context.proxy_error_code": format_flags(record.response_flags)})
        self._queue.append((settings.address, bag))
        if len(self._queue) >= settings.batch_entries:
            self._wake.set()

    async def flush(self) -> int:
        """Send what is queued, one ReportRequest per Mixer address; the number of reports Mixer took."""
        batch, self._queue = self._queue, []
        by_address: dict[str, list[Bag]] = {}
        for address, bag in batch:
            by_address.setdefault(address, []).append(bag)
        sent = 0
        for address, bags in by_address.items():
            try:
                await self.transport.report(address, mixer_pb2.ReportRequest(attributes=[to_proto(b) for b in bags]),
                                            REPORT_TIMEOUT)
            except Exception as err:
                self.stats["mixer.report.dropped"] += len(bags)
                log.warning("mixer %s: report of %d requests dropped: %s", address, len(bags), err)
                continue
            self.stats["mixer.report.sent"] += len(bags)
            sent += len(bags)
        return sent

    async def run(self) -> None:
        """Until cancelled: flush every batch interval, or sooner when a batch is full."""
        while True:
            interval = min((s.batch_time for s in (self.settings(True), self.settings(False)) if s), default=1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if self._queue:
                await self.flush()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue:
            await self.flush()
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()


def _reply(status: int, body: str) -> http1.Response:
    return http1.Response(status, [("content-type", "text/plain")], body.encode())


def start_mixer(sidecar: Any, resolve: Callable[[str], str] | None = None,
                env: Mapping[str, str] | None = None) -> MixerPlugin:
    """Give ``sidecar`` its Mixer client (idle unless Pilot sends ``mixer`` filters) and start its batching."""
    plugin = MixerPlugin(lambda: sidecar.config, GrpcTransport(
        (lambda address: asyncio.to_thread(resolve, address)) if resolve is not None else None),
        stats=sidecar.stats, trust_domain=(env or {}).get("TRUST_DOMAIN") or peer_metadata.DEFAULT_TRUST_DOMAIN)
    sidecar.mixer = plugin
    plugin.start()
    return plugin
