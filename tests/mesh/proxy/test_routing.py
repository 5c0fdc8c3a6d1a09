"""Route selection: virtual host by authority, route by path/headers/method/query, cluster by weight."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.proxy.config import RouteTable
from meshlab.mesh.proxy.decoding import decode_route_configuration
from meshlab.mesh.proxy.routing import RequestHead, route_request, select_virtual_host
from tests.mesh.proxy.resources import REVIEWS_V1, REVIEWS_V2, route, route_config, service_domains, virtual_host


def table(*vhosts: dict[str, Any], **fields: Any) -> RouteTable:
    return decode_route_configuration(route_config(*vhosts, **fields))[1]


HOSTS = table(
    virtual_host("reviews", [*service_domains("reviews", "default", 9080), "10.96.0.12", "10.96.0.12:9080"]),
    virtual_host("ratings", service_domains("ratings", "default", 9080)),
    virtual_host("suffix", ["*.example.com"]),
    virtual_host("longer-suffix", ["*.api.example.com"]),
    virtual_host("prefix", ["shop.*"]),
    virtual_host("default", ["*"]),
)


@pytest.mark.parametrize(
    ("authority", "vhost"),
    [
        ("reviews", "reviews"),
        ("reviews:9080", "reviews"),
        ("reviews.default", "reviews"),
        ("reviews.default:9080", "reviews"),
        ("reviews.default.svc.cluster.local:9080", "reviews"),
        ("REVIEWS.Default.svc.cluster.local", "reviews"),
        ("10.96.0.12:9080", "reviews"),
        ("ratings.default.svc:9080", "ratings"),
        pytest.param("reviews:8080", "default", id="another port is another name: falls to *"),
        ("www.example.com", "suffix"),
        pytest.param("v1.api.example.com", "longer-suffix", id="longest suffix wins"),
        pytest.param(".example.com", "default", id="the wildcard must cover one character"),
        ("shop.local", "prefix"),
        ("unknown", "default"),
    ],
)
def test_virtual_host_selection_follows_envoys_order(authority: str, vhost: str) -> None:
    chosen = select_virtual_host(HOSTS, authority)
    assert chosen is not None and chosen.name == vhost


def test_no_virtual_host_without_a_default() -> None:
    assert select_virtual_host(table(virtual_host("a", ["a"])), "b") is None


def test_ignore_port_in_host_matching_strips_the_port() -> None:
    routes = table(virtual_host("a", ["reviews"]), ignorePortInHostMatching=True)
    chosen = select_virtual_host(routes, "reviews:9080")
    assert chosen is not None and chosen.name == "a"


# A VirtualService as Istio translates it: ordered routes, the first match wins.
ROUTES = table(virtual_host(
    "reviews", ["reviews"],
    route({"prefix": "/", "headers": [{"name": "end-user", "stringMatch": {"exact": "jason"}}]}, cluster="jason"),
    route({"path": "/exact"}, cluster="exact"),
    route({"prefix": "/CaseLess", "caseSensitive": False}, cluster="caseless"),
    route({"safeRegex": {"regex": "/reviews/[0-9]+"}}, cluster="regex"),
    route({"prefix": "/m", "headers": [{"name": ":method", "stringMatch": {"exact": "POST"}}]}, cluster="post"),
    route({"prefix": "/h", "headers": [{"name": "x-env", "stringMatch": {"prefix": "can"}}]}, cluster="hprefix"),
    route({"prefix": "/h", "headers": [{"name": "x-env", "stringMatch": {"safeRegex": {"regex": "v[12]"}}}]},
          cluster="hregex"),
    route({"prefix": "/h", "headers": [{"name": "x-debug", "presentMatch": True}]}, cluster="hpresent"),
    route({"prefix": "/h", "headers": [{"name": "x-env", "stringMatch": {"exact": "prod"}, "invertMatch": True}]},
          cluster="hinvert"),
    route({"prefix": "/q", "queryParameters": [{"name": "user", "stringMatch": {"exact": "a b"}}]}, cluster="qexact"),
    route({"prefix": "/q", "queryParameters": [{"name": "debug", "presentMatch": True}]}, cluster="qpresent"),
    route({"prefix": "/"}, cluster="catch-all"),
))


@pytest.mark.parametrize(
    ("method", "path", "headers", "cluster"),
    [
        ("GET", "/anything", {"end-user": "jason"}, "jason"),
        pytest.param("GET", "/anything", {"End-User": "jason"}, "jason", id="header names are case-insensitive"),
        pytest.param("GET", "/anything", {"end-user": "Jason"}, "catch-all", id="exact values are case-sensitive"),
        ("GET", "/exact", {}, "exact"),
        pytest.param("GET", "/exact?x=1", {}, "exact", id="exact path ignores the query"),
        pytest.param("GET", "/exact/", {}, "catch-all", id="exact means exact"),
        ("GET", "/caseless/page", {}, "caseless"),
        ("GET", "/reviews/42", {}, "regex"),
        pytest.param("GET", "/reviews/42/x", {}, "catch-all", id="regex must match the whole path"),
        ("POST", "/m", {}, "post"),
        pytest.param("GET", "/m", {}, "catch-all", id="method matched through :method"),
        ("GET", "/h", {"x-env": "canary"}, "hprefix"),
        ("GET", "/h", {"x-env": "v2"}, "hregex"),
        ("GET", "/h", {"x-debug": ""}, "hpresent"),
        pytest.param("GET", "/h", {"x-env": "staging"}, "hinvert", id="inverted exact match"),
        pytest.param("GET", "/h", {"x-env": "prod"}, "catch-all", id="inverted match refuses its value"),
        pytest.param("GET", "/h", {}, "catch-all", id="an absent header never matches a value, inverted or not"),
        pytest.param("GET", "/q?user=a%20b", {}, "qexact", id="query values are decoded"),
        ("GET", "/q?debug", {}, "qpresent"),
        pytest.param("GET", "/q?user=c", {}, "catch-all", id="wrong query value"),
    ],
)
def test_the_first_matching_route_wins(method: str, path: str, headers: dict[str, str], cluster: str) -> None:
    decision = route_request(ROUTES, RequestHead(method, path, "reviews", tuple(headers.items())), draw=lambda n: 0)
    assert decision is not None and decision.cluster == cluster


def test_repeated_headers_are_matched_joined_with_commas() -> None:
    routes = table(virtual_host("a", ["*"],
                                route({"prefix": "/", "headers": [{"name": "x", "stringMatch": {"exact": "1,2"}}]},
                                      cluster="joined")))
    decision = route_request(routes, RequestHead("GET", "/", "a", (("x", "1"), ("x", "2"))), draw=lambda n: 0)
    assert decision is not None and decision.cluster == "joined"


def test_no_matching_route_is_no_decision() -> None:
    routes = table(virtual_host("a", ["a"], route({"path": "/only"}, cluster=REVIEWS_V1)))
    assert route_request(routes, RequestHead("GET", "/other", "a"), draw=lambda n: 0) is None
    assert route_request(routes, RequestHead("GET", "/only", "b"), draw=lambda n: 0) is None


SPLIT = table(virtual_host("reviews", ["reviews"], route(weightedClusters={"clusters": [
    {"name": REVIEWS_V1, "weight": 80}, {"name": REVIEWS_V2, "weight": 20}]})))


@pytest.mark.parametrize(("point", "cluster"), [(0, REVIEWS_V1), (79, REVIEWS_V1), (80, REVIEWS_V2), (99, REVIEWS_V2)])
def test_weighted_clusters_walk_the_cumulative_weights(point: int, cluster: str) -> None:
    draws: list[int] = []

    def draw(n: int) -> int:
        draws.append(n)
        return point

    decision = route_request(SPLIT, RequestHead("GET", "/", "reviews"), draw=draw)
    assert decision is not None and decision.cluster == cluster
    assert draws == [100]


def test_an_80_20_split_over_every_draw_is_exactly_80_20() -> None:
    clusters = []
    for point in range(100):
        decision = route_request(SPLIT, RequestHead("GET", "/", "reviews"), draw=lambda n, p=point: p)  # type: ignore[misc]
        assert decision is not None
        clusters.append(decision.cluster)
    assert clusters.count(REVIEWS_V2) == 20
