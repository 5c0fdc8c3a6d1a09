"""How the kubelet can give containers real ``mountPath`` semantics on this machine, found by trying it.

Bind-mounting a volume at ``/data`` for one process only needs a private mount namespace
(mount_namespaces(7)): ``unshare(CLONE_NEWNS)`` needs CAP_SYS_ADMIN, so root gets :attr:`MOUNT_NAMESPACE`;
anyone else can get the same inside an unprivileged user namespace (user_namespaces(7),
:attr:`USER_NAMESPACE`) when the kernel allows it — distributions switch that off with
``kernel.unprivileged_userns_clone=0``, ``user.max_user_namespaces=0`` or AppArmor's
``kernel.apparmor_restrict_unprivileged_userns=1``, and container runtimes with seccomp. Reading those
settings is not enough (seccomp and LSMs decide too), so :func:`detect` runs the launcher once in a child
with two real volumes and checks what that container saw and what reached the host. When nothing works the
mode is :attr:`NONE` and the explanation says exactly what is lost and what the fallback offers.
``MESHLAB_ISOLATION=none|user-namespace|mount-namespace`` restricts the choice (``auto`` by default).
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from meshlab.cluster.kubelet import launch


class IsolationMode(enum.Enum):
    MOUNT_NAMESPACE = "mount-namespace"
    USER_NAMESPACE = "user-namespace"
    NONE = "none"


_lock = threading.Lock()
_detected: tuple[IsolationMode, str] | None = None

# sysctl -> the value that forbids unprivileged user namespaces
_USERNS_SWITCHES = {
    "kernel/unprivileged_userns_clone": "0",
    "user/max_user_namespaces": "0",
    "kernel/apparmor_restrict_unprivileged_userns": "1",
}

FALLBACK = (
    "A container that opens an absolute mountPath (e.g. /data/x) does not find its volume there, and the "
    "kubernetes client's in-cluster config (/var/run/secrets/kubernetes.io/serviceaccount) does not work. "
    "Instead each container gets $MESHLAB_MOUNTS (JSON: mountPath -> host path) and one $MESHLAB_MOUNT_<PATH> "
    "per volume (/data -> $MESHLAB_MOUNT_DATA), and a workingDir inside a volume starts in that volume's host "
    "directory; readOnly is not enforced."
)


def detect() -> tuple[IsolationMode, str]:
    """The mode every container launch uses, and one line saying why (probed once per process)."""
    global _detected
    with _lock:
        if _detected is None:
            _detected = _detect(os.environ.get("MESHLAB_ISOLATION", "auto").strip().lower() or "auto")
        return _detected


def _candidates(choice: str) -> list[IsolationMode] | str:
    if choice == "auto":
        if os.geteuid() == 0:
            # A root without CAP_SYS_ADMIN (a container) may still be allowed a user namespace.
            return [IsolationMode.MOUNT_NAMESPACE, IsolationMode.USER_NAMESPACE]
        return [IsolationMode.USER_NAMESPACE]
    for mode in IsolationMode:
        if choice == mode.value:
            return [] if mode is IsolationMode.NONE else [mode]
    return f"MESHLAB_ISOLATION={choice!r} is not one of auto, " + ", ".join(m.value for m in IsolationMode)


def _detect(choice: str) -> tuple[IsolationMode, str]:
    if not sys.platform.startswith("linux"):
        return IsolationMode.NONE, f"none: mount namespaces are Linux-only (this is {sys.platform}). {FALLBACK}"
    candidates = _candidates(choice)
    if isinstance(candidates, str):
        return IsolationMode.NONE, f"none: {candidates}. {FALLBACK}"
    if not candidates:
        return IsolationMode.NONE, f"none: MESHLAB_ISOLATION=none turns mount namespaces off. {FALLBACK}"
    failures = []
    for mode in candidates:
        error = probe(mode)
        if error is None:
            return mode, _explain(mode)
        failures.append(f"{mode.value}: {error}")
    hint = _userns_hint()
    return IsolationMode.NONE, (f"none: no private mount namespace ({'; '.join(failures)}). {FALLBACK} "
                                f"For real mountPaths run the lab as root{hint}.")


def _explain(mode: IsolationMode) -> str:
    if mode is IsolationMode.MOUNT_NAMESPACE:
        return ("mount-namespace: each container gets a private mount namespace (the lab runs as root); volumes "
                "are bind-mounted at their mountPaths and readOnly mounts are read-only")
    return (f"user-namespace: each container gets an unprivileged user namespace (uid {os.geteuid()} mapped to "
            "itself) with a private mount namespace; volumes are bind-mounted at their mountPaths and readOnly "
            "mounts are read-only")


def _userns_hint() -> str:
    blocked = []
    for name, forbidding in _USERNS_SWITCHES.items():
        try:
            value = Path("/proc/sys", name).read_text().strip()
        except OSError:
            continue
        if value == forbidding:
            blocked.append(f"sysctl {name.replace('/', '.')}={value}")
    if blocked:
        return " or allow unprivileged user namespaces (now off: " + ", ".join(blocked) + ")"
    return " or allow unprivileged user namespaces (a seccomp profile or security module may forbid them here)"


def probe(mode: IsolationMode, *, timeout: float = 10.0) -> str | None:
    """Launch a throw-away container in ``mode``: ``None`` when it works, else what failed (not cached)."""
    scratch = Path(tempfile.mkdtemp(prefix="meshlab-isolation-"))
    try:
        (scratch / "rw").mkdir()
        (scratch / "ro").mkdir()
        (scratch / "rw" / "x").write_text("probe")
        argv = [sys.executable, "-I", "-S", launch.__file__, "--probe", mode.value, str(scratch)]
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        except OSError as err:
            return f"the probe did not start: {err}"
        try:
            out, err_text = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"the probe did not finish within {timeout:g} s"
        answer = out.strip() or err_text.strip()[-300:] or f"the probe exited with {child.returncode}"
        if answer != "ok":
            return answer
        if not (scratch / "rw" / "written").exists():
            return "a file written in the container did not reach the host"
        if os.path.lexists(f"/.meshlab-probe-{child.pid}"):
            return "the container's mount point appeared on the host (mounts are not private)"
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reset() -> None:
    """Forget the cached result (tests; a lab restarted with other settings)."""
    global _detected
    with _lock:
        _detected = None
