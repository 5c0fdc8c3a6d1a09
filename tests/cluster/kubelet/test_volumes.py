"""The kubelet's volumes: what a pod's containers find in their volumes, set up against a real RestStorage.

Objects are created through the lab's own RestStorage (validation and defaulting included), volumes are set
up on disk under a temporary lab directory, and what a user would look at is checked: file contents, modes
and symlinks, the events' messages. Tokens and the downward API are in ``test_volume_tokens.py``.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError
from meshlab.cluster.kubelet.volume_plugins import atomic_writer as writer
from meshlab.cluster.kubelet.volume_plugins.atomic_writer import FileProjection
from meshlab.cluster.kubelet.volume_plugins.local import HostPathPlugin
from meshlab.cluster.kubelet.volumes import Mount, VolumeManager
from tests.cluster.kubelet.volume_lab import CONFIG, SECRET, Api, Env, new_env, no_token, open_api, user_files


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from open_api(tmp_path_factory)


@pytest.fixture()
def env(api: Api) -> Env:
    return new_env(api)


# -- hostPath ------------------------------------------------------------------------------------------------

HOST_PATH_CASES = [
    # (id, path under {lab}/{outside}, type, prepare, expected error or None, check)
    ("DirectoryOrCreate makes a 0755 directory", "{lab}/hp/new", "DirectoryOrCreate", None, None, "dir755"),
    ("no type, missing: a directory, as containerd does", "{lab}/hp/plain", "", None, None, "dir755"),
    ("Directory that is missing", "{lab}/hp/missing", "Directory", None,
     "hostPath type check failed: {lab}/hp/missing is not a directory", None),
    ("File that is a directory", "{lab}/hp/adir", "File", "dir",
     "hostPath type check failed: {lab}/hp/adir is not a file", None),
    ("FileOrCreate makes an empty 0644 file", "{lab}/hp/new.txt", "FileOrCreate", None, None, "file644"),
    ("File that exists", "{lab}/hp/f.txt", "File", "file", None, "file"),
    ("Socket that is a socket", "{lab}/hp/s.sock", "Socket", "socket", None, "socket"),
    ("Socket that is a file", "{lab}/hp/f2.txt", "Socket", "file",
     "hostPath type check failed: {lab}/hp/f2.txt is not a socket", None),
    ("CharDevice that is a file", "{lab}/hp/f3.txt", "CharDevice", "file",
     "hostPath type check failed: {lab}/hp/f3.txt is not a character device", None),
    ("outside the lab is refused, with how to allow it", "{outside}/data", "DirectoryOrCreate", None,
     "is outside the lab directory {lab}: the embedded lab confines hostPath volumes to it. To allow it, start "
     "the lab with MESHLAB_ALLOWED_HOST_PATHS={outside}/data", "absent"),
    ("a symlink in the lab leading out is refused", "{lab}/hp/escape", "", "link-out",
     "(it resolves to {outside})", None),
    ("/etc is refused", "/etc", "Directory", None, "hostPath /etc is outside the lab directory", None),
]


@pytest.mark.parametrize(("path", "kind", "prepare", "error", "check"),
                         [c[1:] for c in HOST_PATH_CASES], ids=[c[0] for c in HOST_PATH_CASES])
def test_host_path(env: Env, tmp_path: Path, path: str, kind: str, prepare: str | None, error: str | None,
                   check: str | None) -> None:
    lab = os.path.realpath(env.api.lab_dir)
    outside = str(tmp_path / "outside")
    os.makedirs(outside, exist_ok=True)
    real = path.format(lab=lab, outside=outside)
    os.makedirs(f"{lab}/hp", exist_ok=True)
    sock = None
    if prepare == "dir":
        os.makedirs(real, exist_ok=True)
    elif prepare == "file":
        Path(real).write_text("hello")
    elif prepare == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(real)
    elif prepare == "link-out":
        os.symlink(outside, real)
    volume = {"name": "host", "hostPath": {"path": real, **({"type": kind} if kind else {})}}
    try:
        pod = env.pod([volume], **no_token())
        if error:
            failure = env.failure(pod)
            assert failure.reason == "FailedMount"
            assert failure.message.startswith('MountVolume.SetUp failed for volume "host" : ')
            assert error.format(lab=lab, outside=outside) in failure.message
            if check == "absent":
                assert not os.path.exists(real), "a refused hostPath must not be created"
            return
        host = env.setup(pod)["host"]
        assert str(host) == real
        mode = os.stat(real).st_mode
        if check == "dir755":
            assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o755
        elif check == "file644":
            assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o644 and os.path.getsize(real) == 0
        elif check == "file":
            assert Path(real).read_text() == "hello"
        else:
            assert stat.S_ISSOCK(mode)
        env.run(env.manager.teardown(pod, env.pod_dir))
        assert os.path.exists(real), "tearing down a hostPath volume must leave the host path alone"
    finally:
        if sock:
            sock.close()


def test_host_path_allowed_outside_the_lab(env: Env, tmp_path: Path) -> None:
    allowed = tmp_path / "shared"
    (allowed / "data").mkdir(parents=True)
    (allowed / "data" / "x").write_text("from the host")
    manager = VolumeManager(env.api.rest, env.api.signer, lab_dir=env.api.lab_dir, allowed_host_paths=[allowed])
    pod = env.pod([{"name": "host", "hostPath": {"path": str(allowed / "data"), "type": "Directory"}}],
                  **no_token())
    paths = env.run(manager.setup(pod, env.pod_dir))
    assert (paths["host"] / "x").read_text() == "from the host"


def test_unknown_host_path_type_is_a_failed_mount(env: Env) -> None:
    ctx = VolumeContext(env.api.rest, env.api.signer, {}, env.pod_dir, env.api.lab_dir)
    with pytest.raises(VolumeError, match="unknown type 'Bogus'"):
        env.run(HostPathPlugin().setup(ctx, {"name": "h", "hostPath": {"path": str(env.api.lab_dir),
                                                                        "type": "Bogus"}}))


# -- configMap and secret ------------------------------------------------------------------------------------

API_DATA_CASES = [
    ("configMap: every key, mode 0644",
     {"configMap": {"name": "settings"}},
     {"a.conf": (b"alpha", 0o644), "b.conf": (b"beta", 0o644), "blob": (b"\x00\x01", 0o644)}, None),
    ("configMap: items pick keys, paths and modes",
     {"configMap": {"name": "settings", "items": [{"key": "a.conf", "path": "etc/app.conf", "mode": 0o400}]}},
     {"etc/app.conf": (b"alpha", 0o400)}, None),
    ("configMap: defaultMode",
     {"configMap": {"name": "settings", "defaultMode": 0o600, "items": [{"key": "b.conf", "path": "b"}]}},
     {"b": (b"beta", 0o600)}, None),
    ("configMap missing", {"configMap": {"name": "nope"}}, None,
     'MountVolume.SetUp failed for volume "data" : configmap "nope" not found'),
    ("configMap missing but optional: empty", {"configMap": {"name": "nope", "optional": True}}, {}, None),
    ("configMap key missing", {"configMap": {"name": "settings", "items": [{"key": "zz", "path": "z"}]}}, None,
     "configmap references non-existent config key: zz"),
    ("configMap key missing but optional: skipped",
     {"configMap": {"name": "settings", "optional": True,
                    "items": [{"key": "zz", "path": "z"}, {"key": "a.conf", "path": "a"}]}},
     {"a": (b"alpha", 0o644)}, None),
    ("secret: decoded", {"secret": {"secretName": "creds"}},
     {"user": (b"admin", 0o644), "pass": (b"s3cret", 0o644)}, None),
    ("secret: items and defaultMode",
     {"secret": {"secretName": "creds", "defaultMode": 0o440, "items": [{"key": "pass", "path": "p/w"}]}},
     {"p/w": (b"s3cret", 0o440)}, None),
    ("secret missing", {"secret": {"secretName": "gone"}}, None,
     'MountVolume.SetUp failed for volume "data" : secret "gone" not found'),
    ("secret missing but optional", {"secret": {"secretName": "gone", "optional": True}}, {}, None),
    ("secret key missing", {"secret": {"secretName": "creds", "items": [{"key": "token", "path": "t"}]}}, None,
     "secret references non-existent secret key: token"),
]


@pytest.mark.parametrize(("source", "expected", "error"), [c[1:] for c in API_DATA_CASES],
                         ids=[c[0] for c in API_DATA_CASES])
def test_config_map_and_secret(env: Env, source: dict[str, Any], expected: dict[str, tuple[bytes, int]] | None,
                               error: str | None) -> None:
    env.create("configmaps", CONFIG)
    env.create("secrets", SECRET)
    pod = env.pod([{"name": "data", **source}], **no_token())
    if error:
        failure = env.failure(pod)
        assert (failure.reason, error in failure.message) == ("FailedMount", True), failure.message
        return
    root = env.setup(pod)["data"]
    assert user_files(root) == expected
    [mount] = env.manager.mounts_for(pod, pod["spec"]["containers"][0], {"data": root})
    assert mount == Mount(root, "/mnt/data", True), "API data volumes are always mounted read-only"


def test_config_map_update_is_atomic_and_visible(env: Env) -> None:
    cm = env.create("configmaps", {"metadata": {"name": "live"}, "data": {"keep": "1", "old": "x"}})
    pod = env.pod([{"name": "cfg", "configMap": {"name": "live"}}], **no_token())
    root = env.setup(pod)["cfg"]
    first = os.readlink(root / "..data")
    with open(root / "keep") as before:
        env.update("configmaps", {**cm, "data": {"keep": "2", "new": "y"}})
        env.run(env.manager.refresh(pod, env.pod_dir))
        assert before.read() == "1", "a file opened before the update keeps its old contents"
    assert user_files(root) == {"keep": (b"2", 0o644), "new": (b"y", 0o644)}
    assert os.readlink(root / "keep") == "..data/keep"
    second = os.readlink(root / "..data")
    assert second != first and (root / first).exists(), "the previous version stays until the next update"
    env.run(env.manager.refresh(pod, env.pod_dir))
    assert os.readlink(root / "..data") == second, "an unchanged object writes nothing"
    env.update("configmaps", {**cm, "data": {"keep": "3"}})
    env.run(env.manager.refresh(pod, env.pod_dir))
    assert user_files(root) == {"keep": (b"3", 0o644)}
    assert not (root / first).exists() and (root / second).exists(), "versions older than the previous one go"


def test_readers_never_see_a_partial_update(tmp_path: Path) -> None:
    payloads = [{"key": FileProjection(bytes([c]) * 65536, 0o644)} for c in b"ab"]
    writer.write(tmp_path, payloads[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add((tmp_path / "key").read_bytes())
            except FileNotFoundError:
                seen.add(b"<missing>")

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        writer.write(tmp_path, payloads[(i + 1) % 2])
    stop.set()
    reader.join()
    assert seen <= {p["key"].data for p in payloads}, "a reader saw a missing or half-written file"


@pytest.mark.parametrize(("path", "message"), [
    ("/abs", "must be relative"), ("a/../b", "must not contain '..'"), ("..hidden", "must not start with '..'"),
], ids=["absolute", "dot-dot element", "reserved .. prefix"])
def test_payload_paths_are_checked(tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(writer.PayloadError, match=message):
        writer.write(tmp_path, {path: FileProjection(b"x", 0o644)})


# -- mounts: subPath, readOnly ---------------------------------------------------------------------------------

MOUNT_CASES = [
    ("whole volume, writable", {}, "", False, None),
    ("readOnly", {"readOnly": True}, "", True, None),
    ("subPath directory is created", {"subPath": "logs/app"}, "logs/app", False, None),
    ("subPathExpr from the pod name", {"subPathExpr": "$(POD_NAME)/data"}, "{pod}/data", False, None),
    ("subPath with ..", {"subPath": "../other"}, "", False, "must be a relative path without"),
    ("subPath through a symlink out of the volume", {"subPath": "escape/etc"}, "", False, "resolves outside"),
]


@pytest.mark.parametrize(("mount", "sub", "read_only", "error"), [c[1:] for c in MOUNT_CASES],
                         ids=[c[0] for c in MOUNT_CASES])
def test_mounts_for(env: Env, mount: dict[str, Any], sub: str, read_only: bool, error: str | None) -> None:
    pod = env.pod([{"name": "scratch", "emptyDir": {}}], [{"name": "scratch", "mountPath": "/data", **mount}],
                  **no_token(container={"env": [{"name": "POD_NAME",
                                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}))
    paths = env.setup(pod)
    os.symlink("/", paths["scratch"] / "escape")
    container = pod["spec"]["containers"][0]
    if error:
        with pytest.raises(VolumeError, match=error) as info:
            env.manager.mounts_for(pod, container, paths)
        assert info.value.reason == "CreateContainerConfigError"
        return
    [m] = env.manager.mounts_for(pod, container, paths)
    source = paths["scratch"] / sub.format(pod=pod["metadata"]["name"]) if sub else paths["scratch"]
    assert m == Mount(source, "/data", read_only)
    assert source.is_dir()


def test_subpath_file_of_a_config_map(env: Env) -> None:
    env.create("configmaps", CONFIG)
    pod = env.pod([{"name": "cfg", "configMap": {"name": "settings"}}],
                  [{"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "a.conf"}], **no_token())
    paths = env.setup(pod)
    [m] = env.manager.mounts_for(pod, pod["spec"]["containers"][0], paths)
    assert (m.target, m.read_only, m.source.read_text()) == ("/etc/app.conf", True, "alpha")


# -- lifecycle, notes, and the extension point -----------------------------------------------------------------


def test_teardown_removes_pod_volumes_but_not_host_paths(env: Env) -> None:
    host = env.api.lab_dir / "shared"
    host.mkdir(exist_ok=True)
    env.create("configmaps", CONFIG)
    pod = env.pod([{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "settings"}},
                   {"name": "host", "hostPath": {"path": str(host)}}])
    paths = env.setup(pod)
    (paths["scratch"] / "file").write_text("x")
    # A restarted kubelet (a new manager) finds what to tear down in the pod directory.
    restarted = VolumeManager(env.api.rest, env.api.signer, lab_dir=env.api.lab_dir)
    env.run(restarted.teardown(pod, env.pod_dir))
    assert not (env.pod_dir / "volumes").exists() and not (env.pod_dir / "volumes.json").exists()
    assert host.is_dir()


def test_size_limit_and_memory_medium_are_reported(env: Env) -> None:
    pod = env.pod([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}], **no_token())
    path = env.setup(pod)["cache"]
    reasons = {e["reason"]: e["message"] for e in env.events()}
    assert "sizeLimit 64Mi is not enforced" in reasons["SizeLimitNotEnforced"]
    if os.access("/dev/shm", os.W_OK):
        assert path.is_relative_to("/dev/shm")
    else:
        assert "is a directory on disk" in reasons["MemoryMediumUnavailable"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o777
    env.run(env.manager.teardown(pod, env.pod_dir))
    assert not path.exists()


class FakeNfs:
    """A plugin as the storage issue will add them: it makes a directory of its own and records calls."""

    name = "nfs"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        path = ctx.volume_dir("kubernetes.io~nfs", volume["name"])
        path.mkdir(parents=True, exist_ok=True)
        self.calls.append(f"setup {volume['nfs']['server']}:{volume['nfs']['path']}")
        return path

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        self.calls.append(f"teardown {path.name}")


def test_registered_plugins_are_used_and_source_read_only_is_honoured(env: Env) -> None:
    volume = {"name": "share", "nfs": {"server": "127.0.0.1", "path": "/export", "readOnly": True}}
    pod = env.pod([volume], **no_token())
    failure = env.failure(pod)
    assert "the embedded lab has no volume plugin for nfs (it has: configMap, downwardAPI" in failure.message
    plugin = FakeNfs()
    env.manager.register(plugin)
    paths = env.setup(pod)
    [m] = env.manager.mounts_for(pod, pod["spec"]["containers"][0], paths)
    assert m.read_only, "a source's own readOnly makes the mount read-only"
    env.run(env.manager.teardown(pod, env.pod_dir))
    assert plugin.calls == ["setup 127.0.0.1:/export", "teardown share"]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs in the test process: needs root (CI runs as root)")
def test_teardown_keeps_a_volume_directory_that_is_still_mounted(env: Env) -> None:
    from meshlab.cluster.kubelet.launch import MNT_DETACH, _libc

    class StuckMount(FakeNfs):
        async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
            path = await super().setup(ctx, volume)
            assert _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", 0, None) == 0
            (path / "precious").write_text("on the server")
            return path

    env.manager.register(StuckMount())
    pod = env.pod([{"name": "share", "nfs": {"server": "s", "path": "/"}}], **no_token())
    path = env.setup(pod)["share"]
    try:
        with pytest.raises(VolumeError, match="is still mounted") as info:
            env.run(env.manager.teardown(pod, env.pod_dir))
        assert info.value.reason == "FailedUnmount"
        assert (path / "precious").read_text() == "on the server"
    finally:
        _libc().umount2(os.fsencode(path), MNT_DETACH)
