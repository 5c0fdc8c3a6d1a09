"""Pilot's aggregated discovery service: ``StreamAggregatedResources`` over gRPC (grpc.aio), SotW.

A thin shell around :class:`~meshlab.mesh.pilot.sync.StreamSync`: each stream's first request names the
proxy (its ``node``), Pilot translates the current ``MeshState`` for that proxy into a ``Snapshot``, and
from then on the stream's requests and every new state go through the protocol core, whose responses are
written in order. ``set_state`` re-translates for every connected proxy; a proxy whose snapshot did not
change hears nothing, and one whose routes changed gets only RDS (a VirtualService change reaches every
proxy, since every sidecar routes to every service, as Istio without ``Sidecar`` scoping). The per-proxy
views — ``proxy_status()`` (``istioctl proxy-status``) and ``config_dump(proxy_id)`` — are plain data.
Service definition: ``envoy/service/discovery/v3/ads.proto``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from meshlab.errors import XdsError
from meshlab.mesh.pilot.model import MeshState
from meshlab.mesh.pilot.snapshot import Snapshot
from meshlab.mesh.pilot.sync import ProxyStatus, StreamSync
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.xds.node import ProxyIdentity, from_node
from meshlab.mesh.xds.resources import ORDER, XdsType

log = logging.getLogger(__name__)

Translator = Callable[[MeshState, ProxyIdentity], Snapshot]


@dataclass(frozen=True)
class XdsEvent:
    """One step of the conversation, for the push timeline and convergence measurements."""

    at: float
    proxy_id: str
    type_url: str
    kind: str  # "push", "ack", "nack", "stale"
    version: str
    detail: str = ""


@dataclass
class _Stream:
    identity: ProxyIdentity
    sync: StreamSync
    queue: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = field(default_factory=asyncio.Queue)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The discovery service for every connected sidecar, with their per-proxy snapshots."""

    def __init__(self, state: MeshState | None = None, *, translator: Translator = translate,
                 history: int = 10_000) -> None:
        self._state = state or MeshState()
        self._translate = translator
        self._streams: dict[str, _Stream] = {}
        self.events: deque[XdsEvent] = deque(maxlen=history)

    @property
    def state(self) -> MeshState:
        return self._state

    def set_state(self, state: MeshState) -> dict[str, list[str]]:
        """Publish a new state; returns the types pushed to each proxy (``{"<id>": ["RDS"]}``)."""
        self._state = state
        pushed: dict[str, list[str]] = {}
        for proxy_id, stream in list(self._streams.items()):
            try:
                snapshot = self._snapshot_for(stream.identity)
            except XdsError as err:
                log.error("%s keeps its current configuration: %s", proxy_id, err)
                continue
            if snapshot.version == stream.sync.snapshot.version:
                continue
            responses = stream.sync.on_snapshot(snapshot)
            self._send(stream, responses)
            if responses:
                pushed[proxy_id] = [XdsType.short(r.type_url) for r in responses]
        return pushed

    def proxy_status(self) -> list[ProxyStatus]:
        return [stream.sync.status() for _, stream in sorted(self._streams.items())]

    def config_dump(self, proxy_id: str) -> dict[str, Any]:
        """What Pilot currently holds for ``proxy_id``: the snapshot as JSON, its problems and sync status."""
        stream = self._streams.get(proxy_id)
        if stream is None:
            raise XdsError(f"no proxy {proxy_id!r} is connected (connected: {sorted(self._streams) or 'none'})")
        snapshot = stream.sync.snapshot
        status = stream.sync.status()
        return {
            "proxy": proxy_id,
            "version": snapshot.version,
            "problems": [str(p) for p in snapshot.problems],
            "types": {
                XdsType.short(t): {
                    "typeUrl": t,
                    "version": snapshot.versions[t],
                    "status": status.of(t).status.value,
                    "ackedVersion": status.of(t).acked,
                    "error": status.of(t).error,
                    "resources": [json_format.MessageToDict(r) for r in snapshot.resources[t]],
                }
                for t in ORDER
            },
        }

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        holder: list[_Stream] = []
        queue: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read(request_iterator, holder, queue))
        try:
            while (response := await queue.get()) is not None:
                yield response
            error = reader.exception() if reader.done() else None
            if isinstance(error, XdsError):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            elif error is not None:
                log.error("ADS stream failed", exc_info=error)
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            reader.cancel()
            if holder and self._streams.get(holder[0].sync.proxy_id) is holder[0]:
                del self._streams[holder[0].sync.proxy_id]

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], holder: list[_Stream],
                    queue: asyncio.Queue[discovery_pb2.DiscoveryResponse | None]) -> None:
        try:
            async for request in requests:
                if not holder:
                    identity = from_node(request.node)
                    stream = _Stream(identity, StreamSync(identity.node_id, self._snapshot_for(identity)), queue)
                    holder.append(stream)
                    # A reconnecting proxy replaces its old stream; the old one's end no longer unregisters it.
                    self._streams[identity.node_id] = stream
                    log.info("proxy %s connected", identity.node_id)
                stream = holder[0]
                stale_before = stream.sync.stale_requests
                responses = stream.sync.on_request(request)
                self._record_request(stream, request, stale=stream.sync.stale_requests != stale_before)
                self._send(stream, responses)
        finally:
            queue.put_nowait(None)

    def _snapshot_for(self, identity: ProxyIdentity) -> Snapshot:
        snapshot = self._translate(self._state, identity)
        for problem in snapshot.problems:
            log.warning("config for %s: %s", identity.node_id, problem)
        inconsistent = snapshot.inconsistencies()
        if inconsistent:
            # A translation bug, not a user error: refuse to publish half a configuration.
            raise XdsError(f"inconsistent snapshot for {identity.node_id}: {'; '.join(inconsistent)}")
        return snapshot

    def _send(self, stream: _Stream, responses: list[discovery_pb2.DiscoveryResponse]) -> None:
        for response in responses:
            self.events.append(XdsEvent(time.monotonic(), stream.sync.proxy_id, response.type_url, "push",
                                        response.version_info))
            stream.queue.put_nowait(response)

    def _record_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest, *, stale: bool) -> None:
        if not request.response_nonce:
            return
        kind = "stale" if stale else "nack" if request.HasField("error_detail") else "ack"
        self.events.append(XdsEvent(time.monotonic(), stream.sync.proxy_id, request.type_url, kind,
                                    request.version_info, request.error_detail.message))
        if kind == "nack":
            log.warning("proxy %s rejected %s: %s", stream.sync.proxy_id, XdsType.short(request.type_url),
                        request.error_detail.message)


async def serve(ads: AdsServer, *, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server for ``ads`` on ``host:port`` (0 = any free port); returns it and its port."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
