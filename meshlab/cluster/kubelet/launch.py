"""Starting a container's process with its volumes at their ``mountPath``: a tiny container runtime.

A real runtime (runc, following the OCI runtime spec's ``mounts``) gives each container a private mount
namespace (mount_namespaces(7)) and bind-mounts every volume at its mountPath before it execs the entrypoint.
This launcher does the same for a local process, in this order: ``unshare(CLONE_NEWNS)`` — inside a new user
namespace (user_namespaces(7), uid and gid mapped to themselves) when not root; make every mount private so
nothing propagates back to the host; open each volume source; mount a tmpfs over ``/tmp`` and ``pivot_root``
into it, so the container's ``/`` is a fresh tmpfs whose top-level entries are recursive bind mounts of the
host's (what bubblewrap does); create each missing mount point; bind the source (``MS_BIND|MS_REC``) onto it;
remount it read-only for ``readOnly`` (keeping the flags a user namespace locks); detach the old root; ``chdir``
into ``workingDir``; ``exec``. The host file system is never written: a missing mount point is created on the
tmpfs root, or inside a *shadow* — a tmpfs mounted over the deepest existing directory, with that directory's
entries bound back into it — so ``/var/run/secrets/...`` appears without touching the host's ``/run``. A mount
point inside another volume is created in that volume, as runc does (and shadowed if that volume is
read-only). The process keeps the launcher's pid (no fork), so signals reach it directly. Exit codes: 128 when
the container cannot be set up (runc's ``StartError``), 127/126 when the command is missing / not executable.

Run as ``python -m meshlab.cluster.kubelet.launch '<json spec>' -- command...``; :func:`wrap` builds that argv
(invoking this file with ``-I -S``: the launcher needs only the standard library, which keeps start-up short).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

# Start-up time matters here (the launcher runs once per container start), so the launcher's own path
# imports nothing beyond ctypes: not typing, not json (json.decoder imports re, ~10 ms). Type-only imports
# hide behind this constant, which mypy treats like typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import NoReturn, Protocol

    from meshlab.cluster.kubelet.isolation import IsolationMode

    class MountLike(Protocol):
        @property
        def source(self) -> os.PathLike[str] | str: ...
        @property
        def target(self) -> str: ...
        @property
        def read_only(self) -> bool: ...

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

# glibc has no pivot_root() wrapper: call the system call by number.
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203,
               "ppc64": 203, "s390x": 217, "i386": 217, "i686": 217, "armv7l": 218, "armv6l": 218}
# Where the host's root stays reachable until the volumes are bound (a name no host uses).
OLD_ROOT = "/.meshlab-oldroot"
# Any existing directory can carry the new root's tmpfs: it is only covered inside the private namespace.
BASE = "/tmp"

MODES = ("mount-namespace", "user-namespace", "none")


class LaunchError(Exception):
    """A step of the container set-up failed (the message names the step and the errno)."""


class Bind:
    """A mount as the JSON spec carries it (``volumes.Mount`` has the same three attributes)."""

    __slots__ = ("read_only", "source", "target")

    def __init__(self, source: str, target: str, read_only: bool) -> None:
        self.source = source
        self.target = target
        self.read_only = read_only


# -- building the command line (runs in the kubelet) --------------------------------------------------------


def wrap(command: Sequence[str], *, mounts: Sequence[MountLike], workdir: str | None,
         mode: IsolationMode) -> list[str]:
    """The argv that runs ``command`` with ``mounts`` at their targets (through this launcher).

    In mode ``NONE`` nothing can be mounted: the command runs as is (give it :func:`fallback_env` too), in
    ``workdir`` mapped by :func:`fallback_path` (a volume's host directory) when that exists on the host.
    """
    import json

    if not command:
        raise ValueError("a container needs a command")
    spec = {"mode": mode.value, "workdir": workdir,
            "mounts": [{"source": os.fspath(m.source), "target": m.target, "readOnly": bool(m.read_only)}
                       for m in mounts]}
    if mode.value == "none" and not workdir:
        return list(command)
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(spec, separators=(",", ":")),
            "--", *command]


def _fallback_table(mounts: Sequence[MountLike]) -> dict[str, str]:
    return {os.path.normpath(m.target): os.fspath(m.source) for m in mounts}


def _env_name(target: str) -> str:
    return "MESHLAB_MOUNT_" + "".join(c if c.isalnum() else "_" for c in target.strip("/")).upper()


def fallback_env(mounts: Sequence[MountLike]) -> dict[str, str]:
    """Where the volumes are when they cannot be mounted (mode ``NONE``): give these to the process.

    ``MESHLAB_MOUNTS`` is a JSON object ``{mountPath: host path}``; each mount also gets
    ``MESHLAB_MOUNT_<PATH>`` (``/data`` -> ``MESHLAB_MOUNT_DATA``). :func:`fallback_path` maps a path with them.
    """
    import json

    table = _fallback_table(mounts)
    env = {"MESHLAB_MOUNTS": json.dumps(table, sort_keys=True)}
    env.update({_env_name(target): source for target, source in table.items()})
    return env


def fallback_path(path: str, table: Mapping[str, str] | None = None) -> str:
    """The host path behind a container path under the fallback (longest mountPath prefix wins)."""
    if table is None:
        loaded = _loads(os.environ.get("MESHLAB_MOUNTS") or "{}")
        table = loaded if isinstance(loaded, dict) else {}
    if not path:
        return path
    normal = os.path.normpath(path)
    for target in sorted(table, key=len, reverse=True):
        if normal == target or normal.startswith(target.rstrip("/") + "/"):
            return table[target] + normal[len(target.rstrip("/")):]
    return path


# -- system calls --------------------------------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    # CDLL(None) is the C library Python itself is linked with; ctypes.util.find_library would run ldconfig.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise LaunchError(f"{what}: [Errno {code}] {os.strerror(code)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


class _Sys:
    def __init__(self) -> None:
        self.libc = _libc()

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None,
              ) -> None:
        what = f"mount {source or fstype or ''} on {target}"
        _check(self.libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), what)

    def umount(self, target: str) -> None:
        _check(self.libc.umount2(_b(target), MNT_DETACH), f"umount {target}")

    def unshare(self, flags: int, what: str) -> None:
        _check(self.libc.unshare(flags), what)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        machine = os.uname().machine
        number = _PIVOT_ROOT.get(machine)
        if number is None:
            raise LaunchError(f"pivot_root: unknown system call number on {machine}")
        syscall = self.libc.syscall
        syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p]
        _check(syscall(number, _b(new_root), _b(put_old)), f"pivot_root {new_root}")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as err:
        raise LaunchError(f"write {path}: {err}") from err


def _locked_flags(target: str) -> int:
    """The flags of the mount at ``target`` that a remount must repeat (a user namespace locks them)."""
    have = os.statvfs(target).f_flag
    flags = 0
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                             (os.ST_RELATIME, MS_RELATIME)):
        if have & st_flag:
            flags |= ms_flag
    if not have & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= MS_STRICTATIME
    return flags


# -- the namespace (runs in the launcher, before exec) --------------------------------------------------------


class _Root:
    """The container's file-system view being built after ``pivot_root``."""

    def __init__(self, sys_: _Sys, mode: str) -> None:
        self.sys = sys_
        self.mode = mode
        self.shadowed = {"/"}        # directories that are our tmpfs: entries may be created there
        self.volumes: list[str] = []  # where volumes are mounted: mount points inside them are made there

    def place(self, source: str, target: str, st: os.stat_result) -> None:
        """Make ``target`` show ``source`` (a copy of a symlink, else a placeholder with a bind on it)."""
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
            return
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        self.sys.mount(source, target, None, MS_BIND | MS_REC)

    def shadow(self, directory: str) -> None:
        """Cover ``directory`` with a tmpfs that shows the same entries, so new ones can be added privately."""
        if directory in self.shadowed:
            return
        try:
            fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.stat(fd)
            entries = [(entry.name, entry.stat(follow_symlinks=False)) for entry in os.scandir(directory)]
        except OSError as err:
            raise LaunchError(f"cannot create a mount point in {directory}: {err}") from err
        options = f"mode={stat.S_IMODE(st.st_mode):o}"
        if self.mode == "mount-namespace":
            options += f",uid={st.st_uid},gid={st.st_gid}"
        self.sys.mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, options)
        try:
            for name, entry_st in entries:
                self.place(f"/proc/self/fd/{fd}/{name}", os.path.join(directory, name), entry_st)
        finally:
            os.close(fd)
        self.shadowed.add(directory)

    def _inside_volume(self, path: str) -> bool:
        return any(path == v or path.startswith(v.rstrip("/") + "/") for v in self.volumes)

    def ensure(self, container_path: str, *, directory: bool) -> str:
        """The resolved path of a mount point (or working directory), created without writing the host."""
        resolved = os.path.realpath(os.path.join("/", container_path))
        if os.path.lexists(resolved):
            is_dir = os.path.isdir(resolved)
            if is_dir != directory:
                have, want = ("a directory", "a file") if is_dir else ("not a directory", "a directory")
                raise LaunchError(f"cannot mount {want} on {container_path}: it is {have}")
            return resolved
        missing: list[str] = []
        parent = resolved
        while not os.path.lexists(parent):
            parent, name = os.path.split(parent)
            missing.insert(0, name)
        if not os.path.isdir(parent):
            raise LaunchError(f"cannot create {container_path}: {parent} is not a directory")
        if not self._inside_volume(parent):
            self.shadow(parent)
        path = parent
        for i, name in enumerate(missing):
            path = os.path.join(path, name)
            try:
                self._create(path, directory=directory or i < len(missing) - 1)
            except OSError as err:
                if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or i > 0:
                    raise LaunchError(f"cannot create {container_path}: {err}") from err
                # A read-only volume (or one we may not write): add the mount point on a shadow instead.
                self.shadow(parent)
                self._create(path, directory=directory or i < len(missing) - 1)
        return resolved

    @staticmethod
    def _create(path: str, *, directory: bool) -> None:
        if directory:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))


