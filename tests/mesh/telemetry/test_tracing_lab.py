"""The bookstore's telemetry through real injected sidecars in the embedded lab (modern profile).

One request from the ``sleep`` pod to productpage (so it crosses the client's sidecar first) with a chosen
``x-request-id``; then the collector ``zipkin.istio-system:9411`` that ``meshlab mesh install`` deployed must
hold one trace for it with a CLIENT and a SERVER span per hop, linked parent to child the way the request
went; and reviews' sidecars must show, on their port 15090, the requests productpage made to them as
``reporter="destination"``, over mutual TLS (the mesh has Citadel, so sidecars use auto-mTLS).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mesh import test_tasks_lab as tasks

pytestmark = pytest.mark.slow

mesh = tasks.mesh  # module-scoped: mesh installed (with zipkin), bookstore + httpbin + sleep in a fresh namespace
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> Any:
    with DIRECT.open(url, timeout=10) as response:
        return response.read().decode()


def _trace(mesh: tasks.Mesh, request_id: str) -> list[dict[str, Any]]:
    handle, _ = mesh
    query = urllib.parse.urlencode({"annotationQuery": f"guid:x-request-id={request_id}"})
    traces = json.loads(_get(handle.url("zipkin", 9411, namespace="istio-system", path=f"/api/v2/traces?{query}")))
    return [span for trace in traces for span in trace]


def _complete(spans: list[dict[str, Any]]) -> bool:
    """Every SERVER span has its CLIENT parent and vice versa (reports arrive in batches, not in order)."""
    ids = {s["id"] for s in spans}
    servers = [s for s in spans if s["kind"] == "SERVER"]
    clients = [s for s in spans if s["kind"] == "CLIENT"]
    return bool(servers) and len(servers) == len(clients) and all(s.get("parentId") in ids for s in servers) \
        and all(s.get("parentId") in ids for s in clients if s.get("parentId"))


def test_a_productpage_request_is_one_trace_with_a_span_pair_per_hop(mesh: tasks.Mesh) -> None:
    request_id = f"trace-{uuid.uuid4()}"
    ((status, _, _, _),) = tasks.send(mesh, "http://productpage:9080/productpage", headers={"x-request-id": request_id})
    assert status == 200
    deadline = time.monotonic() + 30
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        before, spans = spans, _trace(mesh, request_id)
        # Sidecars report in batches (every 0.5 s): done when complete and unchanged for a second.
        if _complete(spans) and len(spans) >= 6 and len(spans) == len(before):
            break
        time.sleep(1.0)
    by_id = {s["id"]: s for s in spans}
    assert len({s["traceId"] for s in spans}) == 1, spans
    service = {s["id"]: s["localEndpoint"]["serviceName"].split(".")[0] for s in spans}
    servers = sorted(service[s["id"]] for s in spans if s["kind"] == "SERVER")
    # productpage calls details and reviews; reviews v2/v3 call ratings, v1 does not.
    assert servers in (["details", "productpage", "reviews"], ["details", "productpage", "ratings", "reviews"]), spans
    assert len(spans) == 2 * len(servers)  # one CLIENT (caller's sidecar) and one SERVER span per hop
    (root,) = [s for s in spans if not s.get("parentId")]
    assert root["kind"] == "CLIENT" and service[root["id"]] == tasks.CLIENT
    for span in spans:
        if span is root:
            continue
        parent = by_id[span["parentId"]]
        if span["kind"] == "SERVER":  # the callee's span hangs under the caller sidecar's CLIENT span ...
            assert parent["kind"] == "CLIENT" and parent["name"].startswith(service[span["id"]] + "."), (span, parent)
        else:  # ... and a call the app makes while serving hangs under its own sidecar's SERVER span
            assert parent["kind"] == "SERVER" and service[parent["id"]] == service[span["id"]], (span, parent)
        assert span["tags"]["guid:x-request-id"] == request_id


def test_reviews_sidecars_report_productpage_as_the_mtls_source(mesh: tasks.Mesh) -> None:
    handle, namespace = mesh
    for _ in range(3):
        ((status, _, _, _),) = tasks.send(mesh, "http://productpage:9080/productpage")
        assert status == 200
    samples = []
    for pod in tasks.pods(handle, namespace, "app=reviews"):
        text = _get(f"http://{pod['status']['podIP']}:15090/stats/prometheus")
        samples += [s for family in text_string_to_metric_families(text) if family.name == "istio_requests"
                    for s in family.samples]
    from_productpage = [s for s in samples if s.labels["reporter"] == "destination"
                        and s.labels["source_workload"] == "productpage-v1"]
    assert sum(s.value for s in from_productpage) >= 3, samples
    assert {s.labels["connection_security_policy"] for s in from_productpage} == {"mutual_tls"}
    assert {s.labels["destination_service"] for s in from_productpage} == {f"reviews.{namespace}.svc.cluster.local"}
    assert {(s.labels["source_principal"], s.labels["destination_principal"]) for s in from_productpage} == {
        (f"spiffe://cluster.local/ns/{namespace}/sa/bookstore-productpage",
         f"spiffe://cluster.local/ns/{namespace}/sa/bookstore-reviews")}
