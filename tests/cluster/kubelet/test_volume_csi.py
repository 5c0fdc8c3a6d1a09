"""The kubelet's CSI side: plugin registration through plugins_registry (GetInfo, NodeGetInfo, CSINode,
NotifyRegistrationStatus, deregistration) and the ``csi`` volume plugin (inline ephemeral and PV volumes,
NodePublishVolume / NodeUnpublishVolume arguments, FailedMount quoting gRPC codes) against a fake driver served
over real unix sockets. Publishing needs a real mount point (the plugin refuses a publish that mounted nothing),
so the fake mounts a tmpfs: those tests need root."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Coroutine, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from meshlab.cluster.kubelet.pluginwatcher import PluginWatcher
from meshlab.cluster.kubelet.volume_plugins import VolumeError
from meshlab.cluster.kubelet.volume_plugins.csi import CsiPlugin, access_mode, ephemeral_handle
from meshlab.cluster.kubelet.volume_plugins.local import kubelet_path
from meshlab.cluster.kubelet.volume_plugins.pvc import pv_volume
from meshlab.cluster.rest import WriteOptions
from meshlab.csiproto import csi_pb2, csi_pb2_grpc, registration_pb2, registration_pb2_grpc
from tests.cluster.kubelet.volume_lab import Api, Env, new_env, no_token, open_api

T = TypeVar("T")
DRIVER = "fake.csi.meshlab.io"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="publishing needs a real mount point: the fake driver mounts a "
                                                  "tmpfs, which needs root")


@dataclass
class FakeDriver(csi_pb2_grpc.IdentityServicer, csi_pb2_grpc.NodeServicer):
    """A node plugin that records its calls; ``fail`` makes NodePublishVolume answer that code."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: grpc.StatusCode | None = None
    mount: bool = True
    busy: int = 0  # answer ABORTED (a concurrent operation holds the volume's lock) this many times first

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER, vendor_version="1")

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetInfoResponse(node_id="fake-node-1", max_volumes_per_node=7)

    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append(("publish", request))
        if self.busy:
            self.busy -= 1
            context.abort(grpc.StatusCode.ABORTED, "an operation on this volume is in progress")
        if self.fail is not None:
            context.abort(self.fail, "invalid parameter 'colour'")
        os.makedirs(request.target_path, exist_ok=True)
        if self.mount:
            subprocess.run(["mount", "-t", "tmpfs", "fake", request.target_path], check=True)
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append(("unpublish", request))
        if self.busy:
            self.busy -= 1
            context.abort(grpc.StatusCode.ABORTED, "an operation on this volume is in progress")
        if os.path.ismount(request.target_path):
            subprocess.run(["umount", request.target_path], check=True)
        if os.path.isdir(request.target_path):
            os.rmdir(request.target_path)
        return csi_pb2.NodeUnpublishVolumeResponse()


@dataclass
class Registrar(registration_pb2_grpc.RegistrationServicer):
    endpoint: str
    versions: tuple[str, ...] = ("1.0.0",)
    statuses: list[tuple[bool, str]] = field(default_factory=list)

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return registration_pb2.PluginInfo(type="CSIPlugin", name=DRIVER, endpoint=self.endpoint,
                                           supported_versions=list(self.versions))

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.statuses.append((request.plugin_registered, request.error))
        return registration_pb2.RegistrationStatusResponse()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from open_api(tmp_path_factory)


@pytest.fixture(scope="module")
def node(api: Api) -> dict[str, Any]:
    rt = api.rest.registry.lookup("", "v1", "nodes")
    assert rt is not None
    return asyncio.run(api.rest.create(rt, "", {"metadata": {"name": "lab-node"}}, WriteOptions()))


