"""Mixer's core: deny rules, quotas, metrics from reports, the policy document, the attribute proto, codegen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshlab.mesh.mixer import codegen, mixer_pb2
from meshlab.mesh.mixer.core import (
    OK,
    PERMISSION_DENIED,
    REQUEST_COUNT,
    RESOURCE_EXHAUSTED,
    Mixer,
    PolicyError,
    from_proto,
    parse_policy,
    to_proto,
)
from meshlab.mesh.mixer.metrics import labels_from
from meshlab.mesh.mixer.server import PolicySource

POLICY = """
deny:
- source: {workload: productpage, namespace: bookstore}
  destination: {workload: reviews-v3}
- destination: {service: secret.bookstore.svc.cluster.local}
quotas:
- destination: ratings.bookstore.svc.cluster.local
  maxAmount: 2
  validDuration: 1s
"""


def bag(source: str = "productpage", destination: str = "reviews-v1", service: str = "reviews", **extra: Any
        ) -> dict[str, Any]:
    return {"source.workload.name": source, "source.workload.namespace": "bookstore",
            "destination.workload.name": destination, "destination.workload.namespace": "bookstore",
            "destination.service.host": f"{service}.bookstore.svc.cluster.local", **extra}


@pytest.mark.parametrize(("request_bag", "code"), [
    pytest.param(bag(destination="reviews-v3"), PERMISSION_DENIED, id="denied pair"),
    pytest.param(bag(destination="reviews-v1"), OK, id="other destination allowed"),
    pytest.param(bag(source="details", destination="reviews-v3"), OK, id="other source allowed"),
    pytest.param(bag(source="anyone", service="secret"), PERMISSION_DENIED, id="rule without source matches all"),
])
def test_deny_rules(request_bag: dict[str, Any], code: int) -> None:
    assert Mixer(parse_policy(POLICY)).check(request_bag).code == code


def test_quota_is_per_destination_and_refills_each_window() -> None:
    now = [100.0]
    mixer = Mixer(parse_policy(POLICY), clock=lambda: now[0])
    ratings, reviews = bag(service="ratings"), bag(service="reviews")
    codes = [mixer.check(ratings, {REQUEST_COUNT: 1}).code for _ in range(3)]
    assert codes == [OK, OK, RESOURCE_EXHAUSTED]
    assert mixer.check(reviews, {REQUEST_COUNT: 1}).code == OK  # no quota for reviews
    now[0] += 1.0
    assert mixer.check(ratings, {REQUEST_COUNT: 1}).code == OK  # a new window
    exhausted = mixer.check(ratings, {REQUEST_COUNT: 5})
    assert (exhausted.code, exhausted.granted[REQUEST_COUNT], exhausted.message) == (
        RESOURCE_EXHAUSTED, 0, "Quota is exhausted for: requestcount")


@pytest.mark.parametrize("text", [
    pytest.param("deny: [{source: {pod: x}}]", id="unknown match key"),
    pytest.param("quotas: [{maxAmount: 3}]", id="quota without destination"),
    pytest.param("quotas: [{destination: a, maxAmount: 3, validDuration: soon}]", id="bad duration"),
    pytest.param("allow: []", id="unknown section"),
    pytest.param("deny: [", id="not yaml"),
])
def test_malformed_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_reports_become_istio_metrics_that_prometheus_parses() -> None:
    mixer = Mixer()
    inbound = {**bag(), "context.reporter.kind": "inbound", "response.code": 200, "response.duration": 0.012,
               "connection.mtls": True, "source.principal": "spiffe://cluster.local/ns/bookstore/sa/pp",
               "destination.labels.version": "v1", "request.total_size": 0, "response.total_size": 120}
    outbound = {**inbound, "context.reporter.kind": "outbound", "response.code": 503}
    mixer.report([inbound, inbound, outbound])
    families = {f.name: f for f in text_string_to_metric_families(mixer.metrics.render())}
    totals = {(s.labels["reporter"], s.labels["response_code"], s.labels["connection_security_policy"]): s.value
              for s in families["istio_requests"].samples if s.name == "istio_requests_total"}
    assert totals == {("destination", "200", "mutual_tls"): 2.0, ("source", "503", "unknown"): 1.0}
    buckets = {s.labels["le"]: s.value for s in families["istio_request_duration_milliseconds"].samples
               if s.name.endswith("_bucket") and s.labels["reporter"] == "destination"}
    assert (buckets["10"], buckets["25"]) == (0.0, 2.0)  # 12 ms falls in the 25 ms bucket


@pytest.mark.parametrize(("attributes", "label", "value"), [
    pytest.param({}, "reporter", "destination", id="no reporter kind means inbound"),
    pytest.param({"context.reporter.kind": "outbound"}, "reporter", "source", id="outbound is source"),
    pytest.param({}, "source_workload", "unknown", id="missing source"),
    pytest.param({"connection.mtls": False}, "connection_security_policy", "none", id="plaintext"),
    pytest.param({"destination.labels.version": "v2"}, "destination_version", "v2", id="version label"),
])
def test_label_expressions(attributes: dict[str, Any], label: str, value: str) -> None:
    assert labels_from(attributes).as_dict()[label] == value


def test_attribute_bags_survive_the_proto() -> None:
    original = {"request.path": "/books", "response.code": 404, "connection.mtls": True,
                "response.duration": 0.25, "sample.ratio": 0.5}
    wire = mixer_pb2.Attributes.FromString(to_proto(original).SerializeToString())
    assert from_proto(wire) == original
    assert wire.durations["response.duration"].ToMilliseconds() == 250


def test_regenerating_the_messages_changes_nothing(tmp_path: Path) -> None:
    for generated in codegen.generate(tmp_path):
        committed = codegen.PACKAGE / generated.name
        assert generated.read_text() == committed.read_text(), f"{committed.name} drifted: run the codegen"


@pytest.mark.parametrize(("message", "field", "number"), [
    pytest.param(mixer_pb2.CheckRequest, "attributes", 1, id="check attributes"),
    pytest.param(mixer_pb2.CheckRequest, "quotas", 4, id="check quotas"),
    pytest.param(mixer_pb2.CheckResponse, "precondition", 2, id="precondition"),
    pytest.param(mixer_pb2.ReportRequest, "attributes", 1, id="report attributes"),
])
def test_field_numbers_are_istios(message: Any, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number
    assert message.DESCRIPTOR.full_name.startswith("istio.mixer.v1.")


def test_the_policy_source_reloads_changes_and_keeps_the_last_good_policy() -> None:
    documents = iter(["deny: [{source: {workload: a}}]", "deny: [{source: {workload: a}}]", "deny: [",
                      "quotas: [{destination: b, maxAmount: 1}]"])
    source, mixer = PolicySource(lambda: next(documents), "test"), Mixer()
    loaded = [source.refresh(mixer) for _ in range(3)]
    assert loaded == [True, False, False]  # loaded; unchanged; malformed (kept)
    assert len(mixer.policy.deny) == 1
    assert source.refresh(mixer) and mixer.policy.quotas[0].destination == "b" and not mixer.policy.deny
