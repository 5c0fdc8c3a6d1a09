"""Snapshots of ``nfs.csi.meshlab.io``: a copy of the volume's directory, made and kept through NFS.

CSI snapshots (spec v1, "CreateSnapshot") are cut from a volume and later consumed by CreateVolume with
a ``snapshot`` content source. kubernetes-csi/csi-driver-nfs tars the directory on the server; meshlab
copies it file by file through NFS (``copytree``) into ``.meshlab-snapshots/<sha256(name)>/data`` on the
source's share, beside a ``snapshot.json`` record (name, source, time, size). The record is written last
and is what makes a retry with the same name and source return the same snapshot (and another source
``6 ALREADY_EXISTS``); the copy is complete when the call returns, so ``ready_to_use`` is always true.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from google.protobuf import timestamp_pb2

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError
from meshlab.storage.csi.records import NfsFiles
from meshlab.storage.csi.volume_id import SnapshotId, VolumeId

__all__ = ["SnapshotRecord", "read_snapshot", "snapshot_data", "take_snapshot"]


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot as CreateSnapshot answered it."""

    name: str
    snapshot_id: str
    source_volume_id: str
    creation_time_ns: int
    size_bytes: int

    def to_message(self) -> csi_pb2.Snapshot:
        created = timestamp_pb2.Timestamp()
        created.FromNanoseconds(self.creation_time_ns)
        return csi_pb2.Snapshot(size_bytes=self.size_bytes, snapshot_id=self.snapshot_id,
                                source_volume_id=self.source_volume_id, creation_time=created, ready_to_use=True)


def snapshot_data(snapshot: SnapshotId) -> str:
    """Where the copy of the volume's files lives, relative to the share."""
    return f"{snapshot.directory}/data"


def read_snapshot(files: NfsFiles, snapshot: SnapshotId) -> SnapshotRecord | None:
    """The record of ``snapshot``, or None when it does not exist (or its copy never finished)."""
    path = f"{snapshot.directory}/snapshot.json"
    if not files.exists(path):
        return None
    try:
        return SnapshotRecord(**json.loads(files.read_file(path)))
    except (ValueError, TypeError) as err:
        raise CsiError("INTERNAL", f"snapshot record {path} on the share is corrupt: {err}") from err


def take_snapshot(files: NfsFiles, snapshot: SnapshotId, source: VolumeId, source_volume_id: str) -> SnapshotRecord:
    """Copy ``source``'s directory into the snapshot's and record it; NOT_FOUND when the source is gone."""
    if not files.is_dir(source.subdir):
        raise CsiError("NOT_FOUND", f"source volume {source_volume_id!r} does not exist (no directory)")
    files.rmtree(snapshot.directory)   # a copy left by an interrupted attempt: no record, so start over
    files.makedirs(snapshot.directory)
    files.copytree(source.subdir, snapshot_data(snapshot))
    size, _ = files.usage(snapshot_data(snapshot))
    record = SnapshotRecord(snapshot.name, str(snapshot), source_volume_id, time.time_ns(), size)
    files.write_file(f"{snapshot.directory}/snapshot.json", json.dumps(asdict(record), indent=1).encode())
    return record
