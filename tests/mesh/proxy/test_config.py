"""From xDS resources to ProxyConfig: what is accepted, with which defaults, and what is NACKed (and why)."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.proxy.config import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    LbPolicy,
    PathKind,
    ProxyConfig,
    Thresholds,
    apply_resources,
)
from tests.mesh.proxy.resources import (
    RATINGS,
    REVIEWS_V1,
    REVIEWS_V2,
    cluster,
    fault,
    listener,
    load_assignment,
    packed,
    route,
    route_config,
    service_domains,
    virtual_host,
)


def reviews_routes(*routes: dict[str, Any]) -> Any:
    return route_config(virtual_host("reviews.default.svc.cluster.local:9080",
                                     service_domains("reviews", "default", 9080), *(routes or (route(),))))


def configured(*routes: dict[str, Any]) -> ProxyConfig:
    """A proxy that accepted CDS, EDS, LDS and RDS in Pilot's order."""
    steps = [
        (CLUSTER_TYPE, [cluster(REVIEWS_V1), cluster(REVIEWS_V2), cluster(RATINGS)]),
        (ENDPOINT_TYPE, [load_assignment(REVIEWS_V1, ("127.0.1.5", 9080, {"app": "reviews", "version": "v1"}))]),
        (LISTENER_TYPE, [listener()]),
        (ROUTE_TYPE, [reviews_routes(*routes)]),
    ]
    config = ProxyConfig()
    for version, (type_url, resources) in enumerate(steps, 1):
        update = apply_resources(config, type_url, [packed(r) for r in resources], version=str(version))
        assert update.accepted, update.errors
        config = update.config
    return config


def test_a_full_push_builds_the_tables_the_proxy_serves_from() -> None:
    config = configured()
    table = config.route_table_for("virtualOutbound")
    assert table is not None
    assert "reviews.default.svc.cluster.local:9080" in table.virtual_hosts[0].domains
    (only,) = config.endpoints_of(REVIEWS_V1)
    assert (only.host, dict(only.labels)) == ("127.0.1.5:9080", {"app": "reviews", "version": "v1"})
    assert config.endpoints_of(REVIEWS_V2) == ()
    assert config.listeners["virtualOutbound"].fault_filter
    assert config.versions == {CLUSTER_TYPE: "1", ENDPOINT_TYPE: "2", LISTENER_TYPE: "3", ROUTE_TYPE: "4"}
    assert config.validate() == []


def first_route(config: ProxyConfig) -> Any:
    table = config.route_table_for("virtualOutbound")
    assert table is not None
    return table.virtual_hosts[0].routes[0]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        pytest.param({"cluster": RATINGS}, {"timeout": 15.0, "retry": None}, id="no timeout field: Envoy's 15 s"),
        pytest.param({"cluster": RATINGS, "timeout": "0s"}, {"timeout": None}, id="timeout 0s: disabled (Istio)"),
        pytest.param({"cluster": RATINGS, "timeout": "0.5s"}, {"timeout": 0.5}, id="timeout 0.5s"),
        pytest.param({"cluster": RATINGS, "retryPolicy": {"retryOn": "5xx,reset"}},
                     {"retry.num_retries": 1, "retry.per_try_timeout": None, "retry.backoff_cap": 0.25},
                     id="retries: Envoy defaults (1 retry, 25 ms base, 250 ms cap)"),
        pytest.param({"cluster": RATINGS, "retryPolicy": {"retryOn": "gateway-error", "numRetries": 2,
                                                          "perTryTimeout": "2s"}},
                     {"retry.num_retries": 2, "retry.per_try_timeout": 2.0,
                      "retry.retry_on": frozenset({"gateway-error"})}, id="retries as Istio writes them"),
        pytest.param({"cluster": RATINGS, "requestMirrorPolicies": [
            {"cluster": REVIEWS_V2, "runtimeFraction": {"defaultValue": {"numerator": 50, "denominator": "HUNDRED"}}}
        ]}, {"mirrors.0.per_million": 500_000, "mirrors.0.cluster": REVIEWS_V2}, id="mirror 50 per hundred"),
        pytest.param({"cluster": RATINGS, "requestMirrorPolicies": [{"cluster": REVIEWS_V2}]},
                     {"mirrors.0.per_million": 1_000_000}, id="mirror without a fraction: every request"),
        pytest.param({"weightedClusters": {"clusters": [{"name": REVIEWS_V1, "weight": 80},
                                                        {"name": REVIEWS_V2, "weight": 20}]}},
                     {"total_weight": 100, "clusters.1.name": REVIEWS_V2}, id="weighted 80/20"),
    ],
)
def test_route_actions_decode_with_envoys_defaults(action: dict[str, Any], expected: dict[str, Any]) -> None:
    decoded = first_route(configured(route(**action)))
    for path, value in expected.items():
        current: Any = decoded
        for part in path.split("."):
            current = current[int(part)] if part.isdigit() else getattr(current, part)
        assert current == value, path


