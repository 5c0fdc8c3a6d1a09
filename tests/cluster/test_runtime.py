"""The whole lab runtime together (controllers, scheduler, kubelet, kube-proxy) with real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from meshlab import kube

WHOAMI = """
import json, pathlib
from kubernetes import client, config
config.load_incluster_config()
token = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/token").read_text()
review = client.AuthenticationV1Api().create_token_review({"spec": {"token": token}})
print(json.dumps({"authenticated": review.status.authenticated, "user": review.status.user.username}))
"""


def until(what: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def test_a_pod_proves_its_identity_with_its_service_account_token(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    until(lambda: [sa for sa in core.list_namespaced_service_account(namespace).items
                   if sa.metadata.name == "default"])
    core.create_namespaced_pod(namespace, {"metadata": {"name": "whoami"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "meshlab/meshlab:dev", "command": ["python", "-c", WHOAMI]}]}})
    pod = until(lambda: (p := core.read_namespaced_pod("whoami", namespace)).status.phase in ("Succeeded", "Failed")
                and p)
    log = core.read_namespaced_pod_log("whoami", namespace)
    assert pod.status.phase == "Succeeded", log
    assert f'"user": "system:serviceaccount:{namespace}:default"' in log and '"authenticated": true' in log


def test_a_deleted_pod_is_replaced_and_a_new_template_rolls_out(clients: kube.Clients, namespace: str) -> None:
    apps, core = clients.apps, clients.core
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "web", "image": "meshlab/echo:1", "ports": [{"containerPort": 8080}],
         "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template}})

    def ready(want_image: str) -> list[Any]:
        status = apps.read_namespaced_deployment("web", namespace).status
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        if status and status.ready_replicas == 3 and status.updated_replicas == 3 and len(pods) == 3 and all(
                p.spec.containers[0].image == want_image for p in pods):
            return pods
        return []

    first = until(lambda: ready("meshlab/echo:1"))
    victim = first[0].metadata.name
    core.delete_namespaced_pod(victim, namespace)
    replaced = until(lambda: victim not in {p.metadata.name for p in ready("meshlab/echo:1")} and ready(
        "meshlab/echo:1"))
    assert victim not in {p.metadata.name for p in replaced}

    apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "meshlab/echo:2"}]}}}})
    rolled = until(lambda: ready("meshlab/echo:2"))
    sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert sorted((rs.spec.replicas, rs.metadata.annotations["deployment.kubernetes.io/revision"])
                  for rs in sets) == [(0, "1"), (3, "2")]
    assert {p.metadata.name for p in rolled}.isdisjoint({p.metadata.name for p in replaced})
