"""NFS version 3 (RFC 1813): program and procedure numbers, status codes, and the attribute types.

NFSv3 is stateless: every call names its object by an opaque *file handle* (up to 64 bytes) that the server
issued, and a server must recognise its handles across restarts. Attributes travel as ``fattr3`` (type,
mode, link count, owner, sizes, ids, three times); replies that change a directory return *weak cache
consistency* data (``wcc_data``: size and times before, full attributes after) so clients can keep their
caches honest without another GETATTR. ``sattr3`` is the set of attributes a client asks to change, each
field optional. Procedure arguments live in :mod:`meshlab.nfs.nfs3_args`; MOUNT in :mod:`meshlab.nfs.mount3`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshlab.nfs.xdr import Packer, Unpacker, XdrError

NFS_PROGRAM = 100003
NFS_V3 = 3
FHSIZE3 = 64
COOKIEVERF3 = 8
CREATEVERF3 = 8
WRITEVERF3 = 8


class Proc(enum.IntEnum):
    NULL = 0
    GETATTR = 1
    SETATTR = 2
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    CREATE = 8
    MKDIR = 9
    SYMLINK = 10
    MKNOD = 11
    REMOVE = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    READDIR = 16
    READDIRPLUS = 17
    FSSTAT = 18
    FSINFO = 19
    PATHCONF = 20
    COMMIT = 21


class Status(enum.IntEnum):
    """``nfsstat3``: the first word of every NFSv3 result."""

    NFS3_OK = 0
    NFS3ERR_PERM = 1
    NFS3ERR_NOENT = 2
    NFS3ERR_IO = 5
    NFS3ERR_NXIO = 6
    NFS3ERR_ACCES = 13
    NFS3ERR_EXIST = 17
    NFS3ERR_XDEV = 18
    NFS3ERR_NODEV = 19
    NFS3ERR_NOTDIR = 20
    NFS3ERR_ISDIR = 21
    NFS3ERR_INVAL = 22
    NFS3ERR_FBIG = 27
    NFS3ERR_NOSPC = 28
    NFS3ERR_ROFS = 30
    NFS3ERR_MLINK = 31
    NFS3ERR_NAMETOOLONG = 63
    NFS3ERR_NOTEMPTY = 66
    NFS3ERR_DQUOT = 69
    NFS3ERR_STALE = 70
    NFS3ERR_REMOTE = 71
    NFS3ERR_BADHANDLE = 10001
    NFS3ERR_NOT_SYNC = 10002
    NFS3ERR_BAD_COOKIE = 10003
    NFS3ERR_NOTSUPP = 10004
    NFS3ERR_TOOSMALL = 10005
    NFS3ERR_SERVERFAULT = 10006
    NFS3ERR_BADTYPE = 10007
    NFS3ERR_JUKEBOX = 10008


class FType(enum.IntEnum):
    NF3REG = 1
    NF3DIR = 2
    NF3BLK = 3
    NF3CHR = 4
    NF3LNK = 5
    NF3SOCK = 6
    NF3FIFO = 7


class StableHow(enum.IntEnum):
    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class CreateMode(enum.IntEnum):
    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


class TimeHow(enum.IntEnum):
    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


class Access(enum.IntFlag):
    """ACCESS bits (RFC 1813 §3.3.4): what the caller may do to the object."""

    READ = 0x01
    LOOKUP = 0x02
    MODIFY = 0x04
    EXTEND = 0x08
    DELETE = 0x10
    EXECUTE = 0x20


# FSINFO properties bits
FSF3_LINK = 0x01
FSF3_SYMLINK = 0x02
FSF3_HOMOGENEOUS = 0x08
FSF3_CANSETTIME = 0x10


@dataclass(frozen=True)
class NfsTime:
    seconds: int = 0
    nseconds: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> NfsTime:
        # nfstime3 seconds are unsigned 32-bit: clamp times before 1970 or after 2106 instead of failing.
        seconds, nanos = divmod(max(0, ns), 1_000_000_000)
        return cls(min(seconds, 0xFFFFFFFF), nanos)

    def to_ns(self) -> int:
        return self.seconds * 1_000_000_000 + self.nseconds


@dataclass(frozen=True)
class FAttr:
    """``fattr3``."""

    type: FType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: NfsTime
    mtime: NfsTime
    ctime: NfsTime


@dataclass(frozen=True)
class WccAttr:
    """``wcc_attr``: what a client needs to tell whether its cache was current before a change."""

    size: int
    mtime: NfsTime
    ctime: NfsTime


@dataclass(frozen=True)
class SAttr:
    """``sattr3``: attributes to set; None means leave alone. Times are None, ``"server"`` or an NfsTime."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: NfsTime | str | None = None
    mtime: NfsTime | str | None = None


def pack_time(p: Packer, t: NfsTime) -> None:
    p.uint(t.seconds)
    p.uint(t.nseconds)


def unpack_time(u: Unpacker) -> NfsTime:
    seconds, nseconds = u.uint(), u.uint()
    if nseconds >= 1_000_000_000:
        raise XdrError(f"nseconds {nseconds} out of range")
    return NfsTime(seconds, nseconds)


