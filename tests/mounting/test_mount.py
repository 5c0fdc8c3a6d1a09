"""mount_nfs through a real mount point: plain open() on one side, the NFS export's directory on the other."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlab.errors import MountError
from meshlab.mounting.mount import (
    _apply_options,
    is_mounted,
    kernel_mount_argv,
    mount_nfs,
    mount_source,
    mount_support,
    mounts_under,
    unmount,
    unmount_all,
)
from meshlab.mounting.nfsclient import NfsClient, NfsLocation

pytestmark = pytest.mark.skipif(mount_support() is not None, reason=f"no NFS mount here: {mount_support()}")


@pytest.fixture()
def volume(nfs_server: Any) -> Iterator[str]:
    """A fresh directory ``volumes/vol`` on the export (Ganesha cannot list the export root itself)."""
    with NfsClient(nfs_server.location) as nfs:
        nfs.rmtree("volumes/vol")
        nfs.makedirs("volumes/vol")
    yield "volumes/vol"


@pytest.fixture()
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points to clean up even when a test fails."""
    made: list[Path] = []
    yield made
    for target in made:
        unmount(target)


def test_plain_file_io_reaches_the_export_and_other_clients(nfs_server: Any, volume: str, tmp_path: Path,
                                                            mounts: list[Path]) -> None:
    target = tmp_path / "mnt"
    mounts.append(target)
    assert mount_nfs(nfs_server.location, volume, target) == "fuse"
    assert is_mounted(target)
    assert mount_source(target) == f"{nfs_server.location.server}:/export/{volume}"

    (target / "logs").mkdir()
    with open(target / "logs" / "app.log", "w") as out:
        out.write("line 1\n")
    with open(target / "logs" / "app.log", "a") as out:
        out.write("line 2\n")
    os.chmod(target / "logs" / "app.log", 0o640)

    on_disk = nfs_server.export_dir / volume / "logs" / "app.log"
    assert on_disk.read_text() == "line 1\nline 2\n"
    assert on_disk.stat().st_mode & 0o777 == 0o640
    if shutil.which("nfs-cat"):  # libnfs: a client that shares no code with the mount's nfs-rs
        base, _, query = nfs_server.url.partition("?")
        read = subprocess.run(["nfs-cat", f"{base}/{volume}/logs/app.log?{query}"], capture_output=True,
                              timeout=30, check=True)
        assert read.stdout == b"line 1\nline 2\n"
    with NfsClient(nfs_server.location) as other:
        assert other.read_file(f"{volume}/logs/app.log") == b"line 1\nline 2\n"
        other.write_file(f"{volume}/from-other-client", b"written elsewhere")
    assert (target / "from-other-client").read_bytes() == b"written elsewhere"
    assert sorted(os.listdir(target)) == ["from-other-client", "logs"]

    os.rename(target / "logs" / "app.log", target / "logs" / "old.log")
    os.truncate(target / "logs" / "old.log", 4)
    assert (nfs_server.export_dir / volume / "logs" / "old.log").read_text() == "line"
    os.unlink(target / "logs" / "old.log")
    os.rmdir(target / "logs")
    assert os.listdir(nfs_server.export_dir / volume) == ["from-other-client"]


def test_two_mounts_of_one_export_see_each_others_writes(nfs_server: Any, volume: str, tmp_path: Path,
                                                         mounts: list[Path]) -> None:
    writer, reader = tmp_path / "writer", tmp_path / "reader"
    mounts += [writer, reader]
    mount_nfs(nfs_server.location, volume, writer)
    mount_nfs(nfs_server.location, volume, reader, read_only=True)
    (writer / "shared.txt").write_text("first")
    assert (reader / "shared.txt").read_text() == "first"
    (writer / "shared.txt").write_text("second, longer")
    assert (reader / "shared.txt").read_text() == "second, longer"


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(lambda t: (t / "new").write_text("x"), id="create a file"),
        pytest.param(lambda t: (t / "dir").mkdir(), id="mkdir"),
        pytest.param(lambda t: open(t / "existing", "r+b"), id="open for writing"),
        pytest.param(lambda t: (t / "existing").unlink(), id="unlink"),
    ],
)
def test_read_only_mount_refuses_writes(nfs_server: Any, volume: str, tmp_path: Path, mounts: list[Path],
                                        attempt: Any) -> None:
    (nfs_server.export_dir / volume / "existing").write_text("keep me")
    target = tmp_path / "ro"
    mounts.append(target)
    mount_nfs(nfs_server.location, volume, target, read_only=True)
    assert (target / "existing").read_text() == "keep me"
    with pytest.raises(OSError) as caught:
        attempt(target)
    assert caught.value.errno == errno.EROFS
    assert (nfs_server.export_dir / volume / "existing").read_text() == "keep me"


