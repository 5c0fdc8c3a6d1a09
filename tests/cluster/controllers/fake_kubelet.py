"""A stand-in kubelet for the controller tests: no processes, just the status a kubelet would report.

It registers a Ready ``lab-node``, reports every pod bound to it as Running with an IP, and Ready unless
the pod's annotation ``test.meshlab.io/ready`` says ``"false"`` (so a test can flip readiness), and
removes a terminating pod at once (a real kubelet would stop its containers first).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from meshlab.cluster.controllers.base import Controller
from meshlab.cluster.rest import RestStorage

NODE = "lab-node"
READY_ANNOTATION = "test.meshlab.io/ready"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready_node_status() -> dict[str, Any]:
    now = _now()
    return {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
    }


def running_status(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    ready = ((pod["metadata"].get("annotations") or {}).get(READY_ANNOTATION) != "false")
    now = _now()
    flag = "True" if ready else "False"
    status = copy.deepcopy(pod.get("status") or {})
    since = {c["type"]: c.get("lastTransitionTime") for c in status.get("conditions") or []
             if c.get("status") == ("True" if c["type"] != "Ready" else flag)}
    started = status.get("startTime") or now
    status.update({
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": started,
        "conditions": [
            {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since.get(kind) or now}
            for kind, value in (("Initialized", "True"), ("Ready", flag), ("ContainersReady", flag),
                                ("PodScheduled", "True"))
        ],
        "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready, "restartCount": 0,
             "started": True, "state": {"running": {"startedAt": started}}}
            for c in pod["spec"].get("containers") or []
        ],
    })
    return status


class FakeKubelet(Controller):
    watches = ("/pods", "/nodes")
    user = "system:node:lab-node"
    period = 1.0

    def __init__(self, rest: RestStorage) -> None:
        super().__init__(rest)
        self.ips: dict[str, str] = {}

    async def sync(self) -> None:
        node_rt = self.rest.registry.lookup("", "v1", "nodes")
        pod_rt = self.rest.registry.lookup("", "v1", "pods")
        assert node_rt and pod_rt
        if self.rest.store.get(self.rest.key(node_rt, "", NODE)) is None:
            node = await self.rest.create(node_rt, "", {"metadata": {"name": NODE, "labels": {
                "kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}}}, self.opts)
            await self.rest.update(node_rt, "", NODE, {**node, "status": _ready_node_status()}, self.opts,
                                   subresource="status")
        for pod in self.objects("/pods"):
            if (pod.get("spec") or {}).get("nodeName") != NODE:
                continue
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                if not meta.get("finalizers"):
                    await self.rest.delete(pod_rt, meta["namespace"], meta["name"], {"gracePeriodSeconds": 0},
                                           self.opts)
                continue
            ip = self.ips.setdefault(meta["uid"], f"10.244.0.{len(self.ips) + 2}")
            status = running_status(pod, ip)
            if status != pod.get("status"):
                await self.rest.update(pod_rt, meta["namespace"], meta["name"], {**pod, "status": status},
                                       self.opts, subresource="status")
