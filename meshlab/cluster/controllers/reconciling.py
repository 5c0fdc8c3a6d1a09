"""What every lab controller does around its decisions: find kinds, isolate failures, come back later.

kube-controller-manager's controllers each keep a work queue: one object's failure is retried with back-off
without holding up the others, and an object can be re-queued "after" a delay (a pod becoming available
after ``minReadySeconds``, a rollout's progress deadline). :class:`Reconciler` gives the lab's level-triggered
:class:`~meshlab.cluster.controllers.base.Controller` the same two habits: :meth:`Reconciler.guard` runs one
object's step and turns an API error into a retry instead of an aborted sync, and
:meth:`Reconciler.requeue_after` asks for a sync at a later time (any other exception is logged with its
traceback and retried the same way). A write refused because the namespace is
terminating is expected (the namespace controller is removing everything there) and is not retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable
from typing import TypeVar

from meshlab.cluster.controllers.base import Controller
from meshlab.cluster.resources import ResourceType
from meshlab.cluster.rest import RestStorage
from meshlab.errors import ApiError

log = logging.getLogger("meshlab.controllers")

T = TypeVar("T")

# How soon a controller retries after losing a race (409) or finding an object gone (404), and after
# anything else: the informer-and-workqueue controllers back off similarly (5 ms doubling, capped).
RACE_RETRY = 0.05
ERROR_RETRY = 1.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def namespace_terminating(err: ApiError) -> bool:
    causes = (err.details or {}).get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


class Reconciler(Controller):
    """A :class:`Controller` with per-object error isolation and delayed re-syncs."""

    def __init__(self, rest: RestStorage) -> None:
        super().__init__(rest)
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0
        self._kind_cache: dict[tuple[str, str, str], ResourceType] = {}

    def kind(self, group: str, version: str, plural: str) -> ResourceType:
        """A built-in kind's :class:`ResourceType` (looked up once)."""
        key = (group, version, plural)
        rt = self._kind_cache.get(key)
        if rt is None:
            found = self.rest.registry.lookup(group, version, plural)
            if found is None:
                raise LookupError(f"the lab's apiserver does not serve {plural}.{group or 'core'}/{version}")
            rt = self._kind_cache[key] = found
        return rt

    def requeue_after(self, seconds: float) -> None:
        """Sync again in ``seconds`` (the earliest of all pending requests wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(seconds, 0.0)
        if self._wake is not None and self._wake_at <= when:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        self._wake = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._wake = None
        self.poke()

    async def stop(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        await super().stop()

    async def guard(self, what: str, step: Awaitable[T]) -> T | None:
        """Run one object's step; an API error schedules a retry instead of failing the whole sync."""
        try:
            return await step
        except ApiError as err:
            if namespace_terminating(err):
                return None
            if err.code in (404, 409):
                log.debug("%s: %s: %s (retrying)", type(self).__name__, what, err)
                self.requeue_after(RACE_RETRY)
            else:
                log.warning("%s: %s: %s", type(self).__name__, what, err)
                self.requeue_after(ERROR_RETRY)
            return None
        except Exception:
            # A bug met by one object must not stop the controller for every other object.
            log.exception("%s: %s failed; retrying", type(self).__name__, what)
            self.requeue_after(ERROR_RETRY)
            return None
