"""A level-triggered controller loop, the pattern of kube-controller-manager's controllers.

A controller names the kinds it watches; any change to one of them marks it dirty, and its ``sync()`` then
compares desired and observed state for everything it owns and writes the difference — never acting on an
event's content alone, so a missed or coalesced event cannot leave the cluster wrong. ``sync()`` also runs
every ``period`` seconds, which is how time-based work (back-off, progress deadlines) gets done.
Controllers run inside the lab supervisor and talk to :class:`~meshlab.cluster.rest.RestStorage` directly.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Any

from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.cluster.store import Watcher
from meshlab.errors import ApiError

log = logging.getLogger("meshlab.controllers")


class Controller(abc.ABC):
    #: kind keys ("group/plural", e.g. "apps/deployments", "/pods") whose changes trigger a sync
    watches: tuple[str, ...] = ()
    #: the user the controller's writes are attributed to (shows in managedFields and admission)
    user = "system:serviceaccount:kube-system:controller"
    period = 5.0

    def __init__(self, rest: RestStorage) -> None:
        self.rest = rest
        self.opts = WriteOptions(user={"username": self.user, "groups": ["system:serviceaccounts"]},
                                 field_manager=type(self).__name__.removesuffix("Controller").lower()
                                 + "-controller")
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[Watcher] = []
        self._pumps: list[asyncio.Task[None]] = []

    def start(self) -> None:
        store = self.rest.store
        for kind_key in self.watches:
            watcher, _ = store.watch(kind_key, "", store.resource_version)
            self._watchers.append(watcher)
            self._pumps.append(asyncio.create_task(self._pump(watcher)))
        self._dirty.set()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in [*self._pumps, self._task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for watcher in self._watchers:
            self.rest.store.unwatch(watcher)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def poke(self) -> None:
        """Ask for a sync soon (e.g. when a timer the controller keeps has expired)."""
        self._dirty.set()

    async def _pump(self, watcher: Watcher) -> None:
        while True:
            change = await watcher.queue.get()
            if change is None:
                return
            self._dirty.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.period)
            self._dirty.clear()
            try:
                await self.sync()
            except ApiError as err:
                # Conflicts and races are normal: the next sync sees the new state and tries again.
                log.debug("%s: %s", type(self).__name__, err)
                self._dirty.set()
                await asyncio.sleep(0.05)
            except Exception:
                log.exception("%s failed; retrying", type(self).__name__)
                await asyncio.sleep(1.0)
                self._dirty.set()

    @abc.abstractmethod
    async def sync(self) -> None:
        """Make the world match the stored desired state, for everything this controller owns."""

    # -- helpers for subclasses ---------------------------------------------------------------------------

    def objects(self, kind_key: str, namespace: str = "") -> list[dict[str, Any]]:
        return [obj for obj, _ in self.rest.store.scan(kind_key, namespace)]
