"""The FlexVolume driver meshlab~nfs/nfs: the exec protocol table (fake mounter), then the installed executable."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from meshlab.errors import MountError
from meshlab.mounting.mount import is_mounted, mount_support, unmount
from meshlab.mounting.nfsclient import NfsClient, NfsLocation
from meshlab.storage.flexvolume.driver import call
from meshlab.storage.flexvolume.install import install_driver, shim_text, uninstall_driver


class FakeMounter:
    """Records what the driver asked for; fails when told to."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    def mount(self, location: NfsLocation, subdir: str, target: Path, *, read_only: bool,
              options: Sequence[str]) -> str:
        self.calls.append(("mount", location, subdir, str(target), read_only, tuple(options)))
        if self.fail:
            raise MountError(self.fail)
        return "fuse"

    def unmount(self, target: Path) -> None:
        self.calls.append(("unmount", str(target)))


GOOD = {"server": "10.0.0.5", "share": "/export", "subDir": "team-a", "kubernetes.io/readwrite": "rw",
        "kubernetes.io/fsType": "", "kubernetes.io/pod.name": "web-0", "kubernetes.io/secret/token": "s3cret"}


@pytest.mark.parametrize(
    ("argv", "status", "exit_code", "message_part"),
    [
        pytest.param(["init"], "Success", 0, "", id="init"),
        pytest.param(["attach", "{}", "node-1"], "Not supported", 1, "'attach'", id="attach not supported"),
        pytest.param(["getvolumename", "{}"], "Not supported", 1, "getvolumename", id="getvolumename"),
        pytest.param(["frobnicate"], "Not supported", 1, "not a FlexVolume command", id="unknown command"),
        pytest.param([], "Failure", 1, "no command given", id="no command"),
        pytest.param(["mount", "/mnt/v"], "Failure", 1, "mount takes 2 arguments", id="mount without json"),
        pytest.param(["mount", "/mnt/v", '{"server": '], "Failure", 1,
                     "not valid JSON: Expecting value at line 1 column 12", id="[Error] malformed JSON"),
        pytest.param(["mount", "/mnt/v", '["10.0.0.5"]'], "Failure", 1, "must be a JSON object, not list",
                     id="[Error] JSON array"),
        pytest.param(["mount", "/mnt/v", '{"server": "10.0.0.5"}'], "Failure", 1,
                     "missing required option(s): share", id="[Error] missing share"),
        pytest.param(["mount", "/mnt/v", '{"server": "a", "share": "/e", "sever": "b"}'], "Failure", 1,
                     "unknown option(s) 'sever' (known: server, share, subDir", id="[Error] unknown option"),
        pytest.param(["mount", "/mnt/v", '{"server": "a", "share": "/e", "subDir": "../x"}'], "Failure", 1,
                     "must stay inside the share", id="[Error] subDir escapes"),
        pytest.param(["mount", "/mnt/v", '{"server": "a", "share": "/e", "port": "nfs"}'], "Failure", 1,
                     "'port' must be a number, not 'nfs'", id="[Error] bad port"),
        pytest.param(["mount", "/mnt/v", '{"server": "a", "share": "/e", "version": "2"}'], "Failure", 1,
                     "version 2 is not supported", id="[Error] NFSv2"),
        pytest.param(["mount", "/mnt/v", '{"server": "a", "share": "/e", "kubernetes.io/fsType": "ext4"}'],
                     "Failure", 1, "fsType 'ext4' is not NFS", id="[Error] ext4"),
        pytest.param(["unmount"], "Failure", 1, "unmount takes 1 argument", id="unmount without dir"),
        pytest.param(["unmount", "/mnt/v"], "Success", 0, "unmounted /mnt/v", id="unmount"),
    ],
)
def test_protocol(argv: list[str], status: str, exit_code: int, message_part: str) -> None:
    reply = call(argv, FakeMounter())
    body = json.loads(reply.json())
    assert (body["status"], reply.exit_code) == (status, exit_code)
    assert message_part in body.get("message", "")


