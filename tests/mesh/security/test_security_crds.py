"""The security.istio.io CRDs in the embedded lab: Istio's documented YAML applies (v1 and v1beta1), what
meshlab does not implement is refused by name, bad values are refused, and ``kubectl explain`` teaches the
fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

import meshlab.lab
from meshlab.errors import LabError
from meshlab.mesh import installing
from tests.conftest import RunningLab, kubectl_path


def _obj(kind: str, spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": f"security.istio.io/{version}", "kind": kind, "metadata": {"name": "p"}, "spec": spec}


def pa(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return _obj("PeerAuthentication", spec, version)


def ap(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return _obj("AuthorizationPolicy", spec, version)


@pytest.fixture(scope="module")
def mesh_lab(lab: RunningLab) -> Iterator[meshlab.lab.Lab]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    handle.apply(installing.SECURITY_CRDS.read_text())
    yield handle
    handle.close()


# From Istio's tasks: mTLS migration, authorization for HTTP traffic, explicit deny, header conditions.
@pytest.mark.parametrize("obj", [
    pytest.param(pa({"mtls": {"mode": "STRICT"}}), id="namespace-strict"),
    pytest.param(pa({"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
                     "portLevelMtls": {"9080": {"mode": "DISABLE"}}}, "v1beta1"), id="workload-port-level-v1beta1"),
    pytest.param(ap({}), id="allow-nothing"),
    pytest.param(ap({"selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
         "to": [{"operation": {"methods": ["GET"]}}]}]}), id="reviews-viewer"),
    pytest.param(ap({"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["foo"]}}],
                                                  "to": [{"operation": {"paths": ["/admin*"], "ports": ["8000"]}}]}]},
                    "v1beta1"), id="deny-path-v1beta1"),
    pytest.param(ap({"rules": [{"when": [{"key": "request.headers[version]", "values": ["v1", "v2"]}]}]}),
                 id="allow-by-header"),
])
def test_istio_docs_yaml_applies(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any]) -> None:
    [applied] = mesh_lab.apply(obj, namespace=namespace)
    assert applied["spec"] == obj["spec"]


@pytest.mark.parametrize(("obj", "named"), [
    pytest.param(ap({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
                 "spec.rules[0].from[0].source.requestPrincipals", id="request-principals-jwt"),
    pytest.param(ap({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}),
                 "spec.rules[0].from[0].source.ipBlocks", id="ip-blocks"),
    pytest.param(ap({"rules": [{"to": [{"operation": {"hosts": ["a.example"]}}]}]}),
                 "spec.rules[0].to[0].operation.hosts", id="operation-hosts"),
    pytest.param(ap({"targetRef": {"kind": "Service", "name": "reviews"}}), "spec.targetRef", id="target-ref"),
    pytest.param(pa({"mtls": {"mode": "STRICT"}, "targetRefs": []}), "spec.targetRefs", id="pa-target-refs"),
])
def test_unimplemented_field_is_refused_by_name(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any],
                                                named: str) -> None:
    with pytest.raises(LabError, match=named.replace("[", r"\[").replace("]", r"\]")):
        mesh_lab.apply(obj, namespace=namespace)


@pytest.mark.parametrize(("obj", "message"), [
    pytest.param(ap({"action": "CUSTOM", "rules": [{}]}), "CUSTOM", id="custom-action"),
    pytest.param(ap({"action": "AUDIT"}), "AUDIT", id="audit-action"),
    pytest.param(ap({"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]}),
                 r"spec.rules\[0\].when\[0\].key", id="jwt-claims-condition"),
    pytest.param(ap({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}), "ports", id="port-not-a-number"),
    pytest.param(pa({"mtls": {"mode": "MUTUAL"}}), "MUTUAL", id="unknown-mode"),
])
def test_bad_values_are_refused(mesh_lab: meshlab.lab.Lab, namespace: str, obj: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError, match=message):
        mesh_lab.apply(obj, namespace=namespace)


@pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(("explain", "peerauthentication.spec.mtls"), ["PERMISSIVE", "STRICT", "DISABLE"], id="explain-pa"),
    pytest.param(("explain", "authorizationpolicy.spec.rules.when"), ["request.headers", "source.principal"],
                 id="explain-ap-when"),
    pytest.param(("api-resources", "--api-group=security.istio.io"), ["pa", "ap", "AuthorizationPolicy"],
                 id="api-resources"),
])
def test_kubectl_teaches_the_fields(mesh_lab: meshlab.lab.Lab, args: tuple[str, ...], expected: list[str]) -> None:
    out = mesh_lab.kubectl(*args)
    assert all(word in out for word in expected), out


def test_manifest_declares_istio_versions() -> None:
    for crd in yaml.safe_load_all(installing.SECURITY_CRDS.read_text()):
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        assert list(versions) == ["v1", "v1beta1"]
        assert [n for n, v in versions.items() if v["storage"]] == ["v1"]
        assert "x-kubernetes-preserve-unknown-fields" not in versions["v1"]["schema"]["openAPIV3Schema"][
            "properties"]["spec"]
