"""The kubelet's nfs, flexVolume and persistentVolumeClaim plugins, through a VolumeManager and a real server.

Objects go through the lab's RestStorage; volumes are mounted for real (FUSE here, the kernel on real nodes)
from the ``nfs_server`` fixture (meshlab's NFSv3 server and, as root, NFS-Ganesha v4); what a user would
look at is checked: files on the export, EROFS, the FailedMount messages, the driver's JSON options.
"""

from __future__ import annotations

import base64
import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlab.cluster.kubelet.volume_plugins.flexvolume import FlexVolumePlugin, installed_drivers, plugin_dir
from meshlab.cluster.kubelet.volume_plugins.nfs import NfsPlugin, parse_server
from meshlab.cluster.kubelet.volume_plugins.pvc import PersistentVolumeClaimPlugin, pv_volume
from meshlab.mounting.mount import is_mounted, mount_support
from meshlab.mounting.nfsclient import NfsClient
from meshlab.storage.flexvolume.install import install_driver
from tests.cluster.kubelet.volume_lab import Api, Env, new_env, no_token, open_api
from tests.storage.conftest import nfs_server

__all__ = ["nfs_server"]

needs_mount = pytest.mark.skipif(mount_support() is not None, reason=f"no NFS mount here: {mount_support()}")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from open_api(tmp_path_factory)


@pytest.fixture()
def env(api: Api) -> Iterator[Env]:
    e = new_env(api)
    e.manager.register(NfsPlugin())
    e.manager.register(FlexVolumePlugin())
    e.manager.register(PersistentVolumeClaimPlugin())
    yield e


@pytest.fixture()
def share(nfs_server: Any) -> str:
    """A fresh directory ``volumes/share`` on the export; returns its path as an nfs volume names it."""
    with NfsClient(nfs_server.location) as nfs:
        nfs.rmtree("volumes/share")
        nfs.makedirs("volumes/share")
    return f"{nfs_server.location.export}/volumes/share"


def server_of(nfs_server: Any) -> str:
    return f"{nfs_server.location.server}:{nfs_server.location.port}"


def torn_down(env: Env, pod: dict[str, Any], paths: dict[str, Path]) -> None:
    env.run(env.manager.teardown(pod, env.pod_dir))
    assert not any(is_mounted(p) for p in paths.values())
    assert not (env.pod_dir / "volumes").exists()


# -- nfs -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("server", "expected"),
    [("10.0.0.5", ("10.0.0.5", 2049)), ("10.0.0.5:12049", ("10.0.0.5", 12049)),
     ("nfs.example.com:2050", ("nfs.example.com", 2050)), ("[::1]:12049", ("::1", 12049)), ("[::1]", ("::1", 2049)),
     ("fe80::1", ("fe80::1", 2049))],
    ids=lambda value: str(value),
)
def test_parse_server(server: str, expected: tuple[str, int]) -> None:
    assert parse_server(server) == expected


@needs_mount
def test_nfs_volume_is_a_real_mount_of_the_export(env: Env, nfs_server: Any, share: str) -> None:
    pod = env.pod([{"name": "data", "nfs": {"server": server_of(nfs_server), "path": share}}], **no_token())
    paths = env.setup(pod)
    assert paths["data"] == env.pod_dir / "volumes" / "kubernetes.io~nfs" / "data"
    assert is_mounted(paths["data"])
    assert env.setup(pod) == paths  # idempotent: the kubelet calls it again on restarts
    (paths["data"] / "hello.txt").write_text("from a pod")
    assert (nfs_server.export_dir / "volumes/share/hello.txt").read_text() == "from a pod"
    reasons = [e["reason"] for e in env.events()]
    assert "MountedThroughFUSE" in reasons
    torn_down(env, pod, paths)
    assert (nfs_server.export_dir / "volumes/share/hello.txt").read_text() == "from a pod"  # data stays


@needs_mount
def test_read_only_nfs_volume(env: Env, nfs_server: Any, share: str) -> None:
    pod = env.pod([{"name": "data", "nfs": {"server": server_of(nfs_server), "path": share, "readOnly": True}}],
                  **no_token())
    paths = env.setup(pod)
    assert [m.read_only for m in env.manager.mounts_for(pod, pod["spec"]["containers"][0], paths)] == [True]
    with pytest.raises(OSError) as caught:
        (paths["data"] / "x").write_text("nope")
    assert caught.value.errno == errno.EROFS
    torn_down(env, pod, paths)


