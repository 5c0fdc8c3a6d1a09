"""Envoy v3 resources written the way Pilot writes them (the shared xDS conventions), as readable dicts."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers HTTPFault for @type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.json_format import ParseDict

REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


def cluster(name: str, **fields: Any) -> cluster_pb2.Cluster:
    spec = {"name": name, "type": "EDS", "edsClusterConfig": {"edsConfig": {"ads": {}}}, "connectTimeout": "1s"}
    return ParseDict({**spec, **fields}, cluster_pb2.Cluster())


def load_assignment(name: str, *endpoints: tuple[str, int, dict[str, str]]) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [
        {
            "endpoint": {"address": {"socketAddress": {"address": ip, "portValue": port}}},
            "metadata": {"filterMetadata": {"istio": labels}},
        }
        for ip, port, labels in endpoints
    ]
    return ParseDict(
        {"clusterName": name, "endpoints": [{"lbEndpoints": lb_endpoints}]}, endpoint_pb2.ClusterLoadAssignment()
    )


def listener(
    name: str = "virtualOutbound",
    *,
    route_config: str = "outbound",
    http_filters: list[dict[str, Any]] | None = None,
    network_filter: str = "envoy.filters.network.http_connection_manager",
) -> listener_pb2.Listener:
    if http_filters is None:
        http_filters = [
            {"name": "envoy.filters.http.fault",
             "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
            {"name": "envoy.filters.http.router",
             "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "statPrefix": "outbound",
        "rds": {"routeConfigName": route_config, "configSource": {"ads": {}}},
        "httpFilters": http_filters,
    }
    spec = {
        "name": name,
        "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 15001}},
        "filterChains": [{"filters": [{"name": network_filter, "typedConfig": hcm}]}],
    }
    return ParseDict(spec, listener_pb2.Listener())


def service_domains(name: str, namespace: str, port: int) -> list[str]:
    fqdn = f"{name}.{namespace}.svc.cluster.local"
    hosts = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", fqdn]
    return [d for h in hosts for d in (h, f"{h}:{port}")]


def route(match: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    return {"match": match or {"prefix": "/"}, "route": action or {"cluster": REVIEWS_V1}}


def route_config(*virtual_hosts: dict[str, Any], name: str = "outbound", **fields: Any) -> route_pb2.RouteConfiguration:
    return ParseDict({"name": name, "virtualHosts": list(virtual_hosts), **fields}, route_pb2.RouteConfiguration())


def virtual_host(name: str, domains: list[str], *routes: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "domains": domains, "routes": list(routes)}


def fault(*, delay: str | None = None, delay_percent: float = 100, abort: int | None = None,
          abort_percent: float = 100) -> dict[str, Any]:
    """``typed_per_filter_config`` for a route, percentages written per MILLION as Pilot does."""
    spec: dict[str, Any] = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    if delay is not None:
        spec["delay"] = {"fixedDelay": delay,
                         "percentage": {"numerator": int(delay_percent * 10_000), "denominator": "MILLION"}}
    if abort is not None:
        spec["abort"] = {"httpStatus": abort,
                         "percentage": {"numerator": int(abort_percent * 10_000), "denominator": "MILLION"}}
    return {"envoy.filters.http.fault": spec}


def packed(message: Any) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped
