"""``csi``: the kubelet's CSI volume plugin and its registration handler (``pkg/volume/csi`` in Kubernetes).

Registration: the plugin watcher (:mod:`meshlab.cluster.kubelet.pluginwatcher`) hands every ``CSIPlugin``
socket to :class:`CsiPlugin` — it checks that a ``1.x`` version is offered, dials the driver's endpoint, asks
``NodeGetInfo`` (node id, volume limit, topology), records the driver in the node's ``CSINode`` object
(``storage.k8s.io/v1``, one per node, owned by the Node) and in the Node's ``csi.volume.kubernetes.io/nodeid``
annotation, and removes both when the driver goes away. Volumes: for a pod's ``volumes[].csi`` (an inline
*ephemeral* volume: its handle is ``csi-<sha256(pod uid + volume name)>``, its context the
``volumeAttributes`` plus ``csi.storage.k8s.io/ephemeral: "true"``; the driver's CSIDriver object must list
the ``Ephemeral`` lifecycle mode) and for a PersistentVolume's ``spec.csi`` (reached through the claim: the
``persistentVolumeClaim`` plugin delegates here with ``{"name": <PV name>, "csi": <pv.spec.csi>,
"mountOptions": [...]}``), the
plugin calls ``NodePublishVolume`` with the target path ``<pod dir>/volumes/kubernetes.io~csi/<pv or volume
name>/mount`` (the driver creates and mounts it; no STAGE_UNSTAGE for NFS), the access mode from the PV, its
``mountOptions`` as mount flags, and pod information when the CSIDriver asks for ``podInfoOnMount``. What it
published is kept in ``vol_data.json`` beside the mount so ``NodeUnpublishVolume`` can be called after a
restart. Failures become ``FailedMount`` events quoting the gRPC code, and the pod worker retries with
back-off.

Mount propagation: on a real node the driver's container mounts the pods directory with ``mountPropagation:
Bidirectional``, so the mount it makes at the target path appears on the node. The embedded lab's containers
run in private mount namespaces without propagation, so when NodePublishVolume succeeded but the target is not
a mount point here, this plugin (as root) brings the driver's mount over itself: a helper process enters the
driver's mount namespace (found through the driver socket's peer credentials), clones the mount with
``open_tree(OPEN_TREE_CLONE)``, returns and attaches it at the same path with ``move_mount`` (Linux ≥ 5.2) —
the same mount, now visible to the kubelet and to the pod's bind mount. Teardown detaches that copy before
NodeUnpublishVolume. Without root, the pod gets a FailedMount saying why, never an empty directory.

Paths: a node plugin deployed by a DaemonSet names kubelet paths as ``/var/lib/kubelet/...``; the embedded lab's
kubelet root is the lab directory instead (pods live in ``<lab>/pods/<uid>``), so the hostPath plugin maps
``/var/lib/kubelet`` to it (:func:`meshlab.cluster.kubelet.volume_plugins.local.kubelet_path`) and so does this
plugin for the endpoint a registrar announces.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError
from meshlab.cluster.kubelet.volume_plugins.local import kubelet_path
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.csiproto import csi_pb2, csi_pb2_grpc
from meshlab.errors import NotFound

log = logging.getLogger("meshlab.kubelet.csi")

Obj = dict[str, Any]
CSI_DIR = "kubernetes.io~csi"
VOL_DATA = "vol_data.json"
NODE_ID_ANNOTATION = "csi.volume.kubernetes.io/nodeid"
EPHEMERAL_KEY = "csi.storage.k8s.io/ephemeral"
_ACCESS = {"ReadWriteMany": "MULTI_NODE_MULTI_WRITER", "ReadOnlyMany": "MULTI_NODE_READER_ONLY",
           "ReadWriteOncePod": "SINGLE_NODE_SINGLE_WRITER", "ReadWriteOnce": "SINGLE_NODE_WRITER"}


# Run in a fresh single-threaded interpreter (setns(CLONE_NEWNS) refuses multi-threaded callers): clone the
# mount at TARGET in the mount namespace of PID and attach the clone at TARGET in ours. x86_64/arm64 numbers.
_IMPORT_MOUNT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
OPEN_TREE, MOVE_MOUNT = (428, 429)
def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        sys.exit(f"{what}: {os.strerror(err)}")
    return result
pid, target = int(sys.argv[1]), sys.argv[2].encode()
home = os.open("/proc/self/ns/mnt", os.O_RDONLY)
check(libc.setns(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY), 0x20000), "setns into the driver")
tree = check(libc.syscall(OPEN_TREE, -100, target, 1 | 0o2000000 | 0x8000), "open_tree")
check(libc.setns(home, 0x20000), "setns back")
check(libc.syscall(MOVE_MOUNT, tree, b"", -100, target, 4), "move_mount")
"""


