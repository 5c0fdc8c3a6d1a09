"""The kubelet's volume plugins: one per volume source (``emptyDir``, ``hostPath``, ``configMap`` ...).

This is the extension point, shaped like the real kubelet's ``pkg/volume`` (a ``VolumePlugin`` per source
type whose mounter's ``SetUp`` makes the volume's host directory and whose unmounter's ``TearDown`` removes
it). A plugin is any object with ``name`` — the key of the source it handles in a pod's ``volumes[]`` entry,
e.g. ``"nfs"`` for ``{"name": "v", "nfs": {...}}`` — and two coroutines:

``setup(ctx, volume) -> Path``
    make the volume available on the host and return the directory (or file) to show at each mountPath;
    **idempotent**: the kubelet calls it again when a pod's container restarts or the kubelet itself does.
    Raise :class:`VolumeError` (``ctx.failed(volume, detail)`` builds the kubelet's ``FailedMount`` message).
``teardown(ctx, volume, path) -> None``
    undo ``setup`` (unmount, remove what it created; never what it did not, e.g. a hostPath).

Optional: ``refreshable = True`` makes :meth:`VolumeManager.refresh` call ``setup`` again periodically (API
data volumes whose contents follow their objects). A source's own ``readOnly: true`` field is honoured by the
manager for every plugin. Register with ``VolumeManager.register(plugin)``; the storage issue adds ``nfs``,
``flexVolume``, ``csi`` and ``persistentVolumeClaim`` this way. Mount points (e.g. a FUSE mount) made by a
plugin must be under ``ctx.volume_dir(...)`` or elsewhere it owns; the manager refuses to delete a pod's
volume directory while anything is still mounted in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshlab.cluster.pki import TokenSigner
from meshlab.cluster.rest import RestStorage
from meshlab.errors import NotFound


class VolumeError(Exception):
    """A volume could not be set up or used; ``reason`` and ``message`` are the pod event's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class VolumeContext:
    """What a plugin may use while it sets up or tears down one pod's volume."""

    rest: RestStorage
    signer: TokenSigner
    pod: dict[str, Any]
    pod_dir: Path
    lab_dir: Path
    allowed_host_paths: tuple[Path, ...] = ()
    ca_pem: bytes | None = None          # the lab CA (what ``kube-root-ca.crt`` holds on a real cluster)
    clock: Callable[[], float] = time.time
    notes: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) -> Normal pod events
    # The plugin registered for a source key (``persistentVolumeClaim`` delegates to its PV's source).
    plugins: Callable[[str], VolumePlugin | None] = lambda key: None

    @property
    def namespace(self) -> str:
        return str((self.pod.get("metadata") or {}).get("namespace") or "default")

    @property
    def pod_name(self) -> str:
        return str((self.pod.get("metadata") or {}).get("name") or "")

    @property
    def pod_uid(self) -> str:
        return str((self.pod.get("metadata") or {}).get("uid") or "")

    def volume_dir(self, kind: str, name: str) -> Path:
        """``<pod dir>/volumes/<kind>/<name>``, the kubelet's layout (kind e.g. ``kubernetes.io~configmap``)."""
        return self.pod_dir / "volumes" / kind / name

    def lookup(self, plural: str, name: str) -> dict[str, Any] | None:
        """A core/v1 object in the pod's namespace, or ``None`` when it does not exist."""
        rt = self.rest.registry.lookup("", "v1", plural)
        if rt is None:
            raise LookupError(f"no resource type v1/{plural}")
        try:
            return self.rest.get(rt, self.namespace, name)
        except NotFound:
            return None

    def note(self, reason: str, message: str) -> None:
        """Something the user should know about a volume that is not an error (recorded as an event)."""
        if (reason, message) not in self.notes:
            self.notes.append((reason, message))

    @staticmethod
    def failed(volume: dict[str, Any], detail: str) -> VolumeError:
        """The kubelet's ``FailedMount`` error for ``volume``."""
        return VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{volume.get("name", "")}" : '
                                          f"{detail}")


class VolumePlugin(Protocol):
    """The interface every volume plugin implements (see the module docstring)."""

    name: str

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path: ...

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None: ...

