"""Automatic injection end to end in the embedded lab: ``meshlab mesh install``, a namespace labelled
``istio-injection=enabled``, the unchanged bookstore manifest — every pod comes up 2/2 with ``istio-proxy``,
a request from the host reaches productpage and the page carries details and reviews, and the sidecars'
access logs show the hops (host → productpage's sidecar → productpage → its sidecar → reviews' sidecar →
reviews), so the traffic really went app → sidecar → sidecar → app."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import meshlab.lab
from meshlab import cli
from meshlab.mesh import installing
from tests.conftest import RunningLab

BOOKSTORE = installing.MANIFESTS / "bookstore.yaml"
DEPLOYMENTS = ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3")


@pytest.fixture(scope="module")
def mesh(lab: RunningLab) -> Iterator[tuple[meshlab.lab.Lab, str]]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    namespace = "meshed-" + os.urandom(2).hex()
    try:
        assert cli.main(["mesh", "install", "--kubeconfig", str(lab.kubeconfig), "--timeout", "60"]) == 0
        handle.apply({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}}})
        handle.apply(BOOKSTORE.read_text(), namespace=namespace)
        for name in DEPLOYMENTS:
            handle.wait_ready("deployment", name, namespace=namespace, timeout=90)
        yield handle, namespace
    finally:
        handle.delete("namespace", namespace)
        installing.uninstall(handle)
        handle.close()


def test_install_records_the_lab_interception_mode(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    config = installing.mesh_config(mesh[0])
    assert config is not None and config.mode == "address"


def pods(handle: meshlab.lab.Lab, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    listed = handle.clients.core.list_namespaced_pod(namespace, label_selector=selector)
    return list(handle.clients.api_client.sanitize_for_serialization(listed)["items"])


def test_every_bookstore_pod_runs_two_of_two_ready(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    listed = pods(*mesh)
    assert len(listed) == len(DEPLOYMENTS)
    for pod in listed:
        name = pod["metadata"]["name"]
        assert [c["name"] for c in pod["spec"]["containers"]][-1] == "istio-proxy", name
        statuses = pod["status"].get("containerStatuses") or []
        assert len(statuses) == 2 and all(s["ready"] for s in statuses), name
        assert "sidecar.istio.io/status" in (pod["metadata"].get("annotations") or {})


def test_the_page_is_served_through_the_sidecars(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh

    def complete(page: str) -> bool:
        return ('class="review"' in page and "Reviews served by: reviews-v" in page
                and "unavailable" not in page.split("</style>")[-1])

    # Ready pods are not yet known to every sidecar: endpoints reach the proxies through Pilot a moment
    # later (eventual consistency, as in Istio), so give the mesh a few seconds to converge.
    deadline = time.monotonic() + 15
    page = handle.get("productpage", 9080, "/productpage", namespace=namespace)
    while not complete(page) and time.monotonic() < deadline:
        time.sleep(0.5)
        page = handle.get("productpage", 9080, "/productpage", namespace=namespace)
    assert complete(page), page

    def log(app: str) -> str:
        return "".join(str(handle.clients.core.read_namespaced_pod_log(p["metadata"]["name"], namespace,
                                                                       container="istio-proxy"))
                       for p in pods(handle, namespace, f"app={app}"))

    deadline = time.monotonic() + 5  # access log lines are written when the response completes
    while time.monotonic() < deadline and "/productpage" not in log("productpage"):
        time.sleep(0.2)
    productpage = log("productpage").splitlines()
    # Inbound from the host, then productpage's own calls leaving through its sidecar...
    assert any('"GET /productpage' in line and "inbound|9080||" in line for line in productpage), productpage
    assert any("outbound|9080||details." in line for line in productpage), productpage
    assert any("outbound|9080||reviews." in line for line in productpage), productpage
    # ...and arriving through the callee's sidecar.
    assert any('"GET /details/' in line and "inbound|9080||" in line for line in log("details").splitlines())
    assert any('"GET /reviews/' in line and "inbound|9080||" in line for line in log("reviews").splitlines())


def test_an_opted_out_pod_is_created_without_a_sidecar(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    [pod] = handle.apply({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "plain", "labels": {"sidecar.istio.io/inject": "false"}},
                          "spec": {"containers": [{"name": "echo", "image": "meshlab/echo:1",
                                                   "command": ["meshlab", "app", "echo"]}]}}, namespace=namespace)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["echo"]
