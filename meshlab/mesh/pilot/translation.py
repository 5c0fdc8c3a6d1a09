"""``translate(state, proxy) -> Snapshot``: what one sidecar needs to know, as Envoy v3 resources.

Istio's sidecar model (https://istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/): every service port
becomes an outbound cluster ``outbound|<port>||<fqdn>`` plus one per DestinationRule subset
``outbound|<port>|<subset>|<fqdn>``, each of ``type: EDS`` with a ClusterLoadAssignment listing the ready
endpoints (pod IP and target port) whose labels match the subset; the DestinationRule's traffic policy (a
subset's own policy overriding it field by field) sets the load balancer, circuit-breaker thresholds and
outlier detection. One ``virtualOutbound`` listener (15001) uses the route configuration ``outbound``: one
virtual host per service port answering to every name of the service (``name`` and ``name:port`` only in
the proxy's own namespace, as Istio), with the VirtualService's routes or Istio's default route. Inbound,
``virtualInbound`` (15006) has filter chains per port this pod serves (plaintext and/or mTLS as its
PeerAuthentication says, :mod:`security`; the RBAC filters of its AuthorizationPolicies, :mod:`authz`), whose
route ``inbound|<port>`` leads to cluster ``inbound|<port>||`` — the application at the node's
``APP_ADDRESS``. Clusters whose endpoints include sidecars get auto-mTLS transport socket matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.message import Message

from meshlab.errors import XdsError
from meshlab.mesh.pilot import authz, mixer_filter, security, stats_filter
from meshlab.mesh.pilot.model import Endpoint, MeshState, Service, parse_duration
from meshlab.mesh.pilot.routes import FAULT_FILTER, default_route, duration, http_routes
from meshlab.mesh.pilot.snapshot import Snapshot
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import (
    INBOUND_LISTENER,
    INBOUND_PORT,
    OUTBOUND_LISTENER,
    OUTBOUND_PORT,
    OUTBOUND_ROUTE,
    inbound_cluster,
    inbound_route,
    outbound_cluster,
    pack,
)

#: Istio's default since 1.14 (was ROUND_ROBIN): ``LEAST_REQUEST`` when a DestinationRule names none.
DEFAULT_LB = cluster_pb2.Cluster.LEAST_REQUEST
LB_POLICIES = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,  # Istio's deprecated name for it
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}
#: Istio writes the circuit-breaker thresholds out as "unlimited" unless a DestinationRule lowers them.
UNLIMITED = 2**32 - 1
CONNECT_TIMEOUT_S = 10.0
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

Spec = Mapping[str, Any]


def translate(state: MeshState, proxy: ProxyIdentity) -> Snapshot:
    """Every Cluster, ClusterLoadAssignment, Listener and RouteConfiguration ``proxy`` should have."""
    resources: list[Message] = []
    problems: list[XdsError] = security.check_policies(state)
    virtual_hosts: list[rc.VirtualHost] = []
    for service in sorted(state.services, key=lambda s: s.key):
        dr = state.destination_rule_for(service.fqdn, proxy.namespace)
        subsets: list[Spec] = list(dr.spec.get("subsets") or ()) if dr else []
        top_policy: Spec = (dr.spec.get("trafficPolicy") or {}) if dr else {}
        vs = state.virtual_service_for(service.fqdn, proxy.namespace)
        for service_port in service.ports:
            port = service_port.port
            for subset in [{}, *subsets]:
                name = outbound_cluster(port, str(subset.get("name") or ""), service.fqdn)
                policy = {**top_policy, **(subset.get("trafficPolicy") or {})}
                cluster = _cluster(name, policy)
                members = [e for e in state.endpoints_of(service)
                           if e.ready and _selects(subset.get("labels") or {}, e.labels)]
                targets = [(e, e.port_by_name.get(service_port.name)) for e in members]
                mtls = [(e, p, security.endpoint_tls_mode(state, e, p)) for e, p in targets]
                accounts = [(e.namespace, e.service_account or "default") for e, _, m in mtls if m]
                if accounts:
                    sni = security.sni(port, str(subset.get("name") or ""), service.fqdn)
                    security.transport_socket_matches(cluster, state.trust_domain, accounts, sni)
                resources.append(cluster)
                resources.append(_assignment(name, [(e.ip, p, e.labels, m) for e, p, m in mtls]))
            if vs is None:
                routes = [default_route(outbound_cluster(port, "", service.fqdn))]
            else:
                routes, rejected = http_routes(state, vs, service, port, proxy.namespace)
                problems += rejected
            virtual_hosts.append(rc.VirtualHost(name=f"{service.fqdn}:{port}", domains=_domains(service, port, proxy),
                                                routes=routes))
    resources.append(route_pb2.RouteConfiguration(name=OUTBOUND_ROUTE, virtual_hosts=virtual_hosts))
    resources.append(_listener(OUTBOUND_LISTENER, OUTBOUND_PORT, [(None, OUTBOUND_ROUTE)],
                               _telemetry(state, proxy, "outbound")))
    inbound, inbound_problems = _inbound(state, proxy)
    return Snapshot.of([*resources, *inbound], [*problems, *inbound_problems])


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _domains(service: Service, port: int, proxy: ProxyIdentity) -> list[str]:
    # The short name only resolves in the proxy's own namespace (as the pod's DNS search path does), so
    # Istio lists it only there; listing it everywhere would give two virtual hosts the same domain.
    names = [f"{service.name}.{service.namespace}", f"{service.name}.{service.namespace}.svc", service.fqdn]
    if service.namespace == proxy.namespace:
        names.insert(0, service.name)
    if service.cluster_ip and service.cluster_ip != "None":
        names.append(service.cluster_ip)
    # A Host without a port means port 80 (RFC 9110 §4.2.1): only that port's virtual host takes the portless
    # forms, so a service with several ports never lists the same domain twice (Envoy rejects duplicates).
    return [d for name in names for d in ((name, f"{name}:{port}") if port == 80 else (f"{name}:{port}",))]


def _cluster(name: str, policy: Spec) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_policy=LB_POLICIES.get(str((policy.get("loadBalancer") or {}).get("simple")), DEFAULT_LB))
    cluster.eds_cluster_config.service_name = name
    cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
    pool: Spec = policy.get("connectionPool") or {}
    tcp: Spec = pool.get("tcp") or {}
    http: Spec = pool.get("http") or {}
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    thresholds.max_connections.value = int(tcp.get("maxConnections") or UNLIMITED)
    thresholds.max_pending_requests.value = int(http.get("http1MaxPendingRequests") or UNLIMITED)
    thresholds.max_requests.value = int(http.get("http2MaxRequests") or UNLIMITED)
    thresholds.max_retries.value = int(http.get("maxRetries") or UNLIMITED)
    cluster.circuit_breakers.thresholds.append(thresholds)
    if http.get("maxRequestsPerConnection"):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.common_http_protocol_options.max_requests_per_connection.value = int(http["maxRequestsPerConnection"])
        options.explicit_http_config.http_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    if policy.get("outlierDetection") is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(policy["outlierDetection"]))
    return cluster


def _outlier_detection(spec: Spec) -> outlier_detection_pb2.OutlierDetection:
    # Envoy's defaults written out, so that a reader of the config dump (and the proxy) need not know them.
    out = outlier_detection_pb2.OutlierDetection()
    consecutive_5xx = int(spec.get("consecutive5xxErrors", 5))
    out.consecutive_5xx.value = consecutive_5xx
    out.enforcing_consecutive_5xx.value = 100 if consecutive_5xx else 0
    if spec.get("consecutiveGatewayErrors") is not None:
        gateway = int(spec["consecutiveGatewayErrors"])
        out.consecutive_gateway_failure.value = gateway
        out.enforcing_consecutive_gateway_failure.value = 100 if gateway else 0
    out.enforcing_success_rate.value = 0  # Istio does not configure success-rate ejection
    out.interval.CopyFrom(duration(parse_duration(str(spec.get("interval") or "10s"))))
    out.base_ejection_time.CopyFrom(duration(parse_duration(str(spec.get("baseEjectionTime") or "30s"))))
    out.max_ejection_percent.value = int(spec.get("maxEjectionPercent", 10))
    return out


def _ads() -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def _assignment(cluster: str, members: Iterable[tuple[str, int | None, Mapping[str, str], bool]]
                ) -> endpoint_pb2.ClusterLoadAssignment:
    locality = endpoint_components_pb2.LocalityLbEndpoints()
    for ip, port, labels, mtls in sorted(members, key=lambda m: (m[0], m[1] or 0)):
        if port is None:
            continue  # the pod does not serve this Service port (no such named port): not an endpoint of it
        lb = locality.lb_endpoints.add()
        lb.endpoint.address.socket_address.CopyFrom(address_pb2.SocketAddress(address=ip, port_value=port))
        lb.metadata.filter_metadata["istio"].update(dict(labels))
        if mtls:
            security.socket_match_metadata(lb.metadata)
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=[locality])


def _telemetry(state: MeshState, proxy: ProxyIdentity, direction: stats_filter.Direction
               ) -> list[hcm_pb2.HttpFilter]:
    """The telemetry filters of one HTTP connection manager: ``istio.stats`` (modern) or ``mixer`` (classic);
    each module returns none unless the mesh config's profile is its own."""
    return [*stats_filter.filters(state, proxy, direction), *mixer_filter.filters(state, proxy, direction)]


