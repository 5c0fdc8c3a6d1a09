"""The proxy's configuration: what the xDS resources say, as immutable data, and when to NACK them.

Envoy receives four resource types over ADS (CDS ``Cluster``, EDS ``ClusterLoadAssignment``, LDS ``Listener``,
RDS ``RouteConfiguration``), state-of-the-world: each response carries *every* resource of its type, so it
replaces the previous set of that type. The proxy applies a response only if it is entirely valid; otherwise it
keeps its last good configuration and NACKs with the reason (xDS protocol, "ACK/NACK and resource type instance
version", envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol). As Envoy does for RDS with
``validate_clusters``, a route naming a cluster that CDS did not deliver is refused when the routes arrive;
Pilot's CDS → EDS → LDS → RDS order makes that check meaningful. :func:`apply_resources` is the single entry
point; :meth:`ProxyConfig.validate` re-checks a whole configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from meshlab.mesh.xds import resources as xds

if TYPE_CHECKING:  # rbac imports this module's matchers
    from meshlab.mesh.proxy.mixer_decoding import MixerConfig
    from meshlab.mesh.proxy.rbac import RbacFilter
    from meshlab.mesh.proxy.stats_decoding import StatsConfig

# The type URLs Pilot and the proxy share (meshlab.mesh.xds.resources), under the names this package uses.
CLUSTER_TYPE = xds.CLUSTER
ENDPOINT_TYPE = xds.ENDPOINTS
LISTENER_TYPE = xds.LISTENER
ROUTE_TYPE = xds.ROUTE
#: The order Pilot pushes in (and the order a fresh proxy subscribes in).
TYPE_ORDER = xds.ORDER


class StringKind(Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    REGEX = "safe_regex"


@dataclass(frozen=True)
class StringMatch:
    """Envoy's ``StringMatcher``; a regex must match the whole value (RE2 ``FullMatch``)."""

    kind: StringKind
    value: str
    ignore_case: bool = False
    pattern: re.Pattern[str] | None = None

    def matches(self, text: str) -> bool:
        if self.kind is StringKind.REGEX:
            assert self.pattern is not None
            return self.pattern.fullmatch(text) is not None
        value, text = (self.value.lower(), text.lower()) if self.ignore_case else (self.value, text)
        if self.kind is StringKind.EXACT:
            return text == value
        if self.kind is StringKind.PREFIX:
            return text.startswith(value)
        if self.kind is StringKind.SUFFIX:
            return text.endswith(value)
        return value in text


@dataclass(frozen=True)
class HeaderMatch:
    """``HeaderMatcher``: ``string`` set → compare the value; else ``present`` says present (True) or absent."""

    name: str
    string: StringMatch | None = None
    present: bool = True
    invert: bool = False
    treat_missing_as_empty: bool = False


@dataclass(frozen=True)
class QueryMatch:
    """``QueryParameterMatcher``: a value match, or mere presence when ``string`` is None."""

    name: str
    string: StringMatch | None = None


class PathKind(Enum):
    PREFIX = "prefix"
    EXACT = "path"
    REGEX = "safe_regex"


@dataclass(frozen=True)
class RouteMatch:
    path_kind: PathKind = PathKind.PREFIX
    path: str = "/"
    pattern: re.Pattern[str] | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()


@dataclass(frozen=True)
class WeightedCluster:
    name: str
    weight: int


#: Envoy's retry back-off: 25 ms base; the cap defaults to ten times the base.
DEFAULT_RETRY_BASE_INTERVAL = 0.025


@dataclass(frozen=True)
class RetryPolicy:
    retry_on: frozenset[str]
    num_retries: int = 1
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    base_interval: float = DEFAULT_RETRY_BASE_INTERVAL
    max_interval: float | None = None

    @property
    def backoff_cap(self) -> float:
        return self.max_interval if self.max_interval is not None else 10 * self.base_interval


#: Percentages travel as parts per million (``FractionalPercent`` normalised), so draws are integers.
PER_MILLION = 1_000_000


@dataclass(frozen=True)
class FaultPolicy:
    """``HTTPFault`` for one route: a fixed delay and/or an abort, each applied to a share of requests."""

    delay: float | None = None
    delay_per_million: int = 0
    abort_status: int | None = None
    abort_per_million: int = 0


@dataclass(frozen=True)
class MirrorPolicy:
    cluster: str
    per_million: int = PER_MILLION


