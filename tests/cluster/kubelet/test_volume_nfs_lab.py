"""NFS volumes end to end in an in-process lab: Deployments' pods share an export through real mounts.

The lab runs with its whole runtime (controllers, scheduler, PV binder, kubelet) in this process, with the
storage volume plugins registered on its kubelet as the Kubelet will register them by default. Pods are
plain shell containers that write and read their ``/data`` mount; what the learner would check is checked:
the reader's log, the bytes on the export, a second NFS client, the FailedMount event while the server is
down and the pod starting once it is back.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from meshlab import kube
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.kubelet.volume_plugins.flexvolume import FlexVolumePlugin, plugin_dir
from meshlab.cluster.kubelet.volume_plugins.nfs import NfsPlugin
from meshlab.cluster.kubelet.volume_plugins.pvc import PersistentVolumeClaimPlugin
from meshlab.cluster.labdir import LabDir
from meshlab.mounting.mount import mount_support
from meshlab.mounting.nfsclient import NfsClient
from meshlab.storage.flexvolume.install import install_driver
from meshlab.storage.nfsd import start_nfs_server
from tests.inprocess import lab_in_thread
from tests.polling import wait_for
from tests.storage.conftest import nfs_server

__all__ = ["nfs_server"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mount_support() is not None, reason=f"no NFS mount here: {mount_support()}")]

# Both scripts find the volume at /data, or where the lab says it is when it cannot mount (no namespaces).
WRITER = 'D=${MESHLAB_MOUNT_DATA:-/data}; echo "written by $HOSTNAME" > "$D/message.txt"; echo wrote; sleep 600'
READER = ('D=${MESHLAB_MOUNT_DATA:-/data}; until [ -s "$D/message.txt" ]; do sleep 0.2; done; '
          'echo "read: $(cat "$D/message.txt")"; sleep 600')


@dataclass
class Lab:
    lab: LabDir
    clients: kube.Clients

    @property
    def core(self) -> Any:
        return self.clients.core

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def deployment(self, namespace: str, name: str, script: str, volume: dict[str, Any]) -> None:
        apps: Any = self.clients.apps  # the typed client wants models; these tests send plain manifests
        apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1, "containers": [
                    {"name": "app", "image": "meshlab/test:1", "command": ["sh", "-c", script],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", **volume}]}}}})

    def pod_of(self, namespace: str, app: str) -> Any:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        return pods[0] if pods else None

    def log(self, namespace: str, app: str) -> str:
        pod = self.pod_of(namespace, app)
        try:
            return str(self.core.read_namespaced_pod_log(pod.metadata.name, namespace)) if pod else ""
        except ApiException:
            return ""

    def read(self, namespace: str) -> str | None:
        """The reader's log once it has read the message."""
        log = self.log(namespace, "reader")
        return log if "read:" in log else None

    def events(self, namespace: str) -> list[tuple[str, str]]:
        return [(str(e.reason), str(e.message)) for e in self.core.list_namespaced_event(namespace).items]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    labdir = LabDir.named("nfs-lab", tmp_path_factory.mktemp("nfs-lab-home"))

    def configure(server: ApiServer, port: int) -> list[Any]:
        # What the Kubelet registers by default once wired (see the report to the lead).
        volumes = server.pod_io.ctx.volumes  # type: ignore[attr-defined]
        for plugin in (NfsPlugin(), FlexVolumePlugin(), PersistentVolumeClaimPlugin()):
            volumes.register(plugin)
        return []

    with lab_in_thread(labdir, configure, runtime=True, timeout=60):
        install_driver(plugin_dir(labdir.path))
        clients = kube.clients(labdir.kubeconfig)
        yield Lab(labdir, clients)
        clients.close()


def _share(nfs_server: Any, name: str) -> str:
    with NfsClient(nfs_server.location) as nfs:
        nfs.rmtree(f"volumes/{name}")
        nfs.makedirs(f"volumes/{name}")
    return f"volumes/{name}"


def _sources(nfs_server: Any, subdir: str) -> dict[str, dict[str, Any]]:
    loc = nfs_server.location
    return {
        "nfs": {"nfs": {"server": f"{loc.server}:{loc.port}", "path": f"{loc.export}/{subdir}"}},
        "flexVolume": {"flexVolume": {"driver": "meshlab/nfs", "options": {
            "server": loc.server, "share": loc.export, "subDir": subdir, "port": str(loc.port),
            "version": str(loc.version)}}},
    }


