"""The CSI Controller service of ``nfs.csi.meshlab.io``: volumes are directories made through NFS.

CreateVolume (CSI spec v1, "CreateVolume") turns a name and StorageClass parameters into a directory
``<share>/<subDir or name>`` on the NFS server, made with NFS calls (MKDIR, SETATTR) rather than a
kernel mount as kubernetes-csi/csi-driver-nfs does, and a volume id that encodes its location
(:mod:`.volume_id`). The capacity it promised is recorded on the share (:mod:`.records`), so a retried
call with the same name and a compatible size returns the same volume and an incompatible one gets
``6 ALREADY_EXISTS``; a size above ``max_volume_bytes`` is ``11 OUT_OF_RANGE``. DeleteVolume follows
``onDelete`` (delete / retain / archive) and answers OK for ids it cannot parse, as the spec requires;
ValidateVolumeCapabilities answers ``5 NOT_FOUND`` for a missing directory (upstream does not look).
ControllerExpandVolume records the new size: NFS enforces no quota, so the size is a promise, not a limit.
CreateSnapshot copies the directory through NFS (:mod:`.snapshots`); CreateVolume copies a snapshot or,
for a clone, another volume into the new directory.
Every method takes the request message and returns the response message or raises
:class:`meshlab.errors.CsiError`; the gRPC server (:mod:`.serving`) only moves bytes.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError, NfsError
from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.capabilities import capability_problem, check_capabilities, require
from meshlab.storage.csi.locks import VolumeLocks
from meshlab.storage.csi.parameters import parse_parameters
from meshlab.storage.csi.records import (
    Connect,
    NfsFiles,
    VolumeRecord,
    delete_record,
    nfs_failure,
    read_record,
    write_record,
)
from meshlab.storage.csi.snapshots import read_snapshot, snapshot_data, take_snapshot
from meshlab.storage.csi.volume_id import OnDelete, SnapshotId, VolumeId, safe_subdir

__all__ = ["CONTROLLER_CAPABILITIES", "DEFAULT_MAX_VOLUME_BYTES", "ControllerService"]

RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (RPC.CREATE_DELETE_VOLUME, RPC.EXPAND_VOLUME, RPC.CLONE_VOLUME, RPC.SINGLE_NODE_MULTI_WRITER,
                           RPC.CREATE_DELETE_SNAPSHOT)
DEFAULT_MAX_VOLUME_BYTES = 1 << 40   # 1 TiB: a promise NFS will not enforce, so keep it honest-looking


class _Source(NamedTuple):
    """A CreateVolume content source: its id (snapshot or volume) and the directory to copy."""

    id: str
    directory: str


class ControllerService:
    """Controller RPCs over a ``connect(location) -> NfsFiles`` factory (the real NFS client by default)."""

    def __init__(self, *, connect: Connect | None = None, max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES) -> None:
        self._connect = connect or _nfs_client
        self.max_volume_bytes = max_volume_bytes
        self.locks = VolumeLocks()
        self._locations: set[NfsLocation] = set()   # every share touched since start (Probe checks them)

    # ------------------------------------------------------------------ CreateVolume

    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest) -> csi_pb2.CreateVolumeResponse:
        require(request.name, "volume name")
        check_capabilities(request.volume_capabilities, "volume capabilities")
        capacity = self._capacity(request.capacity_range)
        params = parse_parameters(request.parameters)
        subdir = safe_subdir(params.subdir) if params.subdir is not None else safe_subdir(request.name,
                                                                                         what="volume name")
        location = params.location
        volume_id = VolumeId(location.server, location.export, subdir, request.name, params.on_delete,
                             location.port, location.version)
        source = self._content_source(request, volume_id)
        with self.locks.hold(request.name), self._files(volume_id, "creating the volume directory") as files:
            existing = read_record(files, request.name)
            if existing is not None:
                self._check_compatible(existing, request, str(volume_id), source)
                files.makedirs(subdir)   # a record without its directory (deleted by hand): make it again
                return self._response(existing, request)
            if source is not None:
                self._copy(files, source, volume_id)
            else:
                files.makedirs(subdir)
            if params.mount_permissions is not None:
                files.chmod(subdir, params.mount_permissions)
            record = VolumeRecord(request.name, str(volume_id), capacity, source.id if source else "")
            write_record(files, record)   # the commit point: a retry before it starts over
            return self._response(record, request)

    def _capacity(self, capacity_range: csi_pb2.CapacityRange) -> int:
        required, limit = capacity_range.required_bytes, capacity_range.limit_bytes
        if required < 0 or limit < 0:
            raise CsiError("INVALID_ARGUMENT", "capacity range must not be negative")
        if limit and required > limit:
            raise CsiError("INVALID_ARGUMENT", f"required_bytes {required} exceeds limit_bytes {limit}")
        if required > self.max_volume_bytes:
            raise CsiError("OUT_OF_RANGE", f"requested capacity {required} exceeds the maximum volume size "
                           f"{self.max_volume_bytes}")
        return required or min(limit, self.max_volume_bytes)

    def _content_source(self, request: csi_pb2.CreateVolumeRequest, target: VolumeId) -> _Source | None:
        """The request's content source (a snapshot or, cloning, a volume) on the target's share, or None."""
        if not request.HasField("volume_content_source"):
            return None
        content = request.volume_content_source
        source: VolumeId | SnapshotId | None
        if content.HasField("snapshot"):
            require(content.snapshot.snapshot_id, "source snapshot id")
            source_id, source = content.snapshot.snapshot_id, SnapshotId.parse(content.snapshot.snapshot_id)
            directory = snapshot_data(source) if source is not None else ""
        else:
            require(content.volume.volume_id, "source volume id")
            source_id, source = content.volume.volume_id, VolumeId.parse(content.volume.volume_id)
            directory = source.subdir if source is not None else ""
        if source is None:
            raise CsiError("NOT_FOUND", f"content source {source_id!r} does not exist")
        if source.location != target.location:
            raise CsiError("INVALID_ARGUMENT", f"content source is on {source.location}, the new volume on "
                           f"{target.location}: copies stay on one share")
        return _Source(source_id, directory)

    def _check_compatible(self, existing: VolumeRecord, request: csi_pb2.CreateVolumeRequest,
                          volume_id: str, source: _Source | None) -> None:
        required, limit = request.capacity_range.required_bytes, request.capacity_range.limit_bytes
        size = existing.capacity_bytes
        if (required and size < required) or (limit and size > limit):
            raise CsiError("ALREADY_EXISTS", f"volume {request.name!r} exists with capacity {size}, "
                           f"incompatible with required {required} / limit {limit}")
        if existing.volume_id != volume_id:
            raise CsiError("ALREADY_EXISTS", f"volume {request.name!r} exists as {existing.volume_id}, "
                           f"not {volume_id} (different parameters)")
        if existing.source_volume_id != (source.id if source else ""):
            raise CsiError("ALREADY_EXISTS", f"volume {request.name!r} exists with a different content source")

    def _copy(self, files: NfsFiles, source: _Source, target: VolumeId) -> None:
        if not files.is_dir(source.directory):
            raise CsiError("NOT_FOUND", f"content source {source.id!r} does not exist (no directory "
                           f"{source.directory})")
        if files.exists(target.subdir):
            raise CsiError("ALREADY_EXISTS", f"directory {target.subdir} already exists; refusing to copy over it")
        try:
            files.copytree(source.directory, target.subdir)
        except BaseException:
            files.rmtree(target.subdir)   # never leave a half copy that a retry would take for a volume
            raise

    @staticmethod
    def _response(record: VolumeRecord, request: csi_pb2.CreateVolumeRequest) -> csi_pb2.CreateVolumeResponse:
        volume_id = VolumeId.parse(record.volume_id)
        assert volume_id is not None   # we wrote it
        volume = csi_pb2.Volume(capacity_bytes=record.capacity_bytes, volume_id=record.volume_id,
                                volume_context=_context(volume_id))
        if request.HasField("volume_content_source"):
            volume.content_source.CopyFrom(request.volume_content_source)
        return csi_pb2.CreateVolumeResponse(volume=volume)

    # ------------------------------------------------------------------ DeleteVolume

    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest) -> csi_pb2.DeleteVolumeResponse:
        require(request.volume_id, "volume id")
        volume = VolumeId.parse(request.volume_id)
        if volume is None:
            return csi_pb2.DeleteVolumeResponse()   # not ours, so it does not exist: the spec says OK
        with self.locks.hold(volume.name), self._files(volume, "deleting the volume") as files:
            if volume.on_delete is OnDelete.DELETE:
                files.rmtree(volume.subdir)
            elif volume.on_delete is OnDelete.ARCHIVE and files.exists(volume.subdir):
                archived = volume.archived_subdir()
                if files.exists(archived):   # archived once before (same name re-created): keep both
                    archived = f"{archived}-{time.strftime('%Y%m%d%H%M%S')}"
                files.rename(volume.subdir, archived)
            delete_record(files, volume.name)
        return csi_pb2.DeleteVolumeResponse()

    # ------------------------------------------------------------------ ValidateVolumeCapabilities

    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        require(request.volume_id, "volume id")
        require(list(request.volume_capabilities), "volume capabilities")
        volume = self._existing(request.volume_id)
        problems = [p for p in map(capability_problem, request.volume_capabilities) if p is not None]
        if problems:   # unsupported is an answer, not an error: no "confirmed", and why
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context or _context(volume),
            volume_capabilities=request.volume_capabilities, parameters=request.parameters)
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    # ------------------------------------------------------------------ ControllerExpandVolume

    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        require(request.volume_id, "volume id")
        require(request.HasField("capacity_range"), "capacity range")
        volume = VolumeId.parse(request.volume_id)
        if volume is None:
            raise CsiError("NOT_FOUND", f"volume {request.volume_id!r} does not exist")
        wanted = self._capacity(request.capacity_range)
        with self.locks.hold(volume.name), self._files(volume, "expanding the volume") as files:
            if not files.is_dir(volume.subdir):
                raise CsiError("NOT_FOUND", f"volume {request.volume_id!r} does not exist (no directory)")
            record = read_record(files, volume.name) or VolumeRecord(volume.name, str(volume), 0)
            capacity = max(wanted, record.capacity_bytes)   # expansion never shrinks
            write_record(files, VolumeRecord(record.name, record.volume_id, capacity, record.source_volume_id))
        # NFS has no filesystem on the node to grow: the kubelet need not call NodeExpandVolume.
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=capacity, node_expansion_required=False)

    # ------------------------------------------------------------------ snapshots

    def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest) -> csi_pb2.CreateSnapshotResponse:
        require(request.name, "snapshot name")
        require(request.source_volume_id, "source volume id")
        if request.parameters:
            raise CsiError("INVALID_ARGUMENT", f"invalid snapshot parameter {sorted(request.parameters)[0]!r} "
                           "(this driver takes none)")
        source = VolumeId.parse(request.source_volume_id)
        if source is None:
            raise CsiError("NOT_FOUND", f"source volume {request.source_volume_id!r} does not exist")
        snapshot = SnapshotId(source.server, source.share, request.name, source.port, source.version)
        with self.locks.hold(f"snapshot/{request.name}"), self._files(source, "taking the snapshot") as files:
            existing = read_snapshot(files, snapshot)
            if existing is not None and existing.source_volume_id != request.source_volume_id:
                raise CsiError("ALREADY_EXISTS", f"snapshot {request.name!r} exists for another source volume "
                               f"({existing.source_volume_id})")
            record = existing or take_snapshot(files, snapshot, source, request.source_volume_id)
        return csi_pb2.CreateSnapshotResponse(snapshot=record.to_message())

    def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest) -> csi_pb2.DeleteSnapshotResponse:
        require(request.snapshot_id, "snapshot id")
        snapshot = SnapshotId.parse(request.snapshot_id)
        if snapshot is None:
            return csi_pb2.DeleteSnapshotResponse()   # not ours, so it does not exist: OK
        volume = VolumeId(snapshot.server, snapshot.share, snapshot.directory, snapshot.name, OnDelete.DELETE,
                          snapshot.port, snapshot.version)
        with self.locks.hold(f"snapshot/{snapshot.name}"), self._files(volume, "deleting the snapshot") as files:
            files.rmtree(snapshot.directory)
        return csi_pb2.DeleteSnapshotResponse()

    # ------------------------------------------------------------------ capabilities

    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=csi_pb2.ControllerServiceCapability.RPC(type=kind))
            for kind in CONTROLLER_CAPABILITIES
        ])

    # ------------------------------------------------------------------ helpers

    def _existing(self, volume_id: str) -> VolumeId:
        volume = VolumeId.parse(volume_id)
        if volume is None:
            raise CsiError("NOT_FOUND", f"volume {volume_id!r} does not exist")
        with self._files(volume, "looking up the volume") as files:
            if not files.is_dir(volume.subdir):
                raise CsiError("NOT_FOUND", f"volume {volume_id!r} does not exist (no directory {volume.subdir})")
        return volume

    def _files(self, volume: VolumeId, doing: str) -> _Session:
        self._locations.add(volume.location)
        return _Session(self._connect, volume, doing)

    def locations_in_use(self) -> list[NfsLocation]:
        """The NFS shares this controller has worked on since it started."""
        return sorted(self._locations, key=str)


class _Session:
    """``with`` an NFS connection to a volume's share; NFS failures become CSI codes on the way out."""

    def __init__(self, connect: Connect, volume: VolumeId, doing: str) -> None:
        self._connect, self._volume, self._doing = connect, volume, doing
        self._files: NfsFiles | None = None

    def __enter__(self) -> NfsFiles:
        try:
            self._files = self._connect(self._volume.location)
        except NfsError as err:
            raise nfs_failure(err, f"{self._doing} on {self._volume.location}") from err
        return self._files

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._files is not None:
            self._files.close()
        if isinstance(exc, NfsError):
            raise nfs_failure(exc, f"{self._doing} {self._volume.subdir} on {self._volume.location}") from exc


def _context(volume: VolumeId) -> dict[str, str]:
    """The volume_context handed to NodePublishVolume: human-readable; the node trusts the id, not this."""
    return {"server": volume.server, "share": volume.share, "subDir": volume.subdir,
            "port": str(volume.port), "version": str(volume.version)}


def _nfs_client(location: NfsLocation) -> NfsFiles:
    from meshlab.mounting.nfsclient import NfsClient

    return NfsClient(location)
