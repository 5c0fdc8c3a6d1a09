"""The VirtualService and DestinationRule CRDs, applied to the embedded lab: Istio's YAML applies unchanged,
fields meshlab does not implement are refused with their name, and ``kubectl explain`` teaches the fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import meshlab.lab
from meshlab.errors import LabError
from meshlab.mesh import manifests
from tests.conftest import RunningLab, kubectl_path

CRDS = Path(manifests.__file__).parent / "crds.yaml"


def _vs(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": f"networking.istio.io/{version}", "kind": "VirtualService",
            "metadata": {"name": "reviews"}, "spec": spec}


# From Istio's "Request routing" task (virtual-service-reviews-jason-v2-v3.yaml) and the fault-injection task.
JASON_TO_V2 = {"hosts": ["reviews"], "http": [
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
    {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]}
DELAY_FOR_JASON = {"hosts": ["ratings"], "http": [
    {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "fault": {"delay": {"percentage": {"value": 100.0}, "fixedDelay": "7s"}},
     "route": [{"destination": {"host": "ratings", "subset": "v1"}}]},
    {"route": [{"destination": {"host": "ratings", "subset": "v1"}}]}]}
SPLIT_50_50 = {"hosts": ["reviews"], "http": [{"route": [
    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
    {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50}]}], "gateways": ["mesh"]}
RETRIES_AND_TIMEOUT = {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings"}}],
                                                       "timeout": "10s",
                                                       "retries": {"attempts": 3, "perTryTimeout": "2s",
                                                                   "retryOn": "gateway-error,connect-failure"}}]}
# The uri matches of Bookinfo's productpage routes (samples/bookinfo/networking/bookinfo-gateway.yaml), bound to
# the mesh instead of a gateway, plus a regex, a method and a query parameter match.
URI_MATCHES = {"hosts": ["productpage"], "http": [
    {"match": [{"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}}, {"uri": {"exact": "/login"}},
               {"uri": {"regex": "^/api/v1/products/[0-9]+$"}, "method": {"exact": "GET"}},
               {"queryParams": {"user": {"exact": "jason"}}}],
     "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]}
DR_ALL = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
          "spec": {"host": "reviews",
                   "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1},
                                                        "http": {"http1MaxPendingRequests": 1,
                                                                 "maxRequestsPerConnection": 1}},
                                     "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                                                          "baseEjectionTime": "3m", "maxEjectionPercent": 100}},
                   "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                               {"name": "v2", "labels": {"version": "v2"},
                                "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}}


@pytest.fixture(scope="module")
def mesh_lab(lab: RunningLab) -> Iterator[meshlab.lab.Lab]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    handle.apply(CRDS.read_text())
    yield handle
    handle.close()


@pytest.mark.parametrize("obj", [
    pytest.param(_vs(JASON_TO_V2), id="jason-to-v2"),
    pytest.param(_vs(DELAY_FOR_JASON), id="delay-for-jason"),
    pytest.param(_vs(SPLIT_50_50, "v1beta1"), id="split-50-50-v1beta1"),
    pytest.param(_vs(RETRIES_AND_TIMEOUT, "v1alpha3"), id="retries-timeout-v1alpha3"),
    pytest.param(_vs(URI_MATCHES), id="uri-method-query-matches"),
    pytest.param(DR_ALL, id="destination-rule-subsets-and-policies"),
])
def test_istio_docs_yaml_applies(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any]) -> None:
    [applied] = mesh_lab.apply(obj, namespace=namespace)
    assert applied["spec"] == obj["spec"]


@pytest.mark.parametrize(("obj", "named"), [
    pytest.param(_vs({"hosts": ["reviews"], "tcp": [{"route": []}]}), "spec.tcp", id="tcp-routes"),
    pytest.param(_vs({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}],
                                                      "corsPolicy": {"allowOrigins": []}}]}),
                 "spec.http[0].corsPolicy", id="cors-policy"),
    pytest.param(_vs({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}],
                                                      "retries": {"attempts": 1, "retryRemoteLocalities": True}}]}),
                 "spec.http[0].retries.retryRemoteLocalities", id="retry-remote-localities"),
    pytest.param({**DR_ALL, "spec": {"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}},
                 "spec.trafficPolicy.tls", id="dr-tls"),
    pytest.param({**DR_ALL, "spec": {"host": "reviews",
                                     "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}}}},
                 "spec.trafficPolicy.loadBalancer.consistentHash", id="dr-consistent-hash"),
])
def test_unimplemented_field_is_refused_by_name(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any],
                                                named: str) -> None:
    with pytest.raises(LabError, match=named.replace("[", r"\[").replace("]", r"\]")):
        mesh_lab.apply(obj, namespace=namespace)


@pytest.mark.parametrize(("obj", "message"), [
    pytest.param(_vs({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}],
                                                      "timeout": "ten seconds"}]}),
                 "spec.http[0].timeout", id="timeout-not-a-duration"),
    pytest.param({**DR_ALL, "spec": {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}},
                 "FASTEST", id="unknown-lb-policy"),
    pytest.param(_vs({"hosts": ["reviews"], "http": [{"route": [{"destination": {"subset": "v1"}}]}]}),
                 "host", id="destination-without-host"),
])
def test_bad_values_are_refused(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mesh_lab.apply(obj, namespace=namespace)


@pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(("explain", "virtualservice.spec.http"), ["first rule whose match", "retries", "fault"],
                 id="explain-vs-http"),
    pytest.param(("explain", "dr.spec.trafficPolicy.outlierDetection"), ["consecutive5xxErrors", "baseEjectionTime"],
                 id="explain-dr-outlier"),
    pytest.param(("api-resources", "--api-group=networking.istio.io"), ["vs", "dr", "VirtualService"],
                 id="api-resources"),
])
def test_kubectl_teaches_the_fields(mesh_lab: meshlab.lab.Lab, args: tuple[str, ...], expected: list[str]) -> None:
    out = mesh_lab.kubectl(*args)
    for text in expected:
        assert text in out


@pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
def test_kubectl_get_shows_istio_columns(mesh_lab: meshlab.lab.Lab, namespace: str) -> None:
    mesh_lab.apply([_vs(SPLIT_50_50), DR_ALL], namespace=namespace)
    vs = mesh_lab.kubectl("get", "vs", "-n", namespace)
    dr = mesh_lab.kubectl("get", "istio-io", "-n", namespace)
    assert vs.split("\n")[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert '["mesh"]' in vs and '["reviews"]' in vs
    assert "destinationrule.networking.istio.io/reviews" in dr


def test_manifest_declares_istio_versions() -> None:
    for crd in yaml.safe_load_all(CRDS.read_text()):
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        assert list(versions) == ["v1", "v1beta1", "v1alpha3"]
        assert [n for n, v in versions.items() if v["storage"]] == ["v1"]
        spec = versions["v1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert "x-kubernetes-preserve-unknown-fields" not in spec