def pack_fattr(p: Packer, a: FAttr) -> None:
    p.uint(a.type)
    p.uint(a.mode)
    p.uint(a.nlink)
    p.uint(a.uid)
    p.uint(a.gid)
    p.uhyper(a.size)
    p.uhyper(a.used)
    p.uint(a.rdev[0])
    p.uint(a.rdev[1])
    p.uhyper(a.fsid)
    p.uhyper(a.fileid)
    pack_time(p, a.atime)
    pack_time(p, a.mtime)
    pack_time(p, a.ctime)


def unpack_fattr(u: Unpacker) -> FAttr:
    ftype = u.uint()
    if ftype not in FType._value2member_map_:
        raise XdrError(f"unknown file type {ftype}")
    return FAttr(FType(ftype), u.uint(), u.uint(), u.uint(), u.uint(), u.uhyper(), u.uhyper(),
                 (u.uint(), u.uint()), u.uhyper(), u.uhyper(), unpack_time(u), unpack_time(u), unpack_time(u))


def pack_post_op_attr(p: Packer, a: FAttr | None) -> None:
    p.optional(a, lambda v: pack_fattr(p, v))


def unpack_post_op_attr(u: Unpacker) -> FAttr | None:
    return u.optional(lambda: unpack_fattr(u))


def wcc_of(a: FAttr | None) -> WccAttr | None:
    return None if a is None else WccAttr(a.size, a.mtime, a.ctime)


def pack_wcc_data(p: Packer, before: WccAttr | None, after: FAttr | None) -> None:
    def pack_wcc_attr(w: WccAttr) -> None:
        p.uhyper(w.size)
        pack_time(p, w.mtime)
        pack_time(p, w.ctime)

    p.optional(before, pack_wcc_attr)
    pack_post_op_attr(p, after)


def unpack_wcc_data(u: Unpacker) -> tuple[WccAttr | None, FAttr | None]:
    before = u.optional(lambda: WccAttr(u.uhyper(), unpack_time(u), unpack_time(u)))
    return before, unpack_post_op_attr(u)


def pack_fh(p: Packer, fh: bytes) -> None:
    p.opaque(fh, FHSIZE3)


def unpack_fh(u: Unpacker) -> bytes:
    return u.opaque(FHSIZE3)


def pack_post_op_fh(p: Packer, fh: bytes | None) -> None:
    p.optional(fh, lambda v: pack_fh(p, v))


def _pack_set_time(p: Packer, value: NfsTime | str | None) -> None:
    if value is None:
        p.uint(TimeHow.DONT_CHANGE)
    elif isinstance(value, NfsTime):
        p.uint(TimeHow.SET_TO_CLIENT_TIME)
        pack_time(p, value)
    else:
        p.uint(TimeHow.SET_TO_SERVER_TIME)


def _unpack_set_time(u: Unpacker) -> NfsTime | str | None:
    how = u.uint()
    if how == TimeHow.DONT_CHANGE:
        return None
    if how == TimeHow.SET_TO_SERVER_TIME:
        return "server"
    if how == TimeHow.SET_TO_CLIENT_TIME:
        return unpack_time(u)
    raise XdrError(f"unknown time_how {how}")


def pack_sattr(p: Packer, s: SAttr) -> None:
    p.optional(s.mode, p.uint)
    p.optional(s.uid, p.uint)
    p.optional(s.gid, p.uint)
    p.optional(s.size, p.uhyper)
    _pack_set_time(p, s.atime)
    _pack_set_time(p, s.mtime)


def unpack_sattr(u: Unpacker) -> SAttr:
    return SAttr(u.optional(u.uint), u.optional(u.uint), u.optional(u.uint), u.optional(u.uhyper),
                 _unpack_set_time(u), _unpack_set_time(u))


# How many "attributes follow" booleans come after the status in each procedure's failure result
# (post_op_attr: 1, wcc_data: 2). Sending them all FALSE is a valid reply that tells the client nothing
# about its cache, which it must then revalidate — simpler and never wrong.
FAILURE_ATTR_FLAGS: dict[Proc, int] = {
    Proc.GETATTR: 0, Proc.SETATTR: 2, Proc.LOOKUP: 1, Proc.ACCESS: 1, Proc.READLINK: 1, Proc.READ: 1,
    Proc.WRITE: 2, Proc.CREATE: 2, Proc.MKDIR: 2, Proc.SYMLINK: 2, Proc.MKNOD: 2, Proc.REMOVE: 2,
    Proc.RMDIR: 2, Proc.RENAME: 4, Proc.LINK: 3, Proc.READDIR: 1, Proc.READDIRPLUS: 1, Proc.FSSTAT: 1,
    Proc.FSINFO: 1, Proc.PATHCONF: 1, Proc.COMMIT: 2,
}


def encode_failure(proc: Proc, status: Status) -> bytes:
    """A failure result for ``proc``: the status, then every optional attribute block absent."""
    p = Packer()
    p.uint(status)
    for _ in range(FAILURE_ATTR_FLAGS[proc]):
        p.boolean(False)
    return bytes(p)
