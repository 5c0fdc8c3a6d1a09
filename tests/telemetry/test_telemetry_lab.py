"""Aggregated telemetry of the bookstore under generated load, in the embedded lab.

The load starts inside the mesh: ``meshlab.mesh.load.run_load`` exec'd in the ``sleep`` client pod (whose
``HTTP_PROXY`` is its sidecar), so every request crosses two sidecars and both report it. Each test brackets
one load run with two scrape rounds (``meshlab.telemetry.scrape_window``) and checks what a dashboard would
show against what the load generator itself counted: the graph's nodes and edges, request counts within 5 %,
a 50 % abort as ~50 % success, a delay in p99, and the mTLS share with and without a DISABLE
PeerAuthentication. The mesh fixture (bookstore, httpbin, sleep) is the traffic-management tasks' one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from meshlab import cli, telemetry
from meshlab.telemetry import Graph, Trace
from tests.mesh import test_tasks_lab as tasks
from tests.polling import wait_for

pytestmark = pytest.mark.slow

mesh = tasks.mesh  # the module-scoped fixture: mesh installed, bookstore + httpbin + sleep in a fresh namespace
Mesh = tasks.Mesh

LOAD_SCRIPT = (
    "import json, sys\n"
    "from meshlab.mesh.load import run_load\n"
    "url, rate, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])\n"
    "print(json.dumps(run_load(url, rate=rate, duration=duration).to_dict()))\n"
)
RATINGS = "http://ratings:9080/ratings/0"


def run_load(mesh: Mesh, url: str, *, rate: float, duration: float) -> dict[str, Any]:
    """An open-model load from the client pod's app container; the generator's own JSON summary."""
    handle, namespace = mesh
    out = handle.kubectl("exec", "-n", namespace, tasks.CLIENT, "-c", tasks.CLIENT, "--", "python", "-c",
                         LOAD_SCRIPT, url, str(rate), str(duration), timeout=120)
    return dict(json.loads(out))


Window = tuple[list[telemetry.Proxy], list[telemetry.Scrape], list[telemetry.Scrape], float]


def window_under_load(mesh: Mesh, url: str, *, rate: float, duration: float, settle: float = 0.0
                      ) -> tuple[Window, dict[str, Any]]:
    """Two scrape rounds around one load run (``settle``: seconds to wait after it, for batched reports)."""
    handle, namespace = mesh
    result: dict[str, Any] = {}

    def during() -> None:
        result.update(run_load(mesh, url, rate=rate, duration=duration))
        time.sleep(settle)
    return telemetry.scrape_window(handle, namespace=namespace, during=during), result


def graph_under_load(mesh: Mesh, url: str, *, rate: float, duration: float, settle: float = 0.0
                     ) -> tuple[Graph, dict[str, Any]]:
    (proxies, before, after, seconds), result = window_under_load(mesh, url, rate=rate, duration=duration,
                                                                  settle=settle)
    graph = telemetry.graph_of(proxies, before, after, seconds, namespace=mesh[1])
    print(f"load {url}: sent {result['sent']}, statuses {result['statuses']}\n{graph!r}")
    return graph, result


def test_stat_before_any_traffic_says_no_traffic_yet(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    handle, namespace = mesh
    assert cli.main(["mesh", "stat", "--kubeconfig", str(handle.kubeconfig), "-n", namespace, "--window", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "productpage-v1" in out and "no traffic yet" in out, out
    assert cli.main(["mesh", "top", "--kubeconfig", str(handle.kubeconfig), "-n", namespace, "--window", "1.5"]) == 0
    assert "no data because no traffic yet" in capsys.readouterr().out


def test_graph_of_the_bookstore_matches_the_load_generator(mesh: Mesh) -> None:
    window, result = window_under_load(mesh, tasks.PAGE, rate=20, duration=4)
    graph = telemetry.graph_of(*window, namespace=mesh[1])
    print(repr(graph))
    assert graph.no_data is None and graph.unreachable == ()
    names = {n.workload for n in graph.nodes}
    assert {"sleep", "productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3",
            "ratings-v1"} <= names, names
    edges = {(e.source.workload, e.destination.workload) for e in graph.edges}
    assert {("sleep", "productpage-v1"), ("productpage-v1", "details-v1"), ("productpage-v1", "reviews-v1"),
            ("productpage-v1", "reviews-v2"), ("productpage-v1", "reviews-v3"), ("reviews-v2", "ratings-v1"),
            ("reviews-v3", "ratings-v1")} <= edges, edges
    assert ("reviews-v1", "ratings-v1") not in edges  # v1 shows no stars: it never calls ratings
    front = graph.edge("sleep", "productpage-v1")
    assert front is not None
    assert front.signals.requests == pytest.approx(result["answered"], rel=0.05)
    assert front.signals.rps == pytest.approx(result["answered"] / graph.window, rel=0.05)
    assert front.signals.success == 1.0
    versions = {n.workload: n.version for n in graph.nodes}
    assert versions["reviews-v2"] == "v2" and versions["productpage-v1"] == "v1"
    # auto-mTLS between sidecars: every request the servers saw came over mutual TLS
    assert {e.mtls_share for e in graph.edges if e.mtls_share is not None} == {1.0}
    # golden signals, per workload: what each one served in the same window
    served = {row.node.workload: row for row in telemetry.signals_of(*window)}
    page = served["productpage-v1"].signals
    assert page is not None and page.requests == pytest.approx(result["answered"], rel=0.05) and page.success == 1.0
    assert page.p50 is not None and page.p50 <= (page.p95 or 0) <= (page.p99 or 0)
    reviews = sum((served[f"reviews-v{v}"].signals or page).requests for v in (1, 2, 3))
    assert reviews == pytest.approx(result["answered"], rel=0.05)  # productpage asks reviews once per page
    assert served["sleep"].signals is None and served["sleep"].no_data is not None  # it only calls out


def test_an_injected_half_abort_shows_as_half_success(mesh: Mesh) -> None:
    with tasks.rules(mesh, tasks.VIRTUAL_SERVICE_RATINGS_ABORT_HALF):
        graph, result = graph_under_load(mesh, RATINGS, rate=40, duration=4)
    edge = graph.service_edge("sleep", "ratings")
    assert edge is not None and edge.reporter == "source"
    assert edge.signals.requests == pytest.approx(result["answered"], rel=0.05)
    generator = result["statuses"].get("200", 0) / result["answered"]
    assert edge.signals.success == pytest.approx(generator, abs=0.03)
    assert 0.38 <= (edge.signals.success or 0) <= 0.62, edge
    answered = graph.edge("sleep", "ratings-v1")
    assert answered is not None and answered.signals.success == 1.0  # the half that reached ratings


RATINGS_DELAY_TENTH = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 10.0
        fixedDelay: 0.6s
    route:
    - destination:
        host: ratings
        subset: v1
"""


