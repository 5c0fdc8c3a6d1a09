"""The CSI Node service of ``nfs.csi.meshlab.io``: mount a volume's directory at a pod's target path.

NFS needs no per-node staging, so, like kubernetes-csi/csi-driver-nfs, the node advertises no
STAGE_UNSTAGE_VOLUME and NodeStage/NodeUnstage/NodeExpand answer ``12 UNIMPLEMENTED``. NodePublishVolume
(CSI spec v1, "NodePublishVolume") mounts ``server:share/subdir`` (from the volume id) at ``target_path``
through :mod:`meshlab.mounting.mount` (the kernel on real nodes, FUSE in the lab) and is idempotent: the
same target with the same arguments is OK, different arguments ``6 ALREADY_EXISTS``, and a second target
for a SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod) volume ``9 FAILED_PRECONDITION``. What is published
where is remembered in a JSON state file, so a restarted node plugin still answers correctly.
A CSI *inline ephemeral* volume (a pod's ``volumes[].csi``) arrives with a kubelet-made handle
(``csi-<hash>``) that is no volume id of ours; its location then comes from ``volume_context`` — the pod's
``volumeAttributes`` ``server``, ``share``, ``subDir``, ``port``, ``version``, ``mountOptions`` (as upstream's
node reads them) — and a missing ``subDir`` is created through NFS first, since no CreateVolume ran for it.
NodeUnpublishVolume unmounts and removes the target directory (the spec: the plugin deletes what it
created); NodeGetVolumeStats answers ``5 NOT_FOUND`` unless the path holds that volume's mount.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError, MountError, NfsError
from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.capabilities import check_capabilities, require
from meshlab.storage.csi.locks import VolumeLocks
from meshlab.storage.csi.parameters import parse_parameters
from meshlab.storage.csi.records import Connect, NfsFiles, nfs_failure
from meshlab.storage.csi.volume_id import VolumeId, safe_subdir

__all__ = ["NODE_CAPABILITIES", "Mounter", "NodeService", "Publication"]

RPC = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (RPC.GET_VOLUME_STATS, RPC.SINGLE_NODE_MULTI_WRITER)
AccessMode = csi_pb2.VolumeCapability.AccessMode
Unit = csi_pb2.VolumeUsage.Unit


class Mounter(Protocol):
    """How the node makes mounts: :mod:`meshlab.mounting.mount` in production."""

    def mount(self, location: NfsLocation, subdir: str, target: Path, *, read_only: bool,
              options: list[str]) -> str: ...
    def unmount(self, target: Path) -> None: ...
    def is_mounted(self, target: Path) -> bool: ...


class SystemMounter:
    """The real mounter (imported lazily: it is only needed where volumes are published)."""

    def mount(self, location: NfsLocation, subdir: str, target: Path, *, read_only: bool,
              options: list[str]) -> str:
        from meshlab.mounting.mount import mount_nfs

        return mount_nfs(location, subdir, target, read_only=read_only, options=options)

    def unmount(self, target: Path) -> None:
        from meshlab.mounting.mount import unmount

        unmount(target)

    def is_mounted(self, target: Path) -> bool:
        from meshlab.mounting.mount import is_mounted

        return is_mounted(target)


@dataclass(frozen=True)
class Publication:
    """One NodePublishVolume that succeeded: the arguments that define "the same request" again."""

    volume_id: str
    readonly: bool
    access_mode: int
    mount_flags: list[str] = field(default_factory=list)
    how: str = ""   # "kernel" or "fuse"


class NodeService:
    """Node RPCs for node ``node_id``; publications persisted in ``state_dir/published.json``."""

    def __init__(self, *, node_id: str, state_dir: Path, mounter: Mounter | None = None,
                 connect: Connect | None = None) -> None:
        self.node_id = node_id
        self._connect = connect or _nfs_client
        self._state_file = Path(state_dir) / "published.json"
        self._mounter = mounter or SystemMounter()
        self.locks = VolumeLocks()
        self._state_guard = threading.Lock()

    # ------------------------------------------------------------------ state

    def published(self) -> dict[str, Publication]:
        """Target path → what is published there (as last saved)."""
        try:
            raw = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise CsiError("INTERNAL", f"node state file {self._state_file} is corrupt: {err}") from err
        return {target: Publication(**entry) for target, entry in raw.items()}

    def _save(self, published: dict[str, Publication]) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = self._state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps({t: asdict(p) for t, p in sorted(published.items())}, indent=1))
        os.replace(scratch, self._state_file)   # atomic: a crash leaves the old or the new state

    def _update(self, target: str, publication: Publication | None) -> None:
        with self._state_guard:
            published = self.published()
            if publication is None:
                published.pop(target, None)
            else:
                published[target] = publication
            self._save(published)

    # ------------------------------------------------------------------ publish / unpublish

    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest) -> csi_pb2.NodePublishVolumeResponse:
        require(request.volume_id, "volume id")
        require(request.target_path, "target path")
        require(request.HasField("volume_capability"), "volume capability")
        check_capabilities([request.volume_capability], "volume capability")
        if not os.path.isabs(request.target_path):
            raise CsiError("INVALID_ARGUMENT", f"target path {request.target_path!r} is not absolute")
        location, subdir, context_options = self._source(request)
        target = os.path.normpath(request.target_path)
        mode = request.volume_capability.access_mode.mode
        wanted = Publication(request.volume_id, request.readonly, mode,
                             list(request.volume_capability.mount.mount_flags))
        with self.locks.hold(request.volume_id):
            published = self.published()
            current = published.get(target)
            if current is not None and _same(current, wanted):
                if self._mounter.is_mounted(Path(target)):
                    return csi_pb2.NodePublishVolumeResponse()
            elif current is not None:
                raise CsiError("ALREADY_EXISTS", f"{target} already publishes {current.volume_id} "
                               f"(readonly={current.readonly}, mode {current.access_mode}) incompatibly")
            others = [t for t, p in published.items() if p.volume_id == request.volume_id and t != target]
            single = AccessMode.SINGLE_NODE_SINGLE_WRITER
            if others and (mode == single or any(published[t].access_mode == single for t in others)):
                raise CsiError("FAILED_PRECONDITION", f"volume {request.volume_id} is SINGLE_NODE_SINGLE_WRITER "
                               f"and already published at {others[0]}")
            read_only = request.readonly or mode in (AccessMode.SINGLE_NODE_READER_ONLY,
                                                     AccessMode.MULTI_NODE_READER_ONLY)
            created = not os.path.exists(target)
            try:
                how = self._mounter.mount(location, subdir, Path(target), read_only=read_only,
                                          options=[*context_options, *wanted.mount_flags])
            except MountError as err:
                if created:
                    _remove_dir(target)
                raise CsiError("INTERNAL", f"mounting {location} {subdir or '/'} at {target}: {err}") from err
            self._update(target, Publication(**{**asdict(wanted), "how": how}))
        return csi_pb2.NodePublishVolumeResponse()

    def _source(self, request: csi_pb2.NodePublishVolumeRequest) -> tuple[NfsLocation, str, list[str]]:
        """Where to mount from and extra options: the volume id when it is ours, else (inline) the context."""
        volume = VolumeId.parse(request.volume_id)
        if volume is not None:
            return volume.location, volume.subdir, []
        context = {key.lower(): value for key, value in request.volume_context.items()
                   if not key.startswith("csi.storage.k8s.io/")}
        if "server" not in context or "share" not in context:
            raise CsiError("NOT_FOUND", f"volume {request.volume_id!r} is not a volume id of this driver and its "
                           "volume context names no server and share")
        try:
            params = parse_parameters({key: value for key, value in context.items() if key != "mountoptions"})
        except CsiError as err:
            raise CsiError(err.code, f"volume attributes: {err.message}") from err
        subdir = safe_subdir(params.subdir) if params.subdir else ""
        if subdir:
            self._make_subdir(params.location, subdir, params.mount_permissions)
        options = [opt.strip() for opt in context.get("mountoptions", "").split(",") if opt.strip()]
        return params.location, subdir, options

    def _make_subdir(self, location: NfsLocation, subdir: str, mode: int | None) -> None:
        try:
            with self._connect(location) as files:
                files.makedirs(subdir)
                if mode is not None:
                    files.chmod(subdir, mode)
        except NfsError as err:
            raise nfs_failure(err, f"making {subdir} on {location} for an inline volume") from err

    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        require(request.volume_id, "volume id")
        require(request.target_path, "target path")
        target = os.path.normpath(request.target_path)
        with self.locks.hold(request.volume_id):
            current = self.published().get(target)
            if current is not None and current.volume_id != request.volume_id:
                raise CsiError("NOT_FOUND", f"{target} publishes {current.volume_id}, not {request.volume_id}")
            try:
                self._mounter.unmount(Path(target))
            except MountError as err:
                raise CsiError("INTERNAL", f"unmounting {target}: {err}") from err
            _remove_dir(target)
            self._update(target, None)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # ------------------------------------------------------------------ stats, info, capabilities

    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest) -> csi_pb2.NodeGetVolumeStatsResponse:
        require(request.volume_id, "volume id")
        require(request.volume_path, "volume path")
        path = os.path.normpath(request.volume_path)
        current = self.published().get(path)
        if current is None or current.volume_id != request.volume_id:
            raise CsiError("NOT_FOUND", f"volume {request.volume_id} is not published at {path}")
        if not self._mounter.is_mounted(Path(path)):
            raise CsiError("NOT_FOUND", f"volume {request.volume_id} is not mounted at {path} any more")
        try:
            st = os.statvfs(path)
        except OSError as err:
            raise CsiError("INTERNAL", f"statfs {path}: {err.strerror}") from err
        total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
        return csi_pb2.NodeGetVolumeStatsResponse(usage=[
            csi_pb2.VolumeUsage(unit=Unit.BYTES, total=total, available=st.f_bavail * st.f_frsize,
                                used=max(total - free, 0)),
            csi_pb2.VolumeUsage(unit=Unit.INODES, total=st.f_files, available=st.f_favail,
                                used=max(st.f_files - st.f_ffree, 0)),
        ])

    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self.node_id)

    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=csi_pb2.NodeServiceCapability.RPC(type=kind))
            for kind in NODE_CAPABILITIES
        ])

    # NFS has nothing to stage on a node and nothing to grow there: the spec's answer is UNIMPLEMENTED.

    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest) -> csi_pb2.NodeStageVolumeResponse:
        raise CsiError("UNIMPLEMENTED", "NodeStageVolume: this driver has no STAGE_UNSTAGE_VOLUME capability")

    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest) -> csi_pb2.NodeUnstageVolumeResponse:
        raise CsiError("UNIMPLEMENTED", "NodeUnstageVolume: this driver has no STAGE_UNSTAGE_VOLUME capability")

    def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest) -> csi_pb2.NodeExpandVolumeResponse:
        raise CsiError("UNIMPLEMENTED", "NodeExpandVolume: NFS volumes grow on the server (ControllerExpandVolume)")


def _nfs_client(location: NfsLocation) -> NfsFiles:
    from meshlab.mounting.nfsclient import NfsClient

    return NfsClient(location)


def _same(a: Publication, b: Publication) -> bool:
    return (a.volume_id, a.readonly, a.access_mode, a.mount_flags) == (b.volume_id, b.readonly, b.access_mode,
                                                                       b.mount_flags)


def _remove_dir(target: str) -> None:
    """Remove the (empty, unmounted) target directory; a non-empty one is data we must not delete."""
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        os.unlink(target)
    except OSError as err:
        raise CsiError("INTERNAL", f"cannot remove {target} after unmounting: {err.strerror}") from err
