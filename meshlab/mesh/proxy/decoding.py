"""From Envoy v3 protobuf resources to the proxy's immutable config, refusing what the proxy cannot honour.

Each ``decode_*`` function takes one resource message (``envoy.config.*.v3``) and returns ``(name, value)``, or
raises :class:`ResourceError` naming the resource and the field. The rule, as in Istio's own "unsupported fields
rejected" stance: a field that would change behaviour and that this proxy does not implement is refused, never
silently ignored (Envoy NACKs unknown filters the same way). Defaults follow the Envoy v3 API reference
(``route_components.proto``, ``cluster.proto``, ``circuit_breaker.proto``, ``outlier_detection.proto``); regexes
are RE2 (``safe_regex``), so constructs RE2 lacks (look-around, back-references) are refused rather than given
Python's meaning.
"""

from __future__ import annotations

import re
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.json_format import MessageToDict

from meshlab.errors import XdsError
from meshlab.mesh.proxy import config as c

_MESSAGES: dict[str, type[Any]] = {
    c.CLUSTER_TYPE: cluster_pb2.Cluster,
    c.ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    c.LISTENER_TYPE: listener_pb2.Listener,
    c.ROUTE_TYPE: route_pb2.RouteConfiguration,
}
HCM_FILTER = "envoy.filters.network.http_connection_manager"
FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
RBAC_FILTER = "envoy.filters.http.rbac"
_HTTP_FILTER_TYPES = {
    FAULT_FILTER: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    ROUTER_FILTER: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    RBAC_FILTER: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "istio.stats": "type.googleapis.com/xds.type.v3.TypedStruct",  # decoded by stats_decoding
    "mixer": "type.googleapis.com/xds.type.v3.TypedStruct",  # decoded by mixer_decoding
}
_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_RETRY_ON = frozenset(
    {"5xx", "gateway-error", "connect-failure", "retriable-4xx", "reset", "refused-stream", "retriable-status-codes",
     # gRPC conditions (x-envoy-retry-grpc-on), part of Istio's default "connect-failure,refused-stream,
     # unavailable,cancelled,retriable-status-codes"; they look at the response's grpc-status.
     "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)
_LB = {
    cluster_pb2.Cluster.ROUND_ROBIN: c.LbPolicy.ROUND_ROBIN,
    cluster_pb2.Cluster.LEAST_REQUEST: c.LbPolicy.LEAST_REQUEST,
    cluster_pb2.Cluster.RANDOM: c.LbPolicy.RANDOM,
}
# EDS health statuses Envoy treats as "do not send traffic".
_UNHEALTHY = {2, 3, 4}  # UNHEALTHY, DRAINING, TIMEOUT
_RE2_UNSUPPORTED = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


# Fields that would change what a request gets and that this proxy does not implement.
_UNSUPPORTED_MATCH_FIELDS = frozenset({"grpc", "tls_context", "runtime_fraction", "dynamic_metadata", "filter_state"})
_UNSUPPORTED_ACTION_FIELDS = frozenset({
    "cluster_header", "prefix_rewrite", "regex_rewrite", "path_rewrite_policy", "host_rewrite_literal",
    "auto_host_rewrite", "host_rewrite_header", "host_rewrite_path_regex", "hash_policy", "hedge_policy",
    "rate_limits", "cors", "internal_redirect_policy", "metadata_match", "upgrade_configs",
})


def _set_fields(message: Any) -> set[str]:
    return {descriptor.name for descriptor, _ in message.ListFields()}


class ResourceError(XdsError):
    """One resource cannot be applied; the message becomes (part of) the NACK's ``error_detail``."""


def unpack(resource: Any, type_url: str) -> Any:
    """An ``Any`` from a DiscoveryResponse → its message; a message passes through after a type check."""
    message_type = _MESSAGES[type_url]
    if isinstance(resource, any_pb2.Any):
        if resource.type_url != type_url:
            raise ResourceError(f"resource of type {resource.type_url} in a {type_url} response")
        message = message_type()
        if not resource.Unpack(message):
            raise ResourceError(f"cannot decode a {type_url} resource")
        return message
    if not isinstance(resource, message_type):
        raise ResourceError(f"expected {message_type.DESCRIPTOR.full_name}, got {type(resource).__name__}")
    return resource


def seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def per_million(fraction: percent_pb2.FractionalPercent) -> int:
    scale = {0: 10_000, 1: 100, 2: 1}[fraction.denominator]  # HUNDRED, TEN_THOUSAND, MILLION
    return min(fraction.numerator * scale, c.PER_MILLION)


def _regex(source: str, where: str) -> re.Pattern[str]:
    if _RE2_UNSUPPORTED.search(source):
        raise ResourceError(f'{where}: regex "{source}" uses look-around or back-references, which RE2 lacks')
    try:
        return re.compile(source)
    except re.error as err:
        raise ResourceError(f'{where}: invalid regex "{source}": {err}') from err


def _string_match(matcher: Any, where: str) -> c.StringMatch:
    kind = matcher.WhichOneof("match_pattern")
    if kind is None or kind == "custom":
        raise ResourceError(f"{where}: unsupported string matcher {kind or '(empty)'}")
    if kind == "safe_regex":
        source = matcher.safe_regex.regex
        flags = "(?i)" if matcher.ignore_case else ""
        return c.StringMatch(c.StringKind.REGEX, source, matcher.ignore_case, _regex(flags + source, where))
    return c.StringMatch(c.StringKind(kind), getattr(matcher, kind), matcher.ignore_case)


def _header_match(matcher: route_components_pb2.HeaderMatcher, where: str) -> c.HeaderMatch:
    where = f'{where} header "{matcher.name}"'
    kind = matcher.WhichOneof("header_match_specifier")
    string: c.StringMatch | None = None
    present = True
    if kind == "string_match":
        string = _string_match(matcher.string_match, where)
    elif kind in ("exact_match", "prefix_match", "suffix_match", "contains_match"):  # deprecated v3 spellings
        string = c.StringMatch(c.StringKind(kind.removesuffix("_match")), getattr(matcher, kind))
    elif kind == "safe_regex_match":
        source = matcher.safe_regex_match.regex
        string = c.StringMatch(c.StringKind.REGEX, source, False, _regex(source, where))
    elif kind == "present_match":
        present = matcher.present_match
    elif kind is not None:
        raise ResourceError(f"{where}: unsupported header matcher {kind}")
    return c.HeaderMatch(
        matcher.name.lower(), string, present, matcher.invert_match, matcher.treat_missing_header_as_empty
    )


def _route_match(match: route_components_pb2.RouteMatch, where: str) -> c.RouteMatch:
    for unsupported in sorted(_set_fields(match) & _UNSUPPORTED_MATCH_FIELDS):
        raise ResourceError(f"{where}: route match field {unsupported} is not supported")
    kind = match.WhichOneof("path_specifier")
    pattern = None
    if kind == "safe_regex":
        path = match.safe_regex.regex
        flags = "" if not match.HasField("case_sensitive") or match.case_sensitive.value else "(?i)"
        pattern = _regex(flags + path, where)
    elif kind in ("prefix", "path"):
        path = getattr(match, kind)
    else:
        raise ResourceError(f"{where}: unsupported path specifier {kind or '(none)'}")
    queries = []
    for query in match.query_parameters:
        qwhere = f'{where} query parameter "{query.name}"'
        if query.HasField("string_match"):
            queries.append(c.QueryMatch(query.name, _string_match(query.string_match, qwhere)))
        else:
            queries.append(c.QueryMatch(query.name))
    return c.RouteMatch(
        path_kind=c.PathKind(kind),
        path=path,
        pattern=pattern,
        case_sensitive=not match.HasField("case_sensitive") or match.case_sensitive.value,
        headers=tuple(_header_match(h, where) for h in match.headers),
        query=tuple(queries),
    )


def _retry(policy: route_components_pb2.RetryPolicy, where: str) -> c.RetryPolicy:
    tokens = frozenset(t.strip() for t in policy.retry_on.split(",") if t.strip())
    unknown = sorted(tokens - _RETRY_ON)
    if unknown:
        raise ResourceError(f"{where}: unsupported retry_on condition(s) {', '.join(unknown)}")
    backoff = policy.retry_back_off
    return c.RetryPolicy(
        retry_on=tokens,
        num_retries=policy.num_retries.value if policy.HasField("num_retries") else 1,
        per_try_timeout=_seconds_or(policy, "per_try_timeout", 0.0) or None,  # 0 means "the route timeout"
        retriable_status_codes=frozenset(policy.retriable_status_codes),
        base_interval=_seconds_or(backoff, "base_interval", c.DEFAULT_RETRY_BASE_INTERVAL),
        max_interval=_seconds_or(backoff, "max_interval", 0.0) or None,
    )


def _fault(config: Any, where: str) -> c.FaultPolicy:
    fault = fault_pb2.HTTPFault()
    if config.type_url != _HTTP_FILTER_TYPES[FAULT_FILTER] or not config.Unpack(fault):
        raise ResourceError(f"{where}: {FAULT_FILTER} config must be an HTTPFault, got {config.type_url}")
    if fault.delay.HasField("header_delay") or fault.abort.HasField("header_abort"):
        raise ResourceError(f"{where}: header-controlled faults are not supported")
    if fault.abort.HasField("grpc_status"):
        raise ResourceError(f"{where}: gRPC aborts are not supported")
    abort_status = fault.abort.http_status if fault.HasField("abort") else None
    if abort_status is not None and not 200 <= abort_status < 600:
        raise ResourceError(f"{where}: abort http_status {abort_status} is not in [200, 600)")
    return c.FaultPolicy(
        delay=seconds(fault.delay.fixed_delay) if fault.HasField("delay") else None,
        delay_per_million=per_million(fault.delay.percentage),
        abort_status=abort_status,
        abort_per_million=per_million(fault.abort.percentage),
    )


def _route(route: route_components_pb2.Route, where: str) -> c.Route:
    action_kind = route.WhichOneof("action")
    if action_kind != "route":
        raise ResourceError(f"{where}: route action {action_kind or '(none)'} is not supported")
    action = route.route
    specifier = action.WhichOneof("cluster_specifier")
    if specifier == "cluster":
        clusters: tuple[c.WeightedCluster, ...] = (c.WeightedCluster(action.cluster, 1),)
    elif specifier == "weighted_clusters":
        weighted = action.weighted_clusters
        clusters = tuple(c.WeightedCluster(w.name, w.weight.value) for w in weighted.clusters)
        total = sum(w.weight for w in clusters)
        if weighted.HasField("total_weight") and weighted.total_weight.value != total:
            raise ResourceError(f"{where}: weights sum to {total}, total_weight says {weighted.total_weight.value}")
    else:
        raise ResourceError(f"{where}: cluster specifier {specifier or '(none)'} is not supported")
    for unsupported in sorted(_set_fields(action) & _UNSUPPORTED_ACTION_FIELDS):
        raise ResourceError(f"{where}: route action field {unsupported} is not supported")
    fault = None
    for filter_name, typed in route.typed_per_filter_config.items():
        if filter_name != FAULT_FILTER:
            raise ResourceError(f'{where}: per-filter config for unsupported filter "{filter_name}"')
        fault = _fault(typed, where)
    mirrors = tuple(
        c.MirrorPolicy(m.cluster, per_million(m.runtime_fraction.default_value) if m.HasField("runtime_fraction")
                       else c.PER_MILLION)
        for m in action.request_mirror_policies
    )
    timeout = seconds(action.timeout) if action.HasField("timeout") else c.DEFAULT_ROUTE_TIMEOUT
    return c.Route(
        name=route.name,
        match=_route_match(route.match, where),
        clusters=clusters,
        timeout=timeout or None,
        retry=_retry(action.retry_policy, where) if action.HasField("retry_policy") else None,
        mirrors=mirrors,
        fault=fault,
    )


def _route_table(table: route_pb2.RouteConfiguration) -> c.RouteTable:
    vhosts = []
    for vhost in table.virtual_hosts:
        where = f'RouteConfiguration "{table.name}" virtual host "{vhost.name}"'
        if not vhost.domains:
            raise ResourceError(f"{where}: no domains")
        routes = tuple(_route(r, f"{where} route {i}") for i, r in enumerate(vhost.routes))
        vhosts.append(c.VirtualHost(vhost.name, tuple(vhost.domains), routes))
    return c.RouteTable(table.name, tuple(vhosts), table.ignore_port_in_host_matching)


def decode_route_configuration(table: route_pb2.RouteConfiguration) -> tuple[str, c.RouteTable]:
    return table.name, _route_table(table)


def decode_listener(listener: listener_pb2.Listener) -> tuple[str, c.Listener]:
    """A listener; every filter chain is decoded (its match, TLS, RBAC and routes). The listener-level
    routing fields keep the first chain's, which is all the outbound listener has; the inbound listener's
    per-port chains are served from ``chains``."""
    from meshlab.mesh.proxy import security_decoding as sec  # it imports this module

    where = f'Listener "{listener.name}"'
    if not listener.filter_chains:
        raise ResourceError(f"{where}: no filter chain")
    inspector = sec.listener_filters(listener, where)
    chains = tuple(_decode_chain(f"{where} filter chain {i}", chain) for i, chain in enumerate(listener.filter_chains))
    if not inspector and any(chain.transport_protocol for chain in chains):
        raise ResourceError(f"{where}: a transport_protocol match needs the {sec.TLS_INSPECTOR} listener filter")
    seen: set[tuple[int | None, str]] = set()
    for chain in chains:
        key = (chain.destination_port, chain.transport_protocol)
        if key in seen:
            raise ResourceError(f"{where}: multiple filter chains with the same matching rules are defined "
                                f"(destination port {key[0]}, transport protocol {key[1] or 'any'})")
        seen.add(key)
    socket = listener.address.socket_address
    first = chains[0]
    return listener.name, c.Listener(listener.name, socket.address, socket.port_value, first.route_config_name,
                                     first.inline_routes, first.fault_filter, chains, inspector)


def _decode_chain(where: str, chain: Any) -> c.FilterChain:
    from meshlab.mesh.proxy import security_decoding as sec

    port, transport = sec.chain_match(chain, where)
    tls = sec.downstream_tls(chain.transport_socket, where) if chain.HasField("transport_socket") else None
    if tls is not None and transport == "raw_buffer":
        raise ResourceError(f"{where}: a TLS transport socket on a raw_buffer chain")
    filters = chain.filters
    if len(filters) != 1 or filters[0].name != HCM_FILTER:
        found = ", ".join(f.name for f in filters) or "(none)"
        raise ResourceError(f"{where}: unsupported network filter(s) {found}; only {HCM_FILTER} is supported")
    hcm = hcm_pb2.HttpConnectionManager()
    if filters[0].typed_config.type_url != _HCM_TYPE or not filters[0].typed_config.Unpack(hcm):
        raise ResourceError(f"{where}: {HCM_FILTER} config is not an HttpConnectionManager")
    names = [f.name for f in hcm.http_filters]
    rbac_filters = []
    stats = None
    mixer = None
    for f in hcm.http_filters:
        if f.name not in _HTTP_FILTER_TYPES:
            raise ResourceError(f'{where}: unsupported HTTP filter "{f.name}"')
        if f.HasField("typed_config") and f.typed_config.type_url != _HTTP_FILTER_TYPES[f.name]:
            raise ResourceError(f'{where}: HTTP filter "{f.name}" has config of type {f.typed_config.type_url}')
        if f.name == RBAC_FILTER:
            if names.index(FAULT_FILTER if FAULT_FILTER in names else ROUTER_FILTER) < names.index(f.name):
                raise ResourceError(f"{where}: {RBAC_FILTER} must come before the fault and router filters")
            rbac_filters.append(sec.rbac_http_filter(f.typed_config, f'{where} HTTP filter "{f.name}"'))
        if f.name == "istio.stats":
            from meshlab.mesh.proxy.stats_decoding import decode_stats_filter  # it imports this module

            stats = decode_stats_filter(f.typed_config, f'{where} HTTP filter "{f.name}"')
        if f.name == "mixer":
            from meshlab.mesh.proxy.mixer_decoding import decode_mixer_filter  # it imports this module

            mixer = decode_mixer_filter(f.typed_config, f'{where} HTTP filter "{f.name}"')
    if not names or names[-1] != ROUTER_FILTER or names.count(ROUTER_FILTER) != 1:
        raise ResourceError(f"{where}: the HTTP filter chain must end with {ROUTER_FILTER} (and hold it once)")
    route_source = hcm.WhichOneof("route_specifier")
    if route_source == "rds":
        rds_name, inline = hcm.rds.route_config_name, None
    elif route_source == "route_config":
        rds_name, inline = "", _route_table(hcm.route_config)
    else:
        raise ResourceError(f"{where}: route specifier {route_source or '(none)'} is not supported")
    return c.FilterChain(port, transport, tls, rds_name, inline, FAULT_FILTER in names, tuple(rbac_filters),
                         chain.name, stats=stats, mixer=mixer)


def _endpoint(lb: endpoint_pb2.LbEndpoint, where: str) -> c.Endpoint:
    socket = lb.endpoint.address.socket_address
    if not socket.address or not socket.port_value:
        raise ResourceError(f"{where}: endpoint without a socket address and port")
    labels: dict[str, str] = {}
    if "istio" in lb.metadata.filter_metadata:
        raw = MessageToDict(lb.metadata.filter_metadata["istio"])
        labels = {str(k): str(v) for k, v in raw.items()}
    from meshlab.mesh.proxy import security_decoding as sec

    return c.Endpoint(socket.address, socket.port_value, c.MappingProxyType(labels), lb.health_status not in _UNHEALTHY,
                      c.MappingProxyType(sec.endpoint_socket_match(lb)))


def _endpoints(assignment: endpoint_pb2.ClusterLoadAssignment, where: str) -> tuple[c.Endpoint, ...]:
    return tuple(_endpoint(lb, where) for locality in assignment.endpoints for lb in locality.lb_endpoints)


def decode_load_assignment(assignment: endpoint_pb2.ClusterLoadAssignment) -> tuple[str, tuple[c.Endpoint, ...]]:
    return assignment.cluster_name, _endpoints(assignment, f'ClusterLoadAssignment "{assignment.cluster_name}"')


def _uint(message: Any, name: str, default: int) -> int:
    return int(getattr(message, name).value) if message.HasField(name) else default


def _seconds_or(message: Any, name: str, default: float) -> float:
    return seconds(getattr(message, name)) if message.HasField(name) else default


def _outlier(od: Any) -> c.OutlierPolicy:
    d = c.OutlierPolicy()
    return c.OutlierPolicy(
        consecutive_5xx=_uint(od, "consecutive_5xx", d.consecutive_5xx),
        consecutive_gateway_failure=_uint(od, "consecutive_gateway_failure", d.consecutive_gateway_failure),
        enforcing_consecutive_5xx=_uint(od, "enforcing_consecutive_5xx", d.enforcing_consecutive_5xx),
        enforcing_consecutive_gateway_failure=_uint(
            od, "enforcing_consecutive_gateway_failure", d.enforcing_consecutive_gateway_failure
        ),
        interval=_seconds_or(od, "interval", d.interval),
        base_ejection_time=_seconds_or(od, "base_ejection_time", d.base_ejection_time),
        max_ejection_time=_seconds_or(od, "max_ejection_time", d.max_ejection_time),
        max_ejection_percent=_uint(od, "max_ejection_percent", d.max_ejection_percent),
    )


def decode_cluster(cluster: cluster_pb2.Cluster) -> tuple[str, c.ClusterPolicy]:
    where = f'Cluster "{cluster.name}"'
    if cluster.lb_policy not in _LB:
        name = cluster_pb2.Cluster.LbPolicy.Name(cluster.lb_policy)
        raise ResourceError(f"{where}: lb_policy {name} is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM)")
    static_endpoints = None
    if cluster.type == cluster_pb2.Cluster.EDS:
        source = cluster.eds_cluster_config.eds_config
        if source.WhichOneof("config_source_specifier") not in ("ads", None):
            raise ResourceError(f"{where}: EDS must come over ADS")
    elif cluster.type == cluster_pb2.Cluster.STATIC:
        static_endpoints = _endpoints(cluster.load_assignment, where)
    else:
        name = cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)
        raise ResourceError(f"{where}: cluster type {name} is not supported (EDS, STATIC)")
    thresholds = c.Thresholds()
    for t in cluster.circuit_breakers.thresholds:
        if t.priority == 0:  # DEFAULT; HIGH-priority routes are not used
            thresholds = c.Thresholds(
                max_connections=_uint(t, "max_connections", thresholds.max_connections),
                max_pending_requests=_uint(t, "max_pending_requests", thresholds.max_pending_requests),
                max_requests=_uint(t, "max_requests", thresholds.max_requests),
                max_retries=_uint(t, "max_retries", thresholds.max_retries),
            )
    from meshlab.mesh.proxy import security_decoding as sec

    lb_config = cluster.common_lb_config
    return cluster.name, c.ClusterPolicy(
        name=cluster.name,
        lb_policy=_LB[cluster.lb_policy],
        thresholds=thresholds,
        outlier=_outlier(cluster.outlier_detection) if cluster.HasField("outlier_detection") else None,
        connect_timeout=_seconds_or(cluster, "connect_timeout", 5.0),
        panic_threshold=lb_config.healthy_panic_threshold.value if lb_config.HasField("healthy_panic_threshold")
        else 50.0,
        eds_service_name=cluster.eds_cluster_config.service_name,
        static_endpoints=static_endpoints,
        socket_matches=sec.socket_matches(cluster, where),
    )
