"""Cascading deletion in a running lab: background, foreground, orphan, and whole namespaces."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster.controllers.conftest import ControllerLab
from tests.cluster.controllers.test_workloads import rolled_out, web
from tests.polling import wait_for

HOLD = "test.meshlab.io/hold"


def gone(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as err:
        return err.status == 404
    return False


def live_pods(lab: ControllerLab, ns: str) -> list[Any]:
    return lab.clients.core.list_namespaced_pod(ns).items


def test_background_deletion_collects_replica_sets_and_pods(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web())
    rolled_out(controller_lab, ns, "meshlab/echo:1")
    apps.delete_namespaced_deployment("web", ns)  # kubectl's default: propagationPolicy=Background
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items and not live_pods(controller_lab, ns), 10,
             "ReplicaSets and pods to be collected")


def test_foreground_deletion_waits_for_dependents(controller_lab: ControllerLab, ns: str) -> None:
    apps, core = controller_lab.clients.apps, controller_lab.clients.core
    apps.create_namespaced_deployment(ns, web(replicas=2))
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    held = live_pods(controller_lab, ns)[0].metadata.name
    core.patch_namespaced_pod(held, ns, {"metadata": {"finalizers": [HOLD]}})
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Foreground")

    def waiting() -> Any:
        pods = live_pods(controller_lab, ns)
        return pods if [p.metadata.name for p in pods] == [held] else None

    wait_for(waiting, 10, "all pods but the held one to go")
    # The held pod blocks its ReplicaSet, which blocks the Deployment: both still there, being deleted.
    d = apps.read_namespaced_deployment("web", ns)
    assert d.metadata.deletion_timestamp is not None and d.metadata.finalizers == ["foregroundDeletion"]
    rs = apps.list_namespaced_replica_set(ns).items
    assert len(rs) == 1 and rs[0].metadata.finalizers == ["foregroundDeletion"]
    core.patch_namespaced_pod(held, ns, {"metadata": {"finalizers": None}})
    wait_for(lambda: gone(apps.read_namespaced_deployment, "web", ns), 10, "the deployment to go")
    assert not apps.list_namespaced_replica_set(ns).items and not live_pods(controller_lab, ns)


def test_orphan_deletion_leaves_dependents_without_owner(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web(replicas=2))
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Orphan")
    wait_for(lambda: gone(apps.read_namespaced_deployment, "web", ns), 10, "the deployment to go")
    rs = apps.list_namespaced_replica_set(ns).items
    assert len(rs) == 1 and not rs[0].metadata.owner_references
    pods = live_pods(controller_lab, ns)
    assert len(pods) == 2 and all(p.metadata.owner_references[0].name == rs[0].metadata.name for p in pods)
    assert all(p.metadata.deletion_timestamp is None for p in pods)


def test_an_object_whose_owner_never_existed_is_collected(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_config_map(ns, {"metadata": {"name": "stray", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}]}})
    wait_for(lambda: gone(core.read_namespaced_config_map, "stray", ns), 10, "the stray ConfigMap to go")


def test_namespace_deletion_removes_everything(controller_lab: ControllerLab, ns: str) -> None:
    core, apps = controller_lab.clients.core, controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web(replicas=2))
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80}]}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    wait_for(lambda: core.read_namespaced_endpoints("web", ns).subsets, 10, "endpoints")
    core.delete_namespace(ns)
    wait_for(lambda: gone(core.read_namespace, ns), 15, f"namespace {ns} to go")
    for kind in ("pods", "services", "endpoints", "configmaps", "serviceaccounts", "events"):
        assert not list(controller_lab.server.rest.store.scan(f"/{kind}", ns)), kind
    for kind in ("apps/deployments", "apps/replicasets", "discovery.k8s.io/endpointslices"):
        assert not list(controller_lab.server.rest.store.scan(kind, ns)), kind


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_deleting_a_service_removes_its_endpoints_and_slices(controller_lab: ControllerLab, ns: str,
                                                             policy: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_service(ns, {"metadata": {"name": "db"}, "spec": {
        "selector": {"app": "db"}, "ports": [{"port": 5432}]}})
    slices = controller_lab.server.rest.store
    wait_for(lambda: list(slices.scan("discovery.k8s.io/endpointslices", ns)), 10, "a slice")
    core.delete_namespaced_service("db", ns, propagation_policy=policy)
    wait_for(lambda: gone(core.read_namespaced_endpoints, "db", ns)
             and not list(slices.scan("discovery.k8s.io/endpointslices", ns)), 10, "endpoints and slices to go")
