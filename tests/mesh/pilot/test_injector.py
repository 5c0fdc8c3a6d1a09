"""Pilot's sidecar injector webhook: AdmissionReviews answered over real HTTPS (the certificate checked as the
API server checks it, against the generated CA for istiod.istio-system.svc), the caBundle patch, and how
``meshlab mesh install`` picks the interception mode."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from typing import Any

import aiohttp
import jsonpatch
import pytest
from kubernetes import client

from meshlab.errors import MeshlabError
from meshlab.mesh.injection import InjectionConfig
from meshlab.mesh.installing import detect_mode
from meshlab.mesh.pilot.injector import (
    Injector,
    ServingCredentials,
    ca_bundle_patch,
    make_credentials,
    review_response,
    service_names,
)

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "details-v1-5d8f7-", "labels": {"app": "details", "pod-template-hash": "5d8f7"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "details-v1-5d8f7",
                                         "uid": "6b1c", "controller": True, "blockOwnerDeletion": True}]},
       "spec": {"containers": [{"name": "details", "image": "meshlab/details:1", "ports": [{"containerPort": 9080}]}]}}


def review(obj: dict[str, Any] | None = None, *, kind: str = "Pod", operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
        "operation": operation, "object": copy.deepcopy(obj if obj is not None else POD)}}


def patched(answer: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    response = answer["response"]
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    result: dict[str, Any] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    return result


@pytest.fixture(scope="module")
def credentials() -> ServingCredentials:
    return make_credentials(service_names(), ["127.0.0.1"])


async def post(credentials: ServingCredentials, body: Any, *, trust: bytes | None = None,
               config: InjectionConfig | None = None) -> tuple[int, Any]:
    injector = Injector(client.ApiClient(), credentials)
    injector.config = config or InjectionConfig()
    runner = await injector.serve("127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    context = ssl.create_default_context(cadata=(trust or credentials.ca_pem).decode())
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"https://{host}:{port}/inject", data=json.dumps(body), ssl=context,
                server_hostname="istiod.istio-system.svc", headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("mode", "containers", "init_containers"), [
    ("address", ["details", "istio-proxy"], None),
    ("iptables", ["details", "istio-proxy"], ["istio-init"]),
], ids=["address", "iptables"])
def test_a_pod_create_is_answered_with_the_injection_patch(credentials: ServingCredentials, mode: str,
                                                           containers: list[str], init_containers: list[str] | None,
                                                           ) -> None:
    config = InjectionConfig(mode="iptables" if mode == "iptables" else "address")
    status, answer = asyncio.run(post(credentials, review(), config=config))
    assert status == 200
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert answer["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert answer["response"]["allowed"] is True
    pod = patched(answer, copy.deepcopy(POD))
    assert [c["name"] for c in pod["spec"]["containers"]] == containers
    assert [c["name"] for c in pod["spec"].get("initContainers") or []] == (init_containers or [])
    assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]
    assert "namespace" not in pod["metadata"], "the namespace is the API server's to fill in"
    proxy_env = {v["name"]: v.get("value") for v in pod["spec"]["containers"][1]["env"]}
    assert proxy_env["ISTIO_META_WORKLOAD_NAME"] == "details-v1"


@pytest.mark.parametrize("body", [
    review(kind="Pod", operation="UPDATE"),
    review({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, kind="ConfigMap"),
    review({**POD, "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}),
], ids=["update", "not-a-pod", "opted-out"])
def test_other_requests_are_allowed_unchanged(credentials: ServingCredentials, body: dict[str, Any]) -> None:
    status, answer = asyncio.run(post(credentials, body))
    assert status == 200
    assert answer["response"] == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("body", [
    {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}},
    ["not", "a", "review"],
], ids=["v1beta1", "no-uid", "not-an-object"])
def test_a_malformed_review_is_a_400(credentials: ServingCredentials, body: Any) -> None:
    status, answer = asyncio.run(post(credentials, body))
    assert status == 400 and answer["error"]


def test_a_client_trusting_another_ca_refuses_the_server(credentials: ServingCredentials) -> None:
    other = make_credentials(service_names())
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(post(credentials, review(), trust=other.ca_pem))


def test_injecting_an_injected_pod_is_a_no_op() -> None:
    once = patched(review_response(review(), InjectionConfig()), copy.deepcopy(POD))
    assert "patch" not in review_response(review(once), InjectionConfig())["response"]


def test_review_response_refuses_a_review_without_uid() -> None:
    with pytest.raises(MeshlabError, match=r"no request\.uid"):
        review_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}},
                        InjectionConfig())


def test_the_ca_bundle_patch_sets_every_webhook_once() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    bundle = base64.b64encode(ca).decode()
    configuration = {"webhooks": [{"name": "a", "clientConfig": {"service": {"name": "istiod"}}},
                                  {"name": "b", "clientConfig": {"caBundle": bundle}},
                                  {"name": "c", "clientConfig": {"caBundle": "b2xk"}}]}
    ops = ca_bundle_patch(configuration, ca)
    after = jsonpatch.apply_patch(configuration, ops)
    assert [h["clientConfig"]["caBundle"] for h in after["webhooks"]] == [bundle] * 3
    assert [op["path"] for op in ops if op["op"] == "add"] == ["/webhooks/0/clientConfig/caBundle",
                                                               "/webhooks/2/clientConfig/caBundle"]
    assert ca_bundle_patch(after, ca) == []


@pytest.mark.parametrize(("runtimes", "mode"), [
    (["meshlab-process://0.1.0"], "address"),
    (["containerd://1.7.13"], "iptables"),
    (["meshlab-process://0.1.0", "containerd://1.7.13"], "iptables"),
    ([], "iptables"),
], ids=["embedded-lab", "real-node", "mixed", "no-nodes"])
def test_install_picks_the_interception_mode_from_the_nodes(runtimes: list[str], mode: str) -> None:
    nodes = [{"status": {"nodeInfo": {"containerRuntimeVersion": r}}} for r in runtimes]
    assert detect_mode(nodes) == mode
