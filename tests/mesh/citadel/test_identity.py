"""One service account named the Istio, Linkerd and Consul ways; malformed IDs and non-workload users refused."""

from __future__ import annotations

import pytest

from meshlab.errors import CaError
from meshlab.mesh.citadel.identity import (
    WorkloadIdentity,
    consul_spiffe_id,
    identity_from_username,
    istio_principal,
    linkerd_identity,
    parse_spiffe_id,
    spiffe_id,
)


def test_the_same_workload_in_three_meshes() -> None:
    assert spiffe_id("cluster.local", "default", "bookinfo-reviews") == \
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert istio_principal("cluster.local", "default", "bookinfo-reviews") == \
        "cluster.local/ns/default/sa/bookinfo-reviews"
    assert linkerd_identity("default", "bookinfo-reviews") == \
        "bookinfo-reviews.default.serviceaccount.identity.linkerd.cluster.local"
    assert consul_spiffe_id("0c4f3a2b-11d2", "default", "dc1", "reviews") == \
        "spiffe://0c4f3a2b-11d2.consul/ns/default/dc/dc1/svc/reviews"


@pytest.mark.parametrize(("uri", "parts"), [
    pytest.param("spiffe://cluster.local/ns/default/sa/web", ("cluster.local", "default", "web"), id="istio"),
    pytest.param("spiffe://example.org/ns/a-b/sa/c.d", ("example.org", "a-b", "c.d"), id="other trust domain"),
])
def test_parse_spiffe_id(uri: str, parts: tuple[str, str, str]) -> None:
    assert parse_spiffe_id(uri) == parts
    assert spiffe_id(*parts) == uri


@pytest.mark.parametrize(("uri", "message"), [
    pytest.param("https://cluster.local/ns/default/sa/web", "not a SPIFFE ID", id="[Error] https scheme"),
    pytest.param("spiffe://cluster.local/ns/default", "not an Istio workload", id="[Error] no account"),
    pytest.param("spiffe://cluster.local/ns/default/sa/web/extra", "not an Istio workload", id="[Error] extra path"),
    pytest.param("spiffe://Cluster.Local/ns/default/sa/web", "invalid trust domain", id="[Error] uppercase domain"),
    pytest.param("spiffe://cluster.local/ns/Default/sa/web", "invalid namespace", id="[Error] bad namespace"),
    pytest.param("spiffe:///ns/default/sa/web", "invalid trust domain", id="[Error] empty trust domain"),
])
def test_malformed_spiffe_ids_are_refused(uri: str, message: str) -> None:
    with pytest.raises(CaError, match=message):
        parse_spiffe_id(uri)


@pytest.mark.parametrize(("username", "expected"), [
    pytest.param("system:serviceaccount:shop:web", WorkloadIdentity("cluster.local", "shop", "web"), id="workload"),
    pytest.param("admin", None, id="[Error] a person"),
    pytest.param("system:node:lab-node-1", None, id="[Error] a node"),
    pytest.param("system:serviceaccount:shop", None, id="[Error] malformed"),
])
def test_only_service_accounts_are_workloads(username: str, expected: WorkloadIdentity | None) -> None:
    if expected is None:
        with pytest.raises(CaError):
            identity_from_username(username, "cluster.local")
    else:
        assert identity_from_username(username, "cluster.local") == expected
        assert str(expected) == "spiffe://cluster.local/ns/shop/sa/web"
