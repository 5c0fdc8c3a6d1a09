"""File attributes and permissions as NFSv3 sees them: ``fattr3`` from ``lstat``, ACCESS bits, errno → status.

A Unix permission check picks one class of bits — owner if the caller's uid owns the file, else group if
the file's gid is among the caller's groups, else other — and never combines them; uid 0 passes every check
except execute on a file with no execute bit at all. NFSv3 ACCESS (RFC 1813 §3.3.4) asks the server to do
this check for the caller named by AUTH_SYS and answer with the granted subset of READ, LOOKUP, MODIFY,
EXTEND, DELETE and EXECUTE; a server that answers "all bits" makes clients like libnfs refuse to trust it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from meshlab.nfs.nfs3 import Access, FAttr, FType, NfsTime, Status

NOBODY = 65534

_ERRNO_STATUS = {
    errno.EPERM: Status.NFS3ERR_PERM, errno.ENOENT: Status.NFS3ERR_NOENT, errno.EIO: Status.NFS3ERR_IO,
    errno.ENXIO: Status.NFS3ERR_NXIO, errno.EACCES: Status.NFS3ERR_ACCES, errno.EEXIST: Status.NFS3ERR_EXIST,
    errno.EXDEV: Status.NFS3ERR_XDEV, errno.ENODEV: Status.NFS3ERR_NODEV, errno.ENOTDIR: Status.NFS3ERR_NOTDIR,
    errno.EISDIR: Status.NFS3ERR_ISDIR, errno.EINVAL: Status.NFS3ERR_INVAL, errno.EFBIG: Status.NFS3ERR_FBIG,
    errno.ENOSPC: Status.NFS3ERR_NOSPC, errno.EROFS: Status.NFS3ERR_ROFS, errno.EMLINK: Status.NFS3ERR_MLINK,
    errno.ENAMETOOLONG: Status.NFS3ERR_NAMETOOLONG, errno.ENOTEMPTY: Status.NFS3ERR_NOTEMPTY,
    errno.EDQUOT: Status.NFS3ERR_DQUOT, errno.ESTALE: Status.NFS3ERR_STALE, errno.ELOOP: Status.NFS3ERR_INVAL,
}

_FTYPES = {stat.S_IFREG: FType.NF3REG, stat.S_IFDIR: FType.NF3DIR, stat.S_IFBLK: FType.NF3BLK,
           stat.S_IFCHR: FType.NF3CHR, stat.S_IFLNK: FType.NF3LNK, stat.S_IFSOCK: FType.NF3SOCK,
           stat.S_IFIFO: FType.NF3FIFO}


@dataclass(frozen=True)
class Caller:
    """Who is asking (AUTH_SYS uid/gids; AUTH_NONE is ``nobody``)."""

    uid: int = NOBODY
    gid: int = NOBODY
    gids: tuple[int, ...] = ()


def fattr_of(st: os.stat_result, fsid: int) -> FAttr:
    return FAttr(
        type=_FTYPES.get(stat.S_IFMT(st.st_mode), FType.NF3REG), mode=stat.S_IMODE(st.st_mode),
        nlink=st.st_nlink, uid=st.st_uid, gid=st.st_gid, size=st.st_size, used=st.st_blocks * 512,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)), fsid=fsid, fileid=st.st_ino,
        atime=NfsTime.from_ns(st.st_atime_ns), mtime=NfsTime.from_ns(st.st_mtime_ns),
        ctime=NfsTime.from_ns(st.st_ctime_ns),
    )


def allowed_access(st: os.stat_result, caller: Caller) -> Access:
    """The ACCESS bits ``caller`` has on a file with attributes ``st`` (owner, then group, then other)."""
    is_dir = stat.S_ISDIR(st.st_mode)
    if caller.uid == 0:
        bits = Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE
        if is_dir or st.st_mode & 0o111:
            bits |= Access.EXECUTE
        return bits
    mode = st.st_mode
    if caller.uid == st.st_uid:
        perm = (mode >> 6) & 7
    elif st.st_gid == caller.gid or st.st_gid in caller.gids:
        perm = (mode >> 3) & 7
    else:
        perm = mode & 7
    bits = Access(0)
    if perm & 4:
        bits |= Access.READ
    if perm & 2:
        bits |= Access.MODIFY | Access.EXTEND | (Access.DELETE if is_dir else Access(0))
    if perm & 1:
        bits |= Access.LOOKUP if is_dir else Access.EXECUTE
    return bits


def status_of(err: OSError) -> Status:
    return _ERRNO_STATUS.get(err.errno or 0, Status.NFS3ERR_IO)
