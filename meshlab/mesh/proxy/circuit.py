"""Circuit breaking: a cluster's connection-pool limits as counters that admit and release.

Follows Envoy's per-cluster resource manager (envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/
circuit_breaking), with Istio's DestinationRule ``connectionPool`` mapped onto it (``tcp.maxConnections`` →
``max_connections``, ``http.http1MaxPendingRequests`` → ``max_pending_requests``, ``http.http2MaxRequests`` →
``max_requests``, ``http.maxRetries`` → ``max_retries``). For HTTP/1.1 a request takes an idle connection if the
shell has one; otherwise it opens a connection if ``max_connections`` allows; otherwise it waits in the pending
queue if ``max_pending_requests`` allows; otherwise it overflows: the proxy answers 503 with
``x-envoy-overloaded: true`` and flag ``UO`` (:func:`meshlab.mesh.proxy.policies.overflow_reply`). The counters
also give ``/stats`` its ``upstream_rq_pending_overflow``-style numbers.
"""

from __future__ import annotations

from enum import Enum

from meshlab.mesh.proxy.config import Thresholds


class Admission(Enum):
    USE_IDLE = "use an idle connection"
    NEW_CONNECTION = "open a new connection"
    QUEUE = "wait for a connection (call dequeue() when one is handed over)"
    OVERFLOW = "refuse: 503 overflow"


class CircuitBreaker:
    """The live counters of one cluster. Every admit/acquire has exactly one matching release."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.retries = 0
        self.overflows = {"upstream_cx_overflow": 0, "upstream_rq_pending_overflow": 0, "upstream_rq_retry_overflow": 0}

    def admit(self, *, idle_connection: bool) -> Admission:
        """Admit a new upstream request; ``idle_connection`` says whether the shell has a free keep-alive one."""
        limits = self.thresholds
        if self.requests >= limits.max_requests:
            self.overflows["upstream_rq_pending_overflow"] += 1
            return Admission.OVERFLOW
        if idle_connection:
            self.requests += 1
            return Admission.USE_IDLE
        if self.connections < limits.max_connections:
            self.connections += 1
            self.requests += 1
            return Admission.NEW_CONNECTION
        self.overflows["upstream_cx_overflow"] += 1
        if self.pending < limits.max_pending_requests:
            self.pending += 1
            return Admission.QUEUE
        self.overflows["upstream_rq_pending_overflow"] += 1
        return Admission.OVERFLOW

    def dequeue(self) -> None:
        """A queued request got a connection: it stops being pending and becomes an active request."""
        self.pending -= 1
        self.requests += 1

    def abandon_pending(self) -> None:
        """A queued request gave up (timeout, downstream left) before getting a connection."""
        self.pending -= 1

    def finish_request(self) -> None:
        self.requests -= 1

    def open_connection(self) -> bool:
        """Open one more connection outside :meth:`admit` (e.g. to serve the pending queue), if allowed."""
        if self.connections >= self.thresholds.max_connections:
            return False
        self.connections += 1
        return True

    def close_connection(self) -> None:
        self.connections -= 1

    def try_acquire_retry(self) -> bool:
        if self.retries >= self.thresholds.max_retries:
            self.overflows["upstream_rq_retry_overflow"] += 1
            return False
        self.retries += 1
        return True

    def release_retry(self) -> None:
        self.retries -= 1
