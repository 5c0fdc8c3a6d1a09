"""A blocking NFS client for meshlab, over the ``nfs-rs`` userspace client (no kernel mount needed).

NFS names files by *handles* the server hands out, starting at an export's root: NFSv3 gets the root
handle from the separate MOUNT protocol (RFC 1813 appendix I), which meshlab's servers answer on the
same TCP port as NFS, so no rpcbind is involved; NFSv4 (RFC 7530 §7) has no MOUNT at all and walks a
*pseudo filesystem* from ``PUTROOTFH`` instead. Paths here are relative to the export ("a/b", "" is the
export root). Two findings shape the code: ``nfs-rs`` binds a privileged source port unless told
``noresvport`` (so a non-root process could not connect), and under NFSv4 it cannot name the export
root itself (NFS-Ganesha answers ``NFS4ERR_BADNAME`` for ".") — so for v4 the client attaches at the
pseudo root and prefixes every path with the export's pseudo path, which makes the export root an
ordinary directory. Every ``nfs-rs`` failure is mapped once (:func:`_mapped`) to
:class:`meshlab.errors.NfsError` carrying the protocol's status name (``NFS3ERR_NOENT``,
``NFS4ERR_NOTEMPTY``) or ``NFS_UNREACHABLE`` when no server answers.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import nfs_rs

from meshlab.errors import NfsError

__all__ = ["NfsClient", "NfsFile", "NfsLocation", "NfsStat", "errno_for_status", "negotiate_version"]

# Bytes moved per READ/WRITE call by copytree and the FUSE daemon's callers; nfs-rs splits further.
_CHUNK = 1 << 20

_FILE_TYPES = {
    nfs_rs.FileType.FILE: stat_module.S_IFREG,
    nfs_rs.FileType.DIRECTORY: stat_module.S_IFDIR,
    nfs_rs.FileType.SYMLINK: stat_module.S_IFLNK,
    nfs_rs.FileType.BLOCK_DEVICE: stat_module.S_IFBLK,
    nfs_rs.FileType.CHARACTER_DEVICE: stat_module.S_IFCHR,
    nfs_rs.FileType.FIFO: stat_module.S_IFIFO,
    nfs_rs.FileType.SOCKET: stat_module.S_IFSOCK,
}

# Status suffixes whose errno is not simply "E" + suffix (NFS4ERR_ACCESS vs EACCES, ...).
_ERRNO_EXCEPTIONS = {
    "ACCESS": errno.EACCES,  # NFSv4 spells it out
    "BADNAME": errno.EINVAL,
    "BADHANDLE": errno.ESTALE,
    "FHEXPIRED": errno.ESTALE,
    "NOTSUPP": errno.EOPNOTSUPP,
    "UNREACHABLE": errno.ENOTCONN,  # the server went away under a mount
    "INVALID_PATH": errno.EINVAL,
    "SHARE_DENIED": errno.EACCES,
    "DELAY": errno.EAGAIN,
    "UNCERTAIN": errno.EIO,
}


@dataclass(frozen=True)
class NfsLocation:
    """Where an export lives: the server, the export path as the server names it, port and version."""

    server: str
    export: str
    port: int = 2049
    version: int = 3

    def __str__(self) -> str:
        return f"{self.server}:{self.export} (NFSv{self.version}, port {self.port})"


@dataclass(frozen=True)
class NfsStat:
    """The attributes of one file as the server reports them (times in nanoseconds)."""

    mode: int  # type bits | permission bits, like os.stat_result.st_mode
    size: int
    nlink: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    fileid: int

    @property
    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.mode)


def errno_for_status(status: str) -> int:
    """The POSIX errno a filesystem should report for an NFS status name (EIO when there is none)."""
    suffix = status.split("ERR_", 1)[1] if "ERR_" in status else status.removeprefix("NFS_")
    if suffix in _ERRNO_EXCEPTIONS:
        return _ERRNO_EXCEPTIONS[suffix]
    value = getattr(errno, "E" + suffix, None)
    return value if isinstance(value, int) else errno.EIO


def _status_of(err: nfs_rs.NfsError) -> str:
    """The protocol's own name for a failure, or a meshlab ``NFS_*`` name when the server sent none."""
    if err.code_name:
        return err.code_name
    if isinstance(err, nfs_rs.NfsConnectionError | nfs_rs.NfsTimeoutError):
        return "NFS_UNREACHABLE"
    if isinstance(err, nfs_rs.NfsUncertainOutcomeError):
        # The connection broke mid-call: the server may or may not have done it (RFC 5531 has no answer).
        return "NFS_UNCERTAIN"
    text = str(err).lower()
    if isinstance(err, nfs_rs.NfsRpcError) and any(
        word in text for word in ("refused", "portmapper", "unreachable", "reset", "timed out", "broken pipe")
    ):
        return "NFS_UNREACHABLE"
    if isinstance(err, nfs_rs.NfsInvalidInputError):
        return "NFS_INVALID_PATH"
    if isinstance(err, nfs_rs.NfsNotFoundError):
        return "NFS_NOENT"
    if isinstance(err, nfs_rs.NfsMountError):
        # The MOUNT protocol's status (RFC 1813 appendix I), which nfs-rs reports only as text.
        for words, status in (("no such file", "MNT3ERR_NOENT"), ("permission", "MNT3ERR_ACCES"),
                              ("access", "MNT3ERR_ACCES"), ("not a directory", "MNT3ERR_NOTDIR")):
            if words in text:
                return status
        return "MNT3ERR_SERVERFAULT"
    if isinstance(err, nfs_rs.NfsRpcError):
        return "NFS_RPC_ERROR"
    return "NFS_ERROR"


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Translate every nfs-rs failure inside the block into NfsError (the one mapping edge)."""
    try:
        yield
    except nfs_rs.NfsError as err:
        raise NfsError(_status_of(err), f"{what}: {err}") from err


def _clean(path: str) -> str:
    """A path relative to the export, without "." or empty parts; ".." is refused (no escaping)."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise NfsError("NFS_INVALID_PATH", f"path {path!r} leaves the export ('..' is not allowed)")
    return "/".join(parts)


