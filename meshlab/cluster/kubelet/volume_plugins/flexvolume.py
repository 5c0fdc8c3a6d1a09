"""The ``flexVolume`` plugin: the kubelet side of the FlexVolume exec protocol.

As the real kubelet (``pkg/volume/flexvolume``): a volume ``flexVolume: {driver: "vendor/name", fsType,
secretRef, readOnly, options}`` is served by the executable ``<plugin dir>/vendor~name/name``, found by
listing the plugin directory when a volume needs it (drivers come and go without a restart). The driver is
called once with ``init`` (again when the executable changes) and its capabilities remembered; a command it
answers ``Not supported`` is remembered too and not called again. ``mount <dir> <json>`` gets the volume's
``options`` plus the keys the kubelet adds — ``kubernetes.io/fsType``, ``kubernetes.io/readwrite``
(``ro``/``rw``), ``kubernetes.io/pod.name``, ``pod.namespace``, ``pod.uid``, ``serviceAccount.name``,
``kubernetes.io/pvOrVolumeName``, ``kubernetes.io/mounterArgs.FsGroup`` when the pod has an fsGroup, and
``kubernetes.io/secret/<key>`` (base64) for each key of ``secretRef``'s Secret, which must have
``type: <driver>`` (``util.GetSecretForPV``) — and ``unmount <dir>`` undoes it. The output is parsed as the
kubelet's ``driver-call.go`` parses it: stdout and stderr combined must be one JSON object, ``Failure``
becomes ``mount command failed, status: Failure, reason: ...``, and a non-zero exit with a ``Success`` body is
a driver bug. Drivers that need attach (``capabilities.attach`` true, the default when omitted) need the
controller-manager's attach/detach, which the lab does not run, so they are refused with that reason. The
lab's plugin directory is ``<lab dir>/volumeplugins`` (a real kubelet's ``--volume-plugin-dir``, often
``/var/lib/kubelet/volumeplugins``; a DaemonSet hostPath of that path reaches it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError
from meshlab.errors import NotFound
from meshlab.mounting import mount

__all__ = ["FlexVolumePlugin", "driver_options", "installed_drivers", "plugin_dir"]

PLUGIN_DIR = "volumeplugins"
CALL_TIMEOUT = 120.0


def plugin_dir(lab_dir: Path) -> Path:
    """The lab kubelet's FlexVolume exec plugin directory."""
    return Path(lab_dir) / PLUGIN_DIR


def installed_drivers(directory: Path) -> list[str]:
    """The drivers a kubelet would find in ``directory``: ``vendor/name`` for each ``vendor~name/name``
    executable (what ``kubectl``'s users write in ``flexVolume.driver``)."""
    found = []
    for vendor_dir in sorted(Path(directory).glob("*~*")):
        vendor, _, name = vendor_dir.name.partition("~")
        executable = vendor_dir / name
        if executable.is_file() and os.access(executable, os.X_OK):
            found.append(f"{vendor}/{name}")
    return found


class DriverCallError(Exception):
    """A driver call did not succeed; ``not_supported`` when the driver said so."""

    def __init__(self, message: str, *, not_supported: bool = False) -> None:
        super().__init__(message)
        self.not_supported = not_supported


@dataclass
class _Driver:
    """What the kubelet remembers about one driver executable."""

    path: Path
    mtime_ns: int
    capabilities: dict[str, Any]
    unsupported: set[str] = field(default_factory=set)


def driver_options(ctx: VolumeContext, volume: dict[str, Any], source: dict[str, Any],
                   secrets: dict[str, bytes]) -> dict[str, str]:
    """The JSON object the kubelet passes to ``mount`` (every value a string, as the real one)."""
    meta = ctx.pod.get("metadata") or {}
    spec = ctx.pod.get("spec") or {}
    options = {str(k): str(v) for k, v in (source.get("options") or {}).items()}
    options.update({
        "kubernetes.io/fsType": str(source.get("fsType") or ""),
        "kubernetes.io/readwrite": "ro" if source.get("readOnly") else "rw",
        "kubernetes.io/pvOrVolumeName": str(volume.get("name") or ""),
        "kubernetes.io/pod.name": str(meta.get("name") or ""),
        "kubernetes.io/pod.namespace": str(meta.get("namespace") or "default"),
        "kubernetes.io/pod.uid": str(meta.get("uid") or ""),
        "kubernetes.io/serviceAccount.name": str(spec.get("serviceAccountName") or "default"),
    })
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    if fs_group is not None:
        options["kubernetes.io/mounterArgs.FsGroup"] = str(fs_group)
    for key, value in secrets.items():
        options[f"kubernetes.io/secret/{key}"] = base64.b64encode(value).decode()
    return options


def _parse(command: str, output: str, returncode: int) -> dict[str, Any]:
    """driver-call.go's handling of one call's combined output."""
    try:
        body = json.loads(output)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:
        raise DriverCallError(f"failed to unmarshal output for command: {command}, output: {output.strip()!r}, "
                              f"error: {err}") from err
    status = body.get("status")
    if status == "Not supported":
        raise DriverCallError(f"{command} command is not supported by the driver", not_supported=True)
    if status != "Success":
        raise DriverCallError(f"{command} command failed, status: {status}, reason: {body.get('message', '')}")
    if returncode != 0:
        raise DriverCallError(f"driver bug: {command}: exit status {returncode} but no error in the response")
    return body