#: Envoy's route timeout when ``RouteAction.timeout`` is absent; Istio always sends one (0 = disabled).
DEFAULT_ROUTE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Route:
    name: str
    match: RouteMatch
    clusters: tuple[WeightedCluster, ...]
    timeout: float | None = DEFAULT_ROUTE_TIMEOUT  # None: disabled
    retry: RetryPolicy | None = None
    mirrors: tuple[MirrorPolicy, ...] = ()
    fault: FaultPolicy | None = None

    @property
    def total_weight(self) -> int:
        return sum(c.weight for c in self.clusters)


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class RouteTable:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    ignore_port_in_host_matching: bool = False


@dataclass(frozen=True)
class TlsSettings:
    """A ``DownstreamTlsContext`` / ``UpstreamTlsContext`` as the proxy uses it: the workload certificate
    (SDS ``default``) and roots (SDS ``ROOTCA``) come from the proxy's certificate provider; the peer's URI
    SAN must match one of ``peer_sans`` (none: any SAN the roots vouch for)."""

    peer_sans: tuple[StringMatch, ...] = ()
    require_client_certificate: bool = True
    sni: str = ""
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterChain:
    """One filter chain: which connections it takes (destination port, ``transport_protocol`` as the
    ``tls_inspector`` sees it: ``tls``, ``raw_buffer`` or any), its TLS, and its HTTP filters and routes."""

    destination_port: int | None = None
    transport_protocol: str = ""
    tls: TlsSettings | None = None
    route_config_name: str = ""
    inline_routes: RouteTable | None = None
    fault_filter: bool = False
    rbac: tuple[RbacFilter, ...] = ()
    name: str = ""
    stats: StatsConfig | None = None  # the istio.stats filter (in-proxy metrics) is in the chain
    mixer: MixerConfig | None = None  # the mixer filter (classic profile: Check and Report) is in the chain


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int
    route_config_name: str = ""
    inline_routes: RouteTable | None = None
    fault_filter: bool = False  # whether ``envoy.filters.http.fault`` is in the filter chain
    chains: tuple[FilterChain, ...] = ()
    tls_inspector: bool = False

    def chains_for(self, port: int) -> tuple[FilterChain, ...]:
        """The chains a connection to ``port`` may match (those for the port, else the port-less ones)."""
        exact = tuple(c for c in self.chains if c.destination_port == port)
        return exact or tuple(c for c in self.chains if c.destination_port is None)


def select_chain(chains: tuple[FilterChain, ...], transport_protocol: str) -> FilterChain | None:
    """Envoy's filter-chain match on the transport protocol: an exact match, else a chain that names none."""
    return (next((c for c in chains if c.transport_protocol == transport_protocol), None)
            or next((c for c in chains if not c.transport_protocol), None))


@dataclass(frozen=True)
class SocketMatch:
    """``transport_socket_matches[i]``: endpoints whose ``envoy.transport_socket_match`` metadata holds every
    pair of ``match`` use ``tls`` (None: plaintext)."""

    name: str
    match: Mapping[str, str]
    tls: TlsSettings | None


