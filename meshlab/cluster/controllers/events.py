"""Events: what a controller or the kubelet did, as ``kubectl describe`` and ``kubectl get events`` show.

Repeated events (same object, reason and message) are aggregated into one Event whose ``count`` and
``lastTimestamp`` grow, as the client-go event recorder does.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from meshlab.cluster.objectmeta import now_rfc3339
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.errors import ApiError

_OPTS = WriteOptions(user={"username": "system:event-recorder"})


async def record_event(rest: RestStorage, involved: dict[str, Any], *, type: str, reason: str, message: str,
                       component: str, host: str = "") -> None:
    """Record (or count again) an event about ``involved``; never fails the caller."""
    event_rt = rest.registry.lookup("", "v1", "events")
    assert event_rt is not None
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    digest = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}".encode()).hexdigest()[:16]
    name = f"{meta.get('name', 'unknown')}.{digest}"
    now = now_rfc3339()
    with contextlib.suppress(ApiError):
        found = rest.store.get(rest.key(event_rt, namespace, name))
        if found is not None:
            event = dict(found[1])
            event["count"] = int(event.get("count") or 1) + 1
            event["lastTimestamp"] = now
            await rest.update(event_rt, namespace, name, event, _OPTS)
            return
        source: dict[str, str] = {"component": component}
        if host:
            source["host"] = host
        await rest.create(event_rt, namespace, {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": involved.get("kind", ""), "apiVersion": involved.get("apiVersion", ""),
                               "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                               "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
            "type": type, "reason": reason, "message": message, "source": source,
            "count": 1, "firstTimestamp": now, "lastTimestamp": now, "reportingComponent": component,
            "reportingInstance": host,
        }, _OPTS)
