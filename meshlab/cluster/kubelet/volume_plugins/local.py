"""``emptyDir`` and ``hostPath``: volumes that are plain directories of the node.

``emptyDir`` (kubernetes.io/docs/concepts/storage/volumes/#emptydir) is a fresh directory per pod, mode 0777
so any container user can write, under ``<pod dir>/volumes/kubernetes.io~empty-dir/<name>``, deleted with
the pod. ``medium: Memory`` asks for RAM (a real kubelet mounts a tmpfs): here the directory lives under
``/dev/shm`` when that is a writable tmpfs, else on disk and the pod's events say so; ``sizeLimit`` is not
enforced (a real kubelet evicts the pod past it), and the events say that too.

``hostPath`` (…/volumes/#hostpath) shows a node path. Its ``type`` is checked as the kubelet checks it:
``DirectoryOrCreate`` / ``FileOrCreate`` create a missing directory (0755) / empty file (0644);
``Directory``, ``File``, ``Socket``, ``CharDevice``, ``BlockDevice`` require an existing one of that kind
(``hostPath type check failed: /p is not a directory``); no type performs no check (and, as containerd
does, a missing path becomes a directory). The embedded lab runs on a learner's own machine, so a hostPath
must resolve (symlinks followed) inside the lab's directory or one of the allowed host paths
(``MESHLAB_ALLOWED_HOST_PATHS``, ``os.pathsep``-separated, or the kubelet's ``allowed_host_paths``). Node
plugins' DaemonSets name the kubelet's own directories as ``/var/lib/kubelet/...`` (``plugins_registry``,
``plugins/<driver>``, ``pods``); the lab kubelet's root is the lab directory (its pods live in
``<lab>/pods/<uid>``), so such a hostPath means the same path under the lab directory (:func:`kubelet_path`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError

SHM = Path("/dev/shm")

# type -> (stat predicate, what the kubelet says it is not)
_KINDS = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "FileOrCreate": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def _shm_usable() -> bool:
    return SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK)


class EmptyDirPlugin:
    name = "emptyDir"

    def _memory_root(self, ctx: VolumeContext) -> Path:
        # One directory per lab under /dev/shm, so two labs (or users) never share one.
        lab = hashlib.sha256(str(ctx.lab_dir.resolve()).encode()).hexdigest()[:12]
        return SHM / f"meshlab-{lab}"

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        source = volume.get(self.name) or {}
        name = str(volume["name"])
        path = ctx.volume_dir("kubernetes.io~empty-dir", name)
        if source.get("sizeLimit"):
            ctx.note("SizeLimitNotEnforced", f'emptyDir "{name}": sizeLimit {source["sizeLimit"]} is not enforced '
                                            "by the embedded lab (a real kubelet evicts the pod past it)")
        if source.get("medium") == "Memory":
            if _shm_usable():
                path = self._memory_root(ctx) / ctx.pod_uid / name
            else:
                ctx.note("MemoryMediumUnavailable", f'emptyDir "{name}": medium Memory asked for RAM, but '
                                                   f"{SHM} is not a writable tmpfs here: it is a directory on disk")
        elif source.get("medium"):
            raise ctx.failed(volume, f"unsupported emptyDir medium {source['medium']!r}")
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        owned = (ctx.pod_dir / "volumes", self._memory_root(ctx))
        if not any(path.is_relative_to(root) for root in owned):
            raise VolumeError("FailedUnmount", f"refusing to delete {path}: not an emptyDir of this pod")
        shutil.rmtree(path, ignore_errors=True)
        if path.is_relative_to(self._memory_root(ctx)):
            with_pod = path.parent
            if not any(with_pod.iterdir()):
                with_pod.rmdir()


KUBELET_ROOT = "/var/lib/kubelet"


def kubelet_path(path: str, root: Path) -> Path:
    """A real node's kubelet path (``/var/lib/kubelet/x``) as the lab kubelet's (``<root>/x``); others as is."""
    normal = os.path.normpath(path)
    if normal == KUBELET_ROOT or normal.startswith(KUBELET_ROOT + "/"):
        return Path(root) / normal[len(KUBELET_ROOT):].lstrip("/")
    return Path(path)


def confine(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or inside one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


class HostPathPlugin:
    name = "hostPath"

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        source = volume.get(self.name) or {}
        raw = str(source.get("path") or "")
        kind = str(source.get("type") or "")
        if not raw.startswith("/"):
            raise ctx.failed(volume, f"hostPath path {raw!r} must be absolute")
        if kind and kind not in _KINDS:
            raise ctx.failed(volume, f"hostPath type check failed: unknown type {kind!r}")
        # Resolve symlinks first: a link inside the lab must not lead out of it.
        resolved = Path(os.path.realpath(kubelet_path(raw, ctx.lab_dir)))
        roots = [Path(os.path.realpath(ctx.lab_dir))] + [Path(os.path.realpath(p)) for p in ctx.allowed_host_paths]
        if not confine(resolved, roots):
            where = f" (it resolves to {resolved})" if str(resolved) != os.path.normpath(raw) else ""
            raise ctx.failed(volume, (
                f"hostPath {raw}{where} is outside the lab directory {roots[0]}: the embedded lab confines "
                f"hostPath volumes to it. To allow it, start the lab with MESHLAB_ALLOWED_HOST_PATHS={raw} in "
                "its environment (several paths separated by ':'), or pass allowed_host_paths to its kubelet"))
        try:
            st = os.stat(resolved)
        except FileNotFoundError:
            st = None
        except OSError as err:
            raise ctx.failed(volume, f"hostPath {raw}: {err.strerror}") from err
        if st is None:
            if kind in ("", "DirectoryOrCreate"):
                resolved.mkdir(mode=0o755, parents=True, exist_ok=True)
                return resolved
            if kind == "FileOrCreate":
                resolved.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.close(os.open(resolved, os.O_WRONLY | os.O_CREAT, 0o644))
                return resolved
        if kind:
            check, what = _KINDS[kind]
            if st is None or not check(st.st_mode):
                raise ctx.failed(volume, f"hostPath type check failed: {raw} is not {what}")
        return resolved

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        """Nothing: the node's files outlive the pod."""
