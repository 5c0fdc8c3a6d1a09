"""Istio's metrics as one sidecar keeps and prints them; peer metadata; the istio.stats filter over xDS."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshlab.errors import XdsError
from meshlab.mesh.pilot import stats_filter
from meshlab.mesh.pilot.model import MeshState, TelemetrySettings
from meshlab.mesh.proxy import peer_metadata
from meshlab.mesh.proxy.accesslog import AccessRecord
from meshlab.mesh.proxy.metrics import DEFAULT_BUCKETS, IstioLabels, IstioMetrics
from meshlab.mesh.proxy.peer_metadata import PeerMetadata
from meshlab.mesh.proxy.policies import ResponseFlag
from meshlab.mesh.proxy.stats_decoding import decode_stats_filter
from meshlab.mesh.proxy.stats_plugin import Exchange, StatsPlugin, service_fqdn
from meshlab.mesh.proxy.tracing import SpanContext
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import pack

PRODUCTPAGE = PeerMetadata("sidecar~127.0.0.5~productpage-v1-x.default~default.svc.cluster.local", "productpage-v1",
                           "default", "bookinfo-productpage", "productpage-v1-x",
                           {"app": "productpage", "version": "v1"})
REVIEWS = PeerMetadata("sidecar~127.0.0.6~reviews-v2-y.default~default.svc.cluster.local", "reviews-v2", "default",
                       "bookinfo-reviews", "reviews-v2-y", {"app": "reviews", "version": "v2"})


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_text_parses_with_prometheus_client_and_histograms_are_cumulative() -> None:
    metrics = IstioMetrics()
    labels = IstioLabels(reporter="destination", source_workload="productpage-v1", response_code="200")
    for ms in (0.3, 4.0, 4.0, 70.0, 4_000_000.0):
        metrics.record(labels, duration_ms=ms, request_bytes=0, response_bytes=1500)
    families = _families(metrics.render())
    assert families["istio_requests"] == [("istio_requests_total", labels.as_dict(), 5.0)]
    buckets = {s[1]["le"]: s[2] for s in families["istio_request_duration_milliseconds"] if s[0].endswith("_bucket")}
    assert buckets["0.5"] == 1 and buckets["5"] == 3 and buckets["100"] == 5 - 1 and buckets["+Inf"] == 5
    assert [float(le) for le in buckets if le != "+Inf"] == list(DEFAULT_BUCKETS)
    total = {s[0]: s[2] for s in families["istio_response_bytes"]}
    assert total["istio_response_bytes_sum"] == 7500 and total["istio_response_bytes_count"] == 5


def test_label_values_are_escaped() -> None:
    metrics = IstioMetrics()
    odd = IstioLabels(reporter="source", destination_service='we"ird\\name\nx')
    metrics.record(odd, duration_ms=1, request_bytes=1, response_bytes=1)
    (sample,) = _families(metrics.render())["istio_requests"]
    assert sample[1]["destination_service"] == 'we"ird\\name\nx'


@pytest.mark.parametrize(("peer", "expected"), [
    pytest.param(PRODUCTPAGE, PRODUCTPAGE, id="round-trip"),
    pytest.param(PeerMetadata(workload="w", namespace="ns"), PeerMetadata(workload="w", namespace="ns"),
                 id="no-labels-no-account"),
])
def test_peer_metadata_round_trips(peer: PeerMetadata, expected: PeerMetadata) -> None:
    headers = [("accept", "*/*"), *peer_metadata.encode(peer)]
    assert peer_metadata.decode(headers) == expected
    assert peer_metadata.strip(headers) == [("accept", "*/*")]


@pytest.mark.parametrize("blob", [
    pytest.param("not base64!", id="not-base64"),
    pytest.param(base64.b64encode(b"[1,2]").decode(), id="json-not-an-object"),
    pytest.param(base64.b64encode(b"{nope").decode(), id="not-json"),
])
def test_undecodable_peer_metadata_leaves_the_peer_unknown(blob: str) -> None:
    assert peer_metadata.decode([("x-envoy-peer-metadata", blob)]) is None


def test_peer_metadata_is_base64_json_of_istio_field_names() -> None:
    _, (_, blob) = peer_metadata.encode(REVIEWS)
    assert json.loads(base64.b64decode(blob))["WORKLOAD_NAME"] == "reviews-v2"
    assert REVIEWS.principal() == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"


def _record(**fields: object) -> AccessRecord:
    base: dict[str, object] = {"start_time": datetime(2026, 1, 1, tzinfo=UTC), "method": "GET", "path": "/reviews/0",
                               "response_code": 200, "authority": "reviews:9080", "duration": 0.012,
                               "bytes_received": 0, "bytes_sent": 321, "request_id": "rid-1"}
    return AccessRecord(**{**base, **fields})  # type: ignore[arg-type]


SPAN = SpanContext("a" * 32, "b" * 16, None, True)


@pytest.mark.parametrize(("exchange", "record", "callee", "expected"), [
    pytest.param(Exchange(True, SPAN, PRODUCTPAGE), _record(mtls=True,
                 peer_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage"), None,
                 {"reporter": "destination", "source_workload": "productpage-v1", "destination_workload": "reviews-v2",
                  "source_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                  "destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                  "connection_security_policy": "mutual_tls", "destination_version": "v2",
                  "destination_service": "reviews.default.svc.cluster.local"}, id="server-side-mtls"),
    pytest.param(Exchange(True, SPAN, None), _record(), None,
                 {"reporter": "destination", "source_workload": "unknown", "source_principal": "unknown",
                  "connection_security_policy": "none"}, id="server-side-plaintext-unknown-caller"),
    pytest.param(Exchange(False, SPAN), _record(upstream_cluster="outbound|9080|v2|reviews.default.svc.cluster.local",
                                                upstream_mtls=True), REVIEWS,
                 {"reporter": "source", "source_workload": "productpage-v1", "destination_workload": "reviews-v2",
                  "destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                  "connection_security_policy": "unknown", "destination_service_name": "reviews",
                  "destination_service_namespace": "default"}, id="client-side"),
    pytest.param(Exchange(False, SPAN), _record(response_code=503, response_flags=frozenset({ResponseFlag.UF})), None,
                 {"reporter": "source", "destination_workload": "unknown", "response_code": "503",
                  "response_flags": "UF"}, id="client-side-local-reply"),
])
def test_labels_follow_istio(exchange: Exchange, record: AccessRecord, callee: PeerMetadata | None,
                             expected: dict[str, str]) -> None:
    me = REVIEWS if exchange.inbound else PRODUCTPAGE
    labels = StatsPlugin(me).labels(exchange, record, callee).as_dict()
    assert {k: labels[k] for k in expected} == expected


@pytest.mark.parametrize(("authority", "fqdn"), [
    ("reviews:9080", ("reviews.bookinfo.svc.cluster.local", 9080)),
    ("reviews.default", ("reviews.default.svc.cluster.local", 80)),
    ("reviews.default.svc:9080", ("reviews.default.svc.cluster.local", 9080)),
    ("reviews.default.svc.cluster.local:9080", ("reviews.default.svc.cluster.local", 9080)),
    ("10.0.0.7:8080", ("10.0.0.7", 8080)),
], ids=["short", "name.ns", "name.ns.svc", "fqdn", "ip"])
def test_destination_service_from_host(authority: str, fqdn: tuple[str, int]) -> None:
    assert service_fqdn(authority, "bookinfo") == fqdn


@pytest.mark.parametrize(("profile", "count"), [("modern", 1), ("classic", 0)])
def test_pilot_adds_istio_stats_only_in_the_modern_profile(profile: str, count: int) -> None:
    state = MeshState(telemetry=TelemetrySettings(profile=profile))
    found = stats_filter.filters(state, ProxyIdentity(ip="127.0.0.5", pod="p", namespace="default"), "inbound")
    assert len(found) == count
    if found:
        assert decode_stats_filter(found[0].typed_config, "here").disable_host_header_fallback is True


def _typed(value: dict[str, object], type_url: str = stats_filter.PLUGIN_CONFIG_TYPE) -> object:
    from xds.type.v3 import typed_struct_pb2

    typed = typed_struct_pb2.TypedStruct(type_url=type_url)
    typed.value.update(value)
    return pack(typed)


@pytest.mark.parametrize(("config", "message"), [
    (_typed({"metrics": [{"name": "requests_total"}]}), "metrics are not supported"),
    (_typed({"reporter": "SERVER_GATEWAY"}), "reporter SERVER_GATEWAY"),
    (_typed({"stat_prefix": "custom"}), "stat_prefix must be istio"),
    (_typed({}, "type.googleapis.com/other.Config"), "not type.googleapis.com/stats.PluginConfig"),
], ids=["[Error] custom metrics", "[Error] gateway reporter", "[Error] other prefix", "[Error] other plugin"])
def test_stats_filter_config_the_proxy_cannot_honour_is_refused(config: object, message: str) -> None:
    with pytest.raises(XdsError, match=message):
        decode_stats_filter(config, "here")


@pytest.mark.parametrize(("profile", "has_stats"), [("modern", True), ("classic", False)])
def test_every_connection_manager_carries_istio_stats_in_the_modern_profile(profile: str, has_stats: bool) -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    from meshlab.mesh.pilot.translation import translate
    from meshlab.mesh.xds.resources import LISTENER

    state = MeshState(telemetry=TelemetrySettings(profile=profile))
    snapshot = translate(state, ProxyIdentity(ip="127.0.0.5", pod="p", namespace="default"))
    for listener in snapshot.resources[LISTENER]:
        for chain in listener.filter_chains:
            hcm = hcm_pb2.HttpConnectionManager()
            chain.filters[0].typed_config.Unpack(hcm)
            assert ("istio.stats" in [f.name for f in hcm.http_filters]) is has_stats


def test_the_proxy_decodes_the_modern_outbound_listener() -> None:
    from meshlab.mesh.pilot.translation import translate
    from meshlab.mesh.proxy.decoding import decode_listener
    from meshlab.mesh.xds.resources import LISTENER, OUTBOUND_LISTENER

    snapshot = translate(MeshState(), ProxyIdentity(ip="127.0.0.5", pod="p", namespace="default"))
    (listener,) = [m for m in snapshot.resources[LISTENER] if m.name == OUTBOUND_LISTENER]
    _, decoded = decode_listener(listener)
    assert decoded.chains[0].stats is not None


def _config_with_stats(enabled: bool) -> object:
    from meshlab.mesh.proxy.config import FilterChain, Listener, ProxyConfig
    from meshlab.mesh.proxy.stats_decoding import StatsConfig

    chain = FilterChain(route_config_name="outbound", stats=StatsConfig() if enabled else None)
    return ProxyConfig(listeners={"virtualOutbound": Listener("virtualOutbound", "0.0.0.0", 15001, "outbound",
                                                              chains=(chain,))})


@pytest.mark.parametrize(("enabled", "families"), [
    pytest.param(True, {"istio_requests", "istio_request_duration_milliseconds", "istio_request_bytes",
                        "istio_response_bytes", "envoy_http_downstream_rq"}, id="modern-istio-and-proxy-counters"),
    pytest.param(False, {"envoy_http_downstream_rq"}, id="classic-only-the-proxy-counters"),
])
def test_istio_metrics_only_while_the_listeners_carry_istio_stats(enabled: bool, families: set[str]) -> None:
    config = _config_with_stats(enabled)
    plugin = StatsPlugin(PRODUCTPAGE, config=lambda: config)  # type: ignore[arg-type,return-value]
    forwarded, exchange = plugin.on_request([("accept", "*/*")], inbound=False)
    assert peer_metadata.decode(forwarded) == PRODUCTPAGE  # the exchange happens in both profiles
    back = plugin.on_response(exchange, _record(), [("content-type", "text/plain"), *peer_metadata.encode(REVIEWS)])
    assert back == [("content-type", "text/plain")]
    text = plugin.prometheus_text({"http.downstream_rq_total": 1})
    assert {f.name for f in text_string_to_metric_families(text)} == families
