"""Trace headers created and continued by a sidecar; Zipkin spans; the collector's API; the span reporter."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from meshlab.mesh.proxy import tracing
from meshlab.mesh.proxy.tracing import Endpoint, Span, SpanContext, TraceContext
from meshlab.mesh.proxy.tracing_reporter import SpanReporter
from meshlab.mesh.tracing.server import make_app
from meshlab.mesh.tracing.store import SpanError, SpanStore

T32, T16 = "4bf92f3577b34da6a3ce929d0e0e4736", "a3ce929d0e0e4736"
P = "00f067aa0ba902b7"


def _ids() -> Callable[[int], str]:
    counter = itertools.count(1)
    return lambda n: f"{next(counter):0{2 * n}x}"


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param([], None, id="nothing-new-trace"),
    pytest.param([("traceparent", f"00-{T32}-{P}-01"), ("tracestate", "congo=t61rcWkgMzE")],
                 TraceContext(T32, P, True, "congo=t61rcWkgMzE"), id="w3c"),
    pytest.param([("traceparent", f"00-{T32}-{P}-00")], TraceContext(T32, P, False), id="w3c-unsampled"),
    pytest.param([("traceparent", f"00-{'0' * 32}-{P}-01")], None, id="w3c-zero-trace-id-invalid"),
    pytest.param([("traceparent", f"ff-{T32}-{P}-01")], None, id="w3c-version-ff-invalid"),
    pytest.param([("traceparent", f"01-{T32}-{P}-01-future")], TraceContext(T32, P, True), id="w3c-future-version"),
    pytest.param([("X-B3-TraceId", T16), ("X-B3-SpanId", P), ("X-B3-Sampled", "1")], TraceContext(T16, P, True),
                 id="b3-64-bit"),
    pytest.param([("x-b3-traceid", T32), ("x-b3-spanid", P), ("x-b3-sampled", "0")], TraceContext(T32, P, False),
                 id="b3-unsampled"),
    pytest.param([("x-b3-traceid", T32), ("x-b3-spanid", P), ("x-b3-sampled", "0"), ("x-b3-flags", "1")],
                 TraceContext(T32, P, True), id="b3-debug-is-sampled"),
    pytest.param([("b3", f"{T32}-{P}-1")], TraceContext(T32, P, True), id="b3-single"),
    pytest.param([("x-b3-traceid", T32), ("x-b3-spanid", P), ("traceparent", f"00-{'1' * 32}-{'2' * 16}-01")],
                 TraceContext(T32, P, True), id="b3-wins-over-w3c"),
    pytest.param([("x-b3-traceid", "xyz"), ("x-b3-spanid", P), ("traceparent", f"00-{T32}-{P}-01")],
                 TraceContext(T32, P, True), id="bad-b3-falls-back-to-w3c"),
])
def test_extract(headers: list[tuple[str, str]], expected: TraceContext | None) -> None:
    assert tracing.extract(headers) == expected


@pytest.mark.parametrize(("incoming", "expected"), [
    pytest.param(None, SpanContext("0" * 31 + "1", "0" * 15 + "2", None, True), id="root"),
    pytest.param(TraceContext(T32, P, True, "k=v"), SpanContext(T32, "0" * 15 + "1", P, True, "k=v"), id="child"),
    pytest.param(TraceContext(T16, P, False), SpanContext(T16, "0" * 15 + "1", P, False), id="unsampled-child"),
])
def test_start_span(incoming: TraceContext | None, expected: SpanContext) -> None:
    assert tracing.start_span(incoming, new_id=_ids()) == expected


def test_inject_replaces_old_context_and_names_the_new_span_as_parent() -> None:
    old = [("x-b3-spanid", P), ("traceparent", f"00-{T32}-{P}-01"), ("tracestate", "k=v"), ("accept", "*/*")]
    span = SpanContext(T16, "1" * 16, P, True, "k=v")
    out = dict(tracing.inject(old, span))
    assert out["traceparent"] == f"00-{'0' * 16}{T16}-{'1' * 16}-01"  # 64-bit B3 id padded for W3C
    assert (out["x-b3-traceid"], out["x-b3-spanid"], out["x-b3-parentspanid"], out["x-b3-sampled"]) == (
        T16, "1" * 16, P, "1")
    assert out["tracestate"] == "k=v" and out["accept"] == "*/*"
    assert len(tracing.inject(old, span)) == 7  # no duplicated trace headers
    # What the next hop reads back is a child of this span.
    assert tracing.extract(tracing.inject(old, span)) == TraceContext(T16, "1" * 16, True, "k=v")


def _span(trace: str, span_id: str, parent: str | None, request_id: str, ts: int = 1) -> dict[str, object]:
    return Span(SpanContext(trace, span_id, parent, True), "reviews.default.svc.cluster.local:9080/*", "SERVER", ts,
                5, Endpoint("reviews.default", "127.0.0.9"), tags={tracing.REQUEST_ID_TAG: request_id}).to_zipkin()


def test_zipkin_json_shape() -> None:
    raw = _span(T32, P, None, "r1")
    assert "parentId" not in raw and raw["traceId"] == T32 and raw["kind"] == "SERVER"
    assert raw["localEndpoint"] == {"serviceName": "reviews.default", "ipv4": "127.0.0.9"}


@pytest.mark.parametrize(("span", "message"), [
    ({"traceId": "zz", "id": P}, "traceId"),
    ({"traceId": T32, "id": "short"}, "span id"),
    ({"traceId": T32, "id": P, "parentId": "x"}, "parentId"),
    ({"traceId": T32, "id": P, "tags": {"n": 1}}, "tags"),
], ids=["[Error] bad trace id", "[Error] bad span id", "[Error] bad parent", "[Error] non-string tag"])
def test_store_refuses_bad_spans(span: dict[str, object], message: str) -> None:
    with pytest.raises(SpanError, match=message):
        SpanStore().accept([span])


def test_store_forgets_oldest_traces_first() -> None:
    store = SpanStore(max_spans=4)
    for n in range(3):
        store.accept([_span(f"{n + 1:032x}", f"{i + 1:016x}", None, f"r{n}") for i in range(2)])
    assert store.trace(f"{1:032x}") is None and store.trace(f"{3:032x}") is not None
    assert len(store) == 4 and store.evicted == 2


def test_collector_api() -> None:
    async def body() -> None:
        server = web.AppRunner(make_app())
        await server.setup()
        site = web.TCPSite(server, "127.0.0.1", 0)
        await site.start()
        port = server.addresses[0][1]
        base = f"http://127.0.0.1:{port}/api/v2"
        try:
            async with aiohttp.ClientSession() as http:
                spans = [_span(T32, P, None, "req-1", 1), _span(T32, "1" * 16, P, "req-1", 2),
                         _span(T16, "2" * 16, None, "req-2")]
                async with http.post(f"{base}/spans", json=spans) as r:
                    assert r.status == 202
                async with http.post(f"{base}/spans", data=b"[{]") as r:
                    assert r.status == 400
                async with http.get(f"{base}/trace/{T32.upper()}") as r:
                    assert [s["id"] for s in await r.json()] == [P, "1" * 16]
                async with http.get(f"{base}/trace/{'9' * 32}") as r:
                    assert r.status == 404
                async with http.get(f"{base}/traces", params={"annotationQuery": "guid:x-request-id=req-2"}) as r:
                    assert [[s["traceId"] for s in t] for t in await r.json()] == [[T16]]
                async with http.get(f"{base}/traces", params={"requestId": "req-1"}) as r:
                    assert [len(t) for t in await r.json()] == [2]
                async with http.get(f"{base}/traces", params={"requestId": "nope"}) as r:
                    assert await r.json() == []
        finally:
            await server.cleanup()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_reporter_batches_to_the_collector_and_counts_drops() -> None:
    async def body() -> None:
        store = SpanStore()
        server = web.AppRunner(make_app(store))
        await server.setup()
        await web.TCPSite(server, "127.0.0.1", 0).start()
        port = server.addresses[0][1]
        reporter = SpanReporter(f"127.0.0.1:{port}", limit=3, batch=2, interval=0.05)
        make = [Span(SpanContext(T32, f"{i + 1:016x}", None, True), "n", "CLIENT", 1, 1, Endpoint("a.b"))
                for i in range(5)]
        for span in make:
            reporter.submit(span)  # the queue holds 3: two are dropped at once, never blocking
        reporter.submit(Span(SpanContext(T32, "f" * 16, None, False), "n", "CLIENT", 1, 1, Endpoint("a.b")))
        reporter.start()
        try:
            for _ in range(200):
                if len(store) == 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            await reporter.stop()
            await server.cleanup()
        assert len(store) == 3
        assert reporter.stats["tracing.zipkin.spans_dropped"] == 2 and reporter.stats["tracing.zipkin.spans_sent"] == 3

    asyncio.run(asyncio.wait_for(body(), 20))


def test_reporter_drops_when_the_collector_is_unreachable() -> None:
    async def body() -> None:
        async def nowhere(address: str) -> str:
            raise OSError(f"{address} does not resolve")

        reporter = SpanReporter("zipkin.istio-system:9411", resolve=nowhere)
        reporter.submit(Span(SpanContext(T32, P, None, True), "n", "CLIENT", 1, 1, Endpoint("a.b")))
        await reporter.flush()
        assert reporter.stats["tracing.zipkin.spans_dropped"] == 1

    asyncio.run(asyncio.wait_for(body(), 10))


def test_span_json_is_serialisable() -> None:
    assert json.loads(json.dumps(_span(T32, P, "1" * 16, "r")))["parentId"] == "1" * 16