def test_an_injected_delay_shows_in_p99_not_p50(mesh: Mesh) -> None:
    with tasks.rules(mesh, RATINGS_DELAY_TENTH):
        graph, result = graph_under_load(mesh, RATINGS, rate=30, duration=4)
    edge = graph.service_edge("sleep", "ratings")
    assert edge is not None
    s = edge.signals
    print(f"p50 {s.p50} p95 {s.p95} p99 {s.p99}; the generator's p99 {result['latencyMs']['p99']} ms")
    assert s.p50 is not None and s.p50 < 250
    assert s.p99 is not None and 500 <= s.p99 <= 1000  # Istio's bucket (500, 1000] holds 600 ms + overhead
    assert result["latencyMs"]["p99"] >= 600


def test_a_requests_trace_is_a_tree_with_two_spans_per_hop(mesh: Mesh) -> None:
    handle, _ = mesh
    request_id = "telemetry-trace-" + os.urandom(4).hex()
    [(status, *_)] = tasks.send(mesh, tasks.PAGE, headers={"x-request-id": request_id})
    assert status == 200
    # sleep -> productpage -> details, reviews (-> ratings from v2/v3): 3 or 4 hops, a CLIENT and a SERVER span each
    def complete() -> Trace | None:
        got = telemetry.trace(handle, request_id)
        return got if len(got.spans()) in (6, 8) else None
    found = wait_for(complete, timeout=20, what=f"the spans of {request_id}", interval=0.5)
    spans = found.spans()
    print(repr(found))
    assert len(found.roots) == 1 and found.roots[0].kind == "CLIENT" and found.roots[0].service.startswith("sleep")
    assert {s.trace_id for s in spans} == {found.trace_id}
    for span in spans:
        # Envoy's way: each CLIENT span has exactly one child, the SERVER span of the callee's sidecar
        if span.kind == "CLIENT":
            assert [c.kind for c in span.children] == ["SERVER"], span
        else:
            assert all(c.kind == "CLIENT" for c in span.children), span
    assert all(dict(s.tags).get("guid:x-request-id") == request_id for s in spans)


def edges_of(graph: Graph) -> set[tuple[str, str]]:
    return {(e.source.workload, e.destination.workload) for e in graph.edges}


def test_classic_and_modern_profiles_give_the_same_aggregation(mesh: Mesh) -> None:
    profile = pytest.importorskip("meshlab.mesh.mixer.profile", reason="the profile switch (issue 6, engineer G)")
    set_profile = profile.set_profile
    handle, namespace = mesh
    modern, _ = graph_under_load(mesh, tasks.PAGE, rate=15, duration=3)
    before = tasks.sidecar_versions(handle, namespace)
    set_profile(handle, "classic", fail_open=True)
    try:
        tasks.wait_synced(handle, namespace, before, timeout=30)
        targets = telemetry.scraping.mixer_targets(handle)
        assert telemetry.scraping.profile(handle) == "classic" and len(targets) == 1, targets  # Mixer is read
        # Mixer's metrics grow when a Report batch arrives (about once a second): let the last one land.
        classic, result = graph_under_load(mesh, tasks.PAGE, rate=15, duration=3, settle=2.5)
    finally:
        before = tasks.sidecar_versions(handle, namespace)
        set_profile(handle, "modern")
        tasks.wait_synced(handle, namespace, before, timeout=30)
    assert classic.no_data is None and classic.unreachable == ()
    assert edges_of(classic) == edges_of(modern)
    assert {str(n) for n in classic.nodes} == {str(n) for n in modern.nodes}
    front = classic.edge("sleep", "productpage-v1")
    assert front is not None and front.signals.requests == pytest.approx(result["answered"], rel=0.05)
    assert front.signals.success == 1.0 and front.signals.p99 is not None
    assert {e.mtls_share for e in classic.edges if e.mtls_share is not None} == {1.0}


PEER_AUTHENTICATION_DISABLE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: DISABLE
"""


# Last in the module on purpose: after the policy is deleted, the client sidecars keep reusing the plaintext
# keep-alive connections they opened under DISABLE (the proxy drops a host's idle connections when the host
# leaves, not when its transport changes), so traffic stays plaintext for a while: reported to the lead.
def test_mtls_share_is_zero_with_mtls_disabled(mesh: Mesh) -> None:
    with tasks.rules(mesh, PEER_AUTHENTICATION_DISABLE):
        graph, _ = graph_under_load(mesh, RATINGS, rate=20, duration=2)
    edge = graph.edge("sleep", "ratings-v1")
    assert edge is not None and edge.mtls_share == 0.0, graph
