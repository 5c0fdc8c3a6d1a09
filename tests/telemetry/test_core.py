"""The aggregation core on hand-written Prometheus text: rates, success, quantiles, mTLS share, no-data states."""

from __future__ import annotations

import math

import pytest

from meshlab.telemetry import service_graph as g
from meshlab.telemetry.metrics import Scrape, histogram_quantile, increase, parse_text
from meshlab.telemetry.table import format_stat, format_top
from tests.telemetry.promtext import Row, exposition

INF = math.inf


@pytest.mark.parametrize(("q", "buckets", "want"), [
    pytest.param(0.5, [(1, 0), (5, 10), (10, 20), (INF, 20)], 5.0, id="median at a bucket's top"),
    pytest.param(0.25, [(1, 0), (5, 10), (10, 20), (INF, 20)], 3.0, id="interpolated inside (1,5]"),
    pytest.param(0.99, [(1, 0), (5, 10), (10, 20), (INF, 20)], 9.9, id="p99 in (5,10]"),
    pytest.param(0.5, [(0.5, 4), (1, 4), (INF, 4)], 0.25, id="lowest bucket starts at 0"),
    pytest.param(0.9, [(1, 1), (5, 1), (INF, 10)], 5.0, id="+Inf bucket answers the highest finite bound"),
    pytest.param(0.5, [(1, 0), (5, 0), (INF, 0)], None, id="no observations"),
    pytest.param(0.5, [(1, 3), (5, 4)], None, id="no +Inf bucket"),
    pytest.param(0.75, [(INF, 4), (5, 4), (1, 2)], 3.0, id="buckets in any order"),
])
def test_histogram_quantile_as_promql(q: float, buckets: list[tuple[float, float]], want: float | None) -> None:
    got = histogram_quantile(q, buckets)
    assert got == (None if want is None else pytest.approx(want))


@pytest.mark.parametrize(("before", "after", "want"), [
    pytest.param(100.0, 130.0, 30.0, id="counter grew"),
    pytest.param(100.0, 30.0, 30.0, id="reset: the proxy restarted"),
    pytest.param(None, 7.0, 7.0, id="series created in the window"),
    pytest.param(5.0, 5.0, 0.0, id="no change"),
])
def test_increase_is_reset_aware(before: float | None, after: float, want: float) -> None:
    key = ("istio_requests_total", (("reporter", "source"),))
    assert increase({} if before is None else {key: before}, {key: after}) == {key: want}


def scrapes(at: float, **targets: list[Row] | str) -> list[Scrape]:
    """One scrape round: target name → rows (a proxy's cumulative counts) or an error string."""
    return [Scrape(name, at, {}, rows) if isinstance(rows, str) else Scrape(name, at, parse_text(exposition(rows)))
            for name, rows in targets.items()]


SRC, DST = "source", "destination"
P, R1, R2 = "productpage-v1", "reviews-v1", "reviews-v2"


@pytest.mark.parametrize(("before", "after", "edge", "want"), [
    pytest.param([], [Row(SRC, P, R1, n=100)], (P, R1), dict(requests=100, rps=10.0, success=1.0),
                 id="100 requests in 10 s is 10 rps"),
    pytest.param([Row(SRC, P, R1, n=40)], [Row(SRC, P, R1, n=140)], (P, R1), dict(requests=100, rps=10.0),
                 id="only the window's increase counts"),
    pytest.param([], [Row(SRC, P, R1, n=50), Row(SRC, P, R1, code=500, n=50)], (P, R1),
                 dict(success=0.5), id="half 500s is 50 % success"),
    pytest.param([], [Row(SRC, P, R1, n=75), Row(SRC, P, R1, code=404, n=25)], (P, R1),
                 dict(success=1.0), id="a 4xx is the client's mistake, not a failure"),
    pytest.param([], [Row(SRC, P, R1, n=9), Row(SRC, P, R1, code=0, n=1)], (P, R1),
                 dict(success=0.9), id="no response at all is a failure"),
    pytest.param([], [Row(SRC, P, R1, ms=3, n=90), Row(SRC, P, R1, ms=2000, n=10)], (P, R1),
                 dict(p50=1 + 4 * 50 / 90, p95=1750.0, p99=2350.0), id="a delayed tenth shows in p95 and p99"),
])
def test_edge_signals(before: list[Row], after: list[Row], edge: tuple[str, str], want: dict[str, float]) -> None:
    graph = g.build_graph(scrapes(0, a=before), scrapes(10, a=after), window=10.0)
    found = graph.edge(*edge)
    assert found is not None, graph
    for name, value in want.items():
        assert getattr(found.signals, name) == pytest.approx(value), (name, found)


