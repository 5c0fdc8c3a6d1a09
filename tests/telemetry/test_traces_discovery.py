"""Pure parts of tracing and discovery: Zipkin spans into a tree; pods into scrape targets and workloads."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.telemetry.scraping import proxies_of, workload_of
from meshlab.telemetry.traces import build_trace


def span(span_id: str, parent: str | None, service: str, kind: str, start: int, duration: int = 1000
         ) -> dict[str, Any]:
    raw: dict[str, Any] = {"traceId": "t1", "id": span_id, "name": "GET /", "kind": kind, "timestamp": start,
                           "duration": duration, "localEndpoint": {"serviceName": service},
                           "tags": {"guid:x-request-id": "r1"}}
    if parent:
        raw["parentId"] = parent
    return raw


# sleep -> productpage -> reviews: a client and a server span per hop, Envoy's way
HOPS = [span("a", None, "sleep", "CLIENT", 0, 9000), span("b", "a", "productpage", "SERVER", 100, 8800),
        span("d", "b", "productpage", "CLIENT", 3000, 2000), span("c", "b", "productpage", "CLIENT", 500, 2000),
        span("e", "c", "reviews", "SERVER", 600, 1800)]


@pytest.mark.parametrize(("raw", "want"), [
    pytest.param(HOPS, [(0, "a"), (1, "b"), (2, "c"), (3, "e"), (2, "d")],
                 id="parent links; siblings by start time"),
    pytest.param(list(reversed(HOPS)), [(0, "a"), (1, "b"), (2, "c"), (3, "e"), (2, "d")],
                 id="report order does not matter"),
    pytest.param([s for s in HOPS if s["id"] != "b"], [(0, "a"), (0, "c"), (1, "e"), (0, "d")],
                 id="a missing parent leaves its children as roots, not lost"),
    pytest.param([], [], id="no spans"),
])
def test_trace_tree(raw: list[dict[str, Any]], want: list[tuple[int, str]]) -> None:
    trace = build_trace("r1", raw)
    rows = trace.waterfall()
    ids = [s.span_id for s in trace.spans()]
    assert [(depth, span_id) for (depth, *_), span_id in zip(rows, ids, strict=True)] == want


def test_waterfall_offsets_in_ms() -> None:
    trace = build_trace("r1", HOPS)
    assert trace.waterfall()[3] == (3, 0.6, 1.8, "reviews server GET /")
    assert repr(trace).splitlines()[0] == "Trace(request_id='r1', trace_id='t1', spans=5)"


def pod(name: str, *, proxy: bool = True, phase: str = "Running", ip: str | None = "10.0.0.5",
        owner: tuple[str, str] | None = ("ReplicaSet", "reviews-v1-7d4f9"), version: str = "v1") -> dict[str, Any]:
    containers = [{"name": "app"}] + ([{"name": "istio-proxy"}] if proxy else [])
    meta: dict[str, Any] = {"name": name, "namespace": "shop",
                            "labels": {"version": version, "pod-template-hash": "7d4f9"}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"metadata": meta, "spec": {"containers": containers}, "status": {"phase": phase, "podIP": ip}}


@pytest.mark.parametrize(("raw", "want"), [
    pytest.param(pod("reviews-v1-7d4f9-x"), "reviews-v1", id="Deployment pod: ReplicaSet name minus hash"),
    pytest.param(pod("ds-x", owner=("DaemonSet", "agent")), "agent", id="DaemonSet pod"),
    pytest.param(pod("sleep", owner=None), "sleep", id="bare pod: its own name"),
])
def test_workload_of(raw: dict[str, Any], want: str) -> None:
    assert workload_of(raw) == want


@pytest.mark.parametrize(("raw", "want"), [
    pytest.param(pod("a"), ["pod/shop/a 10.0.0.5:15090 reviews-v1 (v1)"], id="meshed and running"),
    pytest.param(pod("a", proxy=False), [], id="no istio-proxy container"),
    pytest.param(pod("a", phase="Pending"), [], id="not running yet"),
    pytest.param(pod("a", ip=None), [], id="no pod IP"),
])
def test_proxies_of(raw: dict[str, Any], want: list[str]) -> None:
    got = [f"{p.target.name} {p.target.ip}:{p.target.port} {p.node.workload} ({p.node.version})"
           for p in proxies_of([raw])]
    assert got == want
