"""Mounting an NFS export on this node: the kernel's NFS client where it exists, else a FUSE NFS client.

A real kubelet (and the NFS CSI driver's node plugin) runs ``mount -t nfs -o <options> server:/path target``
(mount(8), nfs(5)); the kernel then speaks NFS for every process that touches ``target``. Kernels built
without NFS (``nfs`` missing from ``/proc/filesystems`` and no module) cannot do that, so the embedded lab
mounts through FUSE instead: :func:`mount_nfs` spawns ``meshlab mount-nfs`` (:mod:`meshlab.mounting.fuse`)
in its own session, logging to ``.<target name>.mount-nfs.log`` beside the target, and returns once the
target shows in ``/proc/self/mountinfo`` (or raises :class:`MountError` quoting that log). Either way the
result is a real mount point backed by real NFS calls; when neither can work, the error says why and what to
install — a local directory is never substituted. ``MESHLAB_NFS_MOUNTER=kernel|fuse`` forces one way
(``auto`` by default). Options follow nfs(5): ``ro``/``rw``, ``vers=``/``nfsvers=``, ``port=``; the FUSE
client ignores the rest (``hard``, ``timeo`` ...) and logs that it did.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.util
import os
import posixpath
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from meshlab.errors import MountError
from meshlab.mounting.nfsclient import NfsLocation

__all__ = ["is_mounted", "kernel_mount_argv", "mount_nfs", "mount_source", "mount_support", "mounts_under", "unmount",
           "unmount_all"]

FUSE_FSTYPE = "fuse.meshlab-nfs"
START_TIMEOUT = 20.0  # the daemon connects (5 s timeout) and checks the path before it mounts
INSTALL_FUSE = "install fuse3 (apt-get install fuse3)"
# Daemons this process started, kept so they are reaped (no zombie, no ResourceWarning) when they end.
# FUSE daemons this process started and has not collected yet (pids; see _reap). Plain pids, not Popen
# objects: a daemon is meant to outlive the call that started it, which Popen reports as a leak.
_children: set[int] = set()


# -- what this machine can do -------------------------------------------------------------------------------

def _kernel_has_nfs() -> bool:
    try:
        names = {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line.split()}
    except OSError:
        return False
    if names & {"nfs", "nfs4"}:
        return True
    # Not loaded yet is fine when the module exists: mount(8) loads it.
    return Path(f"/lib/modules/{os.uname().release}/kernel/fs/nfs").is_dir()


def _kernel_problem() -> str | None:
    if not _kernel_has_nfs():
        return "the kernel has no NFS client (no nfs in /proc/filesystems and no nfs module)"
    if os.geteuid() != 0:
        return "kernel NFS mounts need root"
    if shutil.which("mount.nfs") is None and not Path("/sbin/mount.nfs").exists():
        return "mount.nfs is missing: install nfs-common (apt-get install nfs-common)"
    return None


def _fuse_problem() -> str | None:
    if not Path("/dev/fuse").exists():
        return ("FUSE is not available: /dev/fuse missing (modprobe fuse; inside a container, start it with "
                "--device /dev/fuse --cap-add SYS_ADMIN)")
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        return f"FUSE is not available: fusermount3 missing; {INSTALL_FUSE}"
    if ctypes.util.find_library("fuse3") is None:
        return f"FUSE is not available: libfuse3 missing; {INSTALL_FUSE}"
    if importlib.util.find_spec("mfusepy") is None:
        return "FUSE is not available: the Python package mfusepy is missing (pip install mfusepy)"
    if os.geteuid() != 0 and not os.stat(fusermount).st_mode & stat.S_ISUID:
        return (f"FUSE is not available to uid {os.geteuid()}: {fusermount} is not setuid root; reinstall fuse3 "
                "(apt-get install --reinstall fuse3) or run the lab as root")
    return None


def _choose() -> str:
    """``kernel`` or ``fuse``; raises MountError naming every reason when neither works here."""
    wanted = os.environ.get("MESHLAB_NFS_MOUNTER", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "kernel", "fuse"):
        raise MountError(f"MESHLAB_NFS_MOUNTER={wanted!r} is not one of auto, kernel, fuse")
    kernel = _kernel_problem() if wanted in ("auto", "kernel") else "MESHLAB_NFS_MOUNTER=fuse"
    if kernel is None:
        return "kernel"
    fuse = _fuse_problem() if wanted in ("auto", "fuse") else "MESHLAB_NFS_MOUNTER=kernel"
    if fuse is None:
        return "fuse"
    raise MountError(f"cannot mount NFS on this node. Kernel: {kernel}. {fuse}. Until then pods using NFS volumes "
                     "stay ContainerCreating (meshlab never substitutes a local directory)")


def mount_support() -> str | None:
    """``None`` when an NFS mount can work here, else why not and what to install."""
    try:
        _choose()
    except MountError as err:
        return str(err)
    return None


# -- /proc/self/mountinfo ------------------------------------------------------------------------------------

def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (proc(5)).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mount_entry(target: Path) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``target``, the last one when stacked, or None."""
    where = os.path.realpath(target)
    found = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        dash = fields.index("-")
        if _unescape(fields[4]) == where:
            found = (fields[dash + 1], _unescape(fields[dash + 2]))
    return found


