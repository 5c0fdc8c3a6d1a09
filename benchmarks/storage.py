"""Storage in the embedded lab: how fast a claim binds and a pod with a CSI volume runs.

``run()`` starts a throwaway lab, runs ``meshlab storage install`` (NFS server, CSI driver and sidecars), then
measures, as medians over several objects created one after another: a ReadWriteMany claim of ``meshlab-nfs``
from create to ``Bound`` (the PV controller annotates it, the provisioner's watch wakes, CreateVolume makes the
directory through NFS, the PV is created, the PV controller binds; target ≤ 500 ms), and a pod mounting such a
claim from create to ``Running`` (scheduling, the kubelet's NodePublishVolume through the registered node
plugin, a FUSE mount of the export, the container started; target ≤ 2 s). Rows are
``(measure, result, target)`` for ``python -m benchmarks``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir

Row = tuple[str, str, str]


def _until(probe: Callable[[], bool], timeout: float = 30.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(step)


def _claim(name: str) -> Any:
    return {"metadata": {"name": name}, "spec": {"storageClassName": "meshlab-nfs", "accessModes": ["ReadWriteMany"],
                                                 "resources": {"requests": {"storage": "1Gi"}}}}


def _pod(name: str, claim: str) -> Any:
    return {"metadata": {"name": name}, "spec": {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "app", "image": "meshlab/tools:1", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


def _bound(core: Any, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: bool(core.read_namespaced_persistent_volume_claim(name, namespace).status.phase == "Bound")


def _running(core: Any, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: bool(core.read_namespaced_pod(name, namespace).status.phase == "Running")


def _gone(core: Any, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: not any(p.metadata.name == name for p in core.list_namespaced_pod(namespace).items)


def bench_bind(core: Any, namespace: str, count: int) -> list[float]:
    """Seconds from PVC create to Bound, per claim."""
    times = []
    for i in range(count):
        name = f"bind-{i}"
        t0 = time.perf_counter()
        core.create_namespaced_persistent_volume_claim(namespace, _claim(name))
        _until(_bound(core, namespace, name))
        times.append(time.perf_counter() - t0)
    return times


def bench_pods(core: Any, namespace: str, count: int) -> list[float]:
    """Seconds from pod create to Running, per pod (each on a claim bound beforehand)."""
    times = []
    for i in range(count):
        claim, name = f"pod-claim-{i}", f"csi-pod-{i}"
        core.create_namespaced_persistent_volume_claim(namespace, _claim(claim))
        _until(_bound(core, namespace, claim))
        t0 = time.perf_counter()
        core.create_namespaced_pod(namespace, _pod(name, claim))
        _until(_running(core, namespace, name), timeout=60)
        times.append(time.perf_counter() - t0)
        core.delete_namespaced_pod(name, namespace)
        # Wait for the teardown (NodeUnpublishVolume) so that stopping the lab leaves no mount behind.
        _until(_gone(core, namespace, name), timeout=60)
    return times


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms median (n={len(values)}, max {max(values) * 1000:.0f} ms)"


def run(*, claims: int = 10, pods: int = 5) -> list[Row]:
    import meshlab.lab
    from meshlab.storage import installing

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-storage-") as tmp:
        lab_dir = LabDir.named("bench-storage", Path(tmp))
        supervisor.up(lab_dir, port=0)
        handle = meshlab.lab.connect(lab_dir.kubeconfig)
        try:
            t0 = time.perf_counter()
            installing.install(handle, timeout=120)
            rows.append(("meshlab storage install (lab)", f"{time.perf_counter() - t0:.1f} s", "-"))
            core: Any = handle.clients.core
            namespace = "bench-" + os.urandom(2).hex()
            core.create_namespace({"metadata": {"name": namespace}})
            rows.append(("PVC create -> Bound (CSI NFS, RWX)", _ms(bench_bind(core, namespace, claims)),
                         "<= 500 ms"))
            try:
                result = _ms(bench_pods(core, namespace, pods))
            except TimeoutError:
                events = [str(e.message) for e in core.list_namespaced_event(namespace).items
                          if e.type == "Warning" and e.reason == "FailedMount"]
                result = f"not Running after 60 s: {(events or ['no warning event'])[-1][:150]}"
            rows.append(("pod with a CSI volume create -> Running", result, "<= 2 s"))
        finally:
            handle.close()
            supervisor.down(lab_dir)
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
