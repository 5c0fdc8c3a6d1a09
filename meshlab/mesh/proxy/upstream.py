"""The upstream side of the proxy: per-cluster state and keep-alive connection pools, one attempt at a time.

Envoy keeps, per cluster, a load balancer, circuit-breaker counters, an outlier detector and a connection pool
per host (envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/connection_pooling). For HTTP/1.1 a
connection carries one request at a time; after a complete response that allows keep-alive it goes back to its
host's idle list. :class:`ClusterState` owns those pieces for one cluster (the decisions live in the sans-I/O
cores :mod:`balancing`, :mod:`circuit`, :mod:`outlier`); :meth:`ClusterState.attempt` makes one upstream
attempt — admission, connection (idle, new, or waiting in the pending queue), exchange — and reports it as a
:class:`~meshlab.mesh.proxy.retrying.Attempt`, which is what the retry and outlier cores consume.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from meshlab.mesh.proxy import http1
from meshlab.mesh.proxy.balancing import Balancer
from meshlab.mesh.proxy.circuit import Admission, CircuitBreaker
from meshlab.mesh.proxy.config import ClusterPolicy, Endpoint
from meshlab.mesh.proxy.outlier import CONNECT_FAILURE_STATUS, RESET_STATUS, TIMEOUT_STATUS, OutlierDetector
from meshlab.mesh.proxy.retrying import Attempt, Outcome
from meshlab.mesh.proxy.routing import Draw
from meshlab.mesh.proxy.tls import handshake_problem, peer_problem

log = logging.getLogger(__name__)

#: Idle keep-alive connections kept per host; more are closed when they come back.
MAX_IDLE_PER_HOST = 64


@dataclass
class Connection:
    host: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    mtls: bool = False

    @property
    def local_address(self) -> str:
        sockname = self.writer.get_extra_info("sockname")
        return f"{sockname[0]}:{sockname[1]}" if sockname else "-"

    def usable(self) -> bool:
        # The server may have closed an idle connection; EOF already read means it cannot be reused.
        return not self.reader.at_eof() and not self.writer.is_closing()


@dataclass
class AttemptResult:
    attempt: Attempt
    host: str | None = None
    response: http1.Response | None = None
    local_address: str | None = None
    mtls: bool = False  # the upstream connection was mutual TLS (auto mTLS to a sidecar)


class ClusterState:
    """Live state of one cluster: breaker, balancer, outlier detector, idle connections, counters."""

    def __init__(self, policy: ClusterPolicy, endpoints: tuple[Endpoint, ...], *, draw: Draw,
                 clock: Callable[[], float] = time.monotonic,
                 client_tls: Callable[[], ssl.SSLContext | None] = lambda: None) -> None:
        self.policy = policy
        self.client_tls = client_tls  # the workload certificate's client context, asked at every new connection
        self.endpoints = endpoints
        self.breaker = CircuitBreaker(policy.thresholds)
        self.balancer = Balancer(policy.lb_policy)
        self.outlier = (OutlierDetector(policy.outlier, [e.host for e in endpoints], clock=clock, draw=draw)
                        if policy.outlier is not None else None)
        self.draw = draw
        self.idle: dict[str, deque[Connection]] = {}
        self.active: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.host_stats: dict[str, Counter[str]] = {}
        self._released = asyncio.Event()  # a connection came back or closed: pending requests look again
        self.closed = False

    def set_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        before = {e.host: dict(e.socket_match) for e in self.endpoints}
        self.endpoints = endpoints
        if self.outlier is not None:
            self.outlier.set_hosts([e.host for e in endpoints])
        # An idle connection is kept only for a host that stays, with the same transport: a host whose
        # socket match changed (its sidecar came or went, mTLS turned on or off) needs a new connection.
        keep = {e.host for e in endpoints if before.get(e.host, dict(e.socket_match)) == dict(e.socket_match)}
        for host in [h for h in self.idle if h not in keep]:
            for conn in self.idle.pop(host):
                self._close(conn)

    def close(self) -> None:
        """The cluster left the config (or changed): drop idle connections; busy ones close when done."""
        self.closed = True
        for conns in self.idle.values():
            for conn in conns:
                self._close(conn)
        self.idle.clear()

    def pick(self) -> Endpoint | None:
        ejected = self.outlier.ejected if self.outlier is not None else frozenset()
        return self.balancer.pick(self.endpoints, draw=self.draw, ejected=ejected, active_requests=self.active,
                                  panic_threshold=self.policy.panic_threshold)

    def record(self, host: str, status: int) -> None:
        self._count(host, f"upstream_rq_{status // 100}xx")
        if self.outlier is not None:
            ejection = self.outlier.record(host, status)
            if ejection is not None:
                self.stats["outlier_detection.ejections_enforced_total"] += 1
                self.stats[f"outlier_detection.ejections_enforced_{ejection.reason.value}"] += 1

    def sweep(self, now: float) -> None:
        if self.outlier is not None and now >= self.outlier.next_sweep:
            self.outlier.sweep()

    def _count(self, host: str, name: str) -> None:
        self.stats[name] += 1
        self.host_stats.setdefault(host, Counter())[name] += 1

    def _close(self, conn: Connection) -> None:
        conn.writer.close()
        self.breaker.close_connection()
        self.stats["upstream_cx_destroy"] += 1
        self._released.set()

    def _take_idle(self, host: str) -> Connection | None:
        conns = self.idle.get(host)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
            self._close(conn)
        return None

    def _release(self, conn: Connection, *, reuse: bool) -> None:
        conns = self.idle.setdefault(conn.host, deque())
        if reuse and not self.closed and conn.usable() and len(conns) < MAX_IDLE_PER_HOST:
            conns.append(conn)
            self._released.set()
        else:
            self._close(conn)

    async def _connect(self, endpoint: Endpoint) -> Connection:
        settings = self.policy.transport_for(endpoint)
        # Auto mTLS needs this proxy's own certificate; a mesh without a CA has none, and talks plaintext.
        context = self.client_tls() if settings is not None else None
        if settings is None or context is None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.address, endpoint.port, limit=http1.MAX_HEAD + 1024),
                self.policy.connect_timeout)
            self.stats["upstream_cx_total"] += 1
            return Connection(endpoint.host, reader, writer)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.address, endpoint.port, limit=http1.MAX_HEAD + 1024, ssl=context,
                                        server_hostname=settings.sni or None),
                self.policy.connect_timeout)
        except ssl.SSLError as err:
            self.stats["ssl.connection_error"] += 1
            log.warning("mTLS to %s (%s) failed: %s", endpoint.host, self.policy.name, handshake_problem(err))
            raise
        problem = peer_problem(writer.get_extra_info("peercert"), settings.peer_sans)
        if problem is not None:
            self.stats["ssl.fail_verify_san"] += 1
            log.warning("mTLS to %s (%s) refused: %s", endpoint.host, self.policy.name, problem)
            writer.close()
            raise ConnectionRefusedError(f"upstream peer refused: {problem}")
        self.stats["upstream_cx_total"] += 1
        self.stats["ssl.handshake"] += 1
        return Connection(endpoint.host, reader, writer, mtls=True)

    def _make_room(self, host: str) -> bool:
        """A pending request may close another host's idle connection to open one of its own."""
        for other, conns in self.idle.items():
            if other != host and conns:
                conn = conns.pop()
                conn.writer.close()
                self.stats["upstream_cx_destroy"] += 1
                return True  # the breaker's slot passes to the new connection
        return self.breaker.open_connection()

    async def _acquire(self, endpoint: Endpoint) -> Connection | None:
        """A connection to ``endpoint`` after admission; None means overflow (503 ``UO``)."""
        conn = self._take_idle(endpoint.host)
        admission = self.breaker.admit(idle_connection=conn is not None)
        if admission is Admission.OVERFLOW:
            self.stats["upstream_rq_pending_overflow"] += 1
            return None
        if admission is Admission.USE_IDLE:
            assert conn is not None
            return conn
        if admission is Admission.NEW_CONNECTION:
            return await self._connect_counted(endpoint)
        self.stats["upstream_rq_pending_total"] += 1
        try:
            while True:
                conn = self._take_idle(endpoint.host)
                if conn is not None or self._make_room(endpoint.host):
                    break
                self._released.clear()
                await self._released.wait()
        except BaseException:  # the attempt timed out (or was cancelled) while pending
            self.breaker.abandon_pending()
            raise
        self.breaker.dequeue()
        return conn if conn is not None else await self._connect_counted(endpoint)

    async def _connect_counted(self, endpoint: Endpoint) -> Connection:
        """Open a connection whose breaker slot and request were already counted; undo both on failure."""
        try:
            return await self._connect(endpoint)
        except BaseException:
            self.breaker.close_connection()
            self.breaker.finish_request()
            self._released.set()
            raise

    async def attempt(self, endpoint: Endpoint, method: str, target: str, headers: http1.Headers, body: bytes,
                      timeout: float | None) -> AttemptResult:
        """One attempt against ``endpoint``, bounded by ``timeout`` (pending wait and connect included)."""
        host = endpoint.host
        self.stats["upstream_rq_total"] += 1
        self.host_stats.setdefault(host, Counter())["rq_total"] += 1
        self.active[host] += 1
        try:
            return await asyncio.wait_for(self._exchange(endpoint, method, target, headers, body), timeout)
        except TimeoutError:
            self.stats["upstream_rq_timeout"] += 1
            self.record(host, TIMEOUT_STATUS)
            return AttemptResult(Attempt(Outcome.PER_TRY_TIMEOUT), host)
        finally:
            self.active[host] -= 1
            if self.active[host] <= 0:
                del self.active[host]

    async def _exchange(self, endpoint: Endpoint, method: str, target: str, headers: http1.Headers,
                        body: bytes) -> AttemptResult:
        host = endpoint.host
        try:
            conn = await self._acquire(endpoint)
        except (OSError, TimeoutError):
            self.stats["upstream_cx_connect_fail"] += 1
            self.record(host, CONNECT_FAILURE_STATUS)
            return AttemptResult(Attempt(Outcome.CONNECT_FAILURE), host)
        if conn is None:
            return AttemptResult(Attempt(Outcome.OVERFLOW), host)
        reuse = False
        try:
            conn.writer.write(http1.encode_request(method, target, headers, body))
            await conn.writer.drain()
            response = await http1.read_response(conn.reader, method=method)
            reuse = response.version == "HTTP/1.1" and http1.keep_alive(response.version, response.headers)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, http1.HttpError):
            self.stats["upstream_rq_rx_reset"] += 1
            self.record(host, RESET_STATUS)
            return AttemptResult(Attempt(Outcome.RESET), host, local_address=conn.local_address)
        finally:
            # Runs on cancellation (timeouts) too: a connection with an unfinished exchange is never reused.
            self.breaker.finish_request()
            self._release(conn, reuse=reuse)
        self.record(host, response.status)
        grpc_status = response.header("grpc-status")
        attempt = Attempt.response(response.status,
                                   grpc_status=int(grpc_status) if grpc_status and grpc_status.isdigit() else None)
        return AttemptResult(attempt, host, response, conn.local_address, conn.mtls)
