"""PeerAuthentication resolution and what Pilot writes for it (inbound chains, auto-mTLS socket matches), and
the proxy refusing security settings it cannot honour."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.json_format import MessageToDict

from meshlab.mesh.pilot.model import Endpoint, MeshState, PeerAuthentication, Service, ServicePort
from meshlab.mesh.pilot.security import mtls_mode
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.proxy import decoding
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import CLUSTER, ENDPOINTS, LISTENER

LABELS = {"app": "reviews", "version": "v1"}


def pa(namespace: str, spec: dict[str, Any], name: str = "default") -> PeerAuthentication:
    return PeerAuthentication(name, namespace, spec)


MESH_STRICT = pa("istio-system", {"mtls": {"mode": "STRICT"}})
NS_PERMISSIVE = pa("default", {"mtls": {"mode": "PERMISSIVE"}})
NS_UNSET = pa("default", {"mtls": {"mode": "UNSET"}})
WORKLOAD_DISABLE_9080 = pa("default", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
                                       "portLevelMtls": {"9080": {"mode": "DISABLE"}}}, name="reviews")
OTHER_WORKLOAD = pa("default", {"selector": {"matchLabels": {"app": "ratings"}}, "mtls": {"mode": "DISABLE"}},
                    name="ratings")
OTHER_NAMESPACE = pa("prod", {"mtls": {"mode": "DISABLE"}})


@pytest.mark.parametrize(("policies", "port", "expected"), [
    pytest.param((), 9080, "PERMISSIVE", id="nothing-means-permissive"),
    pytest.param((MESH_STRICT,), 9080, "STRICT", id="mesh-wide-in-root-namespace"),
    pytest.param((MESH_STRICT, NS_PERMISSIVE), 9080, "PERMISSIVE", id="namespace-beats-mesh"),
    pytest.param((MESH_STRICT, NS_UNSET), 9080, "STRICT", id="unset-inherits-from-mesh"),
    pytest.param((MESH_STRICT, WORKLOAD_DISABLE_9080), 9080, "DISABLE", id="port-level-beats-workload"),
    pytest.param((MESH_STRICT, WORKLOAD_DISABLE_9080), 9443, "STRICT", id="other-ports-take-the-workload-mode"),
    pytest.param((MESH_STRICT, OTHER_WORKLOAD), 9080, "STRICT", id="selector-for-another-workload-ignored"),
    pytest.param((OTHER_NAMESPACE,), 9080, "PERMISSIVE", id="another-namespace-policy-ignored"),
])
def test_mode_resolution_follows_istio(policies: tuple[PeerAuthentication, ...], port: int, expected: str) -> None:
    assert mtls_mode(MeshState(peer_authentications=policies), "default", LABELS, port) == expected


REVIEWS = ProxyIdentity(ip="127.0.0.30", pod="reviews-v1", namespace="default", labels=LABELS,
                        service_account="bookinfo-reviews", app_address="127.0.0.31:9080")


def bookstore(*policies: PeerAuthentication, sidecar: bool = True) -> MeshState:
    reviews = Endpoint("127.0.0.30", {"http": 9080}, LABELS, True, "reviews-v1", "default", "bookinfo-reviews", sidecar)
    legacy = Endpoint("127.0.0.32", {"http": 9080}, {"app": "reviews", "version": "v0"}, True, "reviews-v0",
                      "default", "default", False)
    return MeshState((Service("reviews", "default", "10.96.0.30", (ServicePort("http", 9080),)),),
                     {("default", "reviews"): (reviews, legacy)}, peer_authentications=policies)


def _resource(state: MeshState, type_url: str, name: str) -> Any:
    snapshot = translate(state, REVIEWS)
    return next(r for r in snapshot.resources[type_url]
                if getattr(r, "name", None) == name or getattr(r, "cluster_name", None) == name)


@pytest.mark.parametrize(("policies", "chains"), [
    pytest.param((), [("tls", True), ("raw_buffer", False)], id="permissive-two-chains-one-port"),
    pytest.param((MESH_STRICT,), [("tls", True)], id="strict-tls-only"),
    pytest.param((WORKLOAD_DISABLE_9080,), [("", False)], id="disable-plaintext-only"),
])
def test_inbound_chains_per_mode(policies: tuple[PeerAuthentication, ...], chains: list[tuple[str, bool]]) -> None:
    listener = _resource(bookstore(*policies), LISTENER, "virtualInbound")
    assert isinstance(listener, listener_pb2.Listener)
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert [(c.filter_chain_match.transport_protocol, c.HasField("transport_socket"))
            for c in listener.filter_chains] == chains
    for chain in listener.filter_chains:
        if chain.HasField("transport_socket"):
            context = tls_pb2.DownstreamTlsContext()
            assert chain.transport_socket.typed_config.Unpack(context)
            assert context.require_client_certificate.value
            common = MessageToDict(context.common_tls_context)
            assert common["tlsCertificateSdsSecretConfigs"][0]["name"] == "default"
            assert common["combinedValidationContext"]["validationContextSdsSecretConfig"]["name"] == "ROOTCA"
            assert common["combinedValidationContext"]["defaultValidationContext"][
                "matchTypedSubjectAltNames"] == [{"sanType": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]


def test_auto_mtls_marks_sidecar_endpoints_and_expects_their_service_account() -> None:
    state = bookstore()
    cluster = MessageToDict(_resource(state, CLUSTER, "outbound|9080||reviews.default.svc.cluster.local"))
    matches = cluster["transportSocketMatches"]
    assert [m["name"] for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
    assert matches[0]["match"] == {"tlsMode": "istio"}
    upstream = matches[0]["transportSocket"]["typedConfig"]
    assert upstream["sni"] == "outbound_.9080_._.reviews.default.svc.cluster.local"
    assert upstream["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"][
        "matchTypedSubjectAltNames"] == [{"sanType": "URI", "matcher": {
            "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}}]
    assignment = MessageToDict(_resource(state, ENDPOINTS, "outbound|9080||reviews.default.svc.cluster.local"))
    marks = {e["endpoint"]["address"]["socketAddress"]["address"]:
             e["metadata"]["filterMetadata"].get("envoy.transport_socket_match")
             for e in assignment["endpoints"][0]["lbEndpoints"]}
    assert marks == {"127.0.0.30": {"tlsMode": "istio"}, "127.0.0.32": None}


def test_no_sidecar_no_tls_and_disable_turns_auto_mtls_off() -> None:
    for state in (bookstore(sidecar=False), bookstore(WORKLOAD_DISABLE_9080)):
        cluster = _resource(state, CLUSTER, "outbound|9080||reviews.default.svc.cluster.local")
        assert not cluster.transport_socket_matches


@pytest.mark.parametrize(("mutate", "message"), [
    pytest.param(lambda ls: ls.listener_filters.add(name="envoy.filters.listener.original_dst"),
                 'unsupported listener filter "envoy.filters.listener.original_dst"', id="unknown-listener-filter"),
    pytest.param(lambda ls: ls.filter_chains[0].filter_chain_match.server_names.append("x"),
                 "filter_chain_match field(s) server_names not supported", id="sni-match"),
    pytest.param(lambda ls: setattr(ls.filter_chains[0].filter_chain_match, "transport_protocol", "quic"),
                 'transport_protocol "quic" is not supported', id="unknown-transport-protocol"),
    pytest.param(lambda ls: ls.filter_chains[0].transport_socket.__setattr__("name", "envoy.transport_sockets.alts"),
                 'unsupported transport socket "envoy.transport_sockets.alts"', id="alts"),
    pytest.param(lambda ls: ls.ClearField("listener_filters"),
                 "needs the envoy.filters.listener.tls_inspector listener filter", id="tls-match-without-inspector"),
])
def test_the_proxy_nacks_what_it_cannot_honour(mutate: Any, message: str) -> None:
    listener = _resource(bookstore(), LISTENER, "virtualInbound")
    broken = listener_pb2.Listener()
    broken.CopyFrom(listener)
    mutate(broken)
    with pytest.raises(decoding.ResourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decoding.decode_listener(broken)