def mounts_under(directory: Path) -> list[Path]:
    """Every mount point at or below ``directory``, deepest first (the order to unmount them in)."""
    root = os.path.realpath(directory)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = {_unescape(fields[4]) for fields in (line.split() for line in lines) if len(fields) > 4}
    inside = [p for p in found if p == root or p.startswith(root.rstrip("/") + "/")]
    return [Path(p) for p in sorted(inside, key=lambda p: p.count("/"), reverse=True)]


def unmount_all(directory: Path) -> list[Path]:
    """Unmount everything at or below ``directory`` (see :func:`unmount`); returns what was unmounted.

    Call it before deleting a directory that may hold volume mounts: ``shutil.rmtree`` descends into a
    mount point and would delete the files on the NFS server, not just the mount.
    """
    done = mounts_under(directory)
    for target in done:
        unmount(target)
    return done


def is_mounted(target: Path) -> bool:
    """Whether something is mounted at ``target`` (as this process's mount namespace sees it)."""
    return _mount_entry(Path(target)) is not None


def mount_source(target: Path) -> str | None:
    """What is mounted at ``target`` (``server:/export/subdir``), or None."""
    entry = _mount_entry(Path(target))
    return entry[1] if entry else None


# -- options ---------------------------------------------------------------------------------------------------

def _apply_options(location: NfsLocation, read_only: bool, options: Sequence[str]
                   ) -> tuple[NfsLocation, bool, list[str]]:
    """nfs(5) options that change where or how we connect; returns the others untouched."""
    rest: list[str] = []
    for option in options:
        for item in (part.strip() for part in option.split(",")):
            key, _, value = item.partition("=")
            if item in ("ro", "rw"):
                read_only = read_only or item == "ro"
            elif key in ("vers", "nfsvers") and value:
                major = value.split(".")[0]
                if major not in ("3", "4"):
                    raise MountError(f"mount option {item}: only NFS versions 3 and 4 are supported")
                location = replace(location, version=int(major))
            elif key == "port" and value:
                if not value.isdigit():
                    raise MountError(f"mount option {item}: the port must be a number")
                location = replace(location, port=int(value))
            elif item:
                rest.append(item)
    return location, read_only, rest


def _source(location: NfsLocation, subdir: str) -> str:
    path = posixpath.join("/" + location.export.strip("/"), subdir.strip("/")).rstrip("/") or "/"
    return f"{location.server}:{path}"


# -- mount / unmount -------------------------------------------------------------------------------------------

def mount_nfs(location: NfsLocation, subdir: str, target: Path, *, read_only: bool = False,
              options: Sequence[str] = (), owner_pid: int | None = None) -> str:
    """Mount ``location``'s ``subdir`` at ``target``; returns ``"kernel"`` or ``"fuse"``. Idempotent.

    An existing mount of the same source is kept; a dead FUSE mount (its daemon gone) is replaced.
    Raises MountError when the target holds another mount or the mount fails. A FUSE mount lasts as long as
    ``owner_pid`` (default: this process) — the kubelet, or the CSI node plugin that mounted it — so stopping
    the lab, or a driver pod, never leaves a daemon behind (a kernel mount needs no process).
    """
    target = Path(target)
    location, read_only, extra = _apply_options(location, read_only, options)
    source = _source(location, subdir)
    entry = _mount_entry(target)
    if entry is not None:
        fstype, mounted = entry
        if mounted != source:
            raise MountError(f"{target} already has {mounted} mounted ({fstype}), not {source}")
        if _alive(target):
            return "fuse" if fstype == FUSE_FSTYPE else "kernel"
        unmount(target)  # a FUSE mount whose daemon died: "Transport endpoint is not connected"
    how = _choose()
    target.mkdir(parents=True, exist_ok=True)
    if how == "kernel":
        _mount_kernel(location, subdir, target, read_only, extra)
    else:
        _mount_fuse(location, subdir, target, read_only, extra, os.getpid() if owner_pid is None else owner_pid)
    return how


def _alive(target: Path) -> bool:
    try:
        os.stat(target)
    except OSError:
        return False
    return True