@needs_mount
@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param({"server": "127.0.0.1:1", "path": "/export"}, "mount failed: NFS_UNREACHABLE",
                     id="server unreachable"),
        pytest.param({"server": "{server}", "path": "/export/volumes/missing"}, "NOENT",
                     id="missing path"),
        pytest.param({"server": "10.0.0.5:nfs", "path": "/export"}, "'nfs' is not a TCP port", id="bad port"),
        pytest.param({"server": "10.0.0.5", "path": "export"}, "must be absolute", id="relative path"),
    ],
)
def test_nfs_failures_are_failed_mount(env: Env, nfs_server: Any, source: dict[str, str], message: str) -> None:
    source = {k: v.format(server=server_of(nfs_server)) for k, v in source.items()}
    pod = env.pod([{"name": "data", "nfs": source}], **no_token())
    failure = env.failure(pod)
    assert failure.reason == "FailedMount"
    assert failure.message.startswith('MountVolume.SetUp failed for volume "data" : ')
    assert message in failure.message
    assert not is_mounted(env.pod_dir / "volumes" / "kubernetes.io~nfs" / "data")


def test_no_way_to_mount_says_what_to_install(env: Env, nfs_server: Any, share: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no fusermount3 (and this kernel has no NFS client either)
    monkeypatch.setenv("MESHLAB_NFS_MOUNTER", "fuse")
    pod = env.pod([{"name": "data", "nfs": {"server": server_of(nfs_server), "path": share}}], **no_token())
    failure = env.failure(pod)
    assert failure.reason == "FailedMount"
    assert "fusermount3 missing; install fuse3 (apt-get install fuse3)" in failure.message
    assert not (env.pod_dir / "volumes" / "kubernetes.io~nfs" / "data").exists()  # no local stand-in


# -- flexVolume ----------------------------------------------------------------------------------------------

RECORDER = """#!/bin/sh
# A FlexVolume driver for tests: records each call, answers what {answers} says per command.
echo "$@" >> "{log}"
case "$1" in
  init) echo '{{"status": "Success", "capabilities": {{"attach": false}}}}' ;;
  mount) printf '%s' "$3" > "{log}.options"; {mount} ;;
  unmount) echo '{{"status": "Success"}}' ;;
  *) echo '{{"status": "Not supported"}}'; exit 1 ;;
esac
"""


def recorder(env: Env, mount: str = "echo '{\"status\": \"Success\"}'", driver: str = "acme~rec/rec") -> Path:
    log = env.pod_dir.parent / f"{env.namespace}-{driver.replace('/', '-')}.log"
    path = plugin_dir(env.api.lab_dir) / driver
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.format(log=log, mount=mount, answers="the case below"))
    path.chmod(0o755)
    return log


def test_flexvolume_options_as_the_kubelet_passes_them(env: Env) -> None:
    log = recorder(env)
    env.create("secrets", {"metadata": {"name": "flex-creds"}, "type": "acme/rec",
                           "data": {"password": base64.b64encode(b"s3cret").decode()}})
    pod = env.pod([{"name": "data", "flexVolume": {"driver": "acme/rec", "readOnly": True, "secretRef": {
        "name": "flex-creds"}, "options": {"server": "10.0.0.5", "share": "/export"}}}],
        **no_token(securityContext={"fsGroup": 2000}, serviceAccountName="default"))
    paths = env.setup(pod)
    target = env.pod_dir / "volumes" / "acme~rec" / "data"
    assert paths["data"] == target
    options = json.loads(Path(f"{log}.options").read_text())
    meta = pod["metadata"]
    assert options == {
        "server": "10.0.0.5", "share": "/export", "kubernetes.io/fsType": "", "kubernetes.io/readwrite": "ro",
        "kubernetes.io/pvOrVolumeName": "data", "kubernetes.io/pod.name": meta["name"],
        "kubernetes.io/pod.namespace": env.namespace, "kubernetes.io/pod.uid": meta["uid"],
        "kubernetes.io/serviceAccount.name": "default", "kubernetes.io/mounterArgs.FsGroup": "2000",
        "kubernetes.io/secret/password": base64.b64encode(b"s3cret").decode()}
    env.setup(pod)  # init is called once per driver, mount on every setup (idempotent by contract)
    env.run(env.manager.teardown(pod, env.pod_dir))
    calls = [line.split()[0] for line in log.read_text().splitlines()]
    assert calls == ["init", "mount", "mount", "unmount"]


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        pytest.param("echo '{\"status\": \"Failure\", \"message\": \"share is gone\"}'; exit 1",
                     "mount command failed, status: Failure, reason: share is gone", id="Failure"),
        pytest.param("echo 'mounting...'; echo '{\"status\": \"Success\"}'",
                     "failed to unmarshal output for command: mount", id="chatty driver"),
        pytest.param("echo '{\"status\": \"Success\"}'; exit 3", "driver bug: mount: exit status 3", id="exit 3"),
        pytest.param("echo '{\"status\": \"Not supported\"}'; exit 1", "mount command is not supported",
                     id="Not supported"),
    ],
)
def test_flexvolume_driver_answers(env: Env, mount: str, message: str) -> None:
    recorder(env, mount=mount)
    pod = env.pod([{"name": "data", "flexVolume": {"driver": "acme/rec"}}], **no_token())
    failure = env.failure(pod)
    assert failure.reason == "FailedMount" and message in failure.message