class LbPolicy(Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"


@dataclass(frozen=True)
class Thresholds:
    """``circuit_breakers.thresholds[DEFAULT]`` with Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True)
class OutlierPolicy:
    """``outlier_detection`` with Envoy's defaults (gateway-failure ejection is off unless enforced)."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    # Left out of equality and hashing so endpoints can live in sets; the address identifies the host.
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    healthy: bool = True
    #: ``metadata.filter_metadata["envoy.transport_socket_match"]`` (Istio: ``tlsMode: istio`` for sidecars).
    socket_match: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    @property
    def host(self) -> str:
        """``address:port``, the key used by outlier detection, stats and the access log."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class ClusterPolicy:
    name: str
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    thresholds: Thresholds = Thresholds()
    outlier: OutlierPolicy | None = None
    connect_timeout: float = 5.0
    panic_threshold: float = 50.0  # percent of healthy hosts below which Envoy balances over all of them
    eds_service_name: str = ""  # EDS: the ClusterLoadAssignment's name (the cluster's name when empty)
    static_endpoints: tuple[Endpoint, ...] | None = None  # STATIC clusters carry their endpoints inline
    socket_matches: tuple[SocketMatch, ...] = ()

    def transport_for(self, endpoint: Endpoint) -> TlsSettings | None:
        """The first socket match whose criteria the endpoint's metadata meets decides; none: plaintext."""
        for candidate in self.socket_matches:
            if all(endpoint.socket_match.get(k) == v for k, v in candidate.match.items()):
                return candidate.tls
        return None


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the proxy knows from xDS, replaced wholesale by each accepted update."""

    clusters: Mapping[str, ClusterPolicy] = field(default_factory=lambda: _frozen({}))
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=lambda: _frozen({}))
    listeners: Mapping[str, Listener] = field(default_factory=lambda: _frozen({}))
    route_tables: Mapping[str, RouteTable] = field(default_factory=lambda: _frozen({}))
    versions: Mapping[str, str] = field(default_factory=lambda: _frozen({}))

    def route_table_for(self, listener_name: str) -> RouteTable | None:
        listener = self.listeners.get(listener_name)
        if listener is None:
            return None
        return listener.inline_routes or self.route_tables.get(listener.route_config_name)

    def endpoints_of(self, cluster_name: str) -> tuple[Endpoint, ...]:
        cluster = self.clusters.get(cluster_name)
        if cluster is None:
            return ()
        if cluster.static_endpoints is not None:
            return cluster.static_endpoints
        return self.endpoints.get(cluster.eds_service_name or cluster.name, ())

    def validate(self) -> list[str]:
        """Every reason this configuration would be NACKed: dangling cluster references, bad weights."""
        tables = list(self.route_tables.values())
        tables += [lst.inline_routes for lst in self.listeners.values() if lst.inline_routes is not None]
        return [problem for table in tables for problem in route_table_problems(table, self.clusters)]


def route_table_problems(table: RouteTable, clusters: Mapping[str, ClusterPolicy]) -> list[str]:
    problems: list[str] = []
    seen_domains: dict[str, str] = {}
    for vhost in table.virtual_hosts:
        where = f'RouteConfiguration "{table.name}" virtual host "{vhost.name}"'
        for domain in vhost.domains:
            # Envoy refuses a domain served by two virtual hosts of one route configuration.
            owner = seen_domains.get(domain.lower())
            if owner is not None:
                problems.append(f'{where}: only unique values for domains are permitted; domain "{domain}" '
                                f'is already in virtual host "{owner}"')
            seen_domains[domain.lower()] = vhost.name
        for index, route in enumerate(vhost.routes):
            label = f"{where} route {index}" + (f' "{route.name}"' if route.name else "")
            if route.total_weight <= 0:
                problems.append(f"{label}: weighted cluster weights sum to {route.total_weight}; must be > 0")
            for target in [c.name for c in route.clusters] + [m.cluster for m in route.mirrors]:
                if target not in clusters:
                    problems.append(f'{label}: unknown cluster "{target}"')
    return problems


@dataclass(frozen=True)
class ConfigUpdate:
    """The outcome of one DiscoveryResponse: the config to serve and, if refused, why (the NACK text)."""

    config: ProxyConfig
    errors: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.errors

    @property
    def error_detail(self) -> str:
        return "; ".join(self.errors)


def apply_resources(config: ProxyConfig, type_url: str, resources: Sequence[Any], *, version: str) -> ConfigUpdate:
    """Apply one state-of-the-world response; on any error keep ``config`` and return the reasons.

    ``resources`` are the response's ``google.protobuf.Any`` values (or the unpacked messages, for tests).
    """
    from meshlab.mesh.proxy import decoding  # decoding imports this module's data classes

    decoders: dict[str, Callable[[Any], Any]] = {
        CLUSTER_TYPE: decoding.decode_cluster,
        ENDPOINT_TYPE: decoding.decode_load_assignment,
        LISTENER_TYPE: decoding.decode_listener,
        ROUTE_TYPE: decoding.decode_route_configuration,
    }
    decode = decoders.get(type_url)
    if decode is None:
        return ConfigUpdate(config, (f"unsupported resource type {type_url}",))
    errors: list[str] = []
    decoded: dict[str, Any] = {}
    for resource in resources:
        try:
            name, value = decode(decoding.unpack(resource, type_url))
        except decoding.ResourceError as err:
            errors.append(str(err))
            continue
        if name in decoded:
            errors.append(f'duplicate resource "{name}"')
        decoded[name] = value
    if errors:
        return ConfigUpdate(config, tuple(errors))
    versions = _frozen({**config.versions, type_url: version})
    frozen = _frozen(decoded)
    if type_url == CLUSTER_TYPE:
        new = replace(config, clusters=frozen, versions=versions)
    elif type_url == ENDPOINT_TYPE:
        new = replace(config, endpoints=frozen, versions=versions)
    elif type_url == LISTENER_TYPE:
        new = replace(config, listeners=frozen, versions=versions)
        tables = [lst.inline_routes for lst in new.listeners.values() if lst.inline_routes is not None]
        errors = [p for table in tables for p in route_table_problems(table, new.clusters)]
    else:
        new = replace(config, route_tables=frozen, versions=versions)
        errors = [p for table in new.route_tables.values() for p in route_table_problems(table, new.clusters)]
    return ConfigUpdate(config, tuple(errors)) if errors else ConfigUpdate(new)