def socket_peer_pid(path: Path) -> int:
    """The pid of the process serving the unix socket ``path`` (SO_PEERCRED), 0 when unknown."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
            pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except OSError:
            return 0
    return int(pid)


def import_mount(pid: int, target: Path) -> str:
    """Attach here the mount process ``pid`` sees at ``target``; returns "" or why it could not."""
    if os.geteuid() != 0:
        return "only a root kubelet can bring a mount over from the driver's mount namespace"
    try:
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            return "the driver shares the kubelet's mount namespace, and mounted nothing there"
    except OSError as err:
        return f"cannot see the driver's mount namespace: {err}"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _IMPORT_MOUNT, str(pid), str(target)],
                          capture_output=True, text=True, timeout=10)
    return "" if done.returncode == 0 and os.path.ismount(target) else (done.stderr.strip() or "no mount appeared")


def is_corrupted_mount(path: Path) -> bool:
    """A mount whose server side is gone (a dead FUSE daemon, a stale NFS handle): ``IsCorruptedMnt``."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno in (errno.ENOTCONN, errno.ESTALE, errno.EIO)
    return False


def detach(path: Path) -> str:
    """Lazily unmount ``path`` (``umount -l``); returns "" or the error."""
    done = subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True)
    return "" if done.returncode == 0 else done.stderr.strip() or f"umount exited {done.returncode}"


def ephemeral_handle(pod_uid: str, volume_name: str) -> str:
    """The volume handle the kubelet makes up for an inline volume (``makeVolumeHandle``)."""
    return "csi-" + hashlib.sha256(f"{pod_uid}{volume_name}".encode()).hexdigest()


def access_mode(modes: list[str]) -> str:
    """The CSI access mode for a PV's access modes, as the kubelet picks it (the widest one wins)."""
    for mode in ("ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod", "ReadWriteOnce"):
        if mode in modes:
            return _ACCESS[mode]
    return "SINGLE_NODE_WRITER"


# gRPC's default reconnection back-off grows to 120 s: a restarted driver would stay unreachable for minutes.
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000)]

# Codes that mean "try again shortly": ABORTED is a driver's per-volume lock held by a concurrent call (two pods
# publishing one volume at once), UNAVAILABLE a driver restarting.
_TRANSIENT = (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)


async def call_retrying(rpc: Any, request: Any, *, timeout: float, patience: float) -> Any:
    """``rpc(request)``, retried with back-off (0.05 s doubling) on transient codes for ``patience`` seconds."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + patience, 0.05
    while True:
        try:
            return await rpc(request, timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            if code not in _TRANSIENT or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def grpc_detail(err: grpc.RpcError) -> str:
    """``rpc error: code = NAME desc = message``, how the kubelet quotes a driver's failure."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    return f"rpc error: code = {code.name if code is not None else 'UNKNOWN'} desc = {details}"


@dataclass
class Driver:
    name: str
    endpoint: Path
    channel: grpc.aio.Channel
    node_id: str = ""

    @property
    def node(self) -> csi_pb2_grpc.NodeStub:
        return csi_pb2_grpc.NodeStub(self.channel)


@dataclass(frozen=True)
class Publication:
    """What one NodePublishVolume call needs, worked out from the pod's volume (pure data)."""

    driver: str
    volume_id: str
    dir_name: str                 # kubernetes.io~csi/<dir_name>/mount
    read_only: bool
    access_mode: str
    fs_type: str
    mount_flags: tuple[str, ...]
    volume_context: dict[str, str]
    ephemeral: bool


