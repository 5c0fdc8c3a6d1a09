"""The state-of-the-world xDS protocol for one ADS stream, without I/O: requests in, responses out.

Per resource type the server remembers what it last sent (version and nonce), what the proxy ACKed and
whether it NACKed. The rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol,
"ACK/NACK and resource type instance version"): a request with an empty ``response_nonce`` subscribes to
a type, carrying the version the proxy already has (after a reconnect) — if it is the current one nothing
is sent; a request whose nonce is not the last one sent for that type is stale and ignored; a request
with the current nonce ACKs (no ``error_detail``) or NACKs (``error_detail`` set: the proxy keeps its last
ACKed version, and the same version is not sent again); an ACK is never answered. A new snapshot is sent
only for the types whose version changed, and always in the order CDS, EDS, LDS, RDS: a type waits until
every earlier type with resources has been sent at its current version. ``status()`` gives what
``istioctl proxy-status`` shows: SYNCED, STALE (sent but not ACKed, or not sent yet), NACKED, NOT SENT.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshlab.mesh.pilot.snapshot import Snapshot
from meshlab.mesh.xds.resources import ORDER, XdsType, pack

CONTROL_PLANE = base_pb2.ControlPlane(identifier="meshlab-pilot")


class Sync(Enum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"
    NOT_SENT = "NOT SENT"


@dataclass(frozen=True)
class TypeStatus:
    """One row cell of ``proxy-status``: where one type stands for one proxy."""

    type_url: str
    status: Sync
    latest: str
    sent: str
    acked: str
    error: str = ""

    @property
    def short(self) -> str:
        return XdsType.short(self.type_url)


@dataclass(frozen=True)
class ProxyStatus:
    proxy_id: str
    types: tuple[TypeStatus, ...]

    def of(self, type_url: str) -> TypeStatus:
        return next(t for t in self.types if t.type_url == type_url)


@dataclass
class _TypeState:
    subscribed: bool = False
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    error: str = ""


class StreamSync:
    """Protocol state of one ADS stream; every method returns the responses to send, in order."""

    def __init__(self, proxy_id: str, snapshot: Snapshot) -> None:
        self.proxy_id = proxy_id
        self.snapshot = snapshot
        self.stale_requests = 0
        self._types = {t: _TypeState() for t in ORDER}
        self._nonces = itertools.count(1)

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        state = self._types.get(request.type_url)
        if state is None:
            return []  # a type this server does not serve: nothing to say (Envoy waits, then times out)
        if not request.response_nonce:
            state.subscribed = True
            if request.version_info and not state.sent_version:
                # A proxy that kept its configuration across a reconnect (or a Pilot restart) says what it
                # has; content-hash versions mean an unchanged state needs no push.
                state.sent_version = state.acked_version = request.version_info
        elif request.response_nonce != state.sent_nonce:
            self.stale_requests += 1
            return []
        elif request.HasField("error_detail"):
            state.nacked_version, state.error = state.sent_version, request.error_detail.message
        else:
            state.acked_version, state.error, state.nacked_version = state.sent_version, "", ""
        return self._pushes()

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        self.snapshot = snapshot
        return self._pushes()

    def _pushes(self) -> list[discovery_pb2.DiscoveryResponse]:
        out = []
        blocked = False
        for type_url in ORDER:
            state, version = self._types[type_url], self.snapshot.versions[type_url]
            if state.subscribed and state.sent_version != version and not blocked:
                nonce = str(next(self._nonces))
                out.append(discovery_pb2.DiscoveryResponse(
                    version_info=version, type_url=type_url, nonce=nonce, control_plane=CONTROL_PLANE,
                    resources=[pack(r) for r in self.snapshot.resources[type_url]]))
                state.sent_version, state.sent_nonce = version, nonce
            if self.snapshot.resources[type_url] and state.sent_version != version:
                blocked = True  # later types wait for this one (e.g. LDS for EDS), as ADS ordering requires
        return out

    def status(self) -> ProxyStatus:
        rows = []
        for type_url in ORDER:
            state, latest = self._types[type_url], self.snapshot.versions[type_url]
            if not state.sent_version:
                status = Sync.NOT_SENT
            elif state.error and state.nacked_version == state.sent_version:
                status = Sync.NACKED
            elif state.acked_version == latest:
                status = Sync.SYNCED
            else:
                status = Sync.STALE
            rows.append(TypeStatus(type_url, status, latest, state.sent_version, state.acked_version, state.error))
        return ProxyStatus(self.proxy_id, tuple(rows))