class NfsFile:
    """An open file on the server; positional reads and writes, errors mapped to NfsError."""

    def __init__(self, raw: nfs_rs.File, name: str) -> None:
        self._raw = raw
        self._name = name

    def read_at(self, offset: int, size: int) -> bytes:
        with _mapped(f"read {self._name}"):
            return self._raw.read_at(offset, size)

    def write_at(self, data: bytes, offset: int) -> int:
        with _mapped(f"write {self._name}"):
            return self._raw.write_at(data, offset)

    def truncate(self, size: int) -> None:
        with _mapped(f"truncate {self._name}"):
            self._raw.truncate(size)

    def flush(self) -> None:
        with _mapped(f"flush {self._name}"):
            self._raw.flush()

    def close(self) -> None:
        with _mapped(f"close {self._name}"):
            self._raw.close()


class NfsClient:
    """One connection to one export; blocking; a context manager. Paths are relative to the export."""

    def __init__(self, location: NfsLocation, *, timeout: float = 5.0) -> None:
        if location.version not in (3, 4):
            raise NfsError("NFS_BAD_VERSION", f"NFS version {location.version} is not supported (use 3 or 4)")
        self.location = location
        export = "/" + location.export.strip("/")
        if location.version == 4:
            # Attach at the pseudo root; the export's pseudo path becomes a prefix (see module docstring).
            url = f"nfs://{location.server}/"
            self._prefix = export.strip("/")
            versions = ["4.1", "4.0"]
        else:
            url = f"nfs://{location.server}{export}"
            self._prefix = ""
            versions = ["3"]
        self._versions = versions
        self._timeout = timeout
        self._client = self._connect(url)
        self._statfs_client: nfs_rs.Client | None = None

    def _connect(self, url: str) -> nfs_rs.Client:
        with _mapped(f"connect to {self.location}"):
            return nfs_rs.Client.connect(
                url,
                versions=self._versions,
                nfs_port=self.location.port,
                # MOUNT on the NFS port: meshlab's v3 server has no rpcbind (v4 ignores it).
                mount_port=self.location.port,
                noresvport=True,
                uid=os.getuid(),
                gid=os.getgid(),
                connect_timeout=self._timeout,
                operation_timeout=self._timeout,
            )

    def _export_client(self) -> nfs_rs.Client:
        """A client attached at the export itself: FSSTAT on the v4 pseudo root reports only zeros."""
        if not self._prefix:
            return self._client
        if self._statfs_client is None:
            self._statfs_client = self._connect(f"nfs://{self.location.server}/{self._prefix}")
        return self._statfs_client

    # -- paths ------------------------------------------------------------------------------------
    def _path(self, path: str) -> str:
        joined = posixpath.join(self._prefix, _clean(path)).strip("/")
        return joined or "."

    # -- context manager --------------------------------------------------------------------------
    def __enter__(self) -> NfsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with _mapped(f"close the connection to {self.location}"):
            for client in (self._client, self._statfs_client):
                if client is not None and not client.closed:
                    client.close()

    # -- the storage plan's interface -------------------------------------------------------------
    def makedirs(self, path: str, mode: int = 0o777) -> None:
        """Create ``path`` and its missing parents; an existing directory is fine."""
        # One component at a time from the export root: nfs-rs's own ``parents=True`` would also try the
        # NFSv4 pseudo-filesystem components above the export, which are read-only (NFS4ERR_ROFS).
        done = ""
        for part in _clean(path).split("/") if _clean(path) else []:
            done = posixpath.join(done, part)
            try:
                self.mkdir(done, mode)
            except NfsError as err:
                if errno_for_status(err.status) != errno.EEXIST or not self.is_dir(done):
                    raise

    def chmod(self, path: str, mode: int) -> None:
        with _mapped(f"chmod {oct(mode)} {path}"):
            self._client.chmod(self._path(path), mode)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except NfsError as err:
            if errno_for_status(err.status) == errno.ENOENT:
                return False
            raise
        return True

    def is_dir(self, path: str) -> bool:
        try:
            return self.stat(path).is_dir
        except NfsError as err:
            if errno_for_status(err.status) in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise

    def listdir(self, path: str = "") -> list[str]:
        with _mapped(f"list {path or '/'}"):
            names = self._client.listdir(self._path(path))
        return sorted(name for name in names if name not in (".", ".."))

    def rename(self, src: str, dst: str) -> None:
        with _mapped(f"rename {src} to {dst}"):
            self._client.rename(self._path(src), self._path(dst))

    def rmtree(self, path: str) -> None:
        """Remove ``path`` and everything below it; a missing path is not an error."""
        if not _clean(path):
            raise NfsError("NFS_INVALID_PATH", "refusing to remove the export root")
        try:
            info = self.stat(path)
        except NfsError as err:
            if errno_for_status(err.status) == errno.ENOENT:
                return
            raise
        if not info.is_dir:
            self.unlink(path)
            return
        for name in self.listdir(path):
            self.rmtree(posixpath.join(path, name))
        self.rmdir(path)

    def copytree(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` through the protocol (files, directories, symlinks, modes)."""
        info = self.stat(src)
        if not info.is_dir:
            self._copy_file(src, dst, info.mode)
            return
        self.makedirs(dst, stat_module.S_IMODE(info.mode))
        for name in self.listdir(src):
            self.copytree(posixpath.join(src, name), posixpath.join(dst, name))
        self.chmod(dst, stat_module.S_IMODE(info.mode))

    def read_file(self, path: str) -> bytes:
        with _mapped(f"read {path}"), self._client.open(self._path(path), "rb") as file:
            return file.read()

    def write_file(self, path: str, data: bytes) -> None:
        with _mapped(f"write {path}"), self._client.open(self._path(path), "wb") as file:
            file.write(data)

    def usage(self, path: str) -> tuple[int, int]:
        """(apparent bytes of the files under ``path``, number of entries under it, directories included)."""
        total, count = 0, 0
        for name in self.listdir(path):
            child = posixpath.join(path, name)
            info = self.stat(child)
            count += 1
            if info.is_dir:
                sub_bytes, sub_count = self.usage(child)
                total, count = total + sub_bytes, count + sub_count
            else:
                total += info.size
        return total, count

    # -- file-level operations (used by the FUSE daemon) ------------------------------------------
    def stat(self, path: str) -> NfsStat:
        with _mapped(f"stat {path or '/'}"):
            info = self._client.stat(self._path(path))
        return NfsStat(
            mode=_FILE_TYPES.get(info.type, 0) | stat_module.S_IMODE(info.mode),
            size=info.size,
            nlink=info.nlink,
            uid=info.uid,
            gid=info.gid,
            atime_ns=info.atime,
            mtime_ns=info.mtime,
            ctime_ns=info.ctime,
            fileid=info.fileid,
        )

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with _mapped(f"mkdir {path}"):
            self._client.mkdir(self._path(path), mode)

    def rmdir(self, path: str) -> None:
        with _mapped(f"rmdir {path}"):
            self._client.rmdir(self._path(path))

    def unlink(self, path: str) -> None:
        with _mapped(f"remove {path}"):
            self._client.remove(self._path(path))

    def truncate(self, path: str, size: int) -> None:
        with _mapped(f"truncate {path}"):
            self._client.truncate(self._path(path), size)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        with _mapped(f"set times of {path}"):
            self._client.utime(self._path(path), ns=(atime_ns, mtime_ns))

    def symlink(self, target: str, path: str) -> None:
        with _mapped(f"symlink {path}"):
            self._client.symlink(target, self._path(path))

    def readlink(self, path: str) -> str:
        with _mapped(f"readlink {path}"):
            return self._client.readlink(self._path(path))

    def open(self, path: str, mode: str = "rb") -> NfsFile:
        """Open a file (binary modes: rb, r+b, wb, w+b, ab); the caller closes the NfsFile."""
        with _mapped(f"open {path}"):
            return NfsFile(self._client.open(self._path(path), mode), path)

    def create(self, path: str, mode: int = 0o666) -> NfsFile:
        """Create a file if missing (never truncating one), set its permission bits, open it read-write."""
        with _mapped(f"create {path}"):
            self._client.touch(self._path(path), exist_ok=True)
        self.chmod(path, mode)
        return self.open(path, "r+b")

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Change the owner (-1 keeps that side), as the server allows the caller."""
        with _mapped(f"chown {uid}:{gid} {path}"):
            self._client.chown(self._path(path), uid, gid)

    def statfs(self) -> tuple[int, int, int, int, int, int]:
        """(total, free, available bytes, total, free, available files) of the exported filesystem."""
        with _mapped("statfs"):
            fs = self._export_client().fs_stat()
        return (fs.total_bytes, fs.free_bytes, fs.available_bytes, fs.total_files, fs.free_files,
                fs.available_files)

    def _copy_file(self, src: str, dst: str, mode: int) -> None:
        if stat_module.S_ISLNK(mode):
            self.symlink(self.readlink(src), dst)
            return
        source = self.open(src, "rb")
        target = self.create(dst, stat_module.S_IMODE(mode))
        target.truncate(0)
        try:
            offset = 0
            while chunk := source.read_at(offset, _CHUNK):
                target.write_at(chunk, offset)
                offset += len(chunk)
        finally:
            source.close()
            target.close()


def negotiate_version(location: NfsLocation, *, timeout: float = 5.0, versions: tuple[int, ...] = (3, 4)
                      ) -> NfsLocation:
    """``location`` with the first NFS version in ``versions`` its server answers, as mount.nfs negotiates.

    A server that does not speak a version rejects the RPC program version at once, so the next one is
    tried; an unreachable server or a refused export ends the search (every version would say the same).
    """
    errors: list[str] = []
    for version in versions:
        candidate = NfsLocation(location.server, location.export, location.port, version)
        try:
            NfsClient(candidate, timeout=timeout).close()
        except NfsError as err:
            if err.status == "NFS_UNREACHABLE" or err.status.startswith("MNT3ERR_"):
                raise
            errors.append(f"NFSv{version}: {err}")
            continue
        return candidate
    raise NfsError("NFS_VERSION_MISMATCH", f"{location.server} port {location.port} speaks none of NFSv"
                                           f"{'/'.join(map(str, versions))}: {'; '.join(errors)}")