def test_flexvolume_remembers_not_supported(env: Env) -> None:
    log = recorder(env, mount="echo '{\"status\": \"Not supported\"}'; exit 1", driver="acme~ns/ns")
    plugin = FlexVolumePlugin()
    env.manager.register(plugin)
    pod = env.pod([{"name": "data", "flexVolume": {"driver": "acme/ns"}}], **no_token())
    assert "not supported" in env.failure(pod).message
    assert "not supported by the driver (remembered)" in env.failure(pod).message
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["init", "mount"]


@pytest.mark.parametrize(
    ("volume", "secret", "message"),
    [
        pytest.param({"driver": "meshlab/absent"}, None, "no FlexVolume driver \"meshlab/absent\"",
                     id="driver not installed"),
        pytest.param({"driver": "nfs"}, None, 'must be "<vendor>/<driver>"', id="driver without vendor"),
        pytest.param({"driver": "acme/rec", "secretRef": {"name": "opaque"}}, {"type": "Opaque"},
                     "cannot get secret of type acme/rec (it is Opaque", id="secret of the wrong type"),
        pytest.param({"driver": "acme/rec", "secretRef": {"name": "missing"}}, None,
                     'secrets "missing" not found', id="missing secret"),
    ],
)
def test_flexvolume_failures(env: Env, volume: dict[str, Any], secret: dict[str, Any] | None, message: str) -> None:
    recorder(env)
    if secret is not None:
        env.create("secrets", {"metadata": {"name": "opaque"}, "data": {"k": "dg=="}, **secret})
    pod = env.pod([{"name": "data", "flexVolume": volume}], **no_token())
    failure = env.failure(pod)
    assert failure.reason == "FailedMount" and message in failure.message


@needs_mount
@pytest.mark.slow
def test_meshlab_flexvolume_driver_mounts_the_export(env: Env, nfs_server: Any, share: str) -> None:
    install_driver(plugin_dir(env.api.lab_dir))
    assert "meshlab/nfs" in installed_drivers(plugin_dir(env.api.lab_dir))
    loc = nfs_server.location
    pod = env.pod([{"name": "data", "flexVolume": {"driver": "meshlab/nfs", "options": {
        "server": loc.server, "share": loc.export, "subDir": "volumes/share", "port": str(loc.port),
        "version": str(loc.version)}}}], **no_token())
    paths = env.setup(pod)
    assert paths["data"] == env.pod_dir / "volumes" / "meshlab~nfs" / "data" and is_mounted(paths["data"])
    (paths["data"] / "flex.txt").write_text("through FlexVolume")
    assert (nfs_server.export_dir / "volumes/share/flex.txt").read_text() == "through FlexVolume"
    torn_down(env, pod, paths)


# -- persistentVolumeClaim -----------------------------------------------------------------------------------

def claim(env: Env, name: str, *, bound_to: str | None) -> dict[str, Any]:
    pvc = env.create("persistentvolumeclaims", {"metadata": {"name": name}, "spec": {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "",
        **({"volumeName": bound_to} if bound_to else {})}})
    if bound_to:
        rt = env.api.rest.registry.lookup("", "v1", "persistentvolumeclaims")
        assert rt is not None
        from meshlab.cluster.rest import WriteOptions
        status = {**pvc, "status": {"phase": "Bound"}}
        status["metadata"] = {k: v for k, v in pvc["metadata"].items() if k != "resourceVersion"}
        pvc = env.run(env.api.rest.update(rt, env.namespace, name, status, WriteOptions(), subresource="status"))
    return pvc


def volume(env: Env, name: str, source: dict[str, Any], pvc: dict[str, Any] | None, **spec: Any) -> None:
    env.create("persistentvolumes", {"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "", **source,
        **({"claimRef": {"namespace": env.namespace, "name": pvc["metadata"]["name"], "uid": pvc["metadata"]["uid"]}}
           if pvc else {}), **spec}})