def test_mount_and_unmount_are_idempotent(nfs_server: Any, volume: str, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    assert mount_nfs(nfs_server.location, volume, target) == "fuse"
    assert mount_nfs(nfs_server.location, volume, target) == "fuse"
    unmount(target)
    assert not is_mounted(target)
    unmount(target)
    unmount(tmp_path / "never-mounted")
    assert not list(tmp_path.glob(".mnt.mount-nfs.pid"))


def test_a_mount_whose_daemon_died_is_replaced(nfs_server: Any, volume: str, tmp_path: Path,
                                               mounts: list[Path]) -> None:
    target = tmp_path / "mnt"
    mounts.append(target)
    mount_nfs(nfs_server.location, volume, target)
    pid = int((tmp_path / ".mnt.mount-nfs.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}/cmdline").read_bytes():
        time.sleep(0.05)
    mount_nfs(nfs_server.location, volume, target)
    (target / "alive").write_text("yes")
    assert (nfs_server.export_dir / volume / "alive").read_text() == "yes"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(lambda loc, vol: (NfsLocation(loc.server, loc.export, port=1, version=loc.version), vol),
                     "NFS_UNREACHABLE", id="server unreachable"),
        pytest.param(lambda loc, vol: (loc, "volumes/missing"), "volumes/missing is not a directory",
                     id="missing subdirectory"),
    ],
)
def test_failed_mount_quotes_the_daemon(nfs_server: Any, volume: str, tmp_path: Path, change: Any,
                                        expected: str) -> None:
    location, subdir = change(nfs_server.location, volume)
    with pytest.raises(MountError, match=expected):
        mount_nfs(location, subdir, tmp_path / "mnt")
    assert not is_mounted(tmp_path / "mnt")


def test_another_mount_at_the_target_is_refused(nfs_server: Any, volume: str, tmp_path: Path,
                                                mounts: list[Path]) -> None:
    with NfsClient(nfs_server.location) as nfs:
        nfs.makedirs("volumes/other")
    target = tmp_path / "mnt"
    mounts.append(target)
    mount_nfs(nfs_server.location, volume, target)
    with pytest.raises(MountError, match=r"already has .*volumes/vol mounted"):
        mount_nfs(nfs_server.location, "volumes/other", target)


def test_missing_fusermount_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no fusermount3, no mount.nfs
    monkeypatch.setenv("MESHLAB_NFS_MOUNTER", "fuse")
    reason = mount_support()
    assert reason is not None and "fusermount3 missing" in reason and "apt-get install fuse3" in reason
    with pytest.raises(MountError, match="apt-get install fuse3"):
        mount_nfs(NfsLocation("127.0.0.1", "/export"), "", tmp_path / "mnt")
    assert not (tmp_path / "mnt").exists()  # nothing stands in for the volume


@pytest.mark.parametrize(
    ("options", "version", "port", "read_only", "rest"),
    [
        pytest.param([], 3, 2049, False, [], id="none"),
        pytest.param(["nfsvers=4.1"], 4, 2049, False, [], id="nfsvers=4.1"),
        pytest.param(["vers=3,port=12049", "ro"], 3, 12049, True, [], id="vers, port and ro"),
        pytest.param(["hard", "timeo=600"], 3, 2049, False, ["hard", "timeo=600"], id="others passed on"),
    ],
)
def test_mount_options(options: list[str], version: int, port: int, read_only: bool, rest: list[str]) -> None:
    location, ro, extra = _apply_options(NfsLocation("10.0.0.1", "/export"), False, options)
    assert (location.version, location.port, ro, extra) == (version, port, read_only, rest)


@pytest.mark.parametrize("option", ["vers=2", "port=high"])
def test_bad_mount_options(option: str) -> None:
    with pytest.raises(MountError, match=option):
        _apply_options(NfsLocation("10.0.0.1", "/export"), False, [option])


