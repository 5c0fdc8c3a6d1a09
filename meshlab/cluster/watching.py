"""Watch streams, with the resourceVersion semantics clients rely on.

A watch is a chunked HTTP response of newline-delimited JSON events ``{"type": ..., "object": ...}``
(without the newlines the Python client yields nothing). ``resourceVersion`` unset or ``"0"`` starts with
synthetic ADDED events for the current state; a specific version resumes right after it, or answers an
ERROR event with a 410 ``Expired`` Status when that version has been compacted away. With selectors, an
object that starts matching arrives as ADDED and one that stops matching as DELETED, as the apiserver's
watch cache does. BOOKMARK events carry only a resourceVersion, so a client can resume cheaply.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from meshlab.cluster.resources import ResourceType
from meshlab.cluster.rest import RestStorage, kind_key
from meshlab.cluster.selectors import field_matcher, label_matcher
from meshlab.cluster.store import Change
from meshlab.cluster.tables import to_table
from meshlab.errors import ApiError, BadRequest, Gone

BOOKMARK_INTERVAL = 5.0
DEFAULT_TIMEOUT = 1800.0


def _event(typ: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"


def translate(change: Change, match: Callable[[Mapping[str, Any]], bool]) -> str | None:
    """The event type a filtered watcher sees for ``change`` (None: nothing to send)."""
    now = match(change.obj)
    if change.type == "ADDED":
        return "ADDED" if now else None
    if change.type == "DELETED":
        return "DELETED" if now else None
    if change.prev is None:
        return "MODIFIED" if now else None
    before = match(change.prev)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


async def serve_watch(
    request: web.Request,
    rest: RestStorage,
    rt: ResourceType,
    namespace: str,
    *,
    table: bool,
    include_object: str,
) -> web.StreamResponse:
    q = request.query
    labels = label_matcher(q.get("labelSelector"))
    fields = field_matcher(q.get("fieldSelector"))

    def match(obj: Mapping[str, Any]) -> bool:
        return labels(obj) and fields(obj)

    rv_text = q.get("resourceVersion", "")
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
    initial_events_end = q.get("sendInitialEvents") in ("true", "1")
    try:
        timeout = float(q.get("timeoutSeconds") or DEFAULT_TIMEOUT)
    except ValueError as err:
        raise BadRequest(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from err

    scope_ns = namespace if rt.namespaced else ""
    store = rest.store
    initial: list[dict[str, Any]] = []
    gone: ApiError | None = None
    if rv_text in ("", "0") or initial_events_end:
        since = store.resource_version
        initial = [obj for obj, _ in rest.select(rt, scope_ns) if match(obj)]
    else:
        try:
            since = int(rv_text)
        except ValueError as err:
            raise BadRequest(f"invalid resourceVersion {rv_text!r}: must be an integer") from err
    watcher = None
    replay: list[Change] = []
    try:
        watcher, replay = store.watch(kind_key(rt), scope_ns, since)
    except Gone as err:
        gone = err

    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)

    def render(obj: Mapping[str, Any]) -> Mapping[str, Any]:
        if table:
            return to_table(rt, [dict(obj)], now=dt.datetime.now(dt.UTC), include_object=include_object)
        return obj

    def bookmark(rv: int, end_of_initial: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end_of_initial:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return _event("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})

    try:
        if gone is not None or watcher is None:
            status = (gone or Gone("watch could not start")).to_status()
            await response.write(_event("ERROR", status))
            return response
        for obj in initial:
            await response.write(_event("ADDED", render(obj)))
        if initial_events_end and bookmarks:
            await response.write(bookmark(since, end_of_initial=True))
        last_rv = since
        for change in replay:
            typ = translate(change, match)
            if typ:
                await response.write(_event(typ, render(change.obj)))
            last_rv = change.rv
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                next_change: Change | None = await asyncio.wait_for(
                    watcher.queue.get(), min(remaining, BOOKMARK_INTERVAL))
            except TimeoutError:
                if bookmarks:
                    await response.write(bookmark(max(last_rv, store.resource_version)))
                continue
            if next_change is None:
                break
            last_rv = next_change.rv
            typ = translate(next_change, match)
            if typ:
                await response.write(_event(typ, render(next_change.obj)))
    except ConnectionResetError:
        pass
    finally:
        if watcher is not None:
            store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response