def kernel_mount_argv(location: NfsLocation, subdir: str, target: Path, *, read_only: bool = False,
                      options: Sequence[str] = ()) -> list[str]:
    """The mount(8) command a real node runs for this mount (options as :func:`mount_nfs` takes them)."""
    location, read_only, extra = _apply_options(location, read_only, options)
    opts = [f"vers={location.version}", f"port={location.port}", "ro" if read_only else "rw"]
    if location.version == 3 and location.port != 2049:
        # meshlab's own v3 server answers MOUNT on the NFS port and has no lock manager.
        opts += [f"mountport={location.port}", "nolock"]
    return ["mount", "-t", "nfs", "-o", ",".join([*opts, *extra]), _source(location, subdir), os.fspath(target)]


def _mount_kernel(location: NfsLocation, subdir: str, target: Path, read_only: bool, extra: list[str]) -> None:
    argv = kernel_mount_argv(location, subdir, target, read_only=read_only, options=extra)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise MountError(f"{' '.join(argv)} failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()}")


def _log_path(target: Path) -> Path:
    return target.parent / f".{target.name}.mount-nfs.log"


def _pid_path(target: Path) -> Path:
    return target.parent / f".{target.name}.mount-nfs.pid"


def _mount_fuse(location: NfsLocation, subdir: str, target: Path, read_only: bool, extra: list[str],
                owner_pid: int) -> None:
    argv = [sys.executable, "-m", "meshlab.mounting", "mount-nfs", "--server", location.server,
            "--export", location.export, "--port", str(location.port), "--nfs-version", str(location.version),
            "--subdir", subdir, "--owner-pid", str(owner_pid)]
    if read_only:
        argv.append("--read-only")
    for option in extra:
        argv += ["-o", option]
    argv.append(os.fspath(target))
    log_path = _log_path(target)
    with open(log_path, "ab") as log:
        # Its own session: no terminal signal reaches it, and stopping a container's process group does not
        # take it down mid-write; unmount() ends it, and so does its owner's exit (see serve()).
        pid = os.posix_spawn(argv[0], argv, dict(os.environ), setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1), (os.POSIX_SPAWN_DUP2, log.fileno(), 2)])
    _children.add(pid)
    _pid_path(target).write_text(f"{pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if is_mounted(target):
            return
        if _reap(pid):
            raise MountError(f"mounting {_source(location, subdir)} at {target} through FUSE failed: "
                             f"{_log_tail(log_path)}")
        time.sleep(0.02)
    _stop(pid)
    raise MountError(f"mounting {_source(location, subdir)} at {target} through FUSE did not finish in "
                     f"{START_TIMEOUT:g} s: {_log_tail(log_path)}")


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    tail = [line for line in text if line.strip()][-lines:]
    return " | ".join(tail) or "(the daemon wrote nothing)"


def unmount(target: Path) -> None:
    """Unmount ``target`` (lazily when busy) and end its FUSE daemon; nothing mounted is fine."""
    target = Path(target)
    entry = _mount_entry(target)
    if entry is not None:
        fstype = entry[0]
        if fstype == FUSE_FSTYPE or fstype.startswith("fuse"):
            attempts = [["fusermount3", "-u", os.fspath(target)], ["fusermount3", "-u", "-z", os.fspath(target)]]
        else:
            attempts = [["umount", os.fspath(target)], ["umount", "-l", os.fspath(target)]]
        errors = []
        for argv in attempts:
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                errors.append(f"{' '.join(argv)}: {err}")
                continue
            if done.returncode == 0 and not is_mounted(target):
                break
            errors.append(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
        else:
            raise MountError(f"cannot unmount {target}: {'; '.join(errors)}")
    pid_file = _pid_path(target)
    with contextlib.suppress(FileNotFoundError, ValueError):
        _stop(int(pid_file.read_text().strip()))
    pid_file.unlink(missing_ok=True)


def _stop(pid: int, timeout: float = 5.0) -> None:
    """End the daemon ``pid`` if it still runs (it normally exits by itself once unmounted)."""
    if not _is_mount_daemon(pid):
        _reap(pid)  # already exited: collect it if it is our child, so no zombie stays behind
        return  # gone, or the pid was reused by someone else: leave it alone
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_mount_daemon(pid):
            _reap(pid)
            return
        _reap(pid)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> bool:
    """Collect ``pid`` if it is a daemon this process started and it has exited (so no zombie stays behind);
    returns whether it has."""
    if pid not in _children:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done = pid
    if done:
        _children.discard(pid)
    return bool(done)


def _is_mount_daemon(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"mount-nfs" in raw
