"""The kubelet's plugin watcher: node plugins register themselves by creating a socket in ``plugins_registry``.

This is the kubelet's plugin manager (``pkg/kubelet/pluginmanager``, the "kubelet plugin registration"
design): the kubelet watches ``<root>/plugins_registry`` (``/var/lib/kubelet/plugins_registry`` on a real
node); every unix socket that appears there is a ``pluginregistration.v1.Registration`` server (see
``meshlab/csiproto/registration.proto``). The kubelet dials it, calls ``GetInfo`` (type, name, endpoint,
supported versions), hands the plugin to the handler of its type (``CSIPlugin`` → the CSI volume plugin, which
calls the driver's NodeGetInfo and records it in the node's CSINode), and answers ``NotifyRegistrationStatus``
with the outcome. When the socket disappears the plugin is deregistered. A socket whose registration failed is
tried again after a back-off (and at once when it is replaced, e.g. by a restarted registrar). The real
kubelet uses fsnotify; this one lists the directory every ``interval`` seconds, which is simpler and loses
nothing a learner could notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from meshlab.csiproto import registration_pb2, registration_pb2_grpc

log = logging.getLogger("meshlab.kubelet.plugins")


class PluginHandler(Protocol):
    """What a plugin type's handler does with a plugin (the kubelet's ``PluginHandler``)."""

    async def validate(self, name: str, endpoint: str, versions: list[str]) -> None:
        """Raise (any exception, its message is the refusal) when the plugin cannot be registered."""

    async def register(self, name: str, endpoint: str, versions: list[str]) -> None: ...

    async def deregister(self, name: str) -> None: ...


@dataclass
class Registered:
    socket: Path
    identity: tuple[int, float]   # inode and mtime: a replaced socket is a new registration
    plugin_type: str = ""
    name: str = ""
    error: str = ""               # why registration failed ("" when it succeeded)
    retry_at: float = 0.0
    failures: int = 0


def _identity(path: Path) -> tuple[int, float] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime) if stat.S_ISSOCK(st.st_mode) else None


class PluginWatcher:
    """Registers the plugins whose sockets appear in ``registry_dir`` with the handler for their type."""

    def __init__(self, registry_dir: Path, handlers: dict[str, PluginHandler], *, interval: float = 0.3,
                 timeout: float = 5.0) -> None:
        self.registry_dir = Path(registry_dir)
        self.handlers = handlers
        self.interval = interval
        self.timeout = timeout
        self.plugins: dict[Path, Registered] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self.run(), name="kubelet-plugin-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:  # a broken plugin must not stop the watcher
                log.exception("plugin watcher: scan of %s failed", self.registry_dir)
            await asyncio.sleep(self.interval)

    async def scan(self) -> None:
        """One pass: register new (or replaced, or due for retry) sockets, deregister vanished ones."""
        seen: set[Path] = set()
        now = asyncio.get_running_loop().time()
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(self.registry_dir), key=lambda e: e.name):
                path = Path(entry.path)
                identity = _identity(path)
                if identity is None:
                    continue
                seen.add(path)
                known = self.plugins.get(path)
                if known is not None and known.identity == identity and (not known.error or now < known.retry_at):
                    continue
                if known is not None and known.identity != identity and not known.error:
                    await self._deregister(known)
                record = Registered(path, identity, failures=known.failures if known and known.error else 0)
                self.plugins[path] = record
                await self._register(record, now)
        for path in [p for p in self.plugins if p not in seen]:
            await self._deregister(self.plugins.pop(path))

    async def _register(self, record: Registered, now: float) -> None:
        async with grpc.aio.insecure_channel(f"unix://{record.socket}") as channel:
            stub = registration_pb2_grpc.RegistrationStub(channel)
            try:
                info = await stub.GetInfo(registration_pb2.InfoRequest(), timeout=self.timeout)
            except grpc.RpcError as err:
                self._failed(record, now, f"GetInfo failed: {err}")
                return
            record.plugin_type, record.name = str(info.type), str(info.name)
            handler = self.handlers.get(record.plugin_type)
            versions = [str(v) for v in info.supported_versions]
            error = ""
            try:
                if handler is None:
                    raise LookupError(f"no handler for plugin type {record.plugin_type!r} "
                                      f"(known: {', '.join(sorted(self.handlers))})")
                await handler.validate(record.name, str(info.endpoint), versions)
                await handler.register(record.name, str(info.endpoint), versions)
            except Exception as err:  # the handler's refusal goes back to the plugin as its error text
                error = f"plugin registration failed with err: {err}"
            if error:
                self._failed(record, now, error)
            else:
                record.error, record.failures = "", 0
                log.info("registered %s plugin %s from %s", record.plugin_type, record.name, record.socket)
            with contextlib.suppress(grpc.RpcError):
                await stub.NotifyRegistrationStatus(
                    registration_pb2.RegistrationStatus(plugin_registered=not error, error=error),
                    timeout=self.timeout)

    def _failed(self, record: Registered, now: float, error: str) -> None:
        record.error = error
        record.failures += 1
        record.retry_at = now + min(0.5 * 2 ** (record.failures - 1), 30.0)
        log.warning("plugin at %s: %s", record.socket, error)

    async def _deregister(self, record: Registered) -> None:
        if record.error or not record.name:
            return
        handler = self.handlers.get(record.plugin_type)
        if handler is not None:
            try:
                await handler.deregister(record.name)
            except Exception:
                log.exception("deregistering %s plugin %s failed", record.plugin_type, record.name)
        log.info("deregistered %s plugin %s (%s is gone)", record.plugin_type, record.name, record.socket)
