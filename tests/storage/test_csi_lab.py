"""CSI end to end in the embedded lab, as a learner does it: ``meshlab storage install`` (NFS server pod, CSI
controller and node plugin pods, registration through the kubelet's plugins_registry, StorageClass
``meshlab-nfs``), then a ReadWriteMany claim shared by two Deployments — one writes, the other reads the same
bytes, which are also on the export and readable through a real NFS client (libnfs-utils' ``nfs-cat``); the data
outlives the pods; deleting the claim deletes, retains or archives its directory as ``onDelete`` says; and an
unknown StorageClass parameter leaves a claim Pending with an event quoting INVALID_ARGUMENT."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes.client.rest import ApiException

import meshlab.lab
from meshlab import cli
from meshlab.storage import installing
from tests.conftest import RunningLab

pytestmark = pytest.mark.slow
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def storage(lab: RunningLab) -> Iterator[meshlab.lab.Lab]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    try:
        assert cli.main(["storage", "install", "--kubeconfig", str(lab.kubeconfig), "--timeout", "90"]) == 0
        yield handle
    finally:
        installing.uninstall(handle, force=True)
        handle.close()


@pytest.fixture(scope="module")
def export_dir(lab: RunningLab) -> Path:
    return lab.lab.path / "storage" / "nfs-data" / "export"


def plain(handle: meshlab.lab.Lab, obj: Any) -> Any:
    return handle.clients.api_client.sanitize_for_serialization(obj)


def claim(handle: meshlab.lab.Lab, namespace: str, storage_class: str = "meshlab-nfs") -> None:
    handle.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
                  "spec": {"storageClassName": storage_class, "accessModes": ["ReadWriteMany"],
                           "resources": {"requests": {"storage": "1Gi"}}}}, namespace=namespace)


def bound_volume(handle: meshlab.lab.Lab, namespace: str) -> str:
    def probe() -> str | None:
        pvc = plain(handle, handle.core.read_namespaced_persistent_volume_claim("shared", namespace))
        return pvc["spec"].get("volumeName") if pvc.get("status", {}).get("phase") == "Bound" else None
    return wait_for("the claim to be Bound", probe)


def deployment(name: str, script: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": name, "image": "meshlab/tools:1", "command": ["sh", "-c", script],
                                         "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}],
                         "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}]}}}}


def pv_gone(handle: meshlab.lab.Lab, name: str) -> bool:
    try:
        handle.core.read_persistent_volume(name)
    except ApiException as err:
        return err.status == 404
    return False


def pods_gone(handle: meshlab.lab.Lab, namespace: str) -> bool:
    return not handle.core.list_namespaced_pod(namespace).items


def test_two_deployments_share_a_read_write_many_volume(storage: meshlab.lab.Lab, namespace: str,
                                                        export_dir: Path) -> None:
    handle = storage
    token = "written-by-the-writer-" + os.urandom(4).hex()
    claim(handle, namespace)
    pv = bound_volume(handle, namespace)
    handle.apply([deployment("writer", f"echo {token} > /data/hello.txt && exec sleep 3600"),
                  deployment("reader", "until cat /data/hello.txt; do sleep 0.1; done; exec sleep 3600")],
                 namespace=namespace)
    for name in ("writer", "reader"):
        handle.wait_ready("deployment", name, namespace=namespace, timeout=60)
    reader = handle.core.list_namespaced_pod(namespace, label_selector="app=reader").items[0].metadata.name
    wait_for("the reader to print the writer's bytes",
             lambda: token in handle.core.read_namespaced_pod_log(reader, namespace))
    on_disk = export_dir / pv / "hello.txt"
    assert on_disk.read_text() == token + "\n"
    if shutil.which("nfs-cat"):
        sc = plain(handle, handle.clients.storage.read_storage_class("meshlab-nfs"))["parameters"]
        url = (f"nfs://{sc['server']}{sc['share']}/{pv}/hello.txt?version={sc['version']}"
               f"&nfsport={sc['port']}&mountport={sc['port']}")
        seen = subprocess.run(["nfs-cat", url], capture_output=True, text=True, timeout=20)
        assert seen.stdout == token + "\n", seen.stderr
    handle.delete([deployment("writer", ""), deployment("reader", "")], namespace=namespace)
    wait_for("the pods to be gone", lambda: pods_gone(handle, namespace))
    assert on_disk.read_text() == token + "\n"
    handle.core.delete_namespaced_persistent_volume_claim("shared", namespace)
    wait_for("the volume to be deleted", lambda: pv_gone(handle, pv))
    assert not (export_dir / pv).exists()


@pytest.mark.parametrize(("on_delete", "left"), [("retain", "{}"), ("archive", "archived-{}")])
def test_deleting_the_claim_follows_on_delete(storage: meshlab.lab.Lab, namespace: str, export_dir: Path,
                                              on_delete: str, left: str) -> None:
    handle = storage
    base = plain(handle, handle.clients.storage.read_storage_class("meshlab-nfs"))
    name = f"meshlab-nfs-{on_delete}-{os.urandom(2).hex()}"
    handle.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                  "provisioner": base["provisioner"], "reclaimPolicy": "Delete",
                  "parameters": {**base["parameters"], "onDelete": on_delete}})
    try:
        claim(handle, namespace, name)
        pv = bound_volume(handle, namespace)
        (export_dir / pv / "kept.txt").write_text("data")
        handle.core.delete_namespaced_persistent_volume_claim("shared", namespace)
        wait_for("the volume to be deleted", lambda: pv_gone(handle, pv))
        assert (export_dir / left.format(pv) / "kept.txt").read_text() == "data"
        assert on_delete == "retain" or not (export_dir / pv).exists()
    finally:
        handle.clients.storage.delete_storage_class(name)


def test_unknown_parameter_leaves_the_claim_pending_with_invalid_argument(storage: meshlab.lab.Lab,
                                                                           namespace: str) -> None:
    handle = storage
    base = plain(handle, handle.clients.storage.read_storage_class("meshlab-nfs"))
    name = f"meshlab-nfs-typo-{os.urandom(2).hex()}"
    handle.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                  "provisioner": base["provisioner"], "parameters": {**base["parameters"], "shrae": "/export"}})
    try:
        claim(handle, namespace, name)

        def failure() -> str | None:
            events = handle.core.list_namespaced_event(namespace).items
            return next((e.message for e in events if e.reason == "ProvisioningFailed"), None)

        message = wait_for("a ProvisioningFailed event", failure)
        assert "INVALID_ARGUMENT" in message and "shrae" in message
        pvc = plain(handle, handle.core.read_namespaced_persistent_volume_claim("shared", namespace))
        assert pvc["status"]["phase"] == "Pending"
    finally:
        handle.clients.storage.delete_storage_class(name)
