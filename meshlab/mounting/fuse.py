"""The lab's NFS mount: a FUSE filesystem whose every operation is an NFS call through :class:`NfsClient`.

FUSE (Filesystem in Userspace, libfuse 3 / fuse(4)) lets a process serve a mount point: the kernel turns each
system call on it (``stat``, ``open``, ``read``, ``mkdir`` ...) into a request on ``/dev/fuse``, and this
daemon answers it by calling the NFS server (``GETATTR``, ``LOOKUP``, ``READ``, ``WRITE``, ``MKDIR`` ...),
the way the kernel's own NFS client would on a real node. ``meshlab mount-nfs`` (see
:mod:`meshlab.mounting.commands`) runs :func:`serve` in a detached process; :mod:`meshlab.mounting.mount`
starts and stops it. The kernel enforces a read-only mount (``-o ro`` gives EROFS before we are asked), NFS
status names become errnos (:func:`errno_for_status`), and file contents are not cached across opens
(``auto_cache``, no attribute caching: NFS close-to-open consistency) so that two mounts of one export —
two pods on the node — see each other's writes.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import mfusepy

from meshlab.errors import NfsError
from meshlab.mounting.nfsclient import NfsClient, NfsFile, NfsLocation, errno_for_status

__all__ = ["NfsOperations", "serve"]

log = logging.getLogger("meshlab.mount-nfs")

F = TypeVar("F", bound=Callable[..., Any])
FSTYPE = "meshlab-nfs"  # the FUSE subtype: /proc/self/mountinfo shows fuse.meshlab-nfs


def _nfs_call(method: F) -> F:
    """Answer FUSE with the errno of an NfsError (and reconnect once when the server went away).

    A call cut off by the server going away (``NFS_UNCERTAIN``) is sent again on the new connection, as the
    kernel's client resends after a reconnect: reads, writes at an offset and attribute changes are
    idempotent; for the rest the server's answer to the retry is what the caller gets."""

    @functools.wraps(method)
    def wrapper(self: NfsOperations, *args: Any) -> Any:
        for attempt in (1, 2):
            try:
                return method(self, *args)
            except NfsError as err:
                if err.status in ("NFS_UNREACHABLE", "NFS_UNCERTAIN") and attempt == 1 and self.reconnect():
                    continue
                code = errno_for_status(err.status)
                if code != errno.ENOENT:
                    log.info("%s%r: %s", method.__name__, args[:1], err)
                raise mfusepy.FuseOSError(code) from err
        raise AssertionError("unreachable")

    return cast(F, wrapper)


