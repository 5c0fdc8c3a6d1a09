"""The MOUNT v3 protocol (RFC 1813 appendix I) and the portmapper's GETPORT (RFC 1833), as XDR.

NFSv3 itself has no way to find an export's root: a client first asks the MOUNT program (100005) with MNT
and a path such as ``/export``, and gets the root *file handle* plus the accepted auth flavors. DUMP lists
who mounted what, EXPORT lists exports and the hosts allowed, UMNT/UMNTALL remove entries (advisory only:
handles stay valid). Classic servers put MOUNT on a port found through the portmapper (100000, port 111);
meshlab's server answers MOUNT, NFS and portmapper GETPORT on one port, so no rpcbind is needed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshlab.nfs.xdr import Packer, Unpacker

MOUNT_PROGRAM = 100005
MOUNT_V3 = 3
MNTPATHLEN = 1024
MNTNAMLEN = 255

PORTMAP_PROGRAM = 100000
PORTMAP_V2 = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17


class MountProc(enum.IntEnum):
    NULL = 0
    MNT = 1
    DUMP = 2
    UMNT = 3
    UMNTALL = 4
    EXPORT = 5


class PortmapProc(enum.IntEnum):
    NULL = 0
    SET = 1
    UNSET = 2
    GETPORT = 3
    DUMP = 4


class MountStatus(enum.IntEnum):
    MNT3_OK = 0
    MNT3ERR_PERM = 1
    MNT3ERR_NOENT = 2
    MNT3ERR_IO = 5
    MNT3ERR_ACCES = 13
    MNT3ERR_NOTDIR = 20
    MNT3ERR_INVAL = 22
    MNT3ERR_NAMETOOLONG = 63
    MNT3ERR_NOTSUPP = 10004
    MNT3ERR_SERVERFAULT = 10006


@dataclass(frozen=True)
class MountEntry:
    """One DUMP entry: a client host and the directory it mounted."""

    hostname: str
    directory: str


@dataclass(frozen=True)
class ExportEntry:
    """One EXPORT entry: an exported directory and the groups (hosts) allowed; empty means everyone."""

    directory: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    """``mapping`` of the portmapper: which port serves a program version over a protocol."""

    prog: int
    vers: int
    prot: int
    port: int = 0


def decode_dirpath(data: bytes) -> str:
    u = Unpacker(data)
    path = u.string(MNTPATHLEN)
    u.done()
    return path


def encode_dirpath(path: str) -> bytes:
    p = Packer()
    p.string(path, MNTPATHLEN)
    return bytes(p)


def encode_mnt_result(status: MountStatus, fh: bytes = b"", flavors: tuple[int, ...] = ()) -> bytes:
    p = Packer()
    p.uint(status)
    if status == MountStatus.MNT3_OK:
        p.opaque(fh, 64)
        p.array(list(flavors), p.uint)
    return bytes(p)


def decode_mnt_result(data: bytes) -> tuple[MountStatus, bytes, tuple[int, ...]]:
    u = Unpacker(data)
    status = MountStatus(u.uint())
    if status != MountStatus.MNT3_OK:
        return status, b"", ()
    return status, u.opaque(64), tuple(u.array(u.uint))


def _pack_linked(p: Packer, items: list[MountEntry] | list[ExportEntry]) -> None:
    # XDR linked lists: each node is "value follows" (TRUE) then the value; FALSE ends the list.
    for item in items:
        p.boolean(True)
        if isinstance(item, MountEntry):
            p.string(item.hostname, MNTNAMLEN)
            p.string(item.directory, MNTPATHLEN)
        else:
            p.string(item.directory, MNTPATHLEN)
            for group in item.groups:
                p.boolean(True)
                p.string(group, MNTNAMLEN)
            p.boolean(False)
    p.boolean(False)


def encode_mountlist(entries: list[MountEntry]) -> bytes:
    p = Packer()
    _pack_linked(p, entries)
    return bytes(p)


def decode_mountlist(data: bytes) -> list[MountEntry]:
    u = Unpacker(data)
    out = []
    while u.boolean():
        out.append(MountEntry(u.string(MNTNAMLEN), u.string(MNTPATHLEN)))
    u.done()
    return out


def encode_exports(entries: list[ExportEntry]) -> bytes:
    p = Packer()
    _pack_linked(p, entries)
    return bytes(p)


def decode_exports(data: bytes) -> list[ExportEntry]:
    u = Unpacker(data)
    out = []
    while u.boolean():
        directory = u.string(MNTPATHLEN)
        groups = []
        while u.boolean():
            groups.append(u.string(MNTNAMLEN))
        out.append(ExportEntry(directory, tuple(groups)))
    u.done()
    return out


def encode_mapping(m: PortMapping) -> bytes:
    p = Packer()
    for value in (m.prog, m.vers, m.prot, m.port):
        p.uint(value)
    return bytes(p)


def decode_mapping(data: bytes) -> PortMapping:
    u = Unpacker(data)
    mapping = PortMapping(u.uint(), u.uint(), u.uint(), u.uint())
    u.done()
    return mapping
