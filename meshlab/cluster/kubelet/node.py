"""The Node object and its heartbeats, as a kubelet registers and keeps them (``pkg/kubelet/kubelet_node_status.go``).

On start the kubelet creates (or takes over) its Node: well-known labels (``kubernetes.io/hostname``,
``kubernetes.io/os``, ``kubernetes.io/arch``; this node is also the control plane), ``capacity`` and
``allocatable`` from the machine (``pods: 110``, allocatable memory less the default 100Mi eviction
threshold), ``nodeInfo``, ``addresses`` and four conditions — ``MemoryPressure``, ``DiskPressure``,
``PIDPressure`` and ``Ready`` — with ``lastHeartbeatTime``. Liveness is then shown the cheap way
Kubernetes uses since 1.17: a Lease in ``kube-node-lease`` renewed every 10 s (``leaseDurationSeconds:
40``), while the Node status is rewritten only when it changes or once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from meshlab.cluster.kubelet import images
from meshlab.cluster.kubelet.podstatus import rfc3339
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.errors import AlreadyExists, ApiError, NotFound

log = logging.getLogger("meshlab.kubelet")

Obj = dict[str, Any]

KUBELET_VERSION = "v1.33.0-meshlab"
LEASE_NAMESPACE = "kube-node-lease"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return f"{platform.system()} {platform.release()}"


def _memory_kib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    return 0


def machine(state_dir: Path) -> Obj:
    """What the node reports about this machine."""
    memory = _memory_kib()
    try:
        disk = shutil.disk_usage(state_dir).total // 1024
    except OSError:
        disk = 0
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory}Ki", "ephemeral-storage": f"{disk}Ki",
                "hugepages-1Gi": "0", "hugepages-2Mi": "0", "pods": "110"}
    allocatable = {**capacity, "memory": f"{max(memory - 100 * 1024, 0)}Ki"}  # --eviction-hard memory 100Mi
    machine_id = _read("/etc/machine-id")
    info = {
        "machineID": machine_id, "systemUUID": _read("/sys/class/dmi/id/product_uuid") or machine_id,
        "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": platform.release(),
        "osImage": _os_image(), "containerRuntimeVersion": f"meshlab-process://{images.meshlab_version()}",
        "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
        "operatingSystem": platform.system().lower(), "architecture": _ARCH.get(platform.machine().lower(),
                                                                                   platform.machine().lower()),
    }
    return {"capacity": capacity, "allocatable": allocatable, "nodeInfo": info}


def node_labels(name: str, facts: Obj) -> dict[str, str]:
    arch, os_name = facts["nodeInfo"]["architecture"], facts["nodeInfo"]["operatingSystem"]
    return {"beta.kubernetes.io/arch": arch, "beta.kubernetes.io/os": os_name, "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name, "kubernetes.io/os": os_name,
            "node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/exclude-from-external-load-balancers": ""}


def node_status(name: str, facts: Obj, old: Obj, now: float, *, ready: bool = True) -> Obj:
    stamp = rfc3339(now)
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    conditions = []
    for kind, status, reason, message in _CONDITIONS:
        if kind == "Ready" and not ready:
            status, reason, message = "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
        before = previous.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        conditions.append({"type": kind, "status": status, "lastHeartbeatTime": stamp,
                           "lastTransitionTime": since or stamp, "reason": reason, "message": message})
    return {**old, "capacity": facts["capacity"], "allocatable": facts["allocatable"], "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": facts["nodeInfo"], "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}


def micro_time(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """Registers the node, then keeps its Lease and status fresh."""

    def __init__(self, rest: RestStorage, name: str, state_dir: Path, opts: WriteOptions, *,
                 renew_every: float = 10.0, status_every: float = 60.0) -> None:
        self.rest = rest
        self.name = name
        self.opts = opts
        self.facts = machine(state_dir)
        self.renew_every = renew_every
        self.status_every = status_every
        self.node_rt = rest.registry.lookup("", "v1", "nodes")
        self.lease_rt = rest.registry.lookup("coordination.k8s.io", "v1", "leases")
        assert self.node_rt is not None and self.lease_rt is not None

    @property
    def allocatable(self) -> dict[str, str]:
        return dict(self.facts["allocatable"])

    async def register(self) -> Obj:
        assert self.node_rt is not None
        labels = node_labels(self.name, self.facts)
        try:
            node = self.rest.get(self.node_rt, "", self.name)
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                await self.rest.create(self.node_rt, "", {"metadata": {"name": self.name, "labels": labels}},
                                       self.opts)
            node = self.rest.get(self.node_rt, "", self.name)
        else:
            merged = {**((node.get("metadata") or {}).get("labels") or {}), **labels}
            if merged != (node.get("metadata") or {}).get("labels"):
                node = copy.deepcopy(node)
                node["metadata"]["labels"] = merged
                node = await self.rest.update(self.node_rt, "", self.name, node, self.opts)
        return await self.post_status(node)

    async def post_status(self, node: Obj | None = None, *, ready: bool = True) -> Obj:
        assert self.node_rt is not None
        node = node or self.rest.get(self.node_rt, "", self.name)
        status = node_status(self.name, self.facts, node.get("status") or {}, time.time(), ready=ready)
        return await self.rest.update(self.node_rt, "", self.name, {**node, "status": status}, self.opts,
                                      subresource="status")

    async def renew_lease(self) -> None:
        assert self.lease_rt is not None and self.node_rt is not None
        renew = micro_time(time.time())
        try:
            lease = self.rest.get(self.lease_rt, LEASE_NAMESPACE, self.name)
        except NotFound:
            node = self.rest.get(self.node_rt, "", self.name)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
            with contextlib.suppress(AlreadyExists):
                await self.rest.create(self.lease_rt, LEASE_NAMESPACE, {
                    "metadata": {"name": self.name, "ownerReferences": [owner]},
                    "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": renew},
                }, self.opts)
            return
        lease = copy.deepcopy(lease)
        lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": self.name, "leaseDurationSeconds": 40,
                         "renewTime": renew}
        await self.rest.update(self.lease_rt, LEASE_NAMESPACE, self.name, lease, self.opts)

    async def run(self) -> None:
        """Heartbeats until cancelled."""
        since_status = 0.0
        while True:
            try:
                await self.renew_lease()
                if since_status >= self.status_every:
                    await self.post_status()
                    since_status = 0.0
            except ApiError as err:  # e.g. the node was deleted by hand: register it again
                log.warning("node heartbeat failed (%s); registering %s again", err, self.name)
                with contextlib.suppress(ApiError):
                    await self.register()
            await asyncio.sleep(self.renew_every)
            since_status += self.renew_every
