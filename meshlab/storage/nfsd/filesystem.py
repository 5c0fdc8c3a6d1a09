"""The NFSv3 procedures (RFC 1813 §3.3) carried out on a real directory: decoded arguments in, XDR results out.

No sockets here: :meth:`Filesystem.call` takes a procedure, its decoded arguments and the caller's
AUTH_SYS identity, does the ``os``-level work inside the export directory and returns the encoded result.
The server never follows a symlink on the client's behalf (LOOKUP uses ``lstat``; the client reads the link
with READLINK and resolves it itself), every directory it works in must be its own ``realpath`` inside the
export (so a directory swapped for a symlink on disk cannot lead outside), and names with ``/`` are refused.
Permissions are checked against the caller's uid/gid like a local kernel would (uid 0 may do anything: no
root squash), and ACCESS reports exactly those bits. Errors come back as the NFS status of the ``errno``.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Callable

from meshlab.nfs import nfs3_args as a
from meshlab.nfs.nfs3 import (
    FSF3_CANSETTIME,
    FSF3_HOMOGENEOUS,
    FSF3_LINK,
    FSF3_SYMLINK,
    Access,
    CreateMode,
    FAttr,
    NfsTime,
    Proc,
    SAttr,
    StableHow,
    Status,
    encode_failure,
    pack_fattr,
    pack_fh,
    pack_post_op_attr,
    pack_post_op_fh,
    pack_time,
    pack_wcc_data,
    wcc_of,
)
from meshlab.nfs.xdr import Packer
from meshlab.storage.nfsd.attributes import Caller, allowed_access, fattr_of, status_of
from meshlab.storage.nfsd.handles import BadHandle, HandleIndex, StaleHandle

MAX_TRANSFER = 1024 * 1024  # rtmax/wtmax: libnfs refuses tiny sizes, 1 MiB matches Linux knfsd
NAME_MAX = 255


class Failure(Exception):
    """A procedure failed with this NFS status."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.name)
        self.status = status