@pytest.mark.parametrize(("rows", "success", "share", "reporter"), [
    pytest.param([Row(SRC, P, R1, n=10), Row(DST, P, R1, n=10)], 1.0, 1.0, SRC,
                 id="STRICT-capable auto-mTLS: every request over mutual TLS"),
    pytest.param([Row(SRC, P, R1, mtls=False, n=10), Row(DST, P, R1, mtls=False, n=10)], 1.0, 0.0, SRC,
                 id="mTLS disabled: share 0"),
    pytest.param([Row(DST, P, R1, n=30), Row(DST, P, R1, mtls=False, n=10)], 1.0, 0.75, DST,
                 id="mixed: the server's view, 30 of 40"),
    pytest.param([Row(SRC, P, R1, n=50), Row(SRC, P, R1, code=500, n=50), Row(DST, P, R1, n=50)],
                 0.5, 1.0, SRC, id="aborts injected at the client count: source reports win"),
    pytest.param([Row(DST, "unknown", R1, n=5)], 1.0, 1.0, DST,
                 id="caller outside the mesh: destination reports only"),
])
def test_edge_reporter_choice_and_mtls_share(rows: list[Row], success: float, share: float, reporter: str) -> None:
    graph = g.build_graph(scrapes(0, a=[]), scrapes(10, a=rows), window=10.0)
    (edge,) = graph.edges
    assert (edge.signals.success, edge.mtls_share, edge.reporter) == (pytest.approx(success), share, reporter)


def test_aborts_injected_at_the_client_show_on_the_service_edge() -> None:
    # A VirtualService abort answers 500 in reviews' sidecar: no workload answered, only the service is known.
    rows = [Row(SRC, R2, "ratings-v1", n=48), Row(SRC, R2, "unknown", code=500, n=52, service="ratings"),
            Row(DST, R2, "ratings-v1", n=48)]
    graph = g.build_graph(scrapes(0, a=[]), scrapes(10, a=rows), window=10.0)
    edge = graph.service_edge(R2, "ratings")
    assert edge is not None and edge.signals.requests == 100 and edge.signals.success == pytest.approx(0.48)
    assert edge.mtls_share == 1.0
    answered = graph.edge(R2, "ratings-v1")
    assert answered is not None and answered.signals.success == 1.0
    aborted = graph.edge(R2, "ratings")
    assert aborted is not None and aborted.signals.success == 0.0 and aborted.mtls_share is None


def test_graph_nodes_and_edges_carry_versions() -> None:
    after = scrapes(10, p=[Row(SRC, P, R1), Row(SRC, P, R2)], r1=[Row(DST, P, R1)], r2=[Row(DST, P, R2)])
    graph = g.build_graph(scrapes(0, p=[], r1=[], r2=[]), after, window=10.0,
                          versions={("shop", P): "v1", ("shop", R1): "v1", ("shop", R2): "v2"})
    assert [str(n) for n in graph.nodes] == ["productpage-v1.shop (v1)", "reviews-v1.shop (v1)",
                                             "reviews-v2.shop (v2)"]
    assert [(e.source.workload, e.destination.workload) for e in graph.edges] == [(P, R1), (P, R2)]
    assert graph.no_data is None