def _enter_user_namespace(sys_: _Sys) -> None:
    uid, gid = os.geteuid(), os.getegid()
    sys_.unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    # An unprivileged process may map only its own ids, and must give up setgroups() to map a group.
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def enter(mounts: Sequence[MountLike], workdir: str | None, mode: str) -> None:
    """Turn this (single-threaded) process into the container's view; the caller then execs.

    Usable directly in a child forked from a pre-imported server, which saves the launcher's start-up.
    """
    if mode not in MODES:
        raise LaunchError(f"unknown isolation mode {mode!r}")
    if mode == "none":
        where = fallback_path(workdir or "", _fallback_table(mounts))
        if os.path.isdir(where):
            os.chdir(where)
        elif where:
            # Nothing may be created on the host: say so in the container's log and keep the kubelet's cwd.
            print(f"meshlab launch: workingDir {workdir} does not exist on this host and cannot be created "
                  f"without a mount namespace; starting in {os.getcwd()}", file=sys.stderr)
        return
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    sys_ = _Sys()
    if mode == "user-namespace":
        _enter_user_namespace(sys_)
    else:
        sys_.unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
    sys_.mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Sources are opened inside the new namespace (a bind needs a mount of the current namespace) and before
    # /tmp is covered (volumes may live there).
    sources: list[tuple[MountLike, int, bool]] = []
    try:
        for m in sorted(mounts, key=lambda m: os.path.normpath(m.target).count("/")):
            try:
                fd = os.open(m.source, os.O_PATH | os.O_CLOEXEC)
            except OSError as err:
                raise LaunchError(f"volume source for {m.target}: {err}") from err
            sources.append((m, fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
        sys_.mount("tmpfs", BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        os.mkdir(BASE + OLD_ROOT, 0o700)
        sys_.pivot_root(BASE, BASE + OLD_ROOT)
        os.chdir("/")
        root = _Root(sys_, mode)
        for entry in os.scandir(OLD_ROOT):
            root.place(entry.path, "/" + entry.name, entry.stat(follow_symlinks=False))
        for m, fd, is_dir in sources:
            target = root.ensure(m.target, directory=is_dir)
            sys_.mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            if m.read_only:
                sys_.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(target))
            root.volumes.append(target)
    finally:
        for _, fd, _ in sources:
            os.close(fd)
    sys_.umount(OLD_ROOT)
    os.rmdir(OLD_ROOT)
    if workdir:
        os.chdir(root.ensure(workdir, directory=True))
    else:
        os.chdir(cwd if os.path.isdir(cwd) else "/")


def _exec(command: Sequence[str]) -> NoReturn:
    try:
        os.execvp(command[0], list(command))
    except FileNotFoundError:
        print(f"meshlab launch: {command[0]}: executable file not found in $PATH", file=sys.stderr)
        os._exit(127)
    except OSError as err:
        print(f"meshlab launch: {command[0]}: {err}", file=sys.stderr)
        os._exit(126)


# -- the probe behind isolation.detect() ----------------------------------------------------------------------


def probe(mode: str, scratch: str) -> str:
    """Set up a container with two volumes from ``scratch``; ``"ok"`` or what went wrong (runs in a child)."""
    target = f"/.meshlab-probe-{os.getpid()}/data"
    try:
        enter([Bind(os.path.join(scratch, "rw"), target, False),
               Bind(os.path.join(scratch, "ro"), target + "-ro", True)], None, mode)
        with open(os.path.join(target, "x")) as fh:
            seen = fh.read()
        with open(os.path.join(target, "written"), "w") as fh:
            fh.write("ok")
        try:
            open(os.path.join(target + "-ro", "refused"), "w").close()
            return "a readOnly mount accepted a write"
        except OSError as err:
            if err.errno != errno.EROFS:
                raise
    except (LaunchError, OSError) as err:
        return str(err)
    if seen != "probe":
        return f"the volume showed {seen!r} instead of its file"
    return "ok"


class _JsonContext:
    """What the C JSON scanner reads from its owner (json.decoder.JSONDecoder has these attributes)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)


def _loads(text: str) -> object:
    """``json.loads`` through the C scanner alone, which spares the launcher importing ``re``."""
    try:
        from _json import make_scanner

        value, end = make_scanner(_JsonContext)(text, 0)  # type: ignore[arg-type]
        if not text[end:].strip():
            return value
    except Exception:  # malformed (or no C scanner): the full decoder below says where, in its words
        pass
    import json

    return json.loads(text)


def main(argv: Sequence[str]) -> NoReturn:
    if len(argv) == 3 and argv[0] == "--probe":
        print(probe(argv[1], argv[2]), flush=True)
        os._exit(0)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: launch.py '<json spec>' -- command [args...]", file=sys.stderr)
        os._exit(2)
    try:
        spec = _loads(argv[0])
        if not isinstance(spec, dict):
            raise ValueError("the spec is not a JSON object")
        mounts = [Bind(m["source"], m["target"], bool(m.get("readOnly"))) for m in spec.get("mounts") or []]
        enter(mounts, spec.get("workdir"), spec.get("mode", "none"))
    except (LaunchError, OSError, ValueError, KeyError, TypeError) as err:
        print(f"meshlab launch: failed to create the container: {err}", file=sys.stderr)
        os._exit(128)
    _exec(argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