def test_fault_percentages_arrive_per_million() -> None:
    decoded = first_route(configured({**route(), "typedPerFilterConfig": fault(delay="7s", delay_percent=10,
                                                                                abort=500, abort_percent=0.1)}))
    assert decoded.fault.delay == 7.0
    assert decoded.fault.delay_per_million == 100_000
    assert (decoded.fault.abort_status, decoded.fault.abort_per_million) == (500, 1_000)


def test_route_matches_decode() -> None:
    decoded = first_route(configured(route(
        {"safeRegex": {"regex": "/reviews/[0-9]+"},
         "headers": [{"name": "end-user", "stringMatch": {"exact": "jason"}},
                     {"name": ":method", "stringMatch": {"exact": "GET"}},
                     {"name": "x-canary", "presentMatch": True, "invertMatch": True}],
         "queryParameters": [{"name": "debug", "presentMatch": True}]},
        cluster=REVIEWS_V2)))
    assert decoded.match.path_kind is PathKind.REGEX
    assert decoded.match.pattern.fullmatch("/reviews/12")
    assert [h.name for h in decoded.match.headers] == ["end-user", ":method", "x-canary"]
    assert decoded.match.headers[2].invert
    assert decoded.match.query[0].name == "debug"


def test_cluster_policies_decode() -> None:
    spec = cluster(
        REVIEWS_V1,
        lbPolicy="LEAST_REQUEST",
        circuitBreakers={"thresholds": [{"maxConnections": 1, "maxPendingRequests": 1, "maxRetries": 5}]},
        outlierDetection={"consecutive5xx": 1, "interval": "1s", "baseEjectionTime": "180s", "maxEjectionPercent": 100,
                          "enforcingConsecutiveGatewayFailure": 100},
        commonLbConfig={"healthyPanicThreshold": {}},
    )
    update = apply_resources(ProxyConfig(), CLUSTER_TYPE, [spec], version="1")
    policy = update.config.clusters[REVIEWS_V1]
    assert policy.lb_policy is LbPolicy.LEAST_REQUEST
    assert policy.thresholds == Thresholds(max_connections=1, max_pending_requests=1, max_requests=1024, max_retries=5)
    assert policy.outlier is not None
    assert (policy.outlier.consecutive_5xx, policy.outlier.interval, policy.outlier.base_ejection_time) == (1, 1.0, 180)
    assert policy.outlier.consecutive_gateway_failure == 5  # Envoy's default where the DestinationRule is silent
    assert policy.outlier.enforcing_consecutive_gateway_failure == 100
    assert policy.panic_threshold == 0.0  # Istio turns panic mode off


def test_a_static_cluster_carries_its_endpoints() -> None:
    spec = cluster("inbound|9080||", type="STATIC", loadAssignment={
        "clusterName": "inbound|9080||",
        "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.2.9",
                                                                                   "portValue": 19080}}}}]}]})
    config = apply_resources(ProxyConfig(), CLUSTER_TYPE, [spec], version="1").config
    assert [e.host for e in config.endpoints_of("inbound|9080||")] == ["127.0.2.9:19080"]


def test_eds_health_status_marks_endpoints() -> None:
    cla = load_assignment(RATINGS, ("127.0.1.7", 9080, {}), ("127.0.1.8", 9080, {}))
    cla.endpoints[0].lb_endpoints[1].health_status = 3  # DRAINING
    config = apply_resources(ProxyConfig(), CLUSTER_TYPE, [cluster(RATINGS)], version="1").config
    config = apply_resources(config, ENDPOINT_TYPE, [cla], version="1").config
    assert [e.healthy for e in config.endpoints_of(RATINGS)] == [True, False]


