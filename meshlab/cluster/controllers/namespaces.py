"""Namespace deletion, as kube-controller-manager's namespace controller does it.

Deleting a namespace only marks it (``deletionTimestamp``, phase ``Terminating``, finalizer ``kubernetes``
in ``spec.finalizers``). This controller then deletes every namespaced object in it, waits until they are
all gone (their own finalizers may hold them), and finally removes the ``kubernetes`` finalizer through the
``finalize`` subresource, which removes the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from meshlab.cluster import subresources
from meshlab.cluster.rest import RestStorage, WriteOptions, kind_key
from meshlab.errors import ApiError

log = logging.getLogger("meshlab.controllers.namespaces")


class NamespaceController:
    def __init__(self, rest: RestStorage, *, interval: float = 0.2) -> None:
        self.rest = rest
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        ns_rt = self.rest.registry.lookup("", "v1", "namespaces")
        assert ns_rt is not None
        watcher, _ = self.rest.store.watch(kind_key(ns_rt), "", self.rest.store.resource_version)
        try:
            while True:
                await self.sync_all()
                # Wake on any namespace change, or poll while some namespace is still draining.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.queue.get(), self.interval if self._draining() else 5.0)
        finally:
            self.rest.store.unwatch(watcher)

    def _draining(self) -> bool:
        return any((ns.get("metadata") or {}).get("deletionTimestamp")
                   for ns, _ in self.rest.store.scan("/namespaces"))

    async def sync_all(self) -> None:
        for ns, _ in list(self.rest.store.scan("/namespaces")):
            if (ns.get("metadata") or {}).get("deletionTimestamp"):
                try:
                    await self.drain(ns["metadata"]["name"])
                except ApiError as err:
                    log.warning("namespace %s: %s", ns["metadata"]["name"], err)

    async def drain(self, name: str) -> None:
        remaining = 0
        opts = WriteOptions(user={"username": "system:serviceaccount:kube-system:namespace-controller"})
        for rt in list(self.rest.registry):
            if not rt.namespaced or not rt.persisted:
                continue
            for obj, _ in list(self.rest.select(rt, name)):
                remaining += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                with contextlib.suppress(ApiError):
                    await self.rest.delete(rt, name, obj["metadata"]["name"],
                                           {"propagationPolicy": "Background"}, opts)
        if remaining:
            return
        await subresources.finalize_namespace(self.rest, name, {"spec": {"finalizers": []}}, opts)