class CsiPlugin:
    """The ``csi`` volume plugin and the ``CSIPlugin`` registration handler of one node."""

    name = "csi"

    def __init__(self, rest: RestStorage, *, node_name: str, root_dir: Path, timeout: float = 30.0,
                 opts: WriteOptions | None = None) -> None:
        self.rest = rest
        self.node_name = node_name
        self.root_dir = Path(root_dir)
        self.timeout = timeout
        self.opts = opts or WriteOptions(user={"username": f"system:node:{node_name}", "groups": ["system:nodes"]},
                                         field_manager="kubelet")
        self.drivers: dict[str, Driver] = {}
        self.imported: set[Path] = set()  # targets whose mount this kubelet brought over from a driver

    # -- registration (PluginHandler) ------------------------------------------------------------------------

    async def validate(self, name: str, endpoint: str, versions: list[str]) -> None:
        if not any(v.split(".")[0] == "1" for v in versions):
            raise ValueError(f"none of the versions {versions} of CSI driver {name} is supported (1.x)")
        if not endpoint:
            raise ValueError(f"CSI driver {name} announced no endpoint")

    async def register(self, name: str, endpoint: str, versions: list[str]) -> None:
        path = kubelet_path(endpoint, self.root_dir)
        old = self.drivers.pop(name, None)
        if old is not None:
            await old.channel.close()
        channel = grpc.aio.insecure_channel(f"unix://{path}", options=QUICK_RECONNECT)
        driver = Driver(name, path, channel)
        try:
            info = await driver.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=self.timeout)
        except grpc.RpcError as err:
            await channel.close()
            raise ValueError(f"NodeGetInfo of {name} at {path} failed: {grpc_detail(err)}") from err
        driver.node_id = str(info.node_id)
        entry: Obj = {"name": name, "nodeID": driver.node_id}
        keys = sorted(info.accessible_topology.segments) if info.HasField("accessible_topology") else []
        if keys:
            entry["topologyKeys"] = keys
        if info.max_volumes_per_node > 0:
            entry["allocatable"] = {"count": int(info.max_volumes_per_node)}
        await self._record(name, entry)
        self.drivers[name] = driver

    async def deregister(self, name: str) -> None:
        driver = self.drivers.pop(name, None)
        if driver is not None:
            await driver.channel.close()
        await self._record(name, None)

    async def _record(self, name: str, entry: Obj | None) -> None:
        """Put (or remove) ``name`` in this node's CSINode and nodeid annotation."""
        node_rt = self.rest.registry.lookup("", "v1", "nodes")
        csinode_rt = self.rest.registry.lookup("storage.k8s.io", "v1", "csinodes")
        assert node_rt is not None and csinode_rt is not None
        node = self.rest.get(node_rt, "", self.node_name)
        ids = json.loads(((node.get("metadata") or {}).get("annotations") or {}).get(NODE_ID_ANNOTATION) or "{}")
        if entry is None:
            ids.pop(name, None)
        else:
            ids[name] = entry["nodeID"]
        patch = {"metadata": {"annotations": {NODE_ID_ANNOTATION: json.dumps(ids, sort_keys=True) if ids else None}}}
        await self.rest.patch(node_rt, "", self.node_name, "application/merge-patch+json", patch, self.opts)
        try:
            csinode = self.rest.get(csinode_rt, "", self.node_name)
        except NotFound:
            csinode = {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                       "metadata": {"name": self.node_name, "ownerReferences": [
                           {"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                            "uid": node["metadata"]["uid"]}]},
                       "spec": {"drivers": []}}
            if entry is None:
                return
            csinode["spec"]["drivers"] = [entry]
            await self.rest.create(csinode_rt, "", csinode, self.opts)
            return
        drivers = [d for d in (csinode.get("spec") or {}).get("drivers") or [] if d.get("name") != name]
        if entry is not None:
            drivers.append(entry)
        updated = {**csinode, "spec": {**(csinode.get("spec") or {}), "drivers": drivers}}
        await self.rest.update(csinode_rt, "", self.node_name, updated, self.opts)

    # -- volumes (VolumePlugin) ------------------------------------------------------------------------------

    def _lookup(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        rt = self.rest.registry.lookup(group, "v1", plural)
        assert rt is not None
        try:
            return self.rest.get(rt, namespace, name)
        except NotFound:
            return None

    def publication(self, ctx: VolumeContext, volume: Obj) -> Publication:
        """Work out NodePublishVolume's arguments for ``volume``; raises :class:`VolumeError`."""
        source = volume.get("csi") or {}
        driver_name = str(source.get("driver") or "")
        if not driver_name:
            raise ctx.failed(volume, "kubernetes.io/csi: the csi volume source names no driver")
        name = str(volume.get("name") or "")
        csidriver = self._lookup("storage.k8s.io", "csidrivers", "", driver_name)
        driver_spec = (csidriver or {}).get("spec") or {}
        if "volumeHandle" not in source:
            modes = list(driver_spec.get("volumeLifecycleModes") or ["Persistent"])
            if "Ephemeral" not in modes:
                raise ctx.failed(volume, f'volume mode "Ephemeral" not supported by driver {driver_name} '
                                         f"(only supports {json.dumps(modes)})")
            context = {str(k): str(v) for k, v in (source.get("volumeAttributes") or {}).items()}
            context[EPHEMERAL_KEY] = "true"
            pub = Publication(driver_name, ephemeral_handle(ctx.pod_uid, name), name, bool(source.get("readOnly")),
                              "SINGLE_NODE_WRITER", str(source.get("fsType") or ""), (), context, True)
        else:
            # The persistentVolumeClaim plugin delegates with the PV's name; tests may name the pod's volume.
            pv = self._persistent_volume(ctx, name) or self._lookup("", "persistentvolumes", "", name)
            pv_spec = (pv or {}).get("spec") or {}
            options = volume["mountOptions"] if "mountOptions" in volume else pv_spec.get("mountOptions")
            claim_ro = bool(((self._pod_volume(ctx, name) or {}).get("persistentVolumeClaim") or {}).get("readOnly"))
            pub = Publication(driver_name, str(source["volumeHandle"]),
                              str(((pv or {}).get("metadata") or {}).get("name") or name),
                              bool(source.get("readOnly")) or claim_ro,
                              access_mode(list(pv_spec.get("accessModes") or [])), str(source.get("fsType") or ""),
                              tuple(str(o) for o in options or []),
                              {str(k): str(v) for k, v in (source.get("volumeAttributes") or {}).items()}, False)
        if driver_spec.get("podInfoOnMount"):
            pod_spec = ctx.pod.get("spec") or {}
            pub.volume_context.update({
                "csi.storage.k8s.io/pod.name": ctx.pod_name, "csi.storage.k8s.io/pod.namespace": ctx.namespace,
                "csi.storage.k8s.io/pod.uid": ctx.pod_uid,
                "csi.storage.k8s.io/serviceAccount.name": str(pod_spec.get("serviceAccountName") or "default")})
        return pub

    @staticmethod
    def _pod_volume(ctx: VolumeContext, name: str) -> Obj | None:
        return next((v for v in (ctx.pod.get("spec") or {}).get("volumes") or [] if v.get("name") == name), None)

    def _persistent_volume(self, ctx: VolumeContext, name: str) -> Obj | None:
        """The PV behind the pod's volume ``name`` (through its claim), or None."""
        claim_name = ((self._pod_volume(ctx, name) or {}).get("persistentVolumeClaim") or {}).get("claimName")
        if not claim_name:
            return None
        claim = self._lookup("", "persistentvolumeclaims", ctx.namespace, str(claim_name))
        pv_name = ((claim or {}).get("spec") or {}).get("volumeName")
        return self._lookup("", "persistentvolumes", "", str(pv_name)) if pv_name else None

    def _driver(self, ctx: VolumeContext, volume: Obj, driver_name: str, verb: str) -> Driver:
        driver = self.drivers.get(driver_name)
        if driver is None:
            detail = (f"kubernetes.io/csi: {verb} failed to get CSI client: driver name {driver_name} not found "
                      f"in the list of registered CSI drivers")
            if verb == "mounter.SetUpAt":
                raise ctx.failed(volume, detail)
            raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{volume.get("name")}" : '
                                               f"{detail}")
        return driver

    async def setup(self, ctx: VolumeContext, volume: Obj) -> Path:
        pub = self.publication(ctx, volume)
        driver = self._driver(ctx, volume, pub.driver, "mounter.SetUpAt")
        volume_dir = ctx.volume_dir(CSI_DIR, pub.dir_name)
        target = volume_dir / "mount"
        volume_dir.mkdir(parents=True, exist_ok=True)
        if is_corrupted_mount(target):
            # Left by a driver that died (e.g. the lab stopped): the kubelet unmounts and publishes again.
            await asyncio.to_thread(detach, target)
        (volume_dir / VOL_DATA).write_text(json.dumps({
            "driverName": pub.driver, "volumeHandle": pub.volume_id, "specVolID": str(volume.get("name")),
            "volumeLifecycleMode": "Ephemeral" if pub.ephemeral else "Persistent", "nodeName": self.node_name}))
        capability = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type=pub.fs_type, mount_flags=pub.mount_flags),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.Mode.Value(pub.access_mode)))
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=pub.volume_id, target_path=str(target), volume_capability=capability,
            readonly=pub.read_only, volume_context=pub.volume_context)
        try:
            await call_retrying(driver.node.NodePublishVolume, request, timeout=self.timeout, patience=2.0)
        except grpc.RpcError as err:
            raise ctx.failed(volume, f"kubernetes.io/csi: mounter.SetUpAt failed: {grpc_detail(err)}") from err
        if not os.path.ismount(target):
            why = await asyncio.to_thread(import_mount, socket_peer_pid(driver.endpoint), target)
            if why:
                # The driver said yes, but nothing is mounted where this kubelet (and the pod) would see it: never
                # hand the pod an empty local directory instead of its volume.
                raise ctx.failed(volume, (
                    f"kubernetes.io/csi: NodePublishVolume of {pub.driver} succeeded but {target} is not a mount "
                    "point in the kubelet's mount namespace: the driver's mount did not propagate to the node (a "
                    "real cluster needs mountPropagation: Bidirectional on the driver's pods volume; the embedded "
                    f"lab's containers run in private mount namespaces): {why}"))
            data = json.loads((volume_dir / VOL_DATA).read_text())
            (volume_dir / VOL_DATA).write_text(json.dumps({**data, "importedMount": True}))
            self.imported.add(target)
        return target

    async def teardown(self, ctx: VolumeContext, volume: Obj, path: Path) -> None:
        volume_dir = path.parent
        try:
            data = json.loads((volume_dir / VOL_DATA).read_text())
        except (OSError, ValueError):
            data = {}
        driver_name = str(data.get("driverName") or (volume.get("csi") or {}).get("driver") or "")
        volume_id = str(data.get("volumeHandle") or "")
        if not volume_id:
            # Set-up never reached the driver: nothing was published.
            with contextlib.suppress(OSError):
                shutil.rmtree(volume_dir)
            return
        driver = self._driver(ctx, volume, driver_name, "unmounter.TearDownAt")
        if data.get("importedMount") and (os.path.ismount(path) or is_corrupted_mount(path)):
            # Our copy of the driver's mount goes first; the driver then unmounts its own.
            why = await asyncio.to_thread(detach, path)
            if why:
                raise VolumeError("FailedUnmount", f"kubernetes.io/csi: umount {path}: {why}")
        self.imported.discard(path)
        try:
            # The pod worker does not retry a failed teardown: be patient here instead.
            await call_retrying(driver.node.NodeUnpublishVolume,
                                csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(path)),
                                timeout=self.timeout, patience=15.0)
        except grpc.RpcError as err:
            raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{volume.get("name")}" : '
                                               f"kubernetes.io/csi: Unmounter.TearDownAt failed: {grpc_detail(err)}"
                              ) from err
        if os.path.ismount(path):
            raise VolumeError("FailedUnmount", f"kubernetes.io/csi: {path} is still mounted after "
                                               f"NodeUnpublishVolume of {driver_name}")
        with contextlib.suppress(FileNotFoundError):
            (volume_dir / VOL_DATA).unlink()
        for leftover in (path, volume_dir):  # the driver should have removed the target (the SP deletes it)
            with contextlib.suppress(OSError):
                leftover.rmdir()

    async def close(self) -> None:
        """The kubelet stops (its pods are stopped first): detach the mounts brought over from drivers, which
        would otherwise outlive the drivers as dead mount points on the host; setup brings them back."""
        for path in list(self.imported):
            if os.path.ismount(path) or is_corrupted_mount(path):
                why = await asyncio.to_thread(detach, path)
                if why:
                    log.warning("detaching %s failed: %s", path, why)
                else:
                    log.info("detached %s (brought over from a CSI driver)", path)
        self.imported.clear()
        for driver in list(self.drivers.values()):
            with contextlib.suppress(Exception):
                await driver.channel.close()
        self.drivers.clear()

