"""The in-tree ``nfs`` volume: ``{server, path, readOnly}`` mounted on the node for the pod.

No plugin, driver or provisioner is involved (kubernetes.io/docs/concepts/storage/volumes/#nfs): the
kubelet's own ``kubernetes.io/nfs`` plugin mounts ``server:path`` at
``<pod dir>/volumes/kubernetes.io~nfs/<volume>`` and the runtime binds that into the containers. NFS volumes
do not support ownership management (no ``fsGroup`` chown) or SELinux relabelling, and only a
PersistentVolume can carry ``mountOptions`` (:mod:`.pvc` passes them on). Mounting is
:func:`meshlab.mounting.mount.mount_nfs` — the kernel on real nodes, a FUSE NFS client in the embedded lab —
and when it cannot work the pod stays ``ContainerCreating`` with a ``FailedMount`` event quoting why; the
kubelet retries with back-off. Lab extension: ``server: "10.0.0.5:12049"`` names a port other than 2049
(the lab's NFS servers listen on high ports; on a real node this becomes ``-o port=12049``; IPv6 as
``[::1]:12049``). The version is negotiated as mount.nfs does (3, then 4) unless a PV's mountOptions say
``nfsvers=``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError
from meshlab.errors import MountError, NfsError
from meshlab.mounting import mount
from meshlab.mounting.nfsclient import NfsLocation, negotiate_version

__all__ = ["NfsPlugin", "parse_server"]

KIND = "kubernetes.io~nfs"


def parse_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"server {server!r}: expected [address]:port")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""  # a bare name, IPv4 address, or an unbracketed IPv6 address
    if not host:
        raise ValueError(f"server {server!r} names no host")
    if not port:
        return host, 2049
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server {server!r}: {port!r} is not a TCP port")
    return host, int(port)


def _versions(options: list[str]) -> tuple[int, ...]:
    """The versions to try: the one ``nfsvers=``/``vers=`` pins, else 3 then 4."""
    for option in options:
        for item in option.split(","):
            key, _, value = item.strip().partition("=")
            if key in ("vers", "nfsvers") and value:
                return (int(value.split(".")[0]),) if value.split(".")[0].isdigit() else (0,)
    return (3, 4)


class NfsPlugin:
    """``volumes: [{name, nfs: {server, path, readOnly}}]`` (and PVs with an ``nfs`` source)."""

    name = "nfs"

    def __init__(self, *, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        source = volume.get(self.name) or {}
        server, path = str(source.get("server") or ""), str(source.get("path") or "")
        if not server or not path:
            raise ctx.failed(volume, "nfs volume needs both server and path")
        if not path.startswith("/"):
            raise ctx.failed(volume, f"nfs path {path!r} must be absolute")
        try:
            host, port = parse_server(server)
        except ValueError as err:
            raise ctx.failed(volume, str(err)) from err
        options = [str(o) for o in volume.get("mountOptions") or []]  # only a PV's (see pvc.py)
        target = ctx.volume_dir(KIND, str(volume["name"]))
        read_only = bool(source.get("readOnly"))
        try:
            how = await asyncio.to_thread(self._mount, host, port, path, target, read_only, options)
        except (MountError, NfsError) as err:
            raise ctx.failed(volume, f"mount failed: {err}") from err
        if how == "fuse":
            ctx.note("MountedThroughFUSE", f'nfs volume "{volume["name"]}": {server}:{path} is mounted through '
                                           "meshlab's FUSE NFS client (this kernel cannot mount NFS itself)")
        return target

    def _mount(self, host: str, port: int, path: str, target: Path, read_only: bool, options: list[str]) -> str:
        location = NfsLocation(server=host, export=path, port=port)
        if not mount.is_mounted(target):
            # Only a new mount needs the version; a kept mount is checked against its source by mount_nfs.
            location = negotiate_version(location, timeout=self.timeout, versions=_versions(options))
        return mount.mount_nfs(location, "", target, read_only=read_only, options=options)

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        try:
            await asyncio.to_thread(mount.unmount, path)
        except MountError as err:
            raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{volume.get("name")}" : '
                                               f"{err}") from err
        with contextlib.suppress(OSError):
            path.rmdir()