@pytest.mark.parametrize(("before", "after", "window", "reason", "mentions"), [
    pytest.param({}, {}, 10.0, g.NO_PROXIES, "istio-proxy", id="no proxies"),
    pytest.param({"pod/shop/a": []}, {"pod/shop/a": "unreachable (Connection refused)"}, 10.0, g.UNREACHABLE,
                 "pod/shop/a", id="the only proxy unreachable, named"),
    pytest.param({"pod/shop/a": []}, {"pod/shop/a": [Row(SRC, P, R1)]}, 0.4, g.WINDOW_TOO_SHORT, "0.40 s",
                 id="window too short"),
    pytest.param({"pod/shop/a": [Row(SRC, P, R1)]}, {"pod/shop/a": [Row(SRC, P, R1)]}, 10.0, g.NO_TRAFFIC,
                 "10.0 s", id="nothing new in the window"),
])
def test_no_data_states(before: dict[str, list[Row] | str], after: dict[str, list[Row] | str], window: float,
                        reason: str, mentions: str) -> None:
    graph = g.build_graph(scrapes(0, **before), scrapes(window, **after), window=window)
    assert graph.edges == ()
    assert graph.no_data is not None and graph.no_data.reason == reason
    assert mentions in str(graph.no_data)


def test_one_proxy_unreachable_still_gives_a_graph_and_names_it() -> None:
    after = scrapes(10, a=[Row(SRC, P, R1, n=20)], b="unreachable (timed out)")
    graph = g.build_graph(scrapes(0, a=[], b=[]), after, window=10.0)
    assert graph.no_data is None and graph.edge(P, R1) is not None
    assert graph.unreachable == (("b", "unreachable (timed out)"),)
    assert "unreachable b" in repr(graph)


def test_golden_signals_per_workload() -> None:
    p, r1, r2 = g.Node("shop", P, "v1"), g.Node("shop", R1, "v1"), g.Node("shop", R2, "v2")
    before = scrapes(0, p=[], r1=[], r2=[])
    after = scrapes(10, p=[Row(SRC, P, "details-v1", n=20)],  # p only calls out
                    r1=[Row(DST, P, R1, n=30), Row(DST, P, R1, code=503, n=10)], r2="unreachable (refused)")
    rows = g.workload_signals(before, after, window=10.0,
                              workloads=[(p, 1, ["p"]), (r1, 2, ["r1"]), (r2, 1, ["r2"])])
    by_name = {r.node.workload: r for r in rows}
    served = by_name[R1].signals
    assert served is not None and (served.requests, served.rps, served.success) == (40, 4.0, 0.75)
    assert by_name[P].no_data == g.NoData(g.NO_TRAFFIC, f"no request to {P} in the 10.0 s window")
    down = by_name[R2].no_data
    assert down is not None and down.reason == g.UNREACHABLE and "r2: unreachable (refused)" in down.detail
    text = format_stat(rows)
    assert "75.00%" in text and "4.0" in text and "proxy unreachable" in text


def test_top_table_and_stable_repr() -> None:
    graph = g.build_graph(scrapes(0, a=[]), scrapes(10, a=[Row(SRC, P, R1, n=50), Row(DST, P, R1, n=50)]),
                          window=10.0, versions={("shop", P): "v1", ("shop", R1): "v1"})
    assert "productpage-v1.shop (v1)   reviews-v1.shop (v1)   100.00%   5.0" in format_top(graph)
    assert repr(graph) == (
        "Graph(window=10.0s, 2 nodes, 1 edges)\n"
        "  Edge(productpage-v1.shop (v1) -> reviews-v1.shop (v1), Signals(requests=50, rps=5.00, success=1.000, "
        "p50=3.0, p95=4.8, p99=5.0), mtls_share=1.00, reporter='source')")
