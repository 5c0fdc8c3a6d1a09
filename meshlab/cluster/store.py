"""Object storage with etcd-like resourceVersion semantics, on SQLite.

Every write appends a row to the ``changes`` table; its AUTOINCREMENT id *is* the cluster-wide
resourceVersion, so versions are strictly monotonic and never reused, even across restarts (the pattern of
k3s' kine). The current objects live in ``objects`` and, for fast reads, in memory. The database runs in WAL
mode: a commit is in the OS's hands before the write is acknowledged, so a ``kill -9`` of the server loses no
acknowledged write. Recent changes are kept (in memory and on disk) so that a watch can resume from any recent
resourceVersion; an older one gets ``410 Gone``, exactly like an etcd compaction.

This module knows nothing about HTTP or validation: it stores JSON objects under keys and tells watchers.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlab.errors import Gone

# How many changes are kept for watch resumption. The apiserver's watch cache keeps a window too.
HISTORY = 20_000

Key = tuple[str, str, str]  # (kind key "group/plural", namespace, name)


@dataclass(frozen=True)
class Change:
    """One committed write, as a watcher sees it."""

    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    kind_key: str
    namespace: str
    name: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None  # the object before this change (None when unknown or ADDED)


@dataclass
class _Entry:
    rv: int
    obj: dict[str, Any]
    raw: str  # the canonical JSON text of obj, reused for fast lists


class Watcher:
    """A queue of changes for one watch request; ``None`` in the queue means the store closed it."""

    def __init__(self, kind_key: str, namespace: str, accept: Callable[[Change], bool]) -> None:
        self.kind_key = kind_key
        self.namespace = namespace
        self.accept = accept
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        if change.kind_key != self.kind_key:
            return
        if self.namespace and change.namespace != self.namespace:
            return
        self.queue.put_nowait(change)


class Store:
    def __init__(self, path: Path | str, *, history: int = HISTORY) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS objects (
                kind_key TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                rv INTEGER NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (kind_key, namespace, name));
            CREATE TABLE IF NOT EXISTS changes (
                rv INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL, kind_key TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                data TEXT NOT NULL);
            """
        )
        self._history = history
        self._objects: dict[str, dict[tuple[str, str], _Entry]] = {}
        for kind_key, ns, name, rv, data in self._db.execute(
            "SELECT kind_key, namespace, name, rv, data FROM objects"
        ):
            self._objects.setdefault(kind_key, {})[(ns, name)] = _Entry(rv, json.loads(data), data)
        self._changes: deque[Change] = deque(maxlen=history)
        rows = self._db.execute(
            "SELECT rv, type, kind_key, namespace, name, data FROM changes ORDER BY rv DESC LIMIT ?",
            (history,),
        ).fetchall()
        for rv, typ, kind_key, ns, name, data in reversed(rows):
            self._changes.append(Change(rv, typ, kind_key, ns, name, json.loads(data), None))
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
        self._rv = int(row[0]) if row else 0
        # Changes older than this were compacted away: watching from before it is 410 Gone.
        self._oldest = self._changes[0].rv - 1 if self._changes else self._rv
        self._watchers: set[Watcher] = set()
        self._writes_since_prune = 0

    # -- reads -------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, key: Key) -> tuple[int, dict[str, Any]] | None:
        entry = self._objects.get(key[0], {}).get((key[1], key[2]))
        return (entry.rv, entry.obj) if entry else None

    def scan(self, kind_key: str, namespace: str = "") -> Iterator[tuple[dict[str, Any], str]]:
        """(object, its JSON text) for every object of a kind, ordered by namespace and name."""
        bucket = self._objects.get(kind_key, {})
        for ns, name in sorted(bucket):
            if namespace and ns != namespace:
                continue
            entry = bucket[(ns, name)]
            yield entry.obj, entry.raw

    def count(self, kind_key: str, namespace: str = "") -> int:
        bucket = self._objects.get(kind_key, {})
        if not namespace:
            return len(bucket)
        return sum(1 for ns, _ in bucket if ns == namespace)

    # -- writes ------------------------------------------------------------------------------------------

    def put(self, key: Key, obj: dict[str, Any], *, created: bool) -> dict[str, Any]:
        """Store ``obj`` under ``key`` at the next resourceVersion; returns the stored object."""
        prev = self.get(key)
        return self._commit("ADDED" if created else "MODIFIED", key, obj, prev[1] if prev else None)

    def delete(self, key: Key, final: dict[str, Any]) -> dict[str, Any]:
        """Remove ``key``; watchers see ``final`` (with the deletion's resourceVersion) as DELETED."""
        prev = self.get(key)
        return self._commit("DELETED", key, final, prev[1] if prev else None)

    def _commit(
        self, typ: str, key: Key, obj: dict[str, Any], prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        kind_key, ns, name = key
        obj = dict(obj)
        obj["metadata"] = dict(obj.get("metadata") or {})
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            # One writer (this process), so the next id is known; AUTOINCREMENT keeps it from ever
            # being reused after rows are pruned.
            rv = self._rv + 1
            obj["metadata"]["resourceVersion"] = str(rv)
            raw = json.dumps(obj, separators=(",", ":"))
            cur.execute(
                "INSERT INTO changes (rv, type, kind_key, namespace, name, data) VALUES (?, ?, ?, ?, ?, ?)",
                (rv, typ, kind_key, ns, name, raw),
            )
            if typ == "DELETED":
                cur.execute(
                    "DELETE FROM objects WHERE kind_key = ? AND namespace = ? AND name = ?", key
                )
            else:
                cur.execute(
                    "INSERT OR REPLACE INTO objects (kind_key, namespace, name, rv, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (kind_key, ns, name, rv, raw),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._rv = rv
        bucket = self._objects.setdefault(kind_key, {})
        if typ == "DELETED":
            bucket.pop((ns, name), None)
        else:
            bucket[(ns, name)] = _Entry(rv, obj, raw)
        change = Change(rv, typ, kind_key, ns, name, obj, prev)
        if len(self._changes) == self._changes.maxlen:
            self._oldest = self._changes[0].rv
        self._changes.append(change)
        for watcher in list(self._watchers):
            watcher.offer(change)
        self._writes_since_prune += 1
        if self._writes_since_prune >= 1000:
            self._prune()
        return obj

    def _prune(self) -> None:
        self._writes_since_prune = 0
        self._db.execute("DELETE FROM changes WHERE rv <= ?", (self._rv - self._history,))

    # -- watch -------------------------------------------------------------------------------------------

    def watch(
        self,
        kind_key: str,
        namespace: str,
        since: int,
        accept: Callable[[Change], bool] = lambda c: True,
    ) -> tuple[Watcher, list[Change]]:
        """Register a watcher for changes after ``since``; returns it and the changes to replay first.

        Raises :class:`Gone` (410) when ``since`` is older than the kept history.
        """
        if since < self._oldest:
            raise Gone(f"too old resource version: {since} ({self._oldest + 1})")
        replay = [
            c
            for c in self._changes
            if c.rv > since and c.kind_key == kind_key and (not namespace or c.namespace == namespace)
        ]
        watcher = Watcher(kind_key, namespace, accept)
        self._watchers.add(watcher)
        return watcher, replay

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        self._watchers.clear()
        self._db.close()
