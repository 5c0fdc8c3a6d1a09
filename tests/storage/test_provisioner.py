"""The provisioner against the embedded lab's API and meshlab's real CSI controller on a real NFS export
(no pods: the provisioner runs in this process, as it would in the controller pod): a claim binds to a PV
whose directory exists on the export, an unknown StorageClass parameter leaves the claim Pending with an event
quoting INVALID_ARGUMENT, and deleting the claim deletes, retains or archives the directory as ``onDelete``
says."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from meshlab import kube
from meshlab.storage.csi.driver import build_services
from meshlab.storage.csi.provisioner import CsiController, Provisioner
from meshlab.storage.csi.provisioner_plan import BackOff
from meshlab.storage.csi.serving import build_server
from meshlab.storage.nfsd.running import RunningNfsServer
from tests.conftest import RunningLab
from tests.polling import wait_for

pytestmark = pytest.mark.slow
DRIVER = "nfs.csi.meshlab.io"


@pytest.fixture(scope="module")
def provisioner(lab: RunningLab, nfs_server: RunningNfsServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioner]:
    socket = tmp_path_factory.mktemp("csi") / "csi.sock"
    server = build_server(build_services("controller"), f"unix://{socket}")
    server.start()
    csi = CsiController(f"unix://{socket}", timeout=10)
    clients = lab.clients()
    running = Provisioner(clients.api_client, csi, csi.wait_ready(timeout=10), resync=2.0,
                          backoff=BackOff(initial=0.5, maximum=2.0))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield running
    running.stop()
    thread.join(5)
    csi.close()
    server.stop(0)
    clients.close()


@pytest.fixture()
def api(lab: RunningLab) -> Iterator[kube.Clients]:
    c = lab.clients()
    yield c
    c.close()


def make_class(api: kube.Clients, nfs: RunningNfsServer, **parameters: str) -> str:
    name = "prov-" + os.urandom(3).hex()
    location = nfs.location
    body: Any = {"metadata": {"name": name}, "provisioner": DRIVER, "reclaimPolicy": "Delete",
                 "parameters": {"server": location.server, "share": location.export, "port": str(location.port),
                                "version": str(location.version), **parameters}}
    api.storage.create_storage_class(body)
    return name


def make_claim(api: kube.Clients, namespace: str, storage_class: str, name: str = "data") -> dict[str, Any]:
    body: Any = {"metadata": {"name": name}, "spec": {"storageClassName": storage_class,
                                                      "accessModes": ["ReadWriteMany"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}}
    created = api.core.create_namespaced_persistent_volume_claim(namespace, body)
    return dict(api.api_client.sanitize_for_serialization(created))


def claim(api: kube.Clients, namespace: str, name: str = "data") -> dict[str, Any]:
    return dict(api.api_client.sanitize_for_serialization(
        api.core.read_namespaced_persistent_volume_claim(name, namespace)))


def events(api: kube.Clients, namespace: str) -> list[tuple[str, str]]:
    listed = api.core.list_namespaced_event(namespace)
    return [(e.reason or "", e.message or "") for e in listed.items]


def bound(api: kube.Clients, namespace: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        c = claim(api, namespace)
        return c if (c.get("status") or {}).get("phase") == "Bound" else None
    return wait_for(probe, what="the claim to be Bound")


def volume_gone(api: kube.Clients, name: str) -> bool:
    try:
        api.core.read_persistent_volume(name)
    except ApiException as err:
        return err.status == 404
    return False


def test_claim_binds_to_a_provisioned_directory(provisioner: Provisioner, api: kube.Clients, namespace: str,
                                                nfs_server: RunningNfsServer) -> None:
    made = make_claim(api, namespace, make_class(api, nfs_server))
    pvc = bound(api, namespace)
    pv_name = pvc["spec"]["volumeName"]
    assert pv_name == f"pvc-{made['metadata']['uid']}"
    pv = api.api_client.sanitize_for_serialization(api.core.read_persistent_volume(pv_name))
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == DRIVER
    assert pv["spec"]["csi"]["driver"] == DRIVER and pv["spec"]["csi"]["volumeHandle"]
    assert pv["spec"]["capacity"] == {"storage": "1Gi"} and pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (nfs_server.export_dir / pv_name).is_dir()
    reasons = [reason for reason, _ in events(api, namespace)]
    assert "Provisioning" in reasons and "ProvisioningSucceeded" in reasons


def test_unknown_parameter_leaves_the_claim_pending_quoting_invalid_argument(
        provisioner: Provisioner, api: kube.Clients, namespace: str, nfs_server: RunningNfsServer) -> None:
    make_claim(api, namespace, make_class(api, nfs_server, colour="blue"))

    def failed() -> str | None:
        return next((m for r, m in events(api, namespace) if r == "ProvisioningFailed"), None)

    message = wait_for(failed, what="a ProvisioningFailed event")
    assert "rpc error: code = INVALID_ARGUMENT" in message and "colour" in message
    time.sleep(1.0)  # retries keep failing the same way: still Pending
    assert claim(api, namespace)["status"]["phase"] == "Pending"


@pytest.mark.parametrize(("on_delete", "left"), [("delete", None), ("retain", "{}"), ("archive", "archived-{}")])
def test_deleting_the_claim_follows_on_delete(provisioner: Provisioner, api: kube.Clients, namespace: str,
                                              nfs_server: RunningNfsServer, on_delete: str, left: str | None) -> None:
    make_claim(api, namespace, make_class(api, nfs_server, onDelete=on_delete))
    pv_name = bound(api, namespace)["spec"]["volumeName"]
    (nfs_server.export_dir / pv_name / "kept.txt").write_text("bytes")
    api.core.delete_namespaced_persistent_volume_claim("data", namespace)
    wait_for(lambda: volume_gone(api, pv_name), what="the PV to be deleted")
    assert not (nfs_server.export_dir / pv_name).exists() or on_delete == "retain"
    if left is not None:
        kept: Path = nfs_server.export_dir / left.format(pv_name) / "kept.txt"
        assert kept.read_text() == "bytes"


def test_a_claim_with_a_claim_as_data_source_is_a_clone(provisioner: Provisioner, api: kube.Clients, namespace: str,
                                                          nfs_server: RunningNfsServer) -> None:
    storage_class = make_class(api, nfs_server)
    make_claim(api, namespace, storage_class)
    origin = bound(api, namespace)["spec"]["volumeName"]
    (nfs_server.export_dir / origin / "seed.txt").write_text("cloned bytes")
    body: Any = {"metadata": {"name": "copy"}, "spec": {
        "storageClassName": storage_class, "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}}, "dataSource": {"kind": "PersistentVolumeClaim", "name": "data"}}}
    api.core.create_namespaced_persistent_volume_claim(namespace, body)

    def copied() -> str | None:
        c = claim(api, namespace, "copy")
        return c["spec"].get("volumeName") if (c.get("status") or {}).get("phase") == "Bound" else None

    clone = wait_for(copied, what="the clone to be Bound")
    assert clone != origin
    assert (nfs_server.export_dir / clone / "seed.txt").read_text() == "cloned bytes"
