"""Pilot's view of the cluster built from raw API objects, and the list-watch cache, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.pilot.model import Endpoint
from meshlab.mesh.pilot.watching import (
    AUTHORIZATION_POLICIES,
    DESTINATION_RULES,
    ENDPOINT_SLICES,
    MESH_CONFIG,
    PEER_AUTHENTICATIONS,
    PODS,
    SERVICES,
    VIRTUAL_SERVICES,
    Cache,
    Kind,
    state_from,
)


def _meta(name: str, ns: str = "default", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "resourceVersion": "1", **extra}


def service(name: str, ns: str = "default", *, ports: tuple[tuple[str, int], ...] = (("http", 9080),),
            cluster_ip: str = "10.96.0.9", type_: str = "ClusterIP") -> dict[str, Any]:
    return {"kind": "Service", "metadata": _meta(name, ns),
            "spec": {"type": type_, "clusterIP": cluster_ip,
                     "ports": [{"name": n, "port": p, "protocol": "TCP", "targetPort": p} for n, p in ports]}}


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": _meta(name, ns, labels=labels), "spec": {}, "status": {}}


def endpoint(ip: str, pod_name: str | None, ready: bool | None = True, ns: str = "default") -> dict[str, Any]:
    entry: dict[str, Any] = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
    if pod_name:
        entry["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": ns}
    return entry


def slice_(name: str, svc: str, *endpoints: dict[str, Any], ns: str = "default",
           ports: tuple[tuple[str, int], ...] = (("http", 9080),)) -> dict[str, Any]:
    return {"kind": "EndpointSlice", "metadata": _meta(name, ns, labels={"kubernetes.io/service-name": svc}),
            "addressType": "IPv4", "endpoints": list(endpoints),
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}


def objects(*objs: dict[str, Any]) -> dict[Kind, dict[tuple[str, str], dict[str, Any]]]:
    by_kind = {"Service": SERVICES, "EndpointSlice": ENDPOINT_SLICES, "Pod": PODS,
               "VirtualService": VIRTUAL_SERVICES, "DestinationRule": DESTINATION_RULES}
    out: dict[Kind, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in by_kind.values()}
    for o in objs:
        out[by_kind[o["kind"]]][(o["metadata"]["namespace"], o["metadata"]["name"])] = o
    return out


REVIEWS_PODS = (pod("reviews-v1-a", app="reviews", version="v1"), pod("reviews-v2-b", app="reviews", version="v2"))


@pytest.mark.parametrize(("objs", "key", "expected"), [
    pytest.param(
        (service("reviews"), *REVIEWS_PODS,
         slice_("reviews-x", "reviews", endpoint("127.1.0.5", "reviews-v2-b"), endpoint("127.1.0.4", "reviews-v1-a"))),
        ("default", "reviews"),
        (Endpoint("127.1.0.4", {"http": 9080}, {"app": "reviews", "version": "v1"}, True, "reviews-v1-a", "default"),
         Endpoint("127.1.0.5", {"http": 9080}, {"app": "reviews", "version": "v2"}, True, "reviews-v2-b", "default")),
        id="endpoints carry their pod's labels, sorted by IP"),
    pytest.param(
        (service("reviews"), *REVIEWS_PODS,
         slice_("reviews-x", "reviews", endpoint("127.1.0.4", "reviews-v1-a", ready=False),
                endpoint("127.1.0.5", "reviews-v2-b", ready=None))),
        ("default", "reviews"),
        (Endpoint("127.1.0.4", {"http": 9080}, {"app": "reviews", "version": "v1"}, False, "reviews-v1-a", "default"),
         Endpoint("127.1.0.5", {"http": 9080}, {"app": "reviews", "version": "v2"}, True, "reviews-v2-b", "default")),
        id="ready false stays unready, an unset ready condition means ready"),
    pytest.param(
        (service("reviews"), slice_("reviews-x", "reviews", endpoint("127.1.0.4", "reviews-v1-a"))),
        ("default", "reviews"),
        (Endpoint("127.1.0.4", {"http": 9080}, {}, True, "reviews-v1-a", "default"),),
        id="a pod not seen yet gives an endpoint without labels"),
    pytest.param(
        (service("web", ports=(("http", 80), ("admin", 9901))), pod("web-1", app="web"),
         slice_("web-a", "web", endpoint("127.1.0.7", "web-1"), ports=(("http", 8080),)),
         slice_("web-b", "web", endpoint("127.1.0.7", "web-1"), ports=(("admin", 9901),))),
        ("default", "web"),
        (Endpoint("127.1.0.7", {"http": 8080, "admin": 9901}, {"app": "web"}, True, "web-1", "default"),),
        id="a pod in two slices is one endpoint with both target ports"),
    pytest.param(
        (service("reviews", "prod"), pod("reviews-v1-a", "prod", version="v1"),
         slice_("reviews-x", "reviews", endpoint("127.1.0.4", "reviews-v1-a", ns="prod"), ns="prod"),
         slice_("reviews-y", "reviews", endpoint("127.9.9.9", None))),
        ("prod", "reviews"),
        (Endpoint("127.1.0.4", {"http": 9080}, {"version": "v1"}, True, "reviews-v1-a", "prod"),),
        id="slices belong to the Service of their own namespace"),
])
def test_endpoints_of_a_service(objs: tuple[dict[str, Any], ...], key: tuple[str, str],
                                expected: tuple[Endpoint, ...]) -> None:
    assert state_from(objects(*objs)).endpoints.get(key) == expected


@pytest.mark.parametrize(("objs", "services"), [
    pytest.param((service("b"), service("a", "z"), service("a")),
                 [("default", "a"), ("default", "b"), ("z", "a")], id="sorted by namespace and name"),
    pytest.param((service("db", type_="ExternalName", cluster_ip=""), service("web")),
                 [("default", "web")], id="ExternalName services are left out"),
])
def test_services_listed(objs: tuple[dict[str, Any], ...], services: list[tuple[str, str]]) -> None:
    assert [s.key for s in state_from(objects(*objs)).services] == services


@pytest.mark.parametrize(("cluster_ip", "expected"), [
    pytest.param("10.96.0.9", "10.96.0.9", id="ClusterIP kept"),
    pytest.param("None", None, id="headless has no ClusterIP"),
])
def test_cluster_ip(cluster_ip: str, expected: str | None) -> None:
    assert state_from(objects(service("web", cluster_ip=cluster_ip))).services[0].cluster_ip == expected


def test_an_endpoint_slice_without_its_service_is_ignored() -> None:
    state = state_from(objects(slice_("ghost-x", "ghost", endpoint("127.1.0.4", None))))
    assert dict(state.endpoints) == {}


def test_istio_resources_keep_their_namespace_and_spec() -> None:
    vs = {"kind": "VirtualService", "metadata": _meta("reviews", "prod"),
          "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}
    dr = {"kind": "DestinationRule", "metadata": _meta("reviews"),
          "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    state = state_from(objects(vs, dr))
    assert [(v.namespace, v.name, v.spec) for v in state.virtual_services] == [("prod", "reviews", vs["spec"])]
    found = state.destination_rule_for("reviews.default.svc.cluster.local", "default")
    assert found is not None and found.spec == dr["spec"]


def test_same_objects_give_an_equal_state() -> None:
    objs = (service("reviews"), *REVIEWS_PODS, slice_("reviews-x", "reviews", endpoint("127.1.0.4", "reviews-v1-a")))
    assert state_from(objects(*objs)) == state_from(objects(*reversed(objs)))


@pytest.mark.parametrize(("steps", "changed", "count"), [
    pytest.param([("ADDED", "a", "1")], [True], 1, id="added"),
    pytest.param([("ADDED", "a", "1"), ("MODIFIED", "a", "1")], [True, False], 1,
                 id="an identical repeat changes nothing"),
    pytest.param([("ADDED", "a", "1"), ("MODIFIED", "a", "2")], [True, True], 1, id="modified"),
    pytest.param([("ADDED", "a", "1"), ("DELETED", "a", "2")], [True, True], 0, id="deleted"),
    pytest.param([("DELETED", "a", "1")], [False], 0, id="deleting the unknown changes nothing"),
    pytest.param([("BOOKMARK", "", "7")], [False], 0, id="a bookmark only advances the version"),
])
def test_cache_applies_watch_events(steps: list[tuple[str, str, str]], changed: list[bool], count: int) -> None:
    cache = Cache()
    seen = [cache.apply(SERVICES, kind, {"metadata": _meta(name, resourceVersion=rv)}) for kind, name, rv in steps]
    assert (seen, len(cache.objects()[SERVICES])) == (changed, count)


def test_cache_is_synced_once_every_kind_was_listed_and_a_relist_replaces() -> None:
    cache = Cache()
    for kind in (SERVICES, ENDPOINT_SLICES, PODS, VIRTUAL_SERVICES, PEER_AUTHENTICATIONS, AUTHORIZATION_POLICIES,
                 MESH_CONFIG):
        cache.replace(kind, [])
    assert not cache.synced
    assert cache.replace(DESTINATION_RULES, [])  # first list counts as a change, even when empty
    assert cache.synced
    cache.apply(SERVICES, "ADDED", service("old"))
    assert cache.replace(SERVICES, [service("new")])  # after 410 Gone: what was deleted meanwhile disappears
    assert list(cache.objects()[SERVICES]) == [("default", "new")]
    assert not cache.replace(SERVICES, [service("new")])
