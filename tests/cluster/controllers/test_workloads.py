"""Deployments, ReplicaSets, DaemonSets and the scheduler in a running lab, seen through kubectl and the client."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.cluster.controllers.rollouts import REVISION, REVISION_HISTORY
from tests.cluster.controllers.conftest import ControllerLab
from tests.conftest import kubectl_path
from tests.polling import wait_for

needs_kubectl = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")


def web(image: str = "meshlab/echo:1", replicas: int = 3, **strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "main", "image": image}]}}}
    if strategy:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return {"metadata": {"name": "web"}, "spec": spec}


def rolled_out(lab: ControllerLab, ns: str, image: str, replicas: int = 3) -> Any:
    def check() -> Any:
        d = lab.clients.apps.read_namespaced_deployment("web", ns)
        s = d.status
        if s is None:
            return None
        pods = [p for p in lab.clients.core.list_namespaced_pod(ns).items if p.metadata.deletion_timestamp is None]
        done = (s.observed_generation == d.metadata.generation and s.updated_replicas == replicas
                and s.available_replicas == replicas and s.replicas == replicas and len(pods) == replicas
                and all(p.spec.containers[0].image == image for p in pods))
        return d if done else None

    return wait_for(check, 10, f"deployment web to run {replicas} x {image}")


def replica_sets(lab: ControllerLab, ns: str) -> dict[str, Any]:
    return {rs.metadata.annotations[REVISION]: rs for rs in lab.clients.apps.list_namespaced_replica_set(ns).items}


@needs_kubectl
def test_a_deployment_reaches_ready_and_rollout_status_returns(controller_lab: ControllerLab, ns: str) -> None:
    controller_lab.clients.apps.create_namespaced_deployment(ns, web())
    proc = controller_lab.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=15s")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('deployment "web" successfully rolled out')
    d = rolled_out(controller_lab, ns, "meshlab/echo:1")
    assert d.metadata.annotations[REVISION] == "1"
    assert {c.type: (c.status, c.reason) for c in d.status.conditions} == {
        "Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    table = controller_lab.kubectl("get", "deploy", "web", "-n", ns).stdout
    assert table.split("\n")[1].split()[:4] == ["web", "3/3", "3", "3"]
    rs = next(iter(replica_sets(controller_lab, ns).values()))
    assert rs.metadata.name == f"web-{rs.metadata.labels['pod-template-hash']}"
    owner = rs.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller, owner.block_owner_deletion) == ("Deployment", "web", True, True)
    events = controller_lab.clients.core.list_namespaced_event(ns).items
    messages = {(e.reason, e.message) for e in events}
    assert ("ScalingReplicaSet", f"Scaled up replica set {rs.metadata.name} from 0 to 3") in messages
    pods = controller_lab.clients.core.list_namespaced_pod(ns).items
    assert {("SuccessfulCreate", f"Created pod: {p.metadata.name}") for p in pods} <= messages
    assert {("Scheduled", f"Successfully assigned {ns}/{p.metadata.name} to lab-node") for p in pods} <= messages


@needs_kubectl
def test_an_image_change_rolls_out_within_surge_and_undo_returns(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web(replicas=4, maxSurge=1, maxUnavailable=0))
    rolled_out(controller_lab, ns, "meshlab/echo:1", 4)
    assert controller_lab.peaks.peaks[ns] == 4
    apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {
        "kubernetes.io/change-cause": "echo 2"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "meshlab/echo:2"}]}}}})
    rolled_out(controller_lab, ns, "meshlab/echo:2", 4)
    # maxSurge=1: never more than 5 pods at once; the old ReplicaSet is kept, scaled to zero.
    assert controller_lab.peaks.peaks[ns] == 5
    revisions = replica_sets(controller_lab, ns)
    assert {r: rs.spec.replicas for r, rs in revisions.items()} == {"1": 0, "2": 4}
    assert revisions["2"].metadata.annotations["kubernetes.io/change-cause"] == "echo 2"

    history = controller_lab.kubectl("rollout", "history", "-n", ns, "deployment/web")
    assert history.returncode == 0, history.stderr
    assert [line.split(None, 1) for line in history.stdout.splitlines()[2:] if line] == [
        ["1", "<none>"], ["2", "echo 2"]]

    undo = controller_lab.kubectl("rollout", "undo", "-n", ns, "deployment/web")
    assert undo.returncode == 0, undo.stderr
    assert "rolled back" in undo.stdout
    d = rolled_out(controller_lab, ns, "meshlab/echo:1", 4)
    # The first ReplicaSet is revived as revision 3 and remembers it was revision 1.
    revisions = replica_sets(controller_lab, ns)
    assert sorted(revisions) == ["2", "3"]
    assert revisions["3"].metadata.annotations[REVISION_HISTORY] == "1"
    assert d.metadata.annotations[REVISION] == "3"
    status = controller_lab.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=10s")
    assert status.returncode == 0, status.stderr


@needs_kubectl
def test_a_paused_deployment_waits_for_resume(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web(replicas=2))
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    assert controller_lab.kubectl("rollout", "pause", "-n", ns, "deployment/web").returncode == 0
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "meshlab/echo:2"}]}}}})

    def paused() -> Any:
        d = apps.read_namespaced_deployment("web", ns)
        cond = {c.type: c.reason for c in (d.status.conditions or [])}
        return d if d.status.observed_generation == d.metadata.generation and cond.get(
            "Progressing") == "DeploymentPaused" else None

    wait_for(paused, 10, "the pause to be observed")
    assert list(replica_sets(controller_lab, ns)) == ["1"]  # no new ReplicaSet while paused
    assert controller_lab.kubectl("rollout", "resume", "-n", ns, "deployment/web").returncode == 0
    rolled_out(controller_lab, ns, "meshlab/echo:2", 2)


def test_recreate_stops_old_pods_before_starting_new_ones(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    body = web(replicas=2)
    body["spec"]["strategy"] = {"type": "Recreate"}
    apps.create_namespaced_deployment(ns, body)
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "meshlab/echo:2"}]}}}})
    rolled_out(controller_lab, ns, "meshlab/echo:2", 2)
    assert controller_lab.peaks.peaks[ns] == 2


def test_scaling_a_deployment_scales_its_replica_set(controller_lab: ControllerLab, ns: str) -> None:
    apps = controller_lab.clients.apps
    apps.create_namespaced_deployment(ns, web(replicas=2))
    rolled_out(controller_lab, ns, "meshlab/echo:1", 2)
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
    rolled_out(controller_lab, ns, "meshlab/echo:1", 5)
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 1}})
    rolled_out(controller_lab, ns, "meshlab/echo:1", 1)
    messages = [e.message for e in controller_lab.clients.core.list_namespaced_event(ns).items
                if e.reason == "ScalingReplicaSet"]
    assert any(m.startswith("Scaled down replica set web-") and m.endswith("from 5 to 1") for m in messages)


def test_a_deleted_pod_is_replaced(controller_lab: ControllerLab, ns: str) -> None:
    controller_lab.clients.apps.create_namespaced_deployment(ns, web())
    rolled_out(controller_lab, ns, "meshlab/echo:1")
    core = controller_lab.clients.core
    victim = core.list_namespaced_pod(ns).items[0].metadata.name
    core.delete_namespaced_pod(victim, ns)

    def replaced() -> list[str]:
        names = [p.metadata.name for p in core.list_namespaced_pod(ns).items
                 if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        return names if len(names) == 3 and victim not in names else []

    wait_for(replaced, 10, "a replacement pod")
    assert any(e.reason == "SuccessfulDelete" or e.reason == "SuccessfulCreate"
               for e in core.list_namespaced_event(ns).items)


def test_a_replica_set_adopts_matching_orphans_and_deletes_the_surplus(controller_lab: ControllerLab,
                                                                       ns: str) -> None:
    core, apps = controller_lab.clients.core, controller_lab.clients.apps
    for i in range(3):
        core.create_namespaced_pod(ns, {"metadata": {"name": f"orphan-{i}", "labels": {"app": "cache"}},
                                        "spec": {"containers": [{"name": "main", "image": "meshlab/echo:1"}]}})
    apps.create_namespaced_replica_set(ns, {"metadata": {"name": "cache"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "cache"}},
        "template": {"metadata": {"labels": {"app": "cache"}},
                     "spec": {"containers": [{"name": "main", "image": "meshlab/echo:1"}]}}}})

    def settled() -> Any:
        rs = apps.read_namespaced_replica_set("cache", ns)
        pods = [p for p in core.list_namespaced_pod(ns).items if p.metadata.deletion_timestamp is None]
        ok = rs.status is not None and rs.status.ready_replicas == 2 and len(pods) == 2
        return pods if ok else None

    pods = wait_for(settled, 10, "the ReplicaSet to settle at 2")
    assert all(p.metadata.name.startswith("orphan-") for p in pods)  # adopted, none created
    assert all(p.metadata.owner_references[0].name == "cache" for p in pods)
    rs = apps.read_namespaced_replica_set("cache", ns)
    assert (rs.status.replicas, rs.status.fully_labeled_replicas, rs.status.available_replicas) == (2, 2, 2)


def test_an_unschedulable_pod_says_why(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_pod(ns, {"metadata": {"name": "picky"}, "spec": {
        "nodeSelector": {"disktype": "ssd"}, "containers": [{"name": "main", "image": "meshlab/echo:1"}]}})
    message = ("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 "
               "nodes are available: 1 Preemption is not helpful for scheduling.")

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("picky", ns)
        return [c for c in pod.status.conditions or [] if c.type == "PodScheduled" and c.reason == "Unschedulable"]

    cond = wait_for(unschedulable, 10, "PodScheduled=False")[0]
    assert (cond.status, cond.message) == ("False", message)
    assert core.read_namespaced_pod("picky", ns).spec.node_name is None
    events = [e for e in core.list_namespaced_event(ns).items if e.reason == "FailedScheduling"]
    assert [(e.type, e.message) for e in events] == [("Warning", message)]


def test_a_daemon_set_runs_one_pod_on_the_node_and_rolls_it(controller_lab: ControllerLab, ns: str) -> None:
    apps, core = controller_lab.clients.apps, controller_lab.clients.core
    template = {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "meshlab/agent:1"}]}}
    apps.create_namespaced_daemon_set(ns, {"metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}}, "template": template}})

    def running(image: str) -> Any:
        ds = apps.read_namespaced_daemon_set("agent", ns)
        pods = [p for p in core.list_namespaced_pod(ns).items if p.metadata.deletion_timestamp is None]
        s = ds.status
        ok = (s is not None and s.desired_number_scheduled == s.current_number_scheduled == s.number_ready == 1
              and s.updated_number_scheduled == s.number_available == 1 and len(pods) == 1
              and pods[0].spec.containers[0].image == image and pods[0].spec.node_name == "lab-node"
              and s.observed_generation == ds.metadata.generation)
        return pods[0] if ok else None

    pod = wait_for(lambda: running("meshlab/agent:1"), 10, "one daemon pod")
    assert pod.metadata.labels["controller-revision-hash"]
    apps.patch_namespaced_daemon_set("agent", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "agent", "image": "meshlab/agent:2"}]}}}})
    replaced = wait_for(lambda: running("meshlab/agent:2"), 10, "the daemon pod to be replaced")
    assert replaced.metadata.name != pod.metadata.name
    assert controller_lab.peaks.peaks[ns] == 1
    row = controller_lab.kubectl("get", "ds", "agent", "-n", ns).stdout.split("\n")[1].split()
    assert row[:6] == ["agent", "1", "1", "1", "1", "1"]