class FlexVolumePlugin:
    """``flexVolume`` volumes through exec drivers under ``plugin_dir`` (default ``<lab dir>/volumeplugins``)."""

    name = "flexVolume"

    def __init__(self, plugin_dir: Path | None = None) -> None:
        self.plugin_dir = Path(plugin_dir) if plugin_dir is not None else None
        self._drivers: dict[Path, _Driver] = {}
        # (driver, command, mount dir): the recent calls the lab executed, in order (for lessons).
        self.calls: deque[tuple[str, ...]] = deque(maxlen=500)

    def _dir(self, ctx: VolumeContext) -> Path:
        return self.plugin_dir if self.plugin_dir is not None else plugin_dir(ctx.lab_dir)

    def _executable(self, ctx: VolumeContext, driver: str) -> Path:
        vendor, _, name = driver.rpartition("/")
        if not name or not vendor or "/" in vendor or name in (".", ".."):
            raise ValueError(f'flexVolume driver "{driver}" must be "<vendor>/<driver>"')
        return self._dir(ctx) / f"{vendor}~{name}" / name

    def _run(self, path: Path, command: str, *args: str) -> dict[str, Any]:
        self.calls.append((path.parent.name.replace("~", "/", 1), command, *args[:1]))
        try:
            done = subprocess.run([str(path), command, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=CALL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as err:
            raise DriverCallError(f"{command}: the driver did not answer within {CALL_TIMEOUT:g} s") from err
        except OSError as err:
            raise DriverCallError(f"{command}: cannot execute {path}: {err.strerror}") from err
        return _parse(command, done.stdout, done.returncode)

    def _driver(self, path: Path) -> _Driver:
        """The driver at ``path``, initialised (``init`` again when the executable changed)."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as err:
            raise FileNotFoundError(str(path)) from err
        known = self._drivers.get(path)
        if known is not None and known.mtime_ns == mtime:
            return known
        try:
            body = self._run(path, "init")
            capabilities = {"attach": True, **(body.get("capabilities") or {})}
        except DriverCallError as err:
            if not err.not_supported:
                raise
            capabilities = {"attach": True}
        driver = _Driver(path, mtime, capabilities)
        self._drivers[path] = driver
        return driver

    def _call(self, driver: _Driver, command: str, *args: str) -> dict[str, Any]:
        if command in driver.unsupported:
            raise DriverCallError(f"{command} command is not supported by the driver (remembered)",
                                  not_supported=True)
        try:
            return self._run(driver.path, command, *args)
        except DriverCallError as err:
            if err.not_supported:
                driver.unsupported.add(command)
            raise

    def _secrets(self, ctx: VolumeContext, source: dict[str, Any], driver: str) -> dict[str, bytes]:
        ref = source.get("secretRef") or {}
        name = str(ref.get("name") or "")
        if not name:
            return {}
        # A PV's FlexPersistentVolumeSource may name the Secret's namespace; a pod's volume uses its own.
        namespace = str(ref.get("namespace") or ctx.namespace)
        rt = ctx.rest.registry.lookup("", "v1", "secrets")
        try:
            secret = ctx.rest.get(rt, namespace, name) if rt is not None else None
        except NotFound:
            secret = None
        if secret is None:
            raise ValueError(f'Couldn\'t get secret {namespace}/{name} err: secrets "{name}" not found')
        if secret.get("type") != driver:
            raise ValueError(f"Couldn't get secret {namespace}/{name} err: cannot get secret of type {driver} "
                             f"(it is {secret.get('type') or 'Opaque'}: a FlexVolume secret must have "
                             f"type: {driver})")
        return {str(k): base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        source = volume.get(self.name) or {}
        driver_name = str(source.get("driver") or "")
        try:
            path = self._executable(ctx, driver_name)
            secrets = self._secrets(ctx, source, driver_name)
        except ValueError as err:
            raise ctx.failed(volume, str(err)) from err
        target = ctx.volume_dir(path.parent.name, str(volume["name"]))
        options = driver_options(ctx, volume, source, secrets)
        try:
            await asyncio.to_thread(self._mount, path, target, options)
        except FileNotFoundError:
            raise ctx.failed(volume, f'no FlexVolume driver "{driver_name}": {path} does not exist (install it '
                                     f"there, e.g. `meshlab flexvolume install --plugin-dir {self._dir(ctx)}`)"
                             ) from None
        except DriverCallError as err:
            raise ctx.failed(volume, str(err)) from err
        return target

    def _mount(self, path: Path, target: Path, options: dict[str, str]) -> None:
        driver = self._driver(path)
        if driver.capabilities.get("attach"):
            raise DriverCallError(f"{path.parent.name} needs attach (init said attach: true or nothing): the "
                                  "controller-manager's attach/detach is not part of the embedded lab")
        target.mkdir(parents=True, exist_ok=True)
        self._call(driver, "mount", str(target), json.dumps(options))

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        source = volume.get(self.name) or {}
        driver_name = str(source.get("driver") or "")
        try:
            await asyncio.to_thread(self._unmount, ctx, driver_name, path)
        except (DriverCallError, ValueError) as err:
            raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{volume.get("name")}" '
                                               f": {err}") from err
        with contextlib.suppress(OSError):
            path.rmdir()

    def _unmount(self, ctx: VolumeContext, driver_name: str, path: Path) -> None:
        executable = self._executable(ctx, driver_name)
        if not os.path.exists(executable):
            if mount.is_mounted(path):
                raise DriverCallError(f"{path} is still mounted and its driver {executable} is gone")
            return  # nothing was left mounted: nothing for a driver to undo
        self._call(self._driver(executable), "unmount", str(path))
