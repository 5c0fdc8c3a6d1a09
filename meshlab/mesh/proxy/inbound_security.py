"""The sidecar's inbound security steps, Envoy's order: listener filter, filter chain, TLS, peer check, RBAC.

For each connection to an inbound port (:mod:`inbound` accepts it): the ``tls_inspector`` question (is the first
byte a TLS handshake?), the filter-chain match on (port, transport protocol) — none: the connection is closed
(STRICT refusing plaintext) — the server-side mTLS handshake with the workload certificate's context and the
peer's SPIFFE ID checked against the chain's matchers (a refusal is logged with its reason: expired, not yet
valid, unknown root, foreign trust domain, no certificate). Each request then takes the port's *current*
chain (a policy change reaches keep-alive connections; one the port no longer accepts is drained) and runs
its RBAC filters (:mod:`rbac`): a denial is Envoy's 403 ``RBAC: access denied`` with the response code
details ``rbac_access_denied_matched_policy[<policy>]``. :class:`InboundSecurity` is a mixin of
:class:`~meshlab.mesh.proxy.server.Sidecar`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import TYPE_CHECKING

from meshlab.mesh.proxy import http1, inbound, rbac
from meshlab.mesh.proxy.config import FilterChain, select_chain
from meshlab.mesh.proxy.routing import RequestHead
from meshlab.mesh.proxy.tls import WorkloadTls, handshake_problem, looks_like_tls, peer_problem, uri_sans

if TYPE_CHECKING:
    from meshlab.mesh.proxy.server import Settings

log = logging.getLogger("meshlab.mesh.proxy.server")  # one logger for the sidecar's decisions


@dataclass
class _Listener:
    name: str
    route_name: str
    fault_filter: bool
    server: asyncio.Server | inbound.InboundServer | None = None
    chains: tuple[FilterChain, ...] = ()  # inbound: this port's filter chains (plaintext / mTLS, RBAC)
    rbac: tuple[rbac.RbacFilter, ...] = ()
    port: int = 0
    # A connection's view of its inbound port: the port's live listener and the transport it came in on, so
    # each request takes the port's current chain (a new AuthorizationPolicy applies to open connections too).
    parent: _Listener | None = None
    transport: str = ""
    tls: bool = False


@dataclass
class _Downstream:
    local: str
    remote: str
    mtls: bool = False
    principal: str = ""  # the peer's SPIFFE ID (URI SAN) on an mTLS connection


class InboundSecurity:
    """Inbound connection and request security for :class:`~meshlab.mesh.proxy.server.Sidecar`."""

    settings: Settings
    stats: Counter[str]
    tls: WorkloadTls

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                listener: _Listener | None, *, mtls: bool = False, principal: str = "") -> None:
        """Serve HTTP on a connection this mixin accepted; :class:`~meshlab.mesh.proxy.server.Sidecar` provides it."""
        raise NotImplementedError("InboundSecurity is a mixin of Sidecar, which serves the connection")

    async def _serve_inbound(self, sock: socket.socket, listener: _Listener) -> None:
        """One inbound connection: tls_inspector, filter-chain match, TLS handshake and peer check, then HTTP."""
        peer = "-"
        with contextlib.suppress(OSError):
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}"
        chains = listener.chains
        transport = ""
        if any(c.transport_protocol for c in chains):
            first = await inbound.peek(sock, self.settings.header_timeout)
            transport = "tls" if looks_like_tls(first) else "raw_buffer"
        chain = select_chain(chains, transport)
        context = self.tls.server if chain is not None and chain.tls is not None else None
        if chain is None or (chain.tls is not None and context is None):
            self.stats["listener.no_filter_chain_match" if chain is None else "listener.ssl.no_certificate"] += 1
            why = (f"no filter chain for {transport or 'this'} traffic on port {listener.port} (STRICT mTLS "
                   "refuses plaintext)" if chain is None else "no workload certificate to serve mTLS with")
            log.warning("connection from %s to port %d closed: %s", peer, listener.port, why)
            sock.close()
            return
        try:
            reader, writer = await inbound.streams(sock, context, handshake_timeout=self.settings.header_timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as err:
            self.stats["listener.ssl.connection_error"] += 1
            log.warning("mTLS handshake from %s on port %d refused: %s", peer, listener.port, handshake_problem(err))
            sock.close()
            return
        downstream_tls = chain.tls is not None
        principal = ""
        if downstream_tls:
            assert chain.tls is not None
            peercert = writer.get_extra_info("peercert")
            problem = peer_problem(peercert, chain.tls.peer_sans)
            if problem is not None:
                self.stats["listener.ssl.fail_verify_san"] += 1
                log.warning("mTLS peer %s on port %d refused: %s", peer, listener.port, problem)
                writer.close()
                return
            principal = uri_sans(peercert)[0]
            self.stats["listener.ssl.handshake"] += 1
        chosen = _Listener(listener.name, chain.route_config_name, chain.fault_filter, rbac=chain.rbac,
                           port=listener.port, parent=listener, transport=transport, tls=downstream_tls)
        await self._serve_connection(reader, writer, chosen, mtls=downstream_tls, principal=principal)

    def _current_chain(self, listener: _Listener) -> tuple[_Listener, bool]:
        """The chain an inbound connection's next request uses: the port's current one for the connection's
        transport. When no current chain takes this connection any more (the port became STRICT under a
        plaintext connection), the request is served as before and the connection drained, as Envoy drains
        connections of a removed filter chain."""
        if listener.parent is None:
            return listener, False
        chain = select_chain(listener.parent.chains, listener.transport)
        if chain is None or (chain.tls is not None) != listener.tls:
            return listener, True
        return replace(listener, route_name=chain.route_config_name, fault_filter=chain.fault_filter,
                       rbac=chain.rbac), False

    def _authorize(self, listener: _Listener, method: str, path: str, authority: str, headers: http1.Headers,
                   downstream: _Downstream) -> tuple[http1.Response, str] | None:
        """The RBAC filters of the chain: None lets the request through, else Envoy's 403."""
        if not listener.rbac:
            return None
        head = RequestHead(method, path, authority, tuple(headers))
        decision = rbac.evaluate(listener.rbac, rbac.Request(head, listener.port, downstream.principal))
        if decision.allowed:
            self.stats["rbac.allowed"] += 1
            return None
        self.stats["rbac.denied"] += 1
        # Envoy's response code details: rbac_access_denied_matched_policy[<policy>|none]
        details = f"{rbac.DENIED_DETAILS}[{decision.policy or 'none'}]"
        log.info("RBAC: %s %s from %s on port %d %s", method, path, downstream.principal or downstream.remote,
                 listener.port, decision.reason)
        return http1.Response(403, [("content-type", "text/plain"), ("date", formatdate(usegmt=True))],
                              rbac.DENIED_BODY.encode()), details