@pytest.mark.parametrize("kind", ["nfs", "flexVolume"])
def test_two_deployments_share_one_export(lab: Lab, nfs_server: Any, kind: str) -> None:
    ns = lab.namespace(f"share-{kind.lower()}-{nfs_server.backend}")
    subdir = _share(nfs_server, ns)
    volume = _sources(nfs_server, subdir)[kind]
    lab.deployment(ns, "writer", WRITER, volume)
    lab.deployment(ns, "reader", READER, volume)

    read = wait_for(lambda: lab.read(ns), what="the reader's log")
    writer = lab.pod_of(ns, "writer").metadata.name
    assert f"read: written by {writer}" in read
    assert (nfs_server.export_dir / subdir / "message.txt").read_text() == f"written by {writer}\n"
    with NfsClient(nfs_server.location) as other:
        assert other.read_file(f"{subdir}/message.txt") == f"written by {writer}\n".encode()

    lab.core.delete_namespace(ns)  # the pods go, their mounts with them; the data stays on the export
    wait_for(lambda: not lab.core.list_namespaced_pod(ns).items, what="the pods to be deleted")
    assert (nfs_server.export_dir / subdir / "message.txt").exists()


def test_claim_bound_to_an_nfs_volume(lab: Lab, nfs_server: Any) -> None:
    ns = lab.namespace(f"claim-{nfs_server.backend}")
    subdir = _share(nfs_server, ns)
    loc = nfs_server.location
    lab.core.create_persistent_volume({"metadata": {"name": f"pv-{ns}"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
        "persistentVolumeReclaimPolicy": "Retain", "mountOptions": [f"nfsvers={loc.version}"],
        "nfs": {"server": f"{loc.server}:{loc.port}", "path": f"{loc.export}/{subdir}"}}})
    claim = {"persistentVolumeClaim": {"claimName": "shared"}}
    lab.deployment(ns, "writer", WRITER, claim)  # first: the claim does not exist yet
    lab.deployment(ns, "reader", READER, claim)
    # The scheduler holds the pods back first (FailedScheduling), as a real one does.
    wait_for(lambda: any('persistentvolumeclaim "shared" not found' in m for _, m in lab.events(ns)),
             what="an event about the missing claim")
    lab.core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "shared"}, "spec": {
        "accessModes": ["ReadWriteMany"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}})
    read = wait_for(lambda: lab.read(ns), what="the reader's log")
    assert f"read: written by {lab.pod_of(ns, 'writer').metadata.name}" in read
    lab.core.delete_namespace(ns)
    wait_for(lambda: not lab.core.list_namespaced_pod(ns).items, what="the pods to be deleted")
    lab.core.delete_persistent_volume(f"pv-{ns}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_down_at_pod_start(lab: Lab, tmp_path: Path) -> None:
    """meshlab's Python server (any user); the point is the kubelet's retries, not the backend."""
    ns = lab.namespace("outage")
    port = _free_port()
    export = tmp_path / "export"
    (export / "volumes" / "outage").mkdir(parents=True)
    (export / "volumes" / "outage" / "message.txt").write_text("written before the outage\n")
    lab.deployment(ns, "reader", READER, {"nfs": {"server": f"127.0.0.1:{port}", "path": "/export/volumes/outage"}})

    def failed_mount() -> str | None:
        return next((m for r, m in lab.events(ns) if r == "FailedMount"), None)

    message = wait_for(failed_mount, what="a FailedMount event")
    assert "NFS_UNREACHABLE" in message and f"127.0.0.1:/export/volumes/outage (NFSv3, port {port})" in message
    pod = lab.pod_of(ns, "reader")
    waiting = pod.status.container_statuses[0].state.waiting if pod.status.container_statuses else None
    assert pod.status.phase == "Pending" and (waiting is None or waiting.reason == "ContainerCreating")

    with start_nfs_server(export, port=port):
        read = wait_for(lambda: lab.read(ns), what="the reader's log")
        assert "read: written before the outage" in read
        lab.core.delete_namespace(ns)
        wait_for(lambda: not lab.core.list_namespaced_pod(ns).items, what="the pod to be deleted")
