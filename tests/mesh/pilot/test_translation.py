"""Translation of a Bookinfo-like mesh into Envoy resources: Istio's names, defaults and validation."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from meshlab.errors import XdsError
from meshlab.mesh.pilot.model import (
    DestinationRule,
    Endpoint,
    MeshState,
    Service,
    ServicePort,
    VirtualService,
    parse_duration,
    resolve_host,
)
from meshlab.mesh.pilot.snapshot import Snapshot
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.xds.node import ProxyIdentity, from_node
from meshlab.mesh.xds.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE

REVIEWS = "reviews.default.svc.cluster.local"
PRODUCTPAGE = ProxyIdentity(ip="127.0.0.10", pod="productpage-v1-abc", namespace="default",
                            labels={"app": "productpage"}, app_address="127.0.0.10:19080")


def _reviews_pod(version: str, ip: str, ready: bool = True) -> Endpoint:
    return Endpoint(ip=ip, port_by_name={"http": 9080}, labels={"app": "reviews", "version": version}, ready=ready,
                    pod=f"reviews-{version}", namespace="default")


def _state(vs: dict[str, Any] | None = None, dr: dict[str, Any] | None = None, vs_ns: str = "default",
           dr_ns: str = "default") -> MeshState:
    services = (
        Service("reviews", "default", "10.96.0.20", (ServicePort("http", 9080),)),
        Service("ratings", "default", "10.96.0.30", (ServicePort("http", 9080),)),
        Service("productpage", "default", "10.96.0.10", (ServicePort("http", 9080),)),
        Service("httpbin", "tools", None, (ServicePort("http", 8000), ServicePort("admin", 9000))),
    )
    endpoints = {
        ("default", "reviews"): (_reviews_pod("v1", "127.0.0.21"), _reviews_pod("v2", "127.0.0.22"),
                                 _reviews_pod("v3", "127.0.0.23"), _reviews_pod("v3", "127.0.0.24", ready=False)),
        ("default", "productpage"): (Endpoint("127.0.0.10", {"http": 9080}, {"app": "productpage"}, True,
                                              "productpage-v1-abc", "default"),),
    }
    return MeshState(services, endpoints,
                     (VirtualService("reviews", vs_ns, vs),) if vs else (),
                     (DestinationRule("reviews", dr_ns, dr),) if dr else ())


ALL_SUBSETS = {"host": "reviews", "subsets": [{"name": n, "labels": {"version": n}} for n in ("v1", "v2", "v3")]}


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def _find(snapshot: Snapshot, type_url: str, name: str) -> Any:
    return next(m for m in snapshot.resources[type_url] if (getattr(m, "name", "") or m.cluster_name) == name)


def _vhost_routes(snapshot: Snapshot, host: str = REVIEWS, port: int = 9080) -> list[dict[str, Any]]:
    config = _find(snapshot, ROUTE, "outbound")
    vhost = next(v for v in config.virtual_hosts if v.name == f"{host}:{port}")
    return [_dict(r) for r in vhost.routes]


def test_no_virtual_service_gives_istios_default_route() -> None:
    [route] = _vhost_routes(translate(_state(), PRODUCTPAGE))
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == f"outbound|9080||{REVIEWS}"
    assert route["route"]["timeout"] == "0s"
    retry = route["route"]["retryPolicy"]
    assert (retry["numRetries"], retry["retryOn"], retry["retriableStatusCodes"]) == (
        2, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", [503])


@pytest.mark.parametrize(("proxy_ns", "present", "absent"), [
    # port 9080: a Host without a port would mean port 80, so only the host:port forms are listed
    pytest.param("default", ["reviews:9080", "reviews.default:9080", "reviews.default.svc:9080", f"{REVIEWS}:9080",
                             "10.96.0.20:9080"], ["reviews", "reviews.default", REVIEWS, "10.96.0.20"],
                 id="same-namespace"),
    pytest.param("tools", ["reviews.default:9080", f"{REVIEWS}:9080"], ["reviews", "reviews:9080"],
                 id="other-namespace-no-short-name"),
])
def test_virtual_host_domains(proxy_ns: str, present: list[str], absent: list[str]) -> None:
    proxy = ProxyIdentity(ip="127.0.0.99", pod="sleep", namespace=proxy_ns)
    config = _find(translate(_state(), proxy), ROUTE, "outbound")
    domains = next(v for v in config.virtual_hosts if v.name == f"{REVIEWS}:9080").domains
    assert set(present) <= set(domains) and not set(absent) & set(domains)


def test_headless_service_has_no_ip_domain_and_multi_port_has_a_host_per_port() -> None:
    config = _find(translate(_state(), PRODUCTPAGE), ROUTE, "outbound")
    names = [v.name for v in config.virtual_hosts if v.name.startswith("httpbin")]
    assert names == ["httpbin.tools.svc.cluster.local:8000", "httpbin.tools.svc.cluster.local:9000"]
    assert not any("None" in d for v in config.virtual_hosts for d in v.domains)


@pytest.mark.parametrize(("dr", "dr_ns", "cluster", "endpoints"), [
    pytest.param(None, "default", f"outbound|9080||{REVIEWS}", ["127.0.0.21", "127.0.0.22", "127.0.0.23"],
                 id="whole-service-ready-only"),
    pytest.param(ALL_SUBSETS, "default", f"outbound|9080|v3|{REVIEWS}", ["127.0.0.23"], id="subset-by-labels"),
    pytest.param(ALL_SUBSETS, "default", f"outbound|9080|v1|{REVIEWS}", ["127.0.0.21"], id="subset-v1"),
])
def test_clusters_and_endpoints(dr: dict[str, Any] | None, dr_ns: str, cluster: str, endpoints: list[str]) -> None:
    snapshot = translate(_state(dr=dr, dr_ns=dr_ns), PRODUCTPAGE)
    assert _find(snapshot, CLUSTER, cluster).type == cluster_pb2.Cluster.EDS
    cla = _dict(_find(snapshot, ENDPOINTS, cluster))
    lb = cla["endpoints"][0]["lbEndpoints"]
    assert [e["endpoint"]["address"]["socketAddress"]["address"] for e in lb] == endpoints
    assert {e["endpoint"]["address"]["socketAddress"]["portValue"] for e in lb} == {9080}
    assert lb[0]["metadata"]["filterMetadata"]["istio"]["app"] == "reviews"


@pytest.mark.parametrize(("dr_ns", "host", "applies"), [
    pytest.param("default", "reviews", True, id="short-name-in-service-namespace"),
    pytest.param("tools", "reviews", False, id="short-name-in-other-namespace-means-other-service"),
    pytest.param("tools", REVIEWS, True, id="fqdn-from-other-namespace"),
    pytest.param("tools", "reviews.default", True, id="name-dot-namespace"),
])
def test_destination_rule_host_is_relative_to_its_namespace(dr_ns: str, host: str, applies: bool) -> None:
    snapshot = translate(_state(dr={**ALL_SUBSETS, "host": host}, dr_ns=dr_ns), PRODUCTPAGE)
    assert (f"outbound|9080|v2|{REVIEWS}" in snapshot.names(CLUSTER)) is applies


JASON = {"hosts": ["reviews"], "http": [
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
    {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]}


def test_routes_keep_the_virtual_service_order() -> None:
    routes = _vhost_routes(translate(_state(JASON, ALL_SUBSETS), PRODUCTPAGE))
    assert [r["route"]["cluster"] for r in routes] == [f"outbound|9080|v2|{REVIEWS}", f"outbound|9080|v3|{REVIEWS}"]
    assert routes[0]["match"] == {"prefix": "/", "headers": [{"name": "end-user", "stringMatch": {"exact": "jason"}}]}


@pytest.mark.parametrize(("match", "expected"), [
    pytest.param({"uri": {"exact": "/productpage"}}, {"path": "/productpage"}, id="uri-exact"),
    pytest.param({"uri": {"prefix": "/api/v1"}}, {"prefix": "/api/v1"}, id="uri-prefix"),
    pytest.param({"uri": {"regex": "/ratings/[0-9]+"}}, {"safeRegex": {"regex": "/ratings/[0-9]+"}}, id="uri-regex"),
    pytest.param({"headers": {"X-Canary": {}}},
                 {"prefix": "/", "headers": [{"name": "x-canary", "presentMatch": True}]},
                 id="header-present"),
    pytest.param({"method": {"exact": "POST"}},
                 {"prefix": "/", "headers": [{"name": ":method", "stringMatch": {"exact": "POST"}}]}, id="method"),
    pytest.param({"queryParams": {"debug": {"regex": "on|1"}}},
                 {"prefix": "/",
                  "queryParameters": [{"name": "debug", "stringMatch": {"safeRegex": {"regex": "on|1"}}}]},
                 id="query-param"),
])
def test_match_translation(match: dict[str, Any], expected: dict[str, Any]) -> None:
    vs = {"hosts": ["reviews"], "http": [{"match": [match], "route": [{"destination": {"host": "reviews"}}]}]}
    [route] = _vhost_routes(translate(_state(vs), PRODUCTPAGE))
    assert route["match"] == expected


def test_each_match_entry_is_a_route_with_the_same_action() -> None:
    vs = {"hosts": ["reviews"], "http": [{"match": [{"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}],
                                          "route": [{"destination": {"host": "reviews"}}]}]}
    routes = _vhost_routes(translate(_state(vs), PRODUCTPAGE))
    assert [r["match"] for r in routes] == [{"prefix": "/a"}, {"prefix": "/b"}]
    assert routes[0]["route"] == routes[1]["route"]


def _one_rule(**rule: Any) -> dict[str, Any]:
    return {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}], **rule}]}


@pytest.mark.parametrize(("rule", "key", "expected"), [
    pytest.param({"timeout": "3s"}, "timeout", "3s", id="timeout"),
    pytest.param({"retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,503,gateway-error"}},
                 "retryPolicy", {"retryOn": "5xx,gateway-error,retriable-status-codes", "numRetries": 3,
                                 "perTryTimeout": "0.500s", "retriableStatusCodes": [503]}, id="retries-with-codes"),
    pytest.param({"retries": {"attempts": 4}}, "retryPolicy",
                 {"retryOn": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                  "numRetries": 4, "retriableStatusCodes": [503]}, id="retries-default-conditions"),
    pytest.param({"retries": {"attempts": 0}}, "retryPolicy", None, id="retries-disabled"),
    pytest.param({"mirror": {"host": "ratings"}, "mirrorPercentage": {"value": 12.5}}, "requestMirrorPolicies",
                 [{"cluster": "outbound|9080||ratings.default.svc.cluster.local",
                   "runtimeFraction": {"defaultValue": {"numerator": 125000, "denominator": "MILLION"}}}],
                 id="mirror-percentage"),
])
def test_route_action_fields(rule: dict[str, Any], key: str, expected: Any) -> None:
    [route] = _vhost_routes(translate(_state(_one_rule(**rule), ALL_SUBSETS), PRODUCTPAGE))
    got = route["route"].get(key)
    if isinstance(got, dict):
        got = {k: v for k, v in got.items() if k not in ("retryHostPredicate", "hostSelectionRetryMaxAttempts")}
    assert got == expected


@pytest.mark.parametrize(("fault", "expected"), [
    pytest.param({"delay": {"fixedDelay": "7s", "percentage": {"value": 100.0}}},
                 {"delay": {"fixedDelay": "7s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}}},
                 id="delay-7s"),
    pytest.param({"abort": {"httpStatus": 500, "percentage": {"value": 0.1}}},
                 {"abort": {"httpStatus": 500, "percentage": {"numerator": 1000, "denominator": "MILLION"}}},
                 id="abort-tenth-of-a-percent"),
    pytest.param({"abort": {"httpStatus": 503}},
                 {"abort": {"httpStatus": 503, "percentage": {"numerator": 1000000, "denominator": "MILLION"}}},
                 id="abort-without-percentage-is-all"),
])
def test_fault_injection_per_route(fault: dict[str, Any], expected: dict[str, Any]) -> None:
    [route] = _vhost_routes(translate(_state(_one_rule(fault=fault), ALL_SUBSETS), PRODUCTPAGE))
    config = route["typedPerFilterConfig"]["envoy.filters.http.fault"]
    assert config.pop("@type") == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    assert config == expected


def test_weighted_routing_to_subsets() -> None:
    vs = {"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]}
    [route] = _vhost_routes(translate(_state(vs, ALL_SUBSETS), PRODUCTPAGE))
    assert route["route"]["weightedClusters"]["clusters"] == [
        {"name": f"outbound|9080|v1|{REVIEWS}", "weight": 80}, {"name": f"outbound|9080|v3|{REVIEWS}", "weight": 20}]


@pytest.mark.parametrize(("vs", "dr", "message"), [
    pytest.param(_one_rule(), None, "subset 'v1' of reviews.default.svc.cluster.local, but no DestinationRule",
                 id="[Error] subset without destination rule"),
    pytest.param({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]},
                 ALL_SUBSETS, "defines ['v1', 'v2', 'v3']", id="[Error] undefined subset"),
    pytest.param({"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40}]}]},
        ALL_SUBSETS, "sum to 90, not 100", id="[Error] weights not 100"),
    pytest.param({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "nosuch"}}]}]}, None,
                 "'nosuch' (nosuch.default.svc.cluster.local) is not a known Service", id="[Error] unknown host"),
    pytest.param({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "httpbin.tools"}}]}]}, None,
                 "has ports [8000, 9000]", id="[Error] ambiguous port"),
])
def test_invalid_rule_is_left_out_and_reported(vs: dict[str, Any], dr: dict[str, Any] | None, message: str) -> None:
    vs = {**vs, "http": [*vs["http"], {"route": [{"destination": {"host": "reviews"}}]}]}
    snapshot = translate(_state(vs, dr), PRODUCTPAGE)
    assert [r["route"]["cluster"] for r in _vhost_routes(snapshot)] == [f"outbound|9080||{REVIEWS}"]
    [problem] = snapshot.problems
    assert isinstance(problem, XdsError) and message in str(problem) and "http[0] left out" in str(problem)
    assert snapshot.consistent()


def test_virtual_service_for_gateways_only_does_not_apply_to_sidecars() -> None:
    vs = {**JASON, "gateways": ["bookinfo-gateway"]}
    [route] = _vhost_routes(translate(_state(vs, ALL_SUBSETS), PRODUCTPAGE))
    assert route["name"] == "default"


def test_destination_rule_policies_become_cluster_settings() -> None:
    dr = {**ALL_SUBSETS, "trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": {"maxConnections": 1},
                           "http": {"http1MaxPendingRequests": 2, "maxRequestsPerConnection": 1}},
        "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "3m",
                             "maxEjectionPercent": 100}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"},
                     "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}
    snapshot = translate(_state(dr=dr), PRODUCTPAGE)
    whole = _dict(_find(snapshot, CLUSTER, f"outbound|9080||{REVIEWS}"))
    assert whole.get("lbPolicy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert whole["circuitBreakers"]["thresholds"][0] == {
        "maxConnections": 1, "maxPendingRequests": 2, "maxRequests": 4294967295, "maxRetries": 4294967295}
    assert whole["outlierDetection"] == {
        "consecutive5xx": 1, "enforcingConsecutive5xx": 100, "enforcingSuccessRate": 0, "interval": "1s",
        "baseEjectionTime": "180s", "maxEjectionPercent": 100}
    options = whole["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["commonHttpProtocolOptions"] == {"maxRequestsPerConnection": 1}
    v1 = _dict(_find(snapshot, CLUSTER, f"outbound|9080|v1|{REVIEWS}"))
    assert v1["lbPolicy"] == "RANDOM" and v1["outlierDetection"]["consecutive5xx"] == 1  # subset overrides LB only
    default = _dict(_find(translate(_state(), PRODUCTPAGE), CLUSTER, f"outbound|9080||{REVIEWS}"))
    assert default["lbPolicy"] == "LEAST_REQUEST" and "outlierDetection" not in default


def test_inbound_listener_route_and_cluster_reach_the_app() -> None:
    snapshot = translate(_state(), PRODUCTPAGE)
    inbound = _find(snapshot, LISTENER, "virtualInbound")
    assert isinstance(inbound, listener_pb2.Listener)
    assert inbound.address.socket_address.port_value == 15006
    # No PeerAuthentication: PERMISSIVE, an mTLS and a plaintext chain on the one port.
    assert [(c.filter_chain_match.destination_port.value, c.filter_chain_match.transport_protocol)
            for c in inbound.filter_chains] == [(9080, "tls"), (9080, "raw_buffer")]
    route = _find(snapshot, ROUTE, "inbound|9080")
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.virtual_hosts[0].routes[0].route.cluster == "inbound|9080||"
    address = _find(snapshot, ENDPOINTS, "inbound|9080||").endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.10", 19080)
    assert snapshot.consistent(), snapshot.inconsistencies()


def test_inbound_without_app_address_is_a_problem() -> None:
    proxy = ProxyIdentity(ip="127.0.0.10", pod="productpage-v1-abc", namespace="default")
    snapshot = translate(_state(), proxy)
    assert "virtualInbound" not in snapshot.names(LISTENER)
    assert "APP_ADDRESS" in str(snapshot.problems[0])


def test_version_is_a_content_hash_per_type() -> None:
    first, again = translate(_state(), PRODUCTPAGE), translate(_state(), PRODUCTPAGE)
    changed = translate(_state(JASON, ALL_SUBSETS), PRODUCTPAGE)
    assert first.version == again.version and first.versions == again.versions
    assert changed.version != first.version
    assert changed.versions[ROUTE] != first.versions[ROUTE] and changed.versions[LISTENER] == first.versions[LISTENER]


def test_inconsistent_snapshot_is_detected() -> None:
    snapshot = translate(_state(), PRODUCTPAGE)
    broken = Snapshot({CLUSTER: snapshot.resources[CLUSTER], LISTENER: snapshot.resources[LISTENER]})
    problems = broken.inconsistencies()
    assert f"cluster 'outbound|9080||{REVIEWS}' has no ClusterLoadAssignment" in problems
    assert "listener route config 'outbound' does not exist" in problems


@pytest.mark.parametrize(("host", "namespace", "expected"), [
    ("reviews", "default", REVIEWS), ("reviews.prod", "default", "reviews.prod.svc.cluster.local"),
    ("reviews.prod.svc", "default", "reviews.prod.svc.cluster.local"), (REVIEWS, "prod", REVIEWS),
])
def test_resolve_host(host: str, namespace: str, expected: str) -> None:
    assert resolve_host(host, namespace) == expected


@pytest.mark.parametrize(("text", "seconds"), [("7s", 7.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_node_identity_round_trip() -> None:
    node = PRODUCTPAGE.to_node()
    assert node.id == "sidecar~127.0.0.10~productpage-v1-abc.default~default.svc.cluster.local"
    assert from_node(node) == PRODUCTPAGE


def test_no_domain_is_listed_twice_in_the_outbound_routes() -> None:
    # Envoy (and the meshlab proxy) reject a route configuration in which two virtual hosts share a domain.
    config = _find(translate(_state(), PRODUCTPAGE), ROUTE, "outbound")
    domains = [d for v in config.virtual_hosts for d in v.domains]
    assert len(domains) == len(set(domains))
