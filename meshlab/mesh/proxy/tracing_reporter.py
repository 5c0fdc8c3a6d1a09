"""Sending finished spans to the Zipkin collector without ever slowing a request down.

Envoy's Zipkin tracer buffers spans and flushes them as one JSON array (``POST /api/v2/spans``) every
``flush_interval`` or when ``min_flush_spans`` have gathered; a span that cannot be sent is lost, never retried
in the request path. Here: :meth:`SpanReporter.submit` only appends to a bounded queue — when the queue is full
the span is dropped and ``tracing.zipkin.spans_dropped`` counts it — and a background task posts batches.
The collector's address is Istio's default ``zipkin.istio-system:9411`` (mesh config
``defaultConfig.tracing.zipkin.address``); ``resolve`` turns it into something dialable (the sidecar's
Kubernetes-API resolver in the embedded lab, which has no cluster DNS), once, and again after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import aiohttp

from meshlab.mesh.proxy.tracing import Span

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "zipkin.istio-system:9411"
QUEUE_LIMIT = 1000
BATCH = 100
FLUSH_INTERVAL = 0.5
RETRY_RESOLVE_AFTER = 5.0


class SpanReporter:
    """A bounded span queue and the task that empties it into the collector."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *,
                 resolve: Callable[[str], Awaitable[str]] | None = None,
                 limit: int = QUEUE_LIMIT, batch: int = BATCH, interval: float = FLUSH_INTERVAL) -> None:
        self.address = address
        self._resolve = resolve
        self._queue: deque[Span] = deque()
        self._limit, self._batch, self._interval = limit, batch, interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resolved: str | None = None
        self._next_resolve = 0.0
        self._session: aiohttp.ClientSession | None = None  # one connection pool for all reports
        self.stats: Counter[str] = Counter()

    def submit(self, span: Span) -> None:
        """Queue a span (never blocks; drops it when the queue is full)."""
        if not span.context.sampled:
            return
        if len(self._queue) >= self._limit:
            self.stats["tracing.zipkin.spans_dropped"] += 1
            return
        self._queue.append(span)
        self.stats["tracing.zipkin.spans_queued"] += 1
        if len(self._queue) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Send what is queued (one last try), then stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def _target(self) -> str | None:
        if self._resolved is not None:
            return self._resolved
        if time.monotonic() < self._next_resolve:
            return None
        try:
            self._resolved = await self._resolve(self.address) if self._resolve is not None else self.address
        except Exception as err:  # any failure to find the collector means: drop spans, try again later
            log.info("zipkin collector %s not found: %s", self.address, err)
            self._next_resolve = time.monotonic() + RETRY_RESOLVE_AFTER
        return self._resolved

    async def flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            target = await self._target()
            if target is None:
                self.stats["tracing.zipkin.spans_dropped"] += len(batch)
                continue
            body = json.dumps([span.to_zipkin() for span in batch]).encode()
            if self._session is None:
                self._session = aiohttp.ClientSession(trust_env=False)  # the sidecar never uses HTTP_PROXY
            try:
                async with self._session.post(
                        f"http://{target}/api/v2/spans", data=body, headers={"content-type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=2.0)) as response:
                    ok = response.status in (200, 202)
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            if ok:
                self.stats["tracing.zipkin.spans_sent"] += len(batch)
            else:
                self.stats["tracing.zipkin.spans_dropped"] += len(batch)
                self.stats["tracing.zipkin.reports_failed"] += 1
                self._resolved = None  # the collector may have moved
                self._next_resolve = time.monotonic() + RETRY_RESOLVE_AFTER
