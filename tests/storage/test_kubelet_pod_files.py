"""The kubelet deletes a gone pod's directory without deleting the data of the NFS volumes mounted in it.

A pod deleted while the kubelet was down leaves its directory behind, volume mounts included; ``rmtree`` would
walk into an NFS mount and delete the files on the server. ``remove_pod_files`` unmounts first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.cluster.kubelet.kubelet import remove_pod_files
from meshlab.mounting.mount import is_mounted, mount_nfs, mount_support
from meshlab.mounting.nfsclient import NfsClient
from meshlab.storage.nfsd.running import RunningNfsServer

pytestmark = pytest.mark.skipif(mount_support() is not None, reason=str(mount_support()))


def test_a_gone_pods_directory_goes_and_its_nfs_data_stays(nfs_server: RunningNfsServer, tmp_path: Path) -> None:
    with NfsClient(nfs_server.location) as client:
        client.makedirs("volumes/gc")
    pod_dir = tmp_path / "pods" / "0b7e6a1c"
    target = pod_dir / "volumes" / "kubernetes.io~nfs" / "data"
    target.mkdir(parents=True)
    mount_nfs(nfs_server.location, "volumes/gc", target)
    (target / "kept.txt").write_bytes(b"written by the pod")
    (pod_dir / "etc-hosts").write_text("127.0.0.1 localhost\n")

    assert remove_pod_files(pod_dir)

    assert not pod_dir.exists() and not is_mounted(target)
    with NfsClient(nfs_server.location) as client:
        assert client.read_file("volumes/gc/kept.txt") == b"written by the pod"