@pytest.mark.parametrize(
    ("location", "subdir", "read_only", "options", "expected"),
    [
        pytest.param(NfsLocation("10.0.0.5", "/srv/nfs"), "pvc-1", False, (),
                     "-o vers=3,port=2049,rw 10.0.0.5:/srv/nfs/pvc-1", id="v3 on 2049"),
        pytest.param(NfsLocation("127.0.0.7", "/export", 12049, 3), "", True, ["hard"],
                     "-o vers=3,port=12049,ro,mountport=12049,nolock,hard 127.0.0.7:/export",
                     id="meshlab's v3 server on a high port"),
        pytest.param(NfsLocation("nfs.example.com", "/"), "a/b", False, ["nfsvers=4.1", "timeo=600"],
                     "-o vers=4,port=2049,rw,timeo=600 nfs.example.com:/a/b", id="nfsvers=4.1 from the PV"),
    ],
)
def test_kernel_mount_command(location: NfsLocation, subdir: str, read_only: bool, options: list[str],
                              expected: str) -> None:
    argv = kernel_mount_argv(location, subdir, Path("/var/lib/kubelet/pods/u/volumes/kubernetes.io~nfs/v"),
                             read_only=read_only, options=options)
    assert " ".join(argv) == f"mount -t nfs {expected} /var/lib/kubelet/pods/u/volumes/kubernetes.io~nfs/v"


@pytest.mark.slow
def test_a_mount_survives_a_server_restart(nfs_server: Any, volume: str, tmp_path: Path,
                                           mounts: list[Path]) -> None:
    target = tmp_path / "mnt"
    mounts.append(target)
    mount_nfs(nfs_server.location, volume, target)
    (target / "before.txt").write_text("written before the outage")
    with open(target / "open.txt", "w") as still_open:
        still_open.write("first ")
        still_open.flush()
        nfs_server.restart()
        still_open.write("second")
    (target / "after.txt").write_text("written after")
    assert (target / "before.txt").read_text() == "written before the outage"
    assert (nfs_server.export_dir / volume / "open.txt").read_text() == "first second"
    assert (nfs_server.export_dir / volume / "after.txt").read_text() == "written after"


def test_unmount_all_before_deleting_a_pod_directory(nfs_server: Any, volume: str, tmp_path: Path) -> None:
    pod_dir = tmp_path / "pods" / "uid-1"
    first, second = pod_dir / "volumes" / "kubernetes.io~nfs" / "a", pod_dir / "volumes" / "meshlab~nfs" / "b"
    mount_nfs(nfs_server.location, volume, first)
    mount_nfs(nfs_server.location, volume, second, read_only=True)
    (first / "keep.txt").write_text("must survive the pod directory's removal")
    assert sorted(mounts_under(pod_dir)) == sorted([first, second])
    assert sorted(unmount_all(pod_dir)) == sorted([first, second])
    assert mounts_under(pod_dir) == [] and not is_mounted(first)
    shutil.rmtree(pod_dir)
    assert (nfs_server.export_dir / volume / "keep.txt").read_text() == "must survive the pod directory's removal"


def test_a_fuse_mount_ends_with_the_process_that_made_it(nfs_server: Any, volume: str, tmp_path: Path,
                                                        mounts: list[Path]) -> None:
    """Stopping the lab or a CSI node plugin must not leave FUSE daemons (and their mounts) behind."""
    target = tmp_path / "owned"
    mounts.append(target)
    location = nfs_server.location
    script = ("import sys\nfrom pathlib import Path\nfrom meshlab.mounting.mount import mount_nfs\n"
              "from meshlab.mounting.nfsclient import NfsLocation\n"
              f"print(mount_nfs(NfsLocation({location.server!r}, {location.export!r}, {location.port}, "
              f"{location.version}), {volume!r}, Path({str(target)!r})))\n")
    owner = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert owner.stdout.strip() == "fuse"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (is_mounted(target) or _daemons_for(target)):
        time.sleep(0.1)
    assert not is_mounted(target) and not _daemons_for(target)
    assert "has ended: unmounting" in (target.parent / f".{target.name}.mount-nfs.log").read_text()


def _daemons_for(target: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(target).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found
