"""NfsClient against a real NFS server: what the CSI driver and the FUSE daemon rely on."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meshlab.errors import NfsError
from meshlab.mounting.nfsclient import NfsClient, NfsLocation, errno_for_status


@pytest.fixture()
def client(nfs_server: Any) -> Iterator[NfsClient]:
    with NfsClient(nfs_server.location) as nfs:
        nfs.rmtree("volumes")
        nfs.makedirs("volumes")
        yield nfs


def test_tree_operations_reach_the_export_directory(client: NfsClient, nfs_server: Any) -> None:
    client.makedirs("volumes/pvc-1/data", 0o755)
    client.makedirs("volumes/pvc-1/data", 0o755)  # idempotent
    client.write_file("volumes/pvc-1/data/hello.txt", b"hello over NFS\n")
    client.chmod("volumes/pvc-1", 0o770)

    on_disk = nfs_server.export_dir / "volumes" / "pvc-1"
    assert (on_disk / "data" / "hello.txt").read_bytes() == b"hello over NFS\n"
    assert on_disk.stat().st_mode & 0o777 == 0o770
    assert client.listdir("volumes/pvc-1") == ["data"]
    assert client.is_dir("volumes/pvc-1") and not client.is_dir("volumes/pvc-1/data/hello.txt")
    assert client.exists("volumes/pvc-1/data/hello.txt") and not client.exists("volumes/nope")
    assert client.usage("volumes/pvc-1") == (len(b"hello over NFS\n"), 2)

    client.copytree("volumes/pvc-1", "volumes/clone")
    assert (nfs_server.export_dir / "volumes/clone/data/hello.txt").read_bytes() == b"hello over NFS\n"
    client.rename("volumes/clone", "volumes/archived-clone")
    assert client.listdir("volumes") == ["archived-clone", "pvc-1"]

    client.rmtree("volumes/pvc-1")
    client.rmtree("volumes/pvc-1")  # a missing path is not an error
    assert not on_disk.exists()


def test_a_file_written_on_disk_is_read_through_nfs(client: NfsClient, nfs_server: Any) -> None:
    (nfs_server.export_dir / "volumes" / "big.bin").write_bytes(bytes(range(256)) * 8192)
    assert client.read_file("volumes/big.bin") == bytes(range(256)) * 8192


@pytest.mark.parametrize(
    ("call", "errno_name"),
    [
        pytest.param(lambda c: c.read_file("volumes/missing"), "ENOENT", id="read a missing file"),
        pytest.param(lambda c: c.listdir("volumes/missing"), "ENOENT", id="list a missing directory"),
        pytest.param(lambda c: c.mkdir("volumes"), "EEXIST", id="mkdir an existing directory"),
        pytest.param(lambda c: c.rmdir("volumes"), "ENOTEMPTY", id="rmdir a non-empty directory"),
        pytest.param(lambda c: c.read_file("../etc/passwd"), "EINVAL", id="a path leaving the export"),
        pytest.param(lambda c: c.rmtree(""), "EINVAL", id="rmtree of the export root"),
    ],
)
def test_failures_carry_the_nfs_status(client: NfsClient, call: Callable[[NfsClient], object],
                                       errno_name: str) -> None:
    client.write_file("volumes/keep", b"x")
    with pytest.raises(NfsError) as caught:
        call(client)
    assert errno_for_status(caught.value.status) == getattr(errno, errno_name)
    assert caught.value.status.startswith(("NFS3ERR_", "NFS4ERR_", "NFS_"))


def test_unreachable_server_is_named(nfs_server: Any) -> None:
    location = nfs_server.location
    closed = NfsLocation(location.server, location.export, port=1, version=location.version)
    with pytest.raises(NfsError) as caught:
        NfsClient(closed, timeout=2.0)
    assert caught.value.status == "NFS_UNREACHABLE"


@pytest.mark.parametrize(
    ("status", "errno_value"),
    [("NFS3ERR_NOENT", 2), ("NFS4ERR_ACCESS", 13), ("NFS3ERR_ACCES", 13), ("NFS4ERR_NOTEMPTY", 39),
     ("NFS4ERR_BADNAME", 22), ("NFS_UNREACHABLE", 107), ("NFS3ERR_SERVERFAULT", 5)],
    ids=lambda value: str(value),
)
def test_errno_for_status(status: str, errno_value: int) -> None:
    assert errno_for_status(status) == errno_value
