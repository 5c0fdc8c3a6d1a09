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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

import meshlab.lab
from meshlab import cli
from meshlab.storage import installing
from tests.conftest import RunningLab
from tests.polling import wait_for

# -- the manifests and what install changes in them (fast, no lab) ----------------------------------------------

MANIFEST_FILES = sorted(installing.MANIFESTS.glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=[p.name for p in MANIFEST_FILES])
def test_manifests_are_valid_kubernetes_objects_for_a_real_cluster(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in installing.documents(path):
        kubernetes_validate.validate(doc, "1.32", strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "meshlab"
        assert doc["metadata"].get("namespace", installing.NAMESPACE) == installing.NAMESPACE


def test_install_serves_the_lab_export_from_disk_on_the_node_address() -> None:
    docs = installing.nfs_server_objects(data_dir=Path("/lab/storage/nfs-data"), backend="ganesha", node_port=24321)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "hostPath": {"path": "/lab/storage/nfs-data",
                                                            "type": "DirectoryOrCreate"}}]
    args = pod["containers"][0]["args"]
    assert args[args.index("--backend") + 1] == "ganesha" and args[args.index("--port") + 1] == "24321"
    assert pod["hostNetwork"] and pod["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == 24321
    [service] = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == 24321
    [plain] = [d for d in installing.nfs_server_objects() if d["kind"] == "Deployment"]
    assert plain["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert "hostNetwork" not in plain["spec"]["template"]["spec"]


@pytest.mark.parametrize(("server", "port", "backend", "expected"), [
    (None, None, "python", {"server": "nfs-server.meshlab-storage.svc.cluster.local", "port": "2049",
                            "version": "3"}),
    ("127.0.0.1", 24321, "ganesha", {"server": "127.0.0.1", "port": "24321", "version": "4"}),
], ids=["real cluster: the Service's name", "lab: the node's address and the lab's port"])
def test_storage_class_names_the_server(server: str | None, port: int | None, backend: str,
                                        expected: dict[str, str]) -> None:
    params = installing.storage_class(installing.csi_objects(server=server, port=port, backend=backend))["parameters"]
    assert {k: params[k] for k in expected} == expected
    assert params["onDelete"] == "delete" and params["share"] == "/export"


@pytest.mark.parametrize(("current", "busy", "expected_same"), [
    (24000, set(), True), (None, set(), True), (None, "first", False)],
    ids=["kept on re-install", "derived from the lab's directory", "next free one when taken"])
def test_lab_port(current: int | None, busy: Any, expected_same: bool) -> None:
    first = installing.lab_port(Path("/home/x/.meshlab/labs/default"), None, is_free=lambda _: True)
    assert installing.LAB_PORTS[0] <= first < installing.LAB_PORTS[1]
    taken = {first} if busy == "first" else set()
    port = installing.lab_port(Path("/home/x/.meshlab/labs/default"), current, is_free=lambda p: p not in taken)
    assert port == (current or first) if expected_same else port not in taken


def test_status_table() -> None:
    state = installing.StorageStatus("1/1 ready", "1/1 ready", "1/1 ready", "1/1 ready",
                                     {"server": "127.10.0.4", "share": "/export"}, {"lab-node": True}, ["ns/data"])
    assert state.healthy
    assert installing.format_status(state).splitlines()[-3:] == [
        "storageclass meshlab-nfs: server=127.10.0.4, share=/export",
        "node lab-node: nfs.csi.meshlab.io registered",
        "claims of meshlab-nfs: 1 (ns/data)"]
    assert not installing.StorageStatus("0/1 ready", "1/1 ready", "1/1 ready", "1/1 ready", {}, {}, []).healthy


# -- end to end in the lab ---------------------------------------------------------------------------------------


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
    return wait_for(probe, what="the claim to be Bound")


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


@pytest.mark.slow
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
    wait_for(lambda: token in handle.core.read_namespaced_pod_log(reader, namespace),
             what="the reader to print the writer's bytes")
    on_disk = export_dir / pv / "hello.txt"
    assert on_disk.read_text() == token + "\n"
    if shutil.which("nfs-cat"):
        sc = plain(handle, handle.clients.storage.read_storage_class("meshlab-nfs"))["parameters"]
        url = (f"nfs://{sc['server']}{sc['share']}/{pv}/hello.txt?version={sc['version']}"
               f"&nfsport={sc['port']}&mountport={sc['port']}")
        seen = subprocess.run(["nfs-cat", url], capture_output=True, text=True, timeout=20)
        assert seen.stdout == token + "\n", seen.stderr
    handle.delete([deployment("writer", ""), deployment("reader", "")], namespace=namespace)
    wait_for(lambda: pods_gone(handle, namespace), what="the pods to be gone")
    assert on_disk.read_text() == token + "\n"
    handle.core.delete_namespaced_persistent_volume_claim("shared", namespace)
    wait_for(lambda: pv_gone(handle, pv), what="the volume to be deleted")
    assert not (export_dir / pv).exists()


@pytest.mark.slow
def test_a_volume_outlives_its_nfs_server_pod(storage: meshlab.lab.Lab, namespace: str, export_dir: Path) -> None:
    handle = storage
    claim(handle, namespace)
    pv = bound_volume(handle, namespace)
    (export_dir / pv / "before.txt").write_text("kept")
    old = handle.core.list_namespaced_pod(installing.NAMESPACE, label_selector="app=nfs-server").items[0]
    handle.core.delete_namespaced_pod(old.metadata.name, installing.NAMESPACE)
    wait_for(lambda: [p for p in handle.core.list_namespaced_pod(
        installing.NAMESPACE, label_selector="app=nfs-server").items if p.metadata.uid != old.metadata.uid],
             what="a new NFS server pod")
    handle.wait_ready("deployment", installing.SERVER_DEPLOYMENT, namespace=installing.NAMESPACE, timeout=60)
    handle.apply(deployment("after", "cat /data/before.txt > /data/after.txt && exec sleep 3600"),
                 namespace=namespace)
    handle.wait_ready("deployment", "after", namespace=namespace, timeout=60)
    # The shell creates after.txt before it writes into it: wait for the content, not the name.
    after = export_dir / pv / "after.txt"
    wait_for(lambda: after.exists() and after.read_text() == "kept", timeout=30,
             what="the pod to copy the file through the new server")
    handle.delete(deployment("after", ""), namespace=namespace)
    wait_for(lambda: pods_gone(handle, namespace), what="the pods to be gone")


@pytest.mark.slow
def test_inline_ephemeral_csi_volume(storage: meshlab.lab.Lab, namespace: str, export_dir: Path) -> None:
    handle = storage
    params = plain(handle, handle.clients.storage.read_storage_class("meshlab-nfs"))["parameters"]
    subdir = "inline-" + os.urandom(3).hex()
    token = "inline-" + os.urandom(4).hex()
    handle.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inline"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": "meshlab/tools:1",
                        "command": ["sh", "-c", f"echo {token} > /data/note.txt && exec sleep 3600"],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]}],
        "volumes": [{"name": "scratch", "csi": {"driver": "nfs.csi.meshlab.io", "volumeAttributes": {
            "server": params["server"], "share": params["share"], "port": params["port"],
            "version": params["version"], "subDir": subdir}}}]}}, namespace=namespace)
    handle.wait_ready("pod", "inline", namespace=namespace, timeout=60)
    note = export_dir / subdir / "note.txt"
    wait_for(lambda: note.exists() and note.read_text() == token + "\n", what="the pod's file on the export")
    handle.core.delete_namespaced_pod("inline", namespace)
    wait_for(lambda: pods_gone(handle, namespace), what="the pod to be gone")
    assert note.read_text() == token + "\n"  # an inline volume's directory is the volume context's, kept


@pytest.mark.slow
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
        wait_for(lambda: pv_gone(handle, pv), what="the volume to be deleted")
        assert (export_dir / left.format(pv) / "kept.txt").read_text() == "data"
        assert on_delete == "retain" or not (export_dir / pv).exists()
    finally:
        handle.clients.storage.delete_storage_class(name)


@pytest.mark.slow
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

        message = wait_for(failure, what="a ProvisioningFailed event")
        assert "INVALID_ARGUMENT" in message and "shrae" in message
        pvc = plain(handle, handle.core.read_namespaced_persistent_volume_claim("shared", namespace))
        assert pvc["status"]["phase"] == "Pending"
    finally:
        handle.clients.storage.delete_storage_class(name)