@pytest.mark.parametrize(
    ("pv", "read_only", "expected"),
    [
        pytest.param({"spec": {"nfs": {"server": "a", "path": "/e"}, "mountOptions": ["hard"], "capacity": {}},
                      "metadata": {"name": "pv1"}}, False,
                     ("nfs", {"name": "pv1", "nfs": {"server": "a", "path": "/e", "readOnly": False},
                              "mountOptions": ["hard"]}), id="nfs with mountOptions"),
        pytest.param({"spec": {"csi": {"driver": "d", "volumeHandle": "h", "readOnly": True}},
                      "metadata": {"name": "pv2"}}, False,
                     ("csi", {"name": "pv2", "csi": {"driver": "d", "volumeHandle": "h", "readOnly": True},
                              "mountOptions": []}), id="csi, PV readOnly"),
        pytest.param({"spec": {"flexVolume": {"driver": "v/d"}}, "metadata": {"name": "pv3"}}, True,
                     ("flexVolume", {"name": "pv3", "flexVolume": {"driver": "v/d", "readOnly": True},
                                     "mountOptions": []}), id="flexVolume, claim readOnly"),
    ],
)
def test_pv_volume(pv: dict[str, Any], read_only: bool, expected: tuple[str, dict[str, Any]]) -> None:
    assert pv_volume(pv, read_only=read_only) == expected


def test_claim_must_exist_and_be_bound(env: Env) -> None:
    pod = env.pod([{"name": "data", "persistentVolumeClaim": {"claimName": "later"}}], **no_token())
    assert 'persistentvolumeclaim "later" not found' in env.failure(pod).message
    claim(env, "later", bound_to=None)
    failure = env.failure(pod)
    assert failure.reason == "FailedMount"
    assert f"PVC {env.namespace}/later is not bound (phase Pending)" in failure.message


def test_claim_bound_to_a_volume_of_another_claim(env: Env) -> None:
    pvc = claim(env, "mine", bound_to=f"{env.namespace}-theirs")
    volume(env, f"{env.namespace}-theirs", {"nfs": {"server": "10.0.0.5", "path": "/e"}}, None,
           claimRef={"namespace": env.namespace, "name": "other"})
    pod = env.pod([{"name": "data", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}], **no_token())
    assert "is not bound to PVC" in env.failure(pod).message


@needs_mount
def test_claim_of_an_nfs_pv_mounts_it_with_its_options(env: Env, nfs_server: Any, share: str) -> None:
    pv_name = f"{env.namespace}-nfs"
    pvc = claim(env, "data", bound_to=pv_name)
    volume(env, pv_name, {"nfs": {"server": server_of(nfs_server), "path": share, "readOnly": True},
                          "mountOptions": [f"nfsvers={nfs_server.location.version}", "hard"]}, pvc)
    pod = env.pod([{"name": "vol", "persistentVolumeClaim": {"claimName": "data"}}], **no_token())
    paths = env.setup(pod)
    assert paths["vol"] == env.pod_dir / "volumes" / "kubernetes.io~nfs" / pv_name  # the PV's name, as kubelet
    (nfs_server.export_dir / "volumes/share/seed.txt").write_text("seeded")
    assert (paths["vol"] / "seed.txt").read_text() == "seeded"
    with pytest.raises(OSError) as caught:
        (paths["vol"] / "x").write_text("the PV says readOnly")
    assert caught.value.errno == errno.EROFS
    # teardown needs neither the claim nor the volume any more
    rt = env.api.rest.registry.lookup("", "v1", "persistentvolumes")
    assert rt is not None
    from meshlab.cluster.rest import WriteOptions
    env.run(env.api.rest.delete(rt, "", pv_name, {}, WriteOptions()))
    torn_down(env, pod, paths)


def test_claim_of_a_flexvolume_pv_reaches_the_driver(env: Env) -> None:
    log = recorder(env)
    pv_name = f"{env.namespace}-flex"
    pvc = claim(env, "flex", bound_to=pv_name)
    volume(env, pv_name, {"flexVolume": {"driver": "acme/rec", "options": {"share": "/export"}}}, pvc)
    pod = env.pod([{"name": "vol", "persistentVolumeClaim": {"claimName": "flex", "readOnly": True}}], **no_token())
    paths = env.setup(pod)
    assert paths["vol"] == env.pod_dir / "volumes" / "acme~rec" / pv_name
    options = json.loads(Path(f"{log}.options").read_text())
    assert (options["share"], options["kubernetes.io/pvOrVolumeName"], options["kubernetes.io/readwrite"]) == (
        "/export", pv_name, "ro")
    env.run(env.manager.teardown(pod, env.pod_dir))
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["init", "mount", "unmount"]
