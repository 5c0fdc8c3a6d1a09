"""The proxy's side of ADS: subscribe, apply each response, ACK or NACK, and survive the control plane going away.

State-of-the-world ADS as Envoy speaks it (envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol): on a new
stream the proxy sends one ``DiscoveryRequest`` per type (CDS, EDS, LDS, RDS) carrying its ``Node`` and the
version it already has, with empty ``resource_names`` (a wildcard: Pilot sends each proxy its whole snapshot).
Each ``DiscoveryResponse`` is applied through :func:`meshlab.mesh.proxy.config.apply_resources`; the proxy then
answers with the response's nonce and either the new version (ACK) or its last accepted version plus
``error_detail`` (NACK, gRPC code INVALID_ARGUMENT, the validation message). :class:`AdsSession` is that logic
without I/O; :class:`AdsClient` runs it over ``grpc.aio`` and, when the stream breaks, keeps the last good config
and reconnects with a jittered exponential back-off.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from meshlab.mesh.proxy.config import TYPE_ORDER, ConfigUpdate, ProxyConfig, apply_resources

log = logging.getLogger(__name__)

_INVALID_ARGUMENT = 3  # google.rpc.Code


@dataclass
class TypeStatus:
    """The sync state of one resource type, for the admin page and ``proxy-status``."""

    version: str = ""  # last accepted
    nonce: str = ""  # of the last response
    error: str = ""  # the last NACK's reason; empty after an ACK
    acks: int = 0
    nacks: int = 0


@dataclass
class AdsSession:
    """The ADS conversation without the wire: requests out, responses in, one config kept."""

    node: base_pb2.Node
    config: ProxyConfig = field(default_factory=ProxyConfig)
    status: dict[str, TypeStatus] = field(default_factory=lambda: {t: TypeStatus() for t in TYPE_ORDER})

    def start(self) -> list[discovery_pb2.DiscoveryRequest]:
        """The opening requests of a (re)connected stream: every type, with the versions already held."""
        return [
            discovery_pb2.DiscoveryRequest(node=self.node, type_url=t, version_info=self.config.versions.get(t, ""))
            for t in TYPE_ORDER
        ]

    def receive(self, response: discovery_pb2.DiscoveryResponse) -> tuple[discovery_pb2.DiscoveryRequest, ConfigUpdate]:
        """Apply one response; return the ACK/NACK to send and the update (whose config is now current)."""
        update = apply_resources(self.config, response.type_url, list(response.resources),
                                 version=response.version_info)
        status = self.status.setdefault(response.type_url, TypeStatus())
        status.nonce = response.nonce
        request = discovery_pb2.DiscoveryRequest(node=self.node, type_url=response.type_url,
                                                 response_nonce=response.nonce)
        if update.accepted:
            self.config = update.config
            status.version, status.error = response.version_info, ""
            status.acks += 1
            request.version_info = response.version_info
        else:
            status.error = update.error_detail
            status.nacks += 1
            request.version_info = status.version
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=update.error_detail))
            log.warning("NACK %s version %s: %s", response.type_url, response.version_info, update.error_detail)
        return request, update


class AdsClient:
    """Keeps one ADS stream to ``target`` open for as long as :meth:`run` runs."""

    def __init__(
        self,
        session: AdsSession,
        *,
        target: str,
        on_config: Callable[[ProxyConfig], None] | None = None,
        resolve: Callable[[], Awaitable[str]] | None = None,
        backoff_base: float = 0.1,
        backoff_max: float = 1.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.target = target
        self._on_config = on_config
        # Called before every (re)connection for the address to dial (Pilot may come back elsewhere);
        # failing counts as a failed attempt and is retried with back-off.
        self._resolve = resolve
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._jitter = jitter
        self.connected = asyncio.Event()
        self.reconnects = 0

    @property
    def config(self) -> ProxyConfig:
        return self.session.config

    async def run(self) -> None:
        """Stream until cancelled; a broken stream (Pilot gone, restarted) is retried with back-off."""
        failures = 0
        while True:
            try:
                got_response = await self._stream_once()
            except grpc.aio.AioRpcError as err:
                log.info("ADS stream to %s ended: %s %s", self.target, err.code().name, err.details())
                got_response = False
            finally:
                self.connected.clear()
            failures = 0 if got_response else failures + 1
            self.reconnects += 1
            # Full jitter over an exponential window, so restarted Pilots are not hit by every proxy at once.
            window = min(self._backoff_max, self._backoff_base * 2 ** min(failures, 16))
            await asyncio.sleep(window * self._jitter())

    async def _stream_once(self) -> bool:
        got_response = False
        if self._resolve is not None:
            try:
                self.target = await self._resolve()
            except Exception as err:  # the API unreachable, no endpoint yet: retry with back-off
                log.warning("cannot resolve the ADS server: %s", err)
                return False
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources()
            for request in self.session.start():
                await call.write(request)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return got_response
                got_response = True
                self.connected.set()
                reply, update = self.session.receive(response)
                await call.write(reply)
                if update.accepted and self._on_config is not None:
                    self._on_config(update.config)