@dataclass
class Node:
    env: Env
    driver: FakeDriver
    registrar: Registrar
    csi: CsiPlugin
    watcher: PluginWatcher
    servers: list[grpc.Server]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` after a registration scan, in one event loop (the plugin's channels belong to it)."""
        async def scenario() -> T:
            await self.watcher.scan()
            try:
                return await coro
            finally:
                await self.csi.close()
        return asyncio.run(scenario())


def serve(servicer: Any, add: Any, path: Path) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add(servicer, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    return server


@pytest.fixture()
def lab_node(api: Api, node: dict[str, Any]) -> Iterator[Node]:
    env = new_env(api)
    root = api.lab_dir
    plugin_dir = root / "plugins" / DRIVER
    plugin_dir.mkdir(parents=True, exist_ok=True)
    driver = FakeDriver()
    driver_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    csi_pb2_grpc.add_IdentityServicer_to_server(driver, driver_server)
    csi_pb2_grpc.add_NodeServicer_to_server(driver, driver_server)
    driver_server.add_insecure_port(f"unix://{plugin_dir / 'csi.sock'}")
    driver_server.start()
    # The registrar announces the socket as a real node's kubelet would find it.
    registrar = Registrar(f"/var/lib/kubelet/plugins/{DRIVER}/csi.sock")
    (root / "plugins_registry").mkdir(exist_ok=True)
    reg_server = serve(registrar, registration_pb2_grpc.add_RegistrationServicer_to_server,
                       root / "plugins_registry" / f"{DRIVER}-reg.sock")
    csi = CsiPlugin(api.rest, node_name="lab-node", root_dir=root)
    env.manager.register(csi)
    watcher = PluginWatcher(root / "plugins_registry", {"CSIPlugin": csi})
    yield Node(env, driver, registrar, csi, watcher, [driver_server, reg_server])
    for server in (driver_server, reg_server):
        server.stop(0)
    (root / "plugins_registry" / f"{DRIVER}-reg.sock").unlink(missing_ok=True)


def csinode(api: Api) -> dict[str, Any]:
    rt = api.rest.registry.lookup("storage.k8s.io", "v1", "csinodes")
    assert rt is not None
    return api.rest.get(rt, "", "lab-node")


def node_annotation(api: Api) -> dict[str, str]:
    rt = api.rest.registry.lookup("", "v1", "nodes")
    assert rt is not None
    text = (api.rest.get(rt, "", "lab-node")["metadata"].get("annotations") or {}).get(
        "csi.volume.kubernetes.io/nodeid")
    return dict(json.loads(text)) if text else {}


def create_csidriver(env: Env, modes: list[str]) -> None:
    rt = env.api.rest.registry.lookup("storage.k8s.io", "v1", "csidrivers")
    assert rt is not None
    body = {"metadata": {"name": DRIVER}, "spec": {"attachRequired": False, "volumeLifecycleModes": modes}}
    try:
        current = env.api.rest.get(rt, "", DRIVER)
        asyncio.run(env.api.rest.delete(rt, "", DRIVER, {"preconditions": {"uid": current["metadata"]["uid"]}},
                                        WriteOptions()))
    except Exception:
        pass
    asyncio.run(env.api.rest.create(rt, "", body, WriteOptions()))


# -- registration -------------------------------------------------------------------------------------------------


def test_registration_records_the_driver_in_csinode_and_tells_the_registrar(lab_node: Node) -> None:
    lab_node.run(asyncio.sleep(0))
    assert lab_node.registrar.statuses == [(True, "")]
    drivers = csinode(lab_node.env.api)["spec"]["drivers"]
    assert drivers == [{"name": DRIVER, "nodeID": "fake-node-1", "allocatable": {"count": 7}}]
    assert csinode(lab_node.env.api)["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert node_annotation(lab_node.env.api) == {DRIVER: "fake-node-1"}


def test_a_vanished_socket_deregisters_the_driver(lab_node: Node) -> None:
    async def scenario() -> None:
        lab_node.servers[1].stop(0)
        (lab_node.watcher.registry_dir / f"{DRIVER}-reg.sock").unlink(missing_ok=True)  # grpc may remove it
        await lab_node.watcher.scan()

    lab_node.run(scenario())
    assert csinode(lab_node.env.api)["spec"]["drivers"] == []
    assert node_annotation(lab_node.env.api) == {}
    assert DRIVER not in lab_node.csi.drivers


def test_unsupported_versions_are_refused_with_the_reason(lab_node: Node) -> None:
    lab_node.registrar.versions = ("0.3.0",)
    lab_node.run(asyncio.sleep(0))
    [(registered, error)] = lab_node.registrar.statuses
    assert not registered and "none of the versions ['0.3.0']" in error
    assert DRIVER not in lab_node.csi.drivers


# -- volumes ------------------------------------------------------------------------------------------------------


def inline(name: str = "scratch", **extra: Any) -> dict[str, Any]:
    return {"name": name, "csi": {"driver": DRIVER, "volumeAttributes": {"server": "10.0.0.1", "share": "/"},
                                  **extra}}


@needs_root
def test_inline_ephemeral_volume_is_published_with_the_kubelets_handle(lab_node: Node) -> None:
    env = lab_node.env
    create_csidriver(env, ["Persistent", "Ephemeral"])
    pod = env.pod([inline()], **no_token())

    async def scenario() -> Path:
        paths = await env.manager.setup(pod, env.pod_dir)
        path = paths["scratch"]
        assert os.path.ismount(path)
        await env.manager.teardown(pod, env.pod_dir)
        return path

    path = lab_node.run(scenario())
    (_, publish), (_, unpublish) = lab_node.driver.calls
    uid = pod["metadata"]["uid"]
    assert publish.volume_id == "csi-" + hashlib.sha256(f"{uid}scratch".encode()).hexdigest()
    assert publish.target_path == str(env.pod_dir / "volumes" / "kubernetes.io~csi" / "scratch" / "mount")
    assert path == Path(publish.target_path)
    assert dict(publish.volume_context) == {"server": "10.0.0.1", "share": "/",
                                            "csi.storage.k8s.io/ephemeral": "true"}
    assert unpublish.volume_id == publish.volume_id and unpublish.target_path == publish.target_path
    assert not path.parent.exists()


@needs_root
def test_a_busy_volume_is_retried_not_failed(lab_node: Node) -> None:
    env = lab_node.env
    create_csidriver(env, ["Ephemeral"])
    pod = env.pod([inline()], **no_token())

    async def scenario() -> None:
        lab_node.driver.busy = 2
        await env.manager.setup(pod, env.pod_dir)
        lab_node.driver.busy = 2
        await env.manager.teardown(pod, env.pod_dir)

    lab_node.run(scenario())
    assert [verb for verb, _ in lab_node.driver.calls] == ["publish"] * 3 + ["unpublish"] * 3
    assert not (env.pod_dir / "volumes" / "kubernetes.io~csi" / "scratch").exists()


def test_inline_volume_needs_the_ephemeral_lifecycle_mode(lab_node: Node) -> None:
    env = lab_node.env
    create_csidriver(env, ["Persistent"])
    pod = env.pod([inline()], **no_token())
    with pytest.raises(VolumeError) as info:
        lab_node.run(env.manager.setup(pod, env.pod_dir))
    assert 'volume mode "Ephemeral" not supported by driver' in info.value.message
    assert lab_node.driver.calls == []


@needs_root
def test_pv_volume_uses_the_pv_name_access_mode_and_mount_options(lab_node: Node) -> None:
    env = lab_node.env
    pv_rt = env.api.rest.registry.lookup("", "v1", "persistentvolumes")
    assert pv_rt is not None
    source = {"driver": DRIVER, "volumeHandle": "srv#export#pvc-1", "volumeAttributes": {"subDir": "pvc-1"}}
    pv_name = f"pvc-{env.namespace}"
    asyncio.run(env.api.rest.create(pv_rt, "", {"metadata": {"name": pv_name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "mountOptions": ["nfsvers=3", "hard"],
        "csi": source}}, WriteOptions()))
    env.create("persistentvolumeclaims", {"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}, "volumeName": pv_name}})
    pod = env.pod([{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}], **no_token())

    pv_rt_obj = env.api.rest.get(pv_rt, "", pv_name)
    _, delegated = pv_volume(pv_rt_obj, read_only=True)  # what the persistentVolumeClaim plugin hands over

    async def scenario() -> None:
        ctx = lab_node.env.manager._context(pod, env.pod_dir)
        path = await lab_node.csi.setup(ctx, delegated)
        assert path == env.pod_dir / "volumes" / "kubernetes.io~csi" / pv_name / "mount"
        await lab_node.csi.teardown(ctx, delegated, path)

    lab_node.run(scenario())
    (_, publish), _ = lab_node.driver.calls
    assert publish.volume_id == "srv#export#pvc-1" and publish.readonly
    assert publish.volume_capability.access_mode.mode == csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
    assert list(publish.volume_capability.mount.mount_flags) == ["nfsvers=3", "hard"]
    data = (env.pod_dir / "volumes" / "kubernetes.io~csi" / pv_name)
    assert not data.exists()


@pytest.mark.parametrize(("fail", "mount", "expected"), [
    pytest.param(grpc.StatusCode.INVALID_ARGUMENT, True,
                 "rpc error: code = INVALID_ARGUMENT desc = invalid parameter 'colour'", id="driver error code"),
    pytest.param(None, False, "is not a mount point in the kubelet's mount namespace",
                 id="success without a mount is refused"),
])
def test_failed_publish_is_a_failed_mount_with_the_reason(lab_node: Node, fail: grpc.StatusCode | None,
                                                          mount: bool, expected: str) -> None:
    env = lab_node.env
    create_csidriver(env, ["Ephemeral"])
    lab_node.driver.fail, lab_node.driver.mount = fail, mount
    pod = env.pod([inline()], **no_token())
    with pytest.raises(VolumeError) as info:
        lab_node.run(env.manager.setup(pod, env.pod_dir))
    assert info.value.reason == "FailedMount"
    assert info.value.message.startswith('MountVolume.SetUp failed for volume "scratch" : kubernetes.io/csi')
    assert expected in info.value.message


def test_unregistered_driver_fails_with_the_kubelets_words(api: Api) -> None:
    env = new_env(api)
    csi = CsiPlugin(api.rest, node_name="lab-node", root_dir=api.lab_dir)
    env.manager.register(csi)
    create_csidriver(env, ["Ephemeral"])
    error = env.failure(env.pod([inline()], **no_token()))
    assert f"driver name {DRIVER} not found in the list of registered CSI drivers" in error.message


@pytest.mark.parametrize(("modes", "expected"), [
    (["ReadWriteOnce"], "SINGLE_NODE_WRITER"), (["ReadOnlyMany"], "MULTI_NODE_READER_ONLY"),
    (["ReadWriteOnce", "ReadWriteMany"], "MULTI_NODE_MULTI_WRITER"),
    (["ReadWriteOncePod"], "SINGLE_NODE_SINGLE_WRITER"),
])
def test_access_mode(modes: list[str], expected: str) -> None:
    assert access_mode(modes) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/var/lib/kubelet/plugins/x/csi.sock", "/lab/plugins/x/csi.sock"),
    ("/var/lib/kubelet", "/lab"),
    ("/var/lib/kubeletx/y", "/var/lib/kubeletx/y"),
    ("/srv/data", "/srv/data"),
])
def test_kubelet_paths_map_to_the_lab_root(path: str, expected: str) -> None:
    assert kubelet_path(path, Path("/lab")) == Path(expected)


def test_ephemeral_handle_is_stable() -> None:
    assert ephemeral_handle("uid", "v") == ephemeral_handle("uid", "v") != ephemeral_handle("uid", "w")
