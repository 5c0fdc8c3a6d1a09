"""Real NFS clients against meshlab's NFS server (and Ganesha when root): libnfs-utils and nfs-rs.

Everything a client does must show up in the export directory on disk, and survive a server restart.
Volumes live under ``volumes/`` because nfs-rs cannot list an NFSv4 export root (Ganesha).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nfs_rs
import pytest

from meshlab.storage.nfsd.running import RunningNfsServer

needs_libnfs = pytest.mark.skipif(shutil.which("nfs-cp") is None,
                                  reason="libnfs-utils not installed (apt-get install libnfs-utils)")


def client_url(server: RunningNfsServer) -> str:
    if server.version == 3:
        return (f"nfs://{server.host}{server.export}?version=3&nfsport={server.port}&mountport={server.port}"
                "&noresvport=true")
    return f"nfs://{server.host}{server.export}?version=4.1&nfsport={server.port}&noresvport=true"


def libnfs_url(server: RunningNfsServer, path: str) -> str:
    return server.url.replace("/export?", f"/export/{path}?")


@pytest.fixture
def volume(nfs_server: RunningNfsServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh directory ``volumes/<test name>`` made on disk, removed afterwards."""
    name = "volumes/" + request.node.name.replace("[", "-").replace("]", "")
    path = nfs_server.export_dir / name
    path.mkdir(parents=True)
    yield name
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def client(nfs_server: RunningNfsServer) -> Iterator[nfs_rs.Client]:
    with nfs_rs.Client.connect(client_url(nfs_server), connect_timeout=10, operation_timeout=20) as c:
        yield c


def test_nfs_rs_file_lifecycle_is_real_on_disk(nfs_server: RunningNfsServer, client: nfs_rs.Client,
                                               volume: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB WRITEs and an odd tail
    client.mkdir(f"{volume}/a/b", parents=True)
    with client.open(f"{volume}/a/b/blob.bin", "wb") as f:
        f.write(data)
    assert (nfs_server.export_dir / volume / "a/b/blob.bin").read_bytes() == data
    with client.open(f"{volume}/a/b/blob.bin", "rb") as f:
        assert f.read() == data
    client.rename(f"{volume}/a/b/blob.bin", f"{volume}/a/renamed.bin")
    assert sorted(client.listdir(f"{volume}/a")) == ["b", "renamed.bin"]
    assert client.stat(f"{volume}/a/renamed.bin").size == len(data)
    client.unlink(f"{volume}/a/renamed.bin")
    client.rmdir(f"{volume}/a/b")
    assert client.listdir(f"{volume}/a") == []
    assert os.listdir(nfs_server.export_dir / volume / "a") == []


def test_nfs_rs_sees_files_made_on_disk_and_lists_large_directories(
        nfs_server: RunningNfsServer, client: nfs_rs.Client, volume: str) -> None:
    names = {f"file-{i:04d}-{'x' * 40}" for i in range(400)}  # several READDIR(PLUS) pages
    for name in names:
        (nfs_server.export_dir / volume / name).write_text(name)
    assert set(client.listdir(volume)) == names
    with client.open(f"{volume}/file-0007-{'x' * 40}", "rb") as f:
        assert f.read() == f"file-0007-{'x' * 40}".encode()


def test_nfs_rs_symlinks_modes_and_errors(nfs_server: RunningNfsServer, client: nfs_rs.Client,
                                          volume: str) -> None:
    client.touch(f"{volume}/target")
    client.symlink("target", f"{volume}/link")
    assert client.readlink(f"{volume}/link") == "target"
    assert os.readlink(nfs_server.export_dir / volume / "link") == "target"
    client.chmod(f"{volume}/target", 0o640)
    assert (nfs_server.export_dir / volume / "target").stat().st_mode & 0o777 == 0o640
    with pytest.raises(nfs_rs.NfsNotFoundError):
        client.stat(f"{volume}/missing")
    client.mkdir(f"{volume}/full")
    client.touch(f"{volume}/full/x")
    with pytest.raises(nfs_rs.NfsError):
        client.rmdir(f"{volume}/full")  # not empty


@needs_libnfs
def test_libnfs_utils_copy_list_and_cat(nfs_server: RunningNfsServer, volume: str, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    # libnfs-utils' nfs-cp over NFSv4 fails on Ganesha 4.3 for files of 4 KiB and more ("Failed to write to
    # dest file"; nfs-rs writes them fine): keep the v4 upload small, the v3 one spans several WRITEs.
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3 if nfs_server.version == 3 else 1000))
    subprocess.run(["nfs-cp", str(source), libnfs_url(nfs_server, f"{volume}/upload.bin")],
                   check=True, capture_output=True, timeout=30)
    assert (nfs_server.export_dir / volume / "upload.bin").read_bytes() == source.read_bytes()
    listing = subprocess.run(["nfs-ls", libnfs_url(nfs_server, volume)], check=True, capture_output=True,
                             text=True, timeout=30).stdout
    assert "upload.bin" in listing
    cat = subprocess.run(["nfs-cat", libnfs_url(nfs_server, f"{volume}/upload.bin")], check=True,
                         capture_output=True, timeout=30).stdout
    assert cat == source.read_bytes()


def test_restart_keeps_data_and_file_handles(nfs_server: RunningNfsServer, volume: str) -> None:
    with nfs_rs.Client.connect(client_url(nfs_server)) as c:
        c.mkdir(f"{volume}/kept")
        with c.open(f"{volume}/kept/data.txt", "wb") as f:
            f.write(b"written before the restart\n")
        entry = next(e for e in c.scandir(volume) if e.name == "kept")
    assert entry.fh is not None
    nfs_server.restart()
    with nfs_rs.Client.connect(client_url(nfs_server)) as c:
        with c.open(f"{volume}/kept/data.txt", "rb") as f:
            assert f.read() == b"written before the restart\n"
        # A handle issued by the previous server process still names the same directory.
        listed = [e.name for e in c.scandir(nfs_rs.DirectoryRef(f"{volume}/kept", fh=entry.fh))]
    assert listed == ["data.txt"]