NACKS = [
    pytest.param(ROUTE_TYPE, reviews_routes(route(cluster="outbound|9080|v9|reviews.default.svc.cluster.local")),
                 'unknown cluster "outbound|9080|v9|reviews.default.svc.cluster.local"',
                 id="route to a missing cluster"),
    pytest.param(ROUTE_TYPE, reviews_routes(route(cluster=RATINGS, requestMirrorPolicies=[{"cluster": "nope"}])),
                 'unknown cluster "nope"', id="mirror to a missing cluster"),
    pytest.param(ROUTE_TYPE, reviews_routes(route(weightedClusters={"clusters": [
        {"name": REVIEWS_V1, "weight": 0}, {"name": REVIEWS_V2, "weight": 0}]})),
                 "weights sum to 0", id="weights sum to zero"),
    pytest.param(ROUTE_TYPE, reviews_routes(route(weightedClusters={"totalWeight": 100, "clusters": [
        {"name": REVIEWS_V1, "weight": 50}, {"name": REVIEWS_V2, "weight": 40}]})),
                 "weights sum to 90, total_weight says 100", id="weights do not sum to total_weight"),
    pytest.param(ROUTE_TYPE, reviews_routes(route({"safeRegex": {"regex": "/a[b"}})),
                 'invalid regex "/a[b"', id="unparsable regex"),
    pytest.param(ROUTE_TYPE, reviews_routes(route({"safeRegex": {"regex": "/(?!admin).*"}})),
                 "RE2 lacks", id="look-ahead is not RE2"),
    pytest.param(ROUTE_TYPE, reviews_routes(route({"prefix": "/", "headers": [
        {"name": "x", "stringMatch": {"safeRegex": {"regex": "(a"}}}]})),
                 'header "x": invalid regex', id="unparsable header regex"),
    pytest.param(ROUTE_TYPE, reviews_routes({**route(), "typedPerFilterConfig": {"envoy.filters.http.cors": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}}),
                 'unsupported filter "envoy.filters.http.cors"', id="per-route config for an unknown filter"),
    pytest.param(ROUTE_TYPE, reviews_routes({"match": {"prefix": "/"}, "redirect": {"pathRedirect": "/x"}}),
                 "route action redirect is not supported", id="redirect route"),
    pytest.param(ROUTE_TYPE, reviews_routes(route(cluster=RATINGS, prefixRewrite="/v2")),
                 "prefix_rewrite is not supported", id="rewrite not silently ignored"),
    pytest.param(ROUTE_TYPE, reviews_routes(route(cluster=RATINGS, retryPolicy={"retryOn": "5xx,sometimes"})),
                 "unsupported retry_on condition(s) sometimes", id="unknown retry_on token"),
    pytest.param(ROUTE_TYPE, route_config(virtual_host("a", ["a"]), virtual_host("b", ["A"])),
                 'domain "A" is already in virtual host "a"', id="one domain in two virtual hosts"),
    pytest.param(LISTENER_TYPE, listener(http_filters=[
        {"name": "envoy.filters.http.lua"}, {"name": "envoy.filters.http.router"}]),
                 'unsupported HTTP filter "envoy.filters.http.lua"', id="unsupported HTTP filter"),
    pytest.param(LISTENER_TYPE, listener(http_filters=[{"name": "envoy.filters.http.fault"}]),
                 "must end with envoy.filters.http.router", id="no router filter"),
    pytest.param(LISTENER_TYPE, listener(network_filter="envoy.filters.network.tcp_proxy"),
                 "unsupported network filter(s) envoy.filters.network.tcp_proxy", id="unsupported network filter"),
    pytest.param(CLUSTER_TYPE, cluster(RATINGS, lbPolicy="RING_HASH"),
                 "lb_policy RING_HASH is not supported", id="unsupported load balancer"),
    pytest.param(CLUSTER_TYPE, cluster(RATINGS, type="STRICT_DNS"),
                 "cluster type STRICT_DNS is not supported", id="unsupported discovery type"),
]


@pytest.mark.parametrize(("type_url", "resource", "reason"), NACKS)
def test_a_bad_resource_is_nacked_and_the_last_good_config_stays(type_url: str, resource: Any, reason: str) -> None:
    good = configured()
    update = apply_resources(good, type_url, [packed(resource)], version="bad")
    assert not update.accepted
    assert reason in update.error_detail
    assert update.config is good
    assert update.config.versions[type_url] != "bad"


def test_validate_reports_every_dangling_reference() -> None:
    config = configured(route(cluster=RATINGS))
    # CDS may drop a cluster routes still name (Envoy accepts it; requests get 503 NC until RDS catches up) ...
    update = apply_resources(config, CLUSTER_TYPE, [cluster(REVIEWS_V1)], version="5")
    assert update.accepted
    # ... and validate() on the whole config says what is now dangling.
    assert update.config.validate() == [
        'RouteConfiguration "outbound" virtual host "reviews.default.svc.cluster.local:9080" route 0: '
        f'unknown cluster "{RATINGS}"'
    ]


def test_a_response_of_the_wrong_type_is_nacked() -> None:
    update = apply_resources(ProxyConfig(), ROUTE_TYPE, [packed(cluster(RATINGS))], version="1")
    assert update.errors == (f"resource of type {CLUSTER_TYPE} in a {ROUTE_TYPE} response",)


def test_an_empty_response_removes_every_resource_of_that_type() -> None:
    config = configured()
    update = apply_resources(config, ROUTE_TYPE, [], version="9")
    assert update.accepted
    assert update.config.route_table_for("virtualOutbound") is None
