"""The admin interface's pages, in the formats Envoy's admin endpoint uses, and the record of accepted resources.

Envoy's admin listener (istio-proxy's port 15000; envoyproxy.io/docs/envoy/latest/operations/admin) answers
``/config_dump`` with an ``envoy.admin.v3.ConfigDump``: one ``ClustersConfigDump``, ``EndpointsConfigDump``,
``ListenersConfigDump``, ``RoutesConfigDump`` holding every accepted resource with its version and a
``SecretsConfigDump`` (the workload certificate and roots, the private key redacted) — built here
from the real admin protos and printed with ``json_format``, so it reads like ``istioctl proxy-config ... -o
json``. ``/clusters`` prints one ``cluster::host::field::value`` line per fact (health flags such as
``/failed_outlier_check`` for an ejected host, ``rq_total``...), ``/stats`` prints ``name: value`` counters
(``cluster.<name>.upstream_rq_2xx``...). :class:`RecordingSession` is the ADS session that also keeps the raw
resources it accepted, since the immutable :class:`ProxyConfig` keeps only their meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.admin.v3 import config_dump_pb2
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from xds.type.v3 import typed_struct_pb2

from meshlab.mesh.proxy.config import ConfigUpdate
from meshlab.mesh.proxy.xds_client import AdsSession
from meshlab.mesh.xds import resources as xds

# json_format can print an Any only when its type is in the descriptor pool: every extension Pilot packs
# (the router and fault filters, Istio's previous-hosts retry predicate, the clusters' HTTP protocol options)
# must be imported here, even those the proxy never decodes, or /config_dump fails.
DUMPED_EXTENSIONS = (fault_pb2, router_pb2, previous_hosts_pb2, http_protocol_options_pb2, rbac_pb2, tls_inspector_pb2,
                     raw_buffer_pb2, tls_pb2, typed_struct_pb2)  # TypedStruct: istio.stats, mixer
#: Envoy prints private keys in a config dump as this.
REDACTED = b"[redacted]"


@dataclass
class RecordingSession(AdsSession):
    """An :class:`AdsSession` that keeps the ``Any`` resources of every accepted response, per type."""

    resources: dict[str, list[any_pb2.Any]] = field(default_factory=dict)

    def receive(self, response: discovery_pb2.DiscoveryResponse) -> tuple[discovery_pb2.DiscoveryRequest, ConfigUpdate]:
        request, update = super().receive(response)
        if update.accepted:
            self.resources[response.type_url] = list(response.resources)
        return request, update


def inbound_ports(resources: Mapping[str, list[any_pb2.Any]]) -> dict[int, str]:
    """``virtualInbound``'s filter chains as ``{destination port: RDS route name}``."""
    ports: dict[int, str] = {}
    for packed in resources.get(xds.LISTENER, []):
        listener = xds.unpack(packed, listener_pb2.Listener)
        if listener.name != xds.INBOUND_LISTENER:
            continue
        for chain in listener.filter_chains:
            port = chain.filter_chain_match.destination_port.value
            for network_filter in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if port and network_filter.typed_config.Unpack(hcm) and hcm.HasField("rds"):
                    ports[port] = hcm.rds.route_config_name
    return ports


def secrets_dump(certificate: Any) -> config_dump_pb2.SecretsConfigDump:
    """The SDS secrets ``default`` (chain; the key redacted, as Envoy does) and ``ROOTCA`` (the roots)."""
    dump = config_dump_pb2.SecretsConfigDump()
    if certificate is None:
        return dump
    version = certificate.not_before.isoformat()
    default = secret_pb2.Secret(name="default")
    default.tls_certificate.certificate_chain.inline_bytes = certificate.chain_pem
    default.tls_certificate.private_key.inline_bytes = REDACTED
    roots = secret_pb2.Secret(name="ROOTCA")
    roots.validation_context.trusted_ca.inline_bytes = certificate.roots_pem
    for secret in (default, roots):
        entry = dump.dynamic_active_secrets.add(name=secret.name, version_info=version)
        entry.secret.Pack(secret)
    return dump


def config_dump(resources: Mapping[str, list[any_pb2.Any]], versions: Mapping[str, str],
                certificate: Any = None) -> str:
    """``/config_dump``: Envoy's ``ConfigDump`` of the accepted dynamic resources and the SDS secrets, as JSON."""
    clusters = dump_pb2.ClustersConfigDump(version_info=versions.get(xds.CLUSTER, ""))
    for packed in resources.get(xds.CLUSTER, []):
        clusters.dynamic_active_clusters.add(version_info=versions.get(xds.CLUSTER, ""), cluster=packed)
    endpoints = dump_pb2.EndpointsConfigDump()
    for packed in resources.get(xds.ENDPOINTS, []):
        endpoints.dynamic_endpoint_configs.add(version_info=versions.get(xds.ENDPOINTS, ""), endpoint_config=packed)
    listeners = dump_pb2.ListenersConfigDump(version_info=versions.get(xds.LISTENER, ""))
    for packed in resources.get(xds.LISTENER, []):
        name = xds.resource_name(xds.unpack(packed, listener_pb2.Listener))
        state = dump_pb2.ListenersConfigDump.DynamicListenerState(version_info=versions.get(xds.LISTENER, ""),
                                                                  listener=packed)
        listeners.dynamic_listeners.add(name=name, active_state=state)
    routes = dump_pb2.RoutesConfigDump()
    for packed in resources.get(xds.ROUTE, []):
        routes.dynamic_route_configs.add(version_info=versions.get(xds.ROUTE, ""), route_config=packed)
    dump = config_dump_pb2.ConfigDump()
    for part in (clusters, endpoints, listeners, routes, secrets_dump(certificate)):
        dump.configs.add().Pack(part)
    return json_format.MessageToJson(dump, indent=2)


@dataclass(frozen=True)
class HostView:
    host: str
    healthy: bool  # EDS health
    ejected: bool
    active: int
    stats: Mapping[str, int]


def clusters_page(clusters: Iterable[tuple[str, Mapping[str, int], Iterable[HostView]]]) -> str:
    """``/clusters``: ``name::host::field::value`` lines, as Envoy prints them."""
    lines: list[str] = []
    for name, stats, hosts in clusters:
        lines.append(f"{name}::outlier::ejections_enforced_total::"
                     f"{stats.get('outlier_detection.ejections_enforced_total', 0)}")
        for h in hosts:
            flags = "".join(flag for flag, on in (("/failed_eds_health", not h.healthy),
                                                  ("/failed_outlier_check", h.ejected)) if on) or "healthy"
            lines.append(f"{name}::{h.host}::health_flags::{flags}")
            lines.append(f"{name}::{h.host}::rq_active::{h.active}")
            for key in ("rq_total", "upstream_rq_2xx", "upstream_rq_4xx", "upstream_rq_5xx"):
                lines.append(f"{name}::{h.host}::{key.removeprefix('upstream_')}::{h.stats.get(key, 0)}")
    return "\n".join(lines) + "\n"


def stats_page(counters: Mapping[str, int], *, as_json: bool = False) -> str:
    """``/stats``: sorted ``name: value`` lines (``?format=json``: Envoy's ``{"stats": [{name, value}]}``)."""
    ordered = sorted(counters.items())
    if as_json:
        import json

        return json.dumps({"stats": [{"name": k, "value": v} for k, v in ordered]}, indent=1)
    return "".join(f"{k}: {v}\n" for k, v in ordered)


def stat_names(prefix: str, stats: Mapping[str, int]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in stats.items()}
