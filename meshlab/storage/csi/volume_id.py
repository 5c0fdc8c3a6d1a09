"""Volume ids of ``nfs.csi.meshlab.io``: the volume's NFS location written into the id itself.

A CSI ``volume_id`` is the only thing the CO hands back on DeleteVolume, NodePublishVolume and friends
(DeleteVolume does not even carry the StorageClass parameters), so, like kubernetes-csi/csi-driver-nfs
(pkg/nfs/controllerserver.go), the id spells out where the directory lives, ``#``-separated::

    {server}#{share}#{subdir}#{name}#{onDelete}#{port}#{version}
    127.0.0.1#/export#volumes/pvc-4bcb#pvc-4bcb#delete#12049#4

The first five fields are the upstream driver's (it omits ``name`` and ``onDelete`` when they are
defaults; meshlab always writes all seven and parses ids of 3 to 7 fields); ``port`` and ``version`` are
meshlab's additions because lab NFS servers listen on high ports and speak v3 or v4. No field may
contain ``#``. :func:`safe_subdir` is the one gate every directory name passes: no ``..``, no control
characters, never the driver's own index directory — path traversal through a StorageClass or a
volume name is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
from dataclasses import dataclass

from meshlab.errors import CsiError
from meshlab.mounting.nfsclient import NfsLocation

__all__ = ["INDEX_DIR", "SNAPSHOT_DIR", "OnDelete", "SnapshotId", "VolumeId", "safe_subdir"]

SEPARATOR = "#"
INDEX_DIR = ".meshlab-volumes"  # the driver's records on the export (capacity per volume name)
SNAPSHOT_DIR = ".meshlab-snapshots"  # snapshot copies, one directory per snapshot name
_RESERVED = (INDEX_DIR, SNAPSHOT_DIR)
_SNAPSHOT_MARK = "snapshot"   # the 5th field of a snapshot id, where a volume id has onDelete


class OnDelete(enum.Enum):
    """What DeleteVolume does with the directory (StorageClass parameter ``onDelete``)."""

    DELETE = "delete"
    RETAIN = "retain"
    ARCHIVE = "archive"   # rename to archived-<subdir>


@dataclass(frozen=True)
class VolumeId:
    """A parsed volume id: where the directory is and what to do with it on delete."""

    server: str
    share: str
    subdir: str          # relative to the share, e.g. "volumes/pvc-1"
    name: str            # the CreateVolume name (the record key)
    on_delete: OnDelete = OnDelete.DELETE
    port: int = 2049
    version: int = 3

    @property
    def location(self) -> NfsLocation:
        return NfsLocation(server=self.server, export=self.share, port=self.port, version=self.version)

    def __str__(self) -> str:
        fields = [self.server, self.share, self.subdir, self.name, self.on_delete.value,
                  str(self.port), str(self.version)]
        return SEPARATOR.join(fields)

    @classmethod
    def parse(cls, text: str) -> VolumeId | None:
        """The id's fields, or None when ``text`` is not an id this driver made (callers decide the code)."""
        fields = text.split(SEPARATOR)
        if not 3 <= len(fields) <= 7 or not all(fields[:3]):
            return None
        server, share, subdir = fields[:3]
        name = fields[3] if len(fields) > 3 and fields[3] else subdir
        try:
            on_delete = OnDelete(fields[4]) if len(fields) > 4 and fields[4] else OnDelete.DELETE
            port = int(fields[5]) if len(fields) > 5 else 2049
            version = int(fields[6]) if len(fields) > 6 else 3
            subdir = safe_subdir(subdir)
        except (ValueError, CsiError):
            return None
        if not 0 < port < 65536 or version not in (3, 4):
            return None
        return cls(server, share, subdir, name, on_delete, port, version)

    def archived_subdir(self) -> str:
        """Where ``onDelete: archive`` moves the directory: ``archived-`` before its last component."""
        parent, leaf = posixpath.split(self.subdir)
        return posixpath.join(parent, f"archived-{leaf}")


@dataclass(frozen=True)
class SnapshotId:
    """A snapshot: a copy of a volume's directory kept on the same share under ``.meshlab-snapshots/``.

    Written like a volume id with ``snapshot`` where a volume id has ``onDelete``, so no snapshot id is
    ever taken for a volume id (upstream's snapshot id is ``{server}#{baseDir}#{name}#{name}#{source}``)::

        {server}#{share}#.meshlab-snapshots/{sha256(name)}#{name}#snapshot#{port}#{version}
    """

    server: str
    share: str
    name: str
    port: int = 2049
    version: int = 3

    @property
    def location(self) -> NfsLocation:
        return NfsLocation(server=self.server, export=self.share, port=self.port, version=self.version)

    @property
    def directory(self) -> str:
        # Hash: snapshot names may be 128 characters of any Unicode.
        return f"{SNAPSHOT_DIR}/{hashlib.sha256(self.name.encode()).hexdigest()}"

    def __str__(self) -> str:
        return SEPARATOR.join([self.server, self.share, self.directory, self.name, _SNAPSHOT_MARK,
                               str(self.port), str(self.version)])

    @classmethod
    def parse(cls, text: str) -> SnapshotId | None:
        fields = text.split(SEPARATOR)
        if len(fields) != 7 or fields[4] != _SNAPSHOT_MARK or not all(fields):
            return None
        try:
            snapshot = cls(fields[0], fields[1], fields[3], int(fields[5]), int(fields[6]))
        except ValueError:
            return None
        return snapshot if snapshot.directory == fields[2] else None


def safe_subdir(raw: str, *, what: str = "subDir") -> str:
    """``raw`` as a clean relative path under the share, or INVALID_ARGUMENT saying why not."""
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in raw):
        raise CsiError("INVALID_ARGUMENT", f"{what} {raw!r} contains control characters")
    if SEPARATOR in raw:
        raise CsiError("INVALID_ARGUMENT", f"{what} {raw!r} contains {SEPARATOR!r}, which volume ids reserve")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise CsiError("INVALID_ARGUMENT", f"{what} {raw!r} escapes the share (path traversal refused)")
    if not parts:
        raise CsiError("INVALID_ARGUMENT", f"{what} {raw!r} names no directory under the share")
    if parts[0] in _RESERVED:
        raise CsiError("INVALID_ARGUMENT", f"{what} {raw!r} is inside the driver's own directory {parts[0]}")
    return "/".join(parts)