def test_init_answers_exactly_attach_false() -> None:
    assert json.loads(call(["init"], FakeMounter()).json()) == {"status": "Success", "capabilities": {"attach": False}}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(GOOD, (NfsLocation("10.0.0.5", "/export"), "team-a", False, ()), id="kubelet keys ignored"),
        pytest.param({**GOOD, "kubernetes.io/readwrite": "ro"}, (NfsLocation("10.0.0.5", "/export"), "team-a",
                                                                True, ()), id="readwrite ro"),
        pytest.param({"server": "nfs", "share": "export/", "port": "12049", "version": "4",
                      "mountOptions": "hard, nfsvers=4.1"},
                     (NfsLocation("nfs", "/export", 12049, 4), "", False, ("hard", "nfsvers=4.1")),
                     id="lab port and version, mountOptions"),
    ],
)
def test_mount_passes_the_request_on(options: dict[str, str], expected: tuple[Any, ...]) -> None:
    mounter = FakeMounter()
    reply = call(["mount", "/pods/u/volumes/meshlab~nfs/v", json.dumps(options)], mounter)
    assert reply.status == "Success", reply.message
    assert mounter.calls == [("mount", expected[0], expected[1], "/pods/u/volumes/meshlab~nfs/v", expected[2],
                              expected[3])]


def test_mount_failure_quotes_the_mounter() -> None:
    reply = call(["mount", "/mnt/v", json.dumps(GOOD)], FakeMounter(fail="FUSE is not available: /dev/fuse missing"))
    assert (reply.status, reply.exit_code) == ("Failure", 1)
    assert "10.0.0.5:/export/team-a" in reply.message and "/dev/fuse missing" in reply.message


def test_install_writes_an_executable_shim(tmp_path: Path) -> None:
    path = install_driver(tmp_path, python="/opt/py 3/bin/python")
    assert path == tmp_path / "meshlab~nfs" / "nfs"
    assert path.stat().st_mode & 0o777 == 0o755
    assert path.read_text() == shim_text("/opt/py 3/bin/python")
    assert "exec '/opt/py 3/bin/python' -m meshlab.cli flexvolume \"$@\"" in path.read_text()
    assert install_driver(tmp_path, python="/opt/py 3/bin/python") == path  # idempotent
    uninstall_driver(tmp_path)
    uninstall_driver(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _run(driver: Path, *args: str) -> tuple[dict[str, Any], int]:
    done = subprocess.run([str(driver), *args], capture_output=True, text=True, timeout=60, check=False)
    return json.loads(done.stdout), done.returncode


@pytest.mark.slow
@pytest.mark.skipif(mount_support() is not None, reason=f"no NFS mount here: {mount_support()}")
def test_installed_driver_mounts_the_export(nfs_server: Any, tmp_path: Path) -> None:
    with NfsClient(nfs_server.location) as nfs:
        nfs.makedirs("volumes/flex")
    driver = install_driver(tmp_path / "exec")
    target = tmp_path / "pod" / "volumes" / "meshlab~nfs" / "data"
    options = {"server": nfs_server.location.server, "share": nfs_server.location.export, "subDir": "volumes/flex",
               "port": str(nfs_server.location.port), "version": str(nfs_server.location.version),
               "kubernetes.io/readwrite": "rw"}
    try:
        assert _run(driver, "init") == ({"status": "Success", "capabilities": {"attach": False}}, 0)
        body, code = _run(driver, "mount", str(target), json.dumps(options))
        assert (body["status"], code) == ("Success", 0), body
        assert _run(driver, "mount", str(target), json.dumps(options))[1] == 0  # idempotent
        (target / "via-flex.txt").write_text("through the driver's mount")
        assert (nfs_server.export_dir / "volumes/flex/via-flex.txt").read_text() == "through the driver's mount"
        assert _run(driver, "unmount", str(target)) == ({"status": "Success", "message": f"unmounted {target}"}, 0)
        assert not is_mounted(target)
        assert _run(driver, "unmount", str(target))[1] == 0
    finally:
        unmount(target)
