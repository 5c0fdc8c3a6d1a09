"""PeerAuthentication → the sidecar's inbound TLS, and auto mTLS → its outbound transport sockets.

Inbound (https://istio.io/latest/docs/reference/config/security/peer_authentication/): a workload's mode on
a port is decided by the most specific policy — one in its namespace whose ``selector`` matches it (its
``portLevelMtls`` first), else its namespace's selector-less policy, else the mesh-wide one in the root
namespace ``istio-system``; ``UNSET`` inherits from the next level; nothing at all means PERMISSIVE. As istiod
writes it, each inbound port gets filter chains on ``virtualInbound`` chosen by the ``tls_inspector``
listener filter: STRICT → one chain matching ``transport_protocol: "tls"`` whose ``DownstreamTlsContext``
requires a client certificate (``require_client_certificate``), presents the SDS secret ``default`` and
verifies the peer against the SDS secret ``ROOTCA`` plus a URI SAN in this trust domain; PERMISSIVE → that
chain and a ``"raw_buffer"`` chain on the same port; DISABLE → one plaintext chain. Plaintext to a STRICT
port matches no chain, so the connection is closed, as Envoy does.

Outbound auto mTLS (Istio ``enableAutoMtls``): an endpoint whose pod has a sidecar — and whose port is not
DISABLEd — carries ``tlsMode: istio`` in ``metadata.filter_metadata["envoy.transport_socket_match"]``; every
cluster has two ``transport_socket_matches``: ``tlsMode-istio`` (an ``UpstreamTlsContext`` with the SDS
certificate, ALPN ``istio``, SNI ``outbound_.<port>_.<subset>_.<host>`` and the accepted server identities
``spiffe://<td>/ns/<ns>/sa/<sa>`` of the destination's service accounts) and ``tlsMode-disabled``
(plaintext) for endpoints without a sidecar. The SDS secrets come from the proxy's own agent (``sds-grpc``),
never from Pilot: the private key never leaves the pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from meshlab.errors import XdsError
from meshlab.mesh.pilot.model import Endpoint, MeshState, PeerAuthentication
from meshlab.mesh.xds.resources import pack

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
MODES = ("STRICT", "PERMISSIVE", "DISABLE")
DEFAULT_MODE: Mode = "PERMISSIVE"

#: Istio's names: the workload certificate and the trust bundle as SDS secrets, served by the local agent.
SDS_CERT = "default"
SDS_ROOT = "ROOTCA"
SDS_CLUSTER = "sds-grpc"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
SOCKET_MATCH_KEY = "envoy.transport_socket_match"
TLS_MODE_ISTIO = {"tlsMode": "istio"}
#: ALPN Istio's sidecars offer each other (istio-peer-exchange for metadata exchange).
ISTIO_ALPN = ["istio-peer-exchange", "istio"]


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


# -- which mode ------------------------------------------------------------------------------------------------


def _selects(policy: PeerAuthentication, labels: Mapping[str, str]) -> bool:
    selector = (policy.spec.get("selector") or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _has_selector(policy: PeerAuthentication) -> bool:
    return bool((policy.spec.get("selector") or {}).get("matchLabels"))


def _mode_of(spec: object) -> str:
    return str(((spec or {}) if isinstance(spec, Mapping) else {}).get("mode") or "UNSET")


def mtls_mode(state: MeshState, namespace: str, labels: Mapping[str, str], port: int) -> Mode:
    """The mTLS mode of a workload's ``port``, resolved as Istio does (workload > namespace > mesh)."""
    policies = state.peer_authentications
    # Several policies at one level: Istio takes the oldest; meshlab the first by name (stable, documented).
    workload = next((p for p in policies if p.namespace == namespace and _has_selector(p) and _selects(p, labels)),
                    None)
    namespace_wide = next((p for p in policies if p.namespace == namespace and not _has_selector(p)), None)
    mesh_wide = next((p for p in policies if p.namespace == state.root_namespace and not _has_selector(p)), None)
    levels: list[str] = []
    if workload is not None:
        port_level = workload.spec.get("portLevelMtls") or {}
        levels.append(_mode_of(port_level.get(str(port))))  # JSON keys are strings
        levels.append(_mode_of(workload.spec.get("mtls")))
    for policy in (namespace_wide, mesh_wide):
        if policy is not None:
            levels.append(_mode_of(policy.spec.get("mtls")))
    for mode in levels:
        if mode in MODES:
            return mode  # type: ignore[return-value]
    return DEFAULT_MODE


def check_policies(state: MeshState) -> list[XdsError]:
    """What Istio's validation would refuse and the CRD schema cannot say: portLevelMtls keys and selectors."""
    problems = []
    for policy in state.peer_authentications:
        for key in policy.spec.get("portLevelMtls") or {}:
            if not str(key).isdigit():
                problems.append(XdsError(f"PeerAuthentication {policy.namespace}/{policy.name}: portLevelMtls key "
                                         f"{key!r} is not a port number (ignored)"))
        if policy.spec.get("portLevelMtls") and not _has_selector(policy):
            problems.append(XdsError(f"PeerAuthentication {policy.namespace}/{policy.name}: portLevelMtls needs a "
                                     "workload selector (ignored, as Istio refuses it)"))
    return problems


