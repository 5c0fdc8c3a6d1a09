"""The driver's memory of what it provisioned, kept on the export itself (written through NFS).

NFS has no notion of a volume's size, which is why the upstream NFS driver answers ``capacity_bytes: 0``
and cannot pass csi-sanity's idempotency tests (same name + same capacity → the same volume; same name
+ different capacity → ALREADY_EXISTS). meshlab keeps one small JSON record per CreateVolume name under
``.meshlab-volumes/<sha256(name)>/volume.json`` at the root of the share: the id it returned, the capacity
it promised, the clone source. Keeping it on the export (not in the controller pod) means a restarted or
rescheduled controller still knows; keeping it beside the volumes (not inside them) means a pod never
sees it. The directory-per-record layout lets deletion use the client's idempotent ``rmtree``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Protocol

from meshlab.errors import CsiError, NfsError
from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.volume_id import INDEX_DIR

__all__ = ["Connect", "NfsFiles", "VolumeRecord", "delete_record", "nfs_failure", "read_record", "write_record"]


class NfsFiles(Protocol):
    """What the controller needs of :class:`meshlab.mounting.nfsclient.NfsClient` (paths relative to the share)."""

    def makedirs(self, path: str, mode: int = 0o777) -> None: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def rename(self, src: str, dst: str) -> None: ...
    def rmtree(self, path: str) -> None: ...
    def copytree(self, src: str, dst: str) -> None: ...
    def read_file(self, path: str) -> bytes: ...
    def write_file(self, path: str, data: bytes) -> None: ...
    def usage(self, path: str) -> tuple[int, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> NfsFiles: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


Connect = Callable[[NfsLocation], NfsFiles]


@dataclass(frozen=True)
class VolumeRecord:
    """One provisioned volume as CreateVolume answered it."""

    name: str
    volume_id: str
    capacity_bytes: int
    source_volume_id: str = ""   # the clone source, "" when created empty

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VolumeRecord:
        raw = json.loads(data)
        return cls(name=str(raw["name"]), volume_id=str(raw["volume_id"]),
                   capacity_bytes=int(raw["capacity_bytes"]), source_volume_id=str(raw.get("source_volume_id", "")))


def _record_dir(name: str) -> str:
    # Hash: names may be 128 characters of any Unicode, not all of them safe as a path component.
    return f"{INDEX_DIR}/{hashlib.sha256(name.encode()).hexdigest()}"


def read_record(files: NfsFiles, name: str) -> VolumeRecord | None:
    """The record of volume ``name``, or None when this share has none."""
    path = f"{_record_dir(name)}/volume.json"
    if not files.exists(path):
        return None
    try:
        return VolumeRecord.from_json(files.read_file(path))
    except (ValueError, KeyError, TypeError) as err:
        raise CsiError("INTERNAL", f"volume record {path} on the share is corrupt: {err}") from err


def write_record(files: NfsFiles, record: VolumeRecord) -> None:
    directory = _record_dir(record.name)
    files.makedirs(directory)
    files.write_file(f"{directory}/volume.json", record.to_json())


def delete_record(files: NfsFiles, name: str) -> None:
    files.rmtree(_record_dir(name))


def nfs_failure(err: NfsError, doing: str) -> CsiError:
    """The CSI code for an NFS failure: UNAVAILABLE when the server is unreachable (the CO retries)."""
    code = "UNAVAILABLE" if err.status == "NFS_UNREACHABLE" else "INTERNAL"
    return CsiError(code, f"{doing}: {err}")