def _http_filter(route_name: str, first: Iterable[hcm_pb2.HttpFilter] = (),
                 telemetry: Iterable[hcm_pb2.HttpFilter] = ()) -> listener_components_pb2.Filter:
    """The HTTP connection manager (RDS ``route_name``): ``first`` (RBAC), telemetry, then fault, then router."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=route_name, codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=route_name, config_source=_ads()),
        http_filters=[
            *first,
            *telemetry,
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())),
        ])
    return listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))


def _listener(name: str, port: int, chains: list[tuple[int | None, str]],
              telemetry: Iterable[hcm_pb2.HttpFilter] = ()) -> listener_pb2.Listener:
    """A listener on 0.0.0.0:``port`` with one HTTP filter chain per (destination port or None, route name)."""
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.CopyFrom(address_pb2.SocketAddress(address="0.0.0.0", port_value=port))
    for destination_port, route_name in chains:
        chain = listener_components_pb2.FilterChain(filters=[_http_filter(route_name, telemetry=telemetry)])
        if destination_port is not None:
            chain.filter_chain_match.destination_port.value = destination_port
        listener.filter_chains.append(chain)
    return listener


def _inbound(state: MeshState, proxy: ProxyIdentity) -> tuple[list[Message], list[XdsError]]:
    """What reaches this pod's application: one cluster, route and filter chain per port it serves."""
    ports = sorted({port for service in state.services if service.namespace == proxy.namespace
                    for endpoint in state.endpoints_of(service) if _is_proxy(endpoint, proxy)
                    for port in endpoint.port_by_name.values()})
    if not ports:
        return [], []
    if not proxy.app_address:
        return [], [XdsError(f"proxy {proxy.node_id} serves ports {ports} but its node metadata has no "
                             "APP_ADDRESS: inbound traffic has nowhere to go (no inbound listener sent)")]
    host, _, app_port = proxy.app_address.partition(":")
    resources: list[Message] = []
    problems: list[XdsError] = []
    try:
        rbac = authz.rbac_filters(state, proxy.namespace, proxy.labels)
    except XdsError as err:
        # Fail closed: a policy Pilot cannot translate must not open the workload up (Istio does the same for
        # a DENY policy it cannot build: it denies everything).
        problems.append(XdsError(f"{err}; inbound traffic to {proxy.node_id} denied"))
        rbac = authz.deny_all()
    telemetry = _telemetry(state, proxy, "inbound")
    listener = listener_pb2.Listener(name=INBOUND_LISTENER, listener_filters=[security.tls_inspector()])
    listener.address.socket_address.CopyFrom(address_pb2.SocketAddress(address="0.0.0.0", port_value=INBOUND_PORT))
    for port in ports:
        cluster = inbound_cluster(port)
        resources.append(_cluster(cluster, {}))
        resources.append(_assignment(cluster, [(host, int(app_port) if app_port else port, proxy.labels, False)]))
        action = rc.RouteAction(cluster=cluster, timeout=duration(0))
        resources.append(route_pb2.RouteConfiguration(name=inbound_route(port), virtual_hosts=[rc.VirtualHost(
            name=f"inbound|http|{port}", domains=["*"],
            routes=[rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)])]))
        mode = security.mtls_mode(state, proxy.namespace, proxy.labels, port)
        listener.filter_chains.extend(security.inbound_chains(port, mode, state.trust_domain,
                                                              [_http_filter(inbound_route(port), rbac, telemetry)]))
    resources.append(listener)
    return resources, problems


def _is_proxy(endpoint: Endpoint, proxy: ProxyIdentity) -> bool:
    return endpoint.ip == proxy.ip and (not endpoint.pod or endpoint.pod == proxy.pod)