class NfsOperations(mfusepy.Operations):
    """FUSE operations forwarded to one NFS export directory (``subdir`` of ``location``)."""

    use_ns = True  # times in nanoseconds, as NFS has them

    def __init__(self, location: NfsLocation, subdir: str, *, read_only: bool = False,
                 connect: Callable[[NfsLocation], NfsClient] = NfsClient) -> None:
        self.location = location
        self.subdir = subdir.strip("/")
        self.read_only = read_only
        self._connect = connect
        self.client = connect(location)
        self._lock = threading.Lock()
        self._next_fh = 1
        # fh -> (path, nfs-rs open mode, open file); kept so a reconnect can reopen them.
        self._files: dict[int, tuple[str, str, NfsFile]] = {}
        self.mounted = False  # set once the kernel has the mount (libfuse calls init)

    # -- plumbing -----------------------------------------------------------------------------------
    def _rel(self, path: str) -> str:
        return posixpath.join(self.subdir, path.lstrip("/")).strip("/")

    def reconnect(self) -> bool:
        """A fresh connection (the server restarted); open files are reopened. False when still down."""
        try:
            client = self._connect(self.location)
        except NfsError as err:
            log.warning("NFS server still unreachable: %s", err)
            return False
        self.client = client
        for fh, (path, mode, _) in list(self._files.items()):
            try:
                self._files[fh] = (path, mode, client.open(path, mode))
            except NfsError as err:
                log.warning("could not reopen %s after reconnecting: %s", path, err)
        log.info("reconnected to %s", self.location)
        return True

    def _remember(self, path: str, mode: str, handle: NfsFile) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._files[fh] = (path, mode, handle)
        return fh

    def _file(self, fh: int) -> NfsFile:
        entry = self._files.get(fh)
        if entry is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        return entry[2]

    def _writable(self) -> None:
        if self.read_only:
            raise mfusepy.FuseOSError(errno.EROFS)

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        self.mounted = True
        if conn_info is not None:
            # Ask the kernel for 1 MiB WRITEs (libfuse then negotiates max_pages): 8x fewer round trips.
            conn_info.max_write = 1 << 20
            conn_info.max_readahead = 1 << 20
        log.info("mounted; serving NFS calls")

    # -- metadata -----------------------------------------------------------------------------------
    @_nfs_call
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = self.client.stat(self._rel(path))
        return {"st_mode": st.mode, "st_size": st.size, "st_nlink": st.nlink, "st_uid": st.uid,
                "st_gid": st.gid, "st_atime": st.atime_ns, "st_mtime": st.mtime_ns, "st_ctime": st.ctime_ns,
                "st_blocks": (st.size + 511) // 512, "st_blksize": 1 << 16}

    @_nfs_call
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self.client.listdir(self._rel(path))]

    @_nfs_call
    def readlink(self, path: str) -> str:
        return self.client.readlink(self._rel(path))

    @_nfs_call
    def statfs(self, path: str) -> dict[str, int]:
        total, free, avail, files, ffree, favail = self.client.statfs()
        block = 4096
        return {"f_bsize": block, "f_frsize": block, "f_blocks": total // block, "f_bfree": free // block,
                "f_bavail": avail // block, "f_files": files, "f_ffree": ffree, "f_favail": favail,
                "f_namemax": 255}

    @_nfs_call
    def chmod(self, path: str, mode: int) -> int:
        self._writable()
        self.client.chmod(self._rel(path), mode & 0o7777)
        return 0

    @_nfs_call
    def chown(self, path: str, uid: int, gid: int) -> int:
        self._writable()
        self.client.chown(self._rel(path), uid, gid)
        return 0

    @_nfs_call
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self._writable()
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)
        self.client.utime(self._rel(path), int(atime), int(mtime))
        return 0

    # -- namespace ----------------------------------------------------------------------------------
    @_nfs_call
    def mkdir(self, path: str, mode: int) -> int:
        self._writable()
        self.client.mkdir(self._rel(path), mode & 0o7777)
        return 0

    @_nfs_call
    def rmdir(self, path: str) -> int:
        self._writable()
        self.client.rmdir(self._rel(path))
        return 0

    @_nfs_call
    def unlink(self, path: str) -> int:
        self._writable()
        self.client.unlink(self._rel(path))
        return 0

    @_nfs_call
    def rename(self, old: str, new: str) -> int:
        self._writable()
        self.client.rename(self._rel(old), self._rel(new))
        return 0

    @_nfs_call
    def symlink(self, target: str, source: str) -> int:
        # mfusepy's naming: ``target`` is the new link, ``source`` what it points to.
        self._writable()
        self.client.symlink(source, self._rel(target))
        return 0

    # -- file contents ------------------------------------------------------------------------------
    @_nfs_call
    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        self._writable()
        rel = self._rel(path)
        if flags & os.O_EXCL and self.client.exists(rel):
            raise mfusepy.FuseOSError(errno.EEXIST)
        return self._remember(rel, "r+b", self.client.create(rel, mode & 0o7777))

    @_nfs_call
    def open(self, path: str, flags: int) -> int:
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing:
            self._writable()
        rel = self._rel(path)
        mode = "r+b" if writing else "rb"
        return self._remember(rel, mode, self.client.open(rel, mode))

    @_nfs_call
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._file(fh).read_at(offset, size)

    @_nfs_call
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._writable()
        return self._file(fh).write_at(data, offset)

    @_nfs_call
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._writable()
        if fh is not None and fh in self._files:
            self._file(fh).truncate(length)
        else:
            self.client.truncate(self._rel(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # nfs-rs returns from a write only once the bytes are stable on the server

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        return 0

    @_nfs_call
    def release(self, path: str, fh: int) -> int:
        with self._lock:
            entry = self._files.pop(fh, None)
        if entry is not None:
            entry[2].close()
        return 0

    def destroy(self, path: str) -> None:
        for _, _, handle in list(self._files.values()):
            try:
                handle.close()
            except NfsError as err:
                log.warning("closing a file at unmount: %s", err)
        self._files.clear()
        try:
            self.client.close()
        except NfsError as err:
            log.warning("closing the NFS connection: %s", err)


def serve(location: NfsLocation, subdir: str, target: str, *, read_only: bool = False,
          owner_pid: int | None = None) -> None:
    """Mount ``location``'s ``subdir`` at ``target`` and serve it until unmounted (blocks; foreground).

    With ``owner_pid``, a watcher thread unmounts (lazily, as ``umount -l``) once that process has ended, so
    the daemon never outlives what mounted it.

    Connects and checks ``subdir`` first, so a bad server or path fails before anything is mounted (raises
    NfsError). ``allow_other`` is set when root, so pods running as other users can use the mount.
    """
    operations = NfsOperations(location, subdir, read_only=read_only)
    if not operations.client.is_dir(operations.subdir):
        where = posixpath.join(location.export, operations.subdir).rstrip("/") or "/"
        raise NfsError("NFS_NOENT", f"{where} is not a directory on {location.server} (a volume's directory "
                                    "must exist on the export before it is mounted)")
    source = f"{location.server}:{posixpath.join(location.export, operations.subdir).rstrip('/') or '/'}"
    options: dict[str, Any] = {"fsname": source, "subtype": FSTYPE, "auto_cache": True,
                               "attr_timeout": 0, "entry_timeout": 0, "negative_timeout": 0}
    if read_only:
        options["ro"] = True
    if os.geteuid() == 0:
        options["allow_other"] = True
    log.info("mounting %s (NFSv%d, port %d) at %s%s", source, location.version, location.port, target,
             " read-only" if read_only else "")
    if owner_pid is not None:
        threading.Thread(target=_unmount_when_gone, args=(owner_pid, target), name="owner-watch",
                         daemon=True).start()
    try:
        mfusepy.FUSE(operations, target, foreground=True, nothreads=True, **options)
    except RuntimeError as err:
        if not operations.mounted:
            raise
        # libfuse's own clean-up found the mount already gone (fusermount3 -u got there first): not a failure.
        log.info("FUSE session ended (libfuse status %s)", err)
    log.info("unmounted %s", target)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), which tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _unmount_when_gone(owner_pid: int, target: str, interval: float = 0.5) -> None:
    started = _start_time(owner_pid)
    while started is not None and _start_time(owner_pid) == started:
        time.sleep(interval)
    log.info("process %d that mounted %s has ended: unmounting", owner_pid, target)
    for argv in (["fusermount3", "-u", "-z", target], ["umount", "-l", target]):
        try:
            if subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0:
                time.sleep(5)  # the FUSE loop normally ends first, once the kernel lets the mount go
                os._exit(0)
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("%s: %s", " ".join(argv), err)
    log.error("could not unmount %s after its owner ended; exiting anyway", target)
    os._exit(1)
