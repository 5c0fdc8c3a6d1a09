"""The same sharing scenario in the session lab (``tests/conftest.py``'s ``lab``): the Kubelet as shipped.

Two Deployments mount one export — in-tree ``nfs``, then ``flexVolume`` ``meshlab/nfs`` — one writes, the
other reads. Until the Kubelet registers the storage plugins by default, the pods report "no volume plugin
for nfs" and these tests skip saying so (``test_volume_nfs_lab.py`` runs the scenario with them registered).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshlab import kube
from meshlab.cluster.kubelet.volume_plugins.flexvolume import plugin_dir
from meshlab.mounting.mount import mount_support
from meshlab.mounting.nfsclient import NfsClient
from meshlab.storage.flexvolume.install import install_driver
from meshlab.storage.nfsd import RunningNfsServer, start_nfs_server
from tests.cluster.kubelet.test_volume_nfs_lab import READER, WRITER, Lab
from tests.conftest import RunningLab
from tests.polling import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mount_support() is not None, reason=f"no NFS mount here: {mount_support()}")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNfsServer]:
    with start_nfs_server(tmp_path_factory.mktemp("nfs-session") / "export") as running:
        yield running


@pytest.mark.parametrize("kind", ["nfs", "flexVolume"])
def test_two_deployments_share_one_export(lab: RunningLab, clients: kube.Clients, namespace: str,
                                          server: RunningNfsServer, kind: str) -> None:
    loc = server.location
    with NfsClient(loc) as nfs:
        nfs.makedirs(f"volumes/{namespace}")
    volumes: dict[str, dict[str, Any]] = {
        "nfs": {"nfs": {"server": f"{loc.server}:{loc.port}", "path": f"{loc.export}/volumes/{namespace}"}},
        "flexVolume": {"flexVolume": {"driver": "meshlab/nfs", "options": {
            "server": loc.server, "share": loc.export, "subDir": f"volumes/{namespace}", "port": str(loc.port),
            "version": str(loc.version)}}},
    }
    volume = volumes[kind]
    install_driver(plugin_dir(lab.lab.path))
    view = Lab(lab.lab, clients)
    view.deployment(namespace, "writer", WRITER, volume)
    view.deployment(namespace, "reader", READER, volume)

    def outcome() -> str | None:
        missing = next((m for r, m in view.events(namespace) if r == "FailedMount" and "no volume plugin" in m), None)
        if missing:
            return "skip: " + missing
        return view.read(namespace)

    result = wait_for(outcome, timeout=60, what="the reader's log")
    if result.startswith("skip: "):
        pytest.skip(f"the session lab's Kubelet has no {kind} plugin registered yet ({result[6:]})")
    writer = view.pod_of(namespace, "writer").metadata.name
    assert f"read: written by {writer}" in result
    assert (server.export_dir / "volumes" / namespace / "message.txt").read_text() == f"written by {writer}\n"
    clients.core.delete_namespace(namespace)
    wait_for(lambda: not clients.core.list_namespaced_pod(namespace).items, timeout=45, what="the pods to be deleted")
