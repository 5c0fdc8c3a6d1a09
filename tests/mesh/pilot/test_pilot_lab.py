"""Pilot as a pod in the embedded lab: ``meshlab mesh install`` brings istiod Ready, a proxy speaking ADS to
istiod's pod receives the bookstore's configuration, a VirtualService reaches it in under 2 s, and
``meshlab mesh proxy-status`` shows it SYNCED once it has ACKed."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

import meshlab.lab
from meshlab import cli
from meshlab.mesh import installing
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import CLUSTER, ENDPOINTS, LISTENER, ORDER, ROUTE, resource_name, unpack
from tests.conftest import RunningLab

BOOKSTORE = installing.MANIFESTS / "bookstore.yaml"
DEPLOYMENTS = ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3")


class AdsClient:
    """A sidecar's half of one ADS stream (blocking): send requests, wait for responses, ACK them."""

    def __init__(self, target: str, identity: ProxyIdentity) -> None:
        # Never through an HTTP proxy from the environment: istiod's pod address is on this machine.
        self.channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
        self.identity = identity
        self._outbox: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        self._inbox: queue.Queue[discovery_pb2.DiscoveryResponse | grpc.RpcError] = queue.Queue()
        self._first = True
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._call = stub.StreamAggregatedResources(iter(self._outbox.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._inbox.put(response)
        except grpc.RpcError as err:
            self._inbox.put(err)

    def send(self, type_url: str, *, version: str = "", nonce: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce)
        if self._first:
            request.node.CopyFrom(self.identity.to_node())
            self._first = False
        self._outbox.put(request)

    def recv(self, timeout: float = 5) -> discovery_pb2.DiscoveryResponse:
        item = self._inbox.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def recv_and_ack(self, timeout: float = 5) -> discovery_pb2.DiscoveryResponse:
        response = self.recv(timeout)
        self.send(response.type_url, version=response.version_info, nonce=response.nonce)
        return response

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()
        self.channel.close()


@pytest.fixture(scope="module")
def mesh(lab: RunningLab) -> Iterator[tuple[meshlab.lab.Lab, str]]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    namespace = "bookstore-" + os.urandom(2).hex()
    try:
        assert cli.main(["mesh", "install", "--kubeconfig", str(lab.kubeconfig), "--timeout", "60"]) == 0
        handle.core.create_namespace({"metadata": {"name": namespace}})
        handle.apply(BOOKSTORE.read_text(), namespace=namespace)
        for name in DEPLOYMENTS:
            handle.wait_ready("deployment", name, namespace=namespace, timeout=60)
        yield handle, namespace
    finally:
        handle.delete("namespace", namespace)  # no-op when it was never created
        installing.uninstall(handle)
        handle.close()


def _productpage(handle: meshlab.lab.Lab, namespace: str) -> ProxyIdentity:
    pod = handle.core.list_namespaced_pod(namespace, label_selector="app=productpage").items[0]
    return ProxyIdentity(ip=pod.status.pod_ip, pod=pod.metadata.name, namespace=namespace,
                         labels=dict(pod.metadata.labels), service_account="bookstore-productpage",
                         workload_name="productpage-v1", app_address=f"{pod.status.pod_ip}:9080")


def _istiod_target(handle: meshlab.lab.Lab) -> str:
    pod = handle.core.list_namespaced_pod("istio-system", label_selector="app=istiod").items[0]
    return f"{pod.status.pod_ip}:15010"


def _names(response: discovery_pb2.DiscoveryResponse, message: Any) -> set[str]:
    return {resource_name(unpack(r, message)) for r in response.resources}


def test_install_reports_istiod_and_citadel_ready(mesh: tuple[meshlab.lab.Lab, str], lab: RunningLab,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mesh", "status", "--kubeconfig", str(lab.kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "deployment istio-system/istiod: 1/1 ready" in out
    assert "deployment istio-system/istio-citadel: 1/1 ready" in out
    assert "deployment istio-system/zipkin: 1/1 ready" in out
    assert "istio-mixer" not in out  # the classic profile's Mixer is listed only when installed
    assert "virtualservices.networking.istio.io: installed" in out
    assert "authorizationpolicies.security.istio.io: installed" in out


def test_a_proxy_gets_the_bookstore_then_a_virtual_service_and_shows_synced(
        mesh: tuple[meshlab.lab.Lab, str], lab: RunningLab, capsys: pytest.CaptureFixture[str]) -> None:
    handle, ns = mesh
    identity = _productpage(handle, ns)
    reviews = f"reviews.{ns}.svc.cluster.local"
    proxy = AdsClient(_istiod_target(handle), identity)
    try:
        for type_url in ORDER:
            proxy.send(type_url)
        first = {r.type_url: r for r in (proxy.recv_and_ack() for _ in ORDER)}
        assert f"outbound|9080||{reviews}" in _names(first[CLUSTER], cluster_pb2.Cluster)
        assignment = next(a for a in (unpack(r, endpoint_pb2.ClusterLoadAssignment) for r in first[ENDPOINTS].resources)
                          if a.cluster_name == f"outbound|9080||{reviews}")
        assert len(assignment.endpoints[0].lb_endpoints) == 3  # reviews v1, v2, v3
        assert "virtualOutbound" in _names(first[LISTENER], listener_pb2.Listener)
        assert "outbound" in _names(first[ROUTE], route_pb2.RouteConfiguration)

        handle.apply({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                      "metadata": {"name": "reviews"},
                      "spec": {"host": "reviews", "subsets": [{"name": v, "labels": {"version": v}}
                                                              for v in ("v1", "v2", "v3")]}}, namespace=ns)
        # The subsets add clusters and their endpoints: CDS then EDS.
        assert [proxy.recv_and_ack().type_url for _ in range(2)] == [CLUSTER, ENDPOINTS]

        started = time.monotonic()
        handle.apply({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                      "metadata": {"name": "reviews"},
                      "spec": {"hosts": ["reviews"],
                               "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}},
                     namespace=ns)
        routes = proxy.recv_and_ack(timeout=2)
        assert routes.type_url == ROUTE and time.monotonic() - started < 2
        config = next(c for c in (unpack(r, route_pb2.RouteConfiguration) for r in routes.resources)
                      if c.name == "outbound")
        host = next(vh for vh in config.virtual_hosts if f"{reviews}:9080" in vh.domains)
        assert [r.route.cluster for r in host.routes] == [f"outbound|9080|v1|{reviews}"]

        name = f"{identity.pod}.{ns}"
        deadline = time.monotonic() + 5
        while True:  # the last ACK travels on its own: give it a moment to land
            rows = {r.name: r for r in installing.proxy_status(handle)}
            if (name in rows and set(rows[name].status.values()) == {"SYNCED"}) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rows[name].status == dict.fromkeys(installing.TYPES, "SYNCED")
        assert cli.main(["mesh", "proxy-status", "--kubeconfig", str(lab.kubeconfig)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["NAME", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION"]
        assert any(line.split()[:5] == [name, "SYNCED", "SYNCED", "SYNCED", "SYNCED"] for line in table[1:])

        dump = json.loads(handle.get("istiod", 8080, f"/debug/config_dump?proxyID={name}", namespace="istio-system"))
        assert dump["proxy"] == identity.node_id and dump["types"]["RDS"]["status"] == "SYNCED"
    finally:
        proxy.close()