class Filesystem:
    """NFSv3 over the directory ``index.root``; one instance per export, shared by all connections."""

    def __init__(self, index: HandleIndex) -> None:
        self.index = index
        self.root = str(index.root)
        self.fsid = index.root_ids[0]
        self.write_verf = secrets.token_bytes(8)  # new per process: clients resend uncommitted writes
        self._as_root = os.geteuid() == 0
        self._procs: dict[Proc, Callable[[a.Args, Caller, Packer], None]] = {
            Proc.GETATTR: self._getattr, Proc.SETATTR: self._setattr, Proc.LOOKUP: self._lookup,
            Proc.ACCESS: self._access, Proc.READLINK: self._readlink, Proc.READ: self._read,
            Proc.WRITE: self._write, Proc.CREATE: self._create, Proc.MKDIR: self._mkdir,
            Proc.SYMLINK: self._symlink, Proc.REMOVE: self._remove, Proc.RMDIR: self._rmdir,
            Proc.RENAME: self._rename, Proc.LINK: self._link, Proc.READDIR: self._readdir,
            Proc.READDIRPLUS: self._readdir, Proc.FSSTAT: self._fsstat, Proc.FSINFO: self._fsinfo,
            Proc.PATHCONF: self._pathconf, Proc.COMMIT: self._commit,
        }

    def root_handle(self) -> bytes:
        return self.index.handle_for(self.root, os.lstat(self.root))

    def handle_of_path(self, relative: str) -> bytes | None:
        """The handle of a directory ``relative`` to the export (MOUNT of a subdirectory), None if absent."""
        path = self.root
        for name in [part for part in relative.split("/") if part]:
            if name in (".", ".."):
                return None
            path = os.path.join(path, name)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or os.path.realpath(path) != path:
            return None  # not a directory, or reached through a symlink
        return self.index.handle_for(path, st)

    def call(self, proc: Proc, args: a.Args, caller: Caller) -> bytes:
        """Run ``proc``; the encoded result (status first). OSErrors become their NFS status."""
        p = Packer()
        try:
            self._procs[proc](args, caller, p)
        except Failure as err:
            return encode_failure(proc, err.status)
        except OSError as err:
            return encode_failure(proc, status_of(err))
        except (OverflowError, ValueError):
            # Offsets past 2**63, NUL bytes in a symlink target: values the OS cannot even be asked about.
            return encode_failure(proc, Status.NFS3ERR_INVAL)
        return bytes(p)

    # --- helpers ---------------------------------------------------------------------------------------

    def _resolve(self, fh: bytes) -> tuple[str, os.stat_result]:
        try:
            return self.index.resolve(fh)
        except BadHandle as err:
            raise Failure(Status.NFS3ERR_BADHANDLE) from err
        except StaleHandle as err:
            raise Failure(Status.NFS3ERR_STALE) from err

    def _dir(self, fh: bytes) -> tuple[str, os.stat_result]:
        path, st = self._resolve(fh)
        if not stat.S_ISDIR(st.st_mode):
            raise Failure(Status.NFS3ERR_NOTDIR)
        if os.path.realpath(path) != path:
            raise Failure(Status.NFS3ERR_ACCES)  # a component became a symlink on disk: never follow it out
        return path, st

    def _child(self, directory: str, name: str) -> str:
        if not name or "/" in name or "\0" in name:
            raise Failure(Status.NFS3ERR_ACCES)
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise Failure(Status.NFS3ERR_NAMETOOLONG)
        if name in (".", ".."):
            raise Failure(Status.NFS3ERR_EXIST)
        return os.path.join(directory, name)

    def _attr(self, st: os.stat_result) -> FAttr:
        return fattr_of(st, self.fsid)

    def _lattr(self, path: str) -> FAttr | None:
        try:
            return self._attr(os.lstat(path))
        except OSError:
            return None

    @staticmethod
    def _need(st: os.stat_result, caller: Caller, bits: Access) -> None:
        if bits & ~allowed_access(st, caller):
            raise Failure(Status.NFS3ERR_ACCES)

    def _own(self, path: str, caller: Caller) -> None:
        # A root server creates files on the caller's behalf: give them to the caller, as a kernel would.
        if self._as_root and caller.uid != 0:
            os.lchown(path, caller.uid, caller.gid)

    def _set_attrs(self, path: str, st: os.stat_result, attrs: SAttr, caller: Caller) -> None:
        owner = caller.uid in (0, st.st_uid)
        if attrs.mode is not None:
            if not owner:
                raise Failure(Status.NFS3ERR_PERM)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, attrs.mode & 0o7777)
        if attrs.uid is not None or attrs.gid is not None:
            if caller.uid != 0 and (attrs.uid not in (None, st.st_uid) or not owner):
                raise Failure(Status.NFS3ERR_PERM)
            os.lchown(path, -1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid)
        if attrs.size is not None:
            if stat.S_ISDIR(st.st_mode):
                raise Failure(Status.NFS3ERR_ISDIR)
            if not stat.S_ISREG(st.st_mode):
                raise Failure(Status.NFS3ERR_INVAL)
            self._need(st, caller, Access.MODIFY)
            os.truncate(path, attrs.size)
        if attrs.atime is not None or attrs.mtime is not None:
            if not owner and not (attrs.atime == "server" and attrs.mtime == "server"):
                raise Failure(Status.NFS3ERR_PERM)
            now = time.time_ns()
            cur = os.lstat(path)

            def pick(value: NfsTime | str | None, current: int) -> int:
                return current if value is None else now if value == "server" else value.to_ns()  # type: ignore[union-attr]

            os.utime(path, ns=(pick(attrs.atime, cur.st_atime_ns), pick(attrs.mtime, cur.st_mtime_ns)),
                     follow_symlinks=False)

    # --- procedures ------------------------------------------------------------------------------------

    def _getattr(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.FhArgs)
        _, st = self._resolve(args.fh)
        p.uint(Status.NFS3_OK)
        pack_fattr(p, self._attr(st))

    def _setattr(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.SetAttrArgs)
        path, st = self._resolve(args.fh)
        if args.guard is not None and args.guard != NfsTime.from_ns(st.st_ctime_ns):
            raise Failure(Status.NFS3ERR_NOT_SYNC)
        self._set_attrs(path, st, args.attrs, caller)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(st)), self._lattr(path))

    def _lookup(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.DirOpArgs)
        directory, dst = self._dir(args.dir)
        self._need(dst, caller, Access.LOOKUP)
        if args.name == ".":
            path = directory
        elif args.name == "..":
            path = directory if directory == self.root else os.path.dirname(directory)
        else:
            path = self._child(directory, args.name)
        st = os.lstat(path)
        p.uint(Status.NFS3_OK)
        pack_fh(p, self.index.handle_for(path, st))
        pack_post_op_attr(p, self._attr(st))
        pack_post_op_attr(p, self._attr(dst))

    def _access(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.AccessArgs)
        _, st = self._resolve(args.fh)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(st))
        p.uint(args.access & allowed_access(st, caller))

    def _readlink(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.FhArgs)
        path, st = self._resolve(args.fh)
        if not stat.S_ISLNK(st.st_mode):
            raise Failure(Status.NFS3ERR_INVAL)
        target = os.readlink(path)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(st))
        p.string(target)

    def _read(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.ReadArgs)
        path, st = self._resolve(args.fh)
        if stat.S_ISDIR(st.st_mode):
            raise Failure(Status.NFS3ERR_ISDIR)
        if not stat.S_ISREG(st.st_mode):
            raise Failure(Status.NFS3ERR_INVAL)
        if not allowed_access(st, caller) & (Access.READ | Access.EXECUTE):
            raise Failure(Status.NFS3ERR_ACCES)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            data = os.pread(fd, min(args.count, MAX_TRANSFER), args.offset)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(after))
        p.uint(len(data))
        p.boolean(args.offset + len(data) >= after.st_size)
        p.opaque(data)

    def _write(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.WriteArgs)
        path, st = self._resolve(args.fh)
        if stat.S_ISDIR(st.st_mode):
            raise Failure(Status.NFS3ERR_ISDIR)
        if not stat.S_ISREG(st.st_mode):
            raise Failure(Status.NFS3ERR_INVAL)
        self._need(st, caller, Access.MODIFY)
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            written = os.pwrite(fd, args.data, args.offset)
            if args.stable != StableHow.UNSTABLE:
                os.fdatasync(fd)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(st)), self._attr(after))
        p.uint(written)
        p.uint(StableHow.FILE_SYNC if args.stable != StableHow.UNSTABLE else StableHow.UNSTABLE)
        p.fixed_opaque(self.write_verf, 8)

    def _created(self, p: Packer, path: str, directory: str, dir_before: os.stat_result) -> None:
        st = os.lstat(path)
        p.uint(Status.NFS3_OK)
        pack_post_op_fh(p, self.index.handle_for(path, st))
        pack_post_op_attr(p, self._attr(st))
        pack_wcc_data(p, wcc_of(self._attr(dir_before)), self._lattr(directory))

    def _create(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.CreateArgs)
        directory, dst = self._dir(args.dir)
        path = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        if args.mode == CreateMode.EXCLUSIVE:
            # RFC 1813: keep the verifier in the file's times so a retransmitted CREATE is recognised.
            seconds, nanos = int.from_bytes(args.verf[:4], "big"), int.from_bytes(args.verf[4:], "big") % 10**9
            verf_ns = seconds * 10**9 + nanos
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                existing = os.lstat(path)
                if existing.st_mtime_ns != verf_ns or not stat.S_ISREG(existing.st_mode):
                    raise
            else:
                os.close(fd)
                os.utime(path, ns=(verf_ns, verf_ns), follow_symlinks=False)
                self._own(path, caller)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
            if args.mode == CreateMode.GUARDED:
                flags |= os.O_EXCL
            mode = 0o644 if args.attrs.mode is None else args.attrs.mode & 0o7777
            existed = os.path.lexists(path)
            os.close(os.open(path, flags, mode))
            if not existed:
                self._own(path, caller)
            self._set_attrs(path, os.lstat(path), args.attrs, caller)
        self._created(p, path, directory, dst)

    def _mkdir(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.MkdirArgs)
        directory, dst = self._dir(args.dir)
        path = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        os.mkdir(path, 0o755 if args.attrs.mode is None else args.attrs.mode & 0o7777)
        self._own(path, caller)
        self._set_attrs(path, os.lstat(path), args.attrs, caller)
        self._created(p, path, directory, dst)

    def _symlink(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.SymlinkArgs)
        directory, dst = self._dir(args.dir)
        path = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        os.symlink(args.target, path)  # stored as given; the server itself never follows it
        self._own(path, caller)
        self._created(p, path, directory, dst)

    def _remove(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.DirOpArgs)
        directory, dst = self._dir(args.dir)
        path = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise Failure(Status.NFS3ERR_ISDIR)
        os.unlink(path)
        self.index.forget(path)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(dst)), self._lattr(directory))

    def _rmdir(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.DirOpArgs)
        directory, dst = self._dir(args.dir)
        if args.name == ".":
            raise Failure(Status.NFS3ERR_INVAL)
        if args.name == "..":
            raise Failure(Status.NFS3ERR_NOTEMPTY)
        path = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        os.rmdir(path)
        self.index.forget(path)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(dst)), self._lattr(directory))

    def _rename(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.RenameArgs)
        src_dir, src_st = self._dir(args.from_dir)
        dst_dir, dst_st = self._dir(args.to_dir)
        src, dst = self._child(src_dir, args.from_name), self._child(dst_dir, args.to_name)
        self._need(src_st, caller, Access.MODIFY | Access.LOOKUP)
        self._need(dst_st, caller, Access.MODIFY | Access.LOOKUP)
        is_dir = stat.S_ISDIR(os.lstat(src).st_mode)
        if is_dir and (dst + os.sep).startswith(src + os.sep) and src != dst:
            raise Failure(Status.NFS3ERR_INVAL)  # a directory moved into itself
        os.rename(src, dst)
        if src != dst:
            self.index.moved(src, dst, is_dir=is_dir)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(src_st)), self._lattr(src_dir))
        pack_wcc_data(p, wcc_of(self._attr(dst_st)), self._lattr(dst_dir))

    def _link(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.LinkArgs)
        path, st = self._resolve(args.fh)
        if stat.S_ISDIR(st.st_mode):
            raise Failure(Status.NFS3ERR_ISDIR)
        directory, dst = self._dir(args.dir)
        new = self._child(directory, args.name)
        self._need(dst, caller, Access.MODIFY | Access.LOOKUP)
        os.link(path, new, follow_symlinks=False)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._lattr(new))
        pack_wcc_data(p, wcc_of(self._attr(dst)), self._lattr(directory))

    def _readdir(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.ReaddirArgs)
        plus = isinstance(args, a.ReaddirPlusArgs)
        directory, dst = self._dir(args.dir)
        self._need(dst, caller, Access.READ)
        # Entries are listed in inode order and an entry's cookie is its inode: "continue after cookie" stays
        # right while names are removed or added between calls (a client deleting as it lists, like rm -r),
        # where a position in a listing would skip entries. The verifier is therefore not needed (zeros).
        with os.scandir(directory) as scan:
            entries = sorted((e.inode(), e.name) for e in scan if e.inode() > args.cookie)
        pages: list[tuple[int, bytes]] = []
        used, names_used, eof = 0, 0, True
        for ino, name in entries:
            entry = Packer()
            entry.boolean(True)
            entry.uhyper(ino)
            entry.string(name)
            entry.uhyper(ino)
            name_size = len(bytes(entry))
            if plus:
                path = os.path.join(directory, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue  # removed meanwhile
                pack_post_op_attr(entry, self._attr(st))
                pack_post_op_fh(entry, self.index.handle_for(path, st))
            encoded = bytes(entry)
            if used + len(encoded) + 128 > args.maxcount or (
                    plus and args.dircount and names_used + name_size > args.dircount):
                eof = False
                # Hard links share an inode: never end a page between two of them, or the next call
                # (entries after this inode) would skip the rest.
                while pages and pages[-1][0] == ino:
                    pages.pop()
                break
            pages.append((ino, encoded))
            used += len(encoded)
            names_used += name_size
        if not pages and not eof:
            raise Failure(Status.NFS3ERR_TOOSMALL)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(dst))
        p.fixed_opaque(b"\0" * 8, 8)
        for _, encoded in pages:
            p.raw(encoded)
        p.boolean(False)
        p.boolean(eof)

    def _fsstat(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.FhArgs)
        _, st = self._resolve(args.fh)
        vfs = os.statvfs(self.root)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(st))
        for value in (vfs.f_blocks * vfs.f_frsize, vfs.f_bfree * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize,
                      vfs.f_files, vfs.f_ffree, vfs.f_favail):
            p.uhyper(value)
        p.uint(0)  # invarsec: the numbers may change at any time

    def _fsinfo(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.FhArgs)
        _, st = self._resolve(args.fh)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(st))
        for value in (MAX_TRANSFER, MAX_TRANSFER, 4096, MAX_TRANSFER, MAX_TRANSFER, 4096, 64 * 1024):
            p.uint(value)  # rtmax rtpref rtmult wtmax wtpref wtmult dtpref
        p.uhyper(2**63 - 1)
        pack_time(p, NfsTime(0, 1))
        p.uint(FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME)

    def _pathconf(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.FhArgs)
        _, st = self._resolve(args.fh)
        p.uint(Status.NFS3_OK)
        pack_post_op_attr(p, self._attr(st))
        p.uint(65000)
        p.uint(NAME_MAX)
        for flag in (True, True, False, True):  # no_trunc chown_restricted case_insensitive case_preserving
            p.boolean(flag)

    def _commit(self, args: a.Args, caller: Caller, p: Packer) -> None:
        assert isinstance(args, a.ReadArgs)
        path, st = self._resolve(args.fh)
        if not stat.S_ISREG(st.st_mode):
            raise Failure(Status.NFS3ERR_INVAL)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        p.uint(Status.NFS3_OK)
        pack_wcc_data(p, wcc_of(self._attr(st)), self._attr(after))
        p.fixed_opaque(self.write_verf, 8)