# -- inbound ---------------------------------------------------------------------------------------------------


def sds_config() -> config_source_pb2.ConfigSource:
    """SDS from the pod's own agent over gRPC (cluster ``sds-grpc``), as Istio's sidecars get their secrets."""
    grpc = grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.api_config_source.CopyFrom(config_source_pb2.ApiConfigSource(
        api_type=config_source_pb2.ApiConfigSource.GRPC, transport_api_version=config_source_pb2.V3,
        grpc_services=[grpc], set_node_on_first_message_only=True))
    return source


def _common_context(sans: Iterable[string_pb2.StringMatcher], alpn: list[str]) -> tls_pb2.CommonTlsContext:
    common = tls_pb2.CommonTlsContext(alpn_protocols=alpn)
    common.tls_certificate_sds_secret_configs.append(secret_pb2.SdsSecretConfig(name=SDS_CERT, sds_config=sds_config()))
    combined = common.combined_validation_context
    for matcher in sans:
        combined.default_validation_context.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher))
    combined.validation_context_sds_secret_config.CopyFrom(secret_pb2.SdsSecretConfig(name=SDS_ROOT,
                                                                                     sds_config=sds_config()))
    return common


def downstream_tls(trust_domain: str) -> tls_pb2.DownstreamTlsContext:
    """The server side of mTLS: client certificate required, from this trust domain, chained to ROOTCA."""
    sans = [string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/")]
    context = tls_pb2.DownstreamTlsContext(common_tls_context=_common_context(sans, ["h2", "http/1.1"]))
    context.require_client_certificate.value = True
    return context


def inbound_chains(port: int, mode: Mode, trust_domain: str,
                   network_filters: list[listener_components_pb2.Filter]) -> list[listener_components_pb2.FilterChain]:
    """``virtualInbound``'s chains for one port: a TLS chain (STRICT, PERMISSIVE), a plaintext one (PERMISSIVE,
    DISABLE), both carrying the same network filters (the HTTP connection manager)."""
    chains = []
    if mode in ("STRICT", "PERMISSIVE"):
        tls = listener_components_pb2.FilterChain(name=f"{port}-mtls", filters=network_filters)
        tls.filter_chain_match.destination_port.value = port
        tls.filter_chain_match.transport_protocol = "tls"
        tls.transport_socket.CopyFrom(base_pb2.TransportSocket(name=TLS_SOCKET,
                                                               typed_config=pack(downstream_tls(trust_domain))))
        chains.append(tls)
    if mode in ("PERMISSIVE", "DISABLE"):
        plain = listener_components_pb2.FilterChain(name=f"{port}-plaintext", filters=network_filters)
        plain.filter_chain_match.destination_port.value = port
        if mode == "PERMISSIVE":
            plain.filter_chain_match.transport_protocol = "raw_buffer"
        chains.append(plain)
    return chains


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    inspector = tls_inspector_pb2.TlsInspector()
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR, typed_config=pack(inspector))


# -- outbound --------------------------------------------------------------------------------------------------


def endpoint_tls_mode(state: MeshState, endpoint: Endpoint, port: int | None) -> bool:
    """Whether a client's sidecar should use mTLS to ``endpoint``: it has a sidecar that does not DISABLE it."""
    if not endpoint.sidecar or port is None:
        return False
    return mtls_mode(state, endpoint.namespace, endpoint.labels, port) != "DISABLE"


def socket_match_metadata(metadata: base_pb2.Metadata) -> None:
    """Mark an ``LbEndpoint``'s metadata ``tlsMode: istio`` (what the cluster's socket matches look for)."""
    metadata.filter_metadata[SOCKET_MATCH_KEY].update(TLS_MODE_ISTIO)


def sni(port: int, subset: str, host: str) -> str:
    return f"outbound_.{port}_.{subset}_.{host}"


def transport_socket_matches(cluster: cluster_pb2.Cluster, trust_domain: str, namespace_accounts: Iterable[
        tuple[str, str]], sni_name: str) -> None:
    """Add auto-mTLS socket matches to ``cluster``: mTLS to ``tlsMode: istio`` endpoints, verifying the server
    is one of ``namespace_accounts``; plaintext to the rest."""
    sans = [string_pb2.StringMatcher(exact=spiffe_id(trust_domain, ns, sa))
            for ns, sa in sorted(set(namespace_accounts))]
    upstream = tls_pb2.UpstreamTlsContext(common_tls_context=_common_context(sans, ISTIO_ALPN), sni=sni_name)
    istio = cluster.transport_socket_matches.add(name="tlsMode-istio")
    istio.match.CopyFrom(struct_pb2.Struct())
    istio.match.update(TLS_MODE_ISTIO)
    istio.transport_socket.CopyFrom(base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(upstream)))
    plain = cluster.transport_socket_matches.add(name="tlsMode-disabled")
    plain.match.CopyFrom(struct_pb2.Struct())
    plain.transport_socket.CopyFrom(base_pb2.TransportSocket(name=RAW_SOCKET,
                                                             typed_config=pack(raw_buffer_pb2.RawBuffer())))
