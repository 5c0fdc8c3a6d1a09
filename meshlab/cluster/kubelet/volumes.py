"""The kubelet's volume manager: a pod's volumes set up on the node, and each container's mounts.

It plays the part of the kubelet's volume manager (``pkg/kubelet/volumemanager``): for each entry of a pod's
``spec.volumes`` the plugin registered for its source key (:mod:`volume_plugins`) makes a host directory or
file; :meth:`VolumeManager.mounts_for` turns a container's ``volumeMounts`` into :class:`Mount`s (``subPath``
/ ``subPathExpr`` resolved inside the volume, as a real kubelet refuses one that escapes it; API-data volumes
always read-only, as since Kubernetes 1.10) that :mod:`launch` binds at their mountPaths. Like the
ServiceAccount admission plugin plus the kubelet on a real cluster, a pod whose ``automountServiceAccountToken``
is not false (on the pod, else on its ServiceAccount) gets a ``kube-api-access-<xxxxx>`` projected volume —
a bound token, ``ca.crt`` and ``namespace`` — mounted at ``/var/run/secrets/kubernetes.io/serviceaccount`` in
every container without a mount there, so the ``kubernetes`` client's in-cluster config works. What was set
up is recorded in ``<pod dir>/volumes.json`` so a restarted kubelet can still tear it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError, VolumePlugin
from meshlab.cluster.kubelet.volume_plugins.api_data import (
    ROOT_CA_CONFIGMAP,
    ConfigMapPlugin,
    DownwardAPIPlugin,
    ProjectedPlugin,
    SecretPlugin,
)
from meshlab.cluster.kubelet.volume_plugins.local import EmptyDirPlugin, HostPathPlugin
from meshlab.cluster.pki import TokenSigner
from meshlab.cluster.rest import RestStorage

__all__ = ["SERVICE_ACCOUNT_PATH", "Mount", "VolumeContext", "VolumeError", "VolumeManager", "VolumePlugin"]

SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# Sources whose files come from the API: always mounted read-only.
API_DATA_SOURCES = frozenset({"configMap", "secret", "downwardAPI", "projected"})
RECORD = "volumes.json"
# The alphabet of Kubernetes' random name suffixes (no vowels, no look-alikes).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_VAR = re.compile(r"\$\(([-._a-zA-Z0-9]+)\)")


@dataclass(frozen=True)
class Mount:
    source: Path          # host path (file or directory) to show in the container
    target: str           # container mountPath (subPath already resolved into source)
    read_only: bool


def access_volume_name(pod: dict[str, Any]) -> str:
    """``kube-api-access-<5 chars>``, derived from the pod uid so every call agrees."""
    digest = hashlib.sha256(str((pod.get("metadata") or {}).get("uid") or "").encode()).digest()
    return "kube-api-access-" + "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:5])


def access_volume(pod: dict[str, Any]) -> dict[str, Any]:
    """The projected volume a real cluster's ServiceAccount admission plugin injects."""
    return {"name": access_volume_name(pod), "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _mounts_at(container: dict[str, Any], path: str) -> bool:
    wanted = os.path.normpath(path)
    return any(os.path.normpath(str(m.get("mountPath") or "")) == wanted for m in container.get("volumeMounts") or [])


def _source_key(volume: dict[str, Any]) -> str:
    return next((key for key in volume if key != "name"), "")


class VolumeManager:
    """Sets up, refreshes and tears down the volumes of the pods on this node."""

    def __init__(self, rest: RestStorage, signer: TokenSigner, *, lab_dir: Path,
                 allowed_host_paths: Sequence[Path] = (), ca_pem: bytes | None = None) -> None:
        self.rest = rest
        self.signer = signer
        self.lab_dir = Path(lab_dir)
        from_env = [Path(p) for p in os.environ.get("MESHLAB_ALLOWED_HOST_PATHS", "").split(os.pathsep) if p]
        self.allowed_host_paths = (*(Path(p) for p in allowed_host_paths), *from_env)
        self.clock: Callable[[], float] = time.time
        ca = self.lab_dir / "pki" / "ca.crt"
        self.ca_pem = ca_pem if ca_pem is not None else ca.read_bytes() if ca.is_file() else None
        self._plugins: dict[str, VolumePlugin] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        for plugin in (EmptyDirPlugin(), HostPathPlugin(), ConfigMapPlugin(), SecretPlugin(), DownwardAPIPlugin(),
                       ProjectedPlugin()):
            self.register(plugin)

    def register(self, plugin: VolumePlugin) -> None:
        """Handle volumes whose source key is ``plugin.name`` with ``plugin`` (replacing any earlier one)."""
        self._plugins[plugin.name] = plugin

    @property
    def plugin_names(self) -> list[str]:
        return sorted(self._plugins)

    # -- which volumes a pod has ---------------------------------------------------------------------------

    def _automounts_token(self, pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        choice = spec.get("automountServiceAccountToken")
        if choice is None:
            ctx = self._context(pod, Path())
            sa = ctx.lookup("serviceaccounts", str(spec.get("serviceAccountName") or "default"))
            choice = (sa or {}).get("automountServiceAccountToken")
        return choice is not False

    def volumes_of(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """The pod's volumes plus the injected service-account volume when it needs one."""
        volumes = list((pod.get("spec") or {}).get("volumes") or [])
        if (any(not _mounts_at(c, SERVICE_ACCOUNT_PATH) for c in _containers(pod)) and self._automounts_token(pod)
                and not any(v.get("name") == access_volume_name(pod) for v in volumes)):
            volumes.append(access_volume(pod))
        return volumes

    def _context(self, pod: dict[str, Any], pod_dir: Path) -> VolumeContext:
        return VolumeContext(rest=self.rest, signer=self.signer, pod=pod, pod_dir=Path(pod_dir),
                             lab_dir=self.lab_dir, allowed_host_paths=tuple(self.allowed_host_paths),
                             ca_pem=self.ca_pem, clock=self.clock, plugins=self._plugins.get)

    def _plugin(self, ctx: VolumeContext, volume: dict[str, Any]) -> VolumePlugin:
        key = _source_key(volume)
        plugin = self._plugins.get(key)
        if plugin is None:
            raise ctx.failed(volume, f"the embedded lab has no volume plugin for {key or 'a volume without a source'}"
                                     f" (it has: {', '.join(self.plugin_names)})")
        return plugin

    def _lock(self, pod: dict[str, Any]) -> asyncio.Lock:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        return self._locks.setdefault(uid, asyncio.Lock())

    # -- set up, refresh, tear down ---------------------------------------------------------------------------

    async def setup(self, pod: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        """Make every volume of ``pod`` (volume name -> host path); raises :class:`VolumeError`."""
        ctx = self._context(pod, pod_dir)
        paths: dict[str, Path] = {}
        async with self._lock(pod):
            record = _read_record(ctx.pod_dir)
            try:
                for volume in self.volumes_of(pod):
                    plugin = self._plugin(ctx, volume)
                    path = await plugin.setup(ctx, volume)
                    paths[str(volume["name"])] = path
                    record[str(volume["name"])] = {"plugin": plugin.name, "path": str(path), "volume": volume}
            finally:
                _write_record(ctx.pod_dir, record)
            for reason, message in ctx.notes:
                await record_event(self.rest, pod, type="Normal", reason=reason, message=message,
                                   component="kubelet", host="lab-node")
        return paths

    async def refresh(self, pod: dict[str, Any], pod_dir: Path) -> None:
        """Bring API-data volumes up to date (objects changed, tokens due); raises the first failure."""
        ctx = self._context(pod, pod_dir)
        first: VolumeError | None = None
        async with self._lock(pod):
            for volume in self.volumes_of(pod):
                plugin = self._plugins.get(_source_key(volume))
                if plugin is None or not getattr(plugin, "refreshable", False):
                    continue
                try:
                    await plugin.setup(ctx, volume)
                except VolumeError as err:
                    # As the kubelet does: the old contents stay, the others are still refreshed.
                    first = first or err
        if first is not None:
            raise first

    async def teardown(self, pod: dict[str, Any], pod_dir: Path) -> None:
        """Undo :meth:`setup` (also for volumes only the record knows) and remove the pod's volume files."""
        ctx = self._context(pod, pod_dir)
        async with self._lock(pod):
            record = _read_record(ctx.pod_dir)
            for name, entry in list(record.items()):
                plugin = self._plugins.get(str(entry.get("plugin")))
                if plugin is None:
                    raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{name}": no '
                                                       f"volume plugin {entry.get('plugin')!r} is registered")
                await plugin.teardown(ctx, dict(entry.get("volume") or {"name": name}), Path(str(entry["path"])))
                del record[name]
                _write_record(ctx.pod_dir, record)
            _remove_unmounted(ctx.pod_dir / "volumes")
            (ctx.pod_dir / RECORD).unlink(missing_ok=True)
        self._locks.pop(str((pod.get("metadata") or {}).get("uid") or ""), None)

    # -- mounts ------------------------------------------------------------------------------------------------

    def mounts_for(self, pod: dict[str, Any], container: dict[str, Any], volumes: dict[str, Path]) -> list[Mount]:
        """The container's mounts: ``volumeMounts`` (``subPath``, ``readOnly``) and the token volume."""
        by_name = {str(v.get("name")): v for v in self.volumes_of(pod)}
        mounts: list[Mount] = []
        wanted = list(container.get("volumeMounts") or [])
        access = access_volume_name(pod)
        if access in volumes and access in by_name and not _mounts_at(container, SERVICE_ACCOUNT_PATH):
            wanted.append({"name": access, "mountPath": SERVICE_ACCOUNT_PATH, "readOnly": True})
        for vm in wanted:
            name = str(vm.get("name") or "")
            if name not in volumes or name not in by_name:
                raise VolumeError("FailedMount", f'container "{container.get("name")}": volumeMount "{name}" '
                                                 "names no volume of the pod that is set up")
            volume = by_name[name]
            key = _source_key(volume)
            source = _sub_path(pod, container, volumes[name], vm)
            read_only = (bool(vm.get("readOnly")) or key in API_DATA_SOURCES
                         or bool((volume.get(key) or {}).get("readOnly")))
            mounts.append(Mount(source, str(vm.get("mountPath") or ""), read_only))
        return mounts


def _expand(pod: dict[str, Any], container: dict[str, Any], text: str) -> str:
    """``subPathExpr``: ``$(VAR)`` from the container's literal and downward-API env (unknown ones stay)."""
    meta = pod.get("metadata") or {}
    fields = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
              "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
              "status.podIP": (pod.get("status") or {}).get("podIP"),
              "status.hostIP": (pod.get("status") or {}).get("hostIP")}
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[str(var["name"])] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
        elif ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") in fields:
            value = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
            if value is not None:
                env[str(var["name"])] = str(value)
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _sub_path(pod: dict[str, Any], container: dict[str, Any], root: Path, vm: dict[str, Any]) -> Path:
    sub = str(vm.get("subPath") or "")
    if not sub and vm.get("subPathExpr"):
        sub = _expand(pod, container, str(vm["subPathExpr"]))
    if not sub:
        return root
    pure = PurePosixPath(sub)
    if pure.is_absolute() or ".." in pure.parts:
        raise VolumeError("CreateContainerConfigError",
                          f'failed to prepare subPath for volumeMount "{vm.get("name")}" of container '
                          f'"{container.get("name")}": {sub!r} must be a relative path without ".."')
    source = root / sub
    if not os.path.lexists(source):
        if not root.is_dir():
            raise VolumeError("CreateContainerConfigError", f"subPath {sub!r}: volume {root} is not a directory")
        # The kubelet creates a missing subPath directory (as the container's user would).
        source.mkdir(mode=0o755, parents=True, exist_ok=True)
        source.chmod(0o777)
    # Resolved, it must stay inside the volume: a symlink planted by a container must not reach the host.
    real_root, real = os.path.realpath(root), os.path.realpath(source)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise VolumeError("CreateContainerConfigError",
                          f'failed to prepare subPath for volumeMount "{vm.get("name")}" of container '
                          f'"{container.get("name")}": {sub!r} resolves outside the volume ({real})')
    return source


def _read_record(pod_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        record = json.loads((pod_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(pod_dir: Path, record: dict[str, dict[str, Any]]) -> None:
    pod_dir.mkdir(parents=True, exist_ok=True)
    tmp = pod_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(pod_dir / RECORD)


def _remove_unmounted(directory: Path) -> None:
    """Delete ``directory`` unless something is still mounted inside it (its files would go with it)."""
    if not directory.exists():
        return
    for dirpath, dirnames, _ in os.walk(directory):
        for name in dirnames:
            if os.path.ismount(os.path.join(dirpath, name)):
                raise VolumeError("FailedUnmount", f"{os.path.join(dirpath, name)} is still mounted: the pod's "
                                                   "volume directory is kept so that nothing behind it is deleted")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
