"""No orphans: a lab supervisor killed with SIGKILL leaves no container process behind, and the next
``up`` brings every pod back. Runs the lab the way ``meshlab cluster up`` does, as a separate process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.kubelet.reaping import _process_groups
from meshlab.cluster.labdir import LabDir
from tests.polling import wait_for

NS = "orphans"


def container_groups(lab: LabDir) -> set[int]:
    """The process groups the kubelet recorded for its running containers."""
    return {int(json.loads(p.read_text())["pgid"]) for p in (lab.path / "kubelet" / "processes").glob("*")}


def members(groups: set[int]) -> list[int]:
    found = _process_groups()
    return [pid for group in groups for pid, _ in found.get(group, [])]


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[LabDir]:
    labdir = LabDir.named("orphans", tmp_path)
    yield labdir
    supervisor.down(labdir)


def running_pods(core: Any) -> dict[str, Any] | None:
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(NS).items}
    if len(pods) == 2 and all(p.status.phase == "Running" and p.status.container_statuses
                              and p.status.container_statuses[0].state.running for p in pods.values()):
        return pods
    return None


def test_a_killed_supervisor_leaves_no_containers_and_up_brings_the_pods_back(lab: LabDir) -> None:
    info = supervisor.up(lab, port=0)
    clients = kube.clients(lab.kubeconfig)
    core: Any = clients.core
    try:
        core.create_namespace({"metadata": {"name": NS}})
        wait_for(lambda: core.read_namespaced_service_account("default", NS), timeout=10,
                 what="the default ServiceAccount")
        for name, script in (("family", "sleep 300 & sleep 300"), ("single", "exec sleep 300")):
            core.create_namespaced_pod(NS, {"metadata": {"name": name}, "spec": {"nodeName": "lab-node", "containers": [
                {"name": "app", "image": "meshlab/test", "command": ["sh", "-c", script]}]}})
        before = wait_for(lambda: running_pods(core), timeout=20, what="both pods running")
        groups = wait_for(lambda: len(container_groups(lab)) == 2 and container_groups(lab), timeout=5,
                          what="two recorded groups")
        # family's shell and its two sleeps (one of which outlives the shell's own death), single's sleep
        victims = wait_for(lambda: len(members(groups)) >= 4 and members(groups), timeout=10,
                           what="four container processes")

        os.kill(int(info["pid"]), signal.SIGKILL)
        reap(int(info["pid"]))
        wait_for(lambda: not members(groups), timeout=5, what="the container processes to die with the supervisor")

        supervisor.up(lab, port=int(info["port"]))
        clients.close()
        clients = kube.clients(lab.kubeconfig)  # the port may have changed
        core = clients.core
        after = wait_for(lambda: running_pods(core), timeout=30, what="both pods running again")
        for name, pod in after.items():
            status = pod.status.container_statuses[0]
            assert status.restart_count == before[name].status.container_statuses[0].restart_count + 1
            assert status.last_state.terminated.reason == "ContainerStatusUnknown"
            assert status.container_id != before[name].status.container_statuses[0].container_id
        assert not set(members(container_groups(lab))) & set(victims)
    finally:
        clients.close()
